//! What the manager asks of the kernel, as a trait: [`super::Kernel`] is the real one (aya,
//! bpffs); the manager's unit tests run over a fake (`manager::fake`) that keeps programs
//! and links in memory and pins as plain files, so the rules and their bookkeeping are
//! tested without root or a kernel.

use std::path::{Path, PathBuf};

use super::{Attached, Kernel, KernelProgram, LoadPlan, Loaded, TcxAnchor, ids};
use crate::error::Result;
use crate::model::{AttachSpec, HookKind, NetHook, ProgramKind, TcFilter};

/// Bytecode handed to a load: owned, sendable to the loader thread.
pub type Bytecode = Box<dyn std::ops::Deref<Target = [u8]> + Send>;

/// The kernel operations the manager uses. Each says in its own documentation (on
/// [`Kernel`]) what it does to the kernel and to bpffs.
pub trait Ops: Send + Sync {
    fn load(&self, bytes: Bytecode, plan: LoadPlan) -> Result<Loaded>;
    fn pinned_info(&self, pin: &Path) -> Result<KernelProgram>;
    fn link_program_id(&self, pin: &Path) -> Option<u32>;
    fn program_stats(
        &self,
        pin: &Path,
        map_memlock: &mut super::stats::StatsCache,
    ) -> Result<super::stats::ProgramStats>;
    fn all_programs(&self) -> Vec<KernelProgram>;
    fn unpin_program(&self, pin: &Path) -> Result<()>;
    fn wait_gone(&self, obj: ids::Object, id: u32) -> bool;
    fn exists(&self, obj: ids::Object, id: u32) -> bool;
    fn remove_maps(&self, dir: &Path);
    fn attach(
        &self,
        kind: ProgramKind,
        prog_pin: &Path,
        spec: &AttachSpec,
        link_pin: &Path,
        tcx_order: Option<TcxAnchor>,
        xdp_mode: Option<&str>,
    ) -> Result<Attached>;
    fn detach(&self, link_pin: &Path) -> Result<Option<u32>>;
    fn check_interface(&self, hook: &NetHook) -> Result<u32>;
    fn link_id(&self, pin: &Path) -> Option<u32>;
    fn load_dispatcher(
        &self,
        kind: HookKind,
        config: Vec<u8>,
        pin: &Path,
        frags: bool,
    ) -> Result<u32>;
    fn install_xdp(
        &self,
        hook: &NetHook,
        dispatcher: &Path,
        hook_link: &Path,
        xdp_mode: Option<&str>,
    ) -> Result<Attached>;
    fn install_tc(
        &self,
        hook: &NetHook,
        prog: &Path,
        existing: Option<TcFilter>,
    ) -> Result<(TcFilter, bool)>;
    fn install_tc_link(&self, hook: &NetHook, prog: &Path, hook_link: &Path) -> Result<()>;
    fn remove_tc(&self, hook: &NetHook, f: TcFilter) -> Result<()>;
    fn ext_target(&self, kind: HookKind) -> Result<PathBuf>;
    #[allow(clippy::too_many_arguments)]
    fn load_extension(
        &self,
        bytes: Vec<u8>,
        plan: LoadPlan,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        pin: &Path,
    ) -> Result<u32>;
    fn attach_extension(
        &self,
        ext: &Path,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        link_pin: &Path,
    ) -> Result<Attached>;
}

/// [`Bytecode`] as the loader thread takes it.
struct Owned(Bytecode);

impl std::ops::Deref for Owned {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Ops for Kernel {
    fn load(&self, bytes: Bytecode, plan: LoadPlan) -> Result<Loaded> {
        Kernel::load(self, Owned(bytes), plan)
    }
    fn pinned_info(&self, pin: &Path) -> Result<KernelProgram> {
        Kernel::pinned_info(self, pin)
    }
    fn link_program_id(&self, pin: &Path) -> Option<u32> {
        Kernel::link_program_id(self, pin)
    }
    fn program_stats(
        &self,
        pin: &Path,
        map_memlock: &mut super::stats::StatsCache,
    ) -> Result<super::stats::ProgramStats> {
        super::stats::program_stats(pin, map_memlock)
    }
    fn all_programs(&self) -> Vec<KernelProgram> {
        Kernel::all_programs(self)
    }
    fn unpin_program(&self, pin: &Path) -> Result<()> {
        Kernel::unpin_program(self, pin)
    }
    fn wait_gone(&self, obj: ids::Object, id: u32) -> bool {
        Kernel::wait_gone(self, obj, id)
    }
    fn exists(&self, obj: ids::Object, id: u32) -> bool {
        Kernel::exists(self, obj, id)
    }
    fn remove_maps(&self, dir: &Path) {
        Kernel::remove_maps(self, dir)
    }
    fn attach(
        &self,
        kind: ProgramKind,
        prog_pin: &Path,
        spec: &AttachSpec,
        link_pin: &Path,
        tcx_order: Option<TcxAnchor>,
        xdp_mode: Option<&str>,
    ) -> Result<Attached> {
        Kernel::attach(self, kind, prog_pin, spec, link_pin, tcx_order, xdp_mode)
    }
    fn detach(&self, link_pin: &Path) -> Result<Option<u32>> {
        Kernel::detach(self, link_pin)
    }
    fn check_interface(&self, hook: &NetHook) -> Result<u32> {
        Kernel::check_interface(self, hook)
    }
    fn link_id(&self, pin: &Path) -> Option<u32> {
        Kernel::link_id(self, pin)
    }
    fn load_dispatcher(
        &self,
        kind: HookKind,
        config: Vec<u8>,
        pin: &Path,
        frags: bool,
    ) -> Result<u32> {
        Kernel::load_dispatcher(self, kind, config, pin, frags)
    }
    fn install_xdp(
        &self,
        hook: &NetHook,
        dispatcher: &Path,
        hook_link: &Path,
        xdp_mode: Option<&str>,
    ) -> Result<Attached> {
        Kernel::install_xdp(self, hook, dispatcher, hook_link, xdp_mode)
    }
    fn install_tc(
        &self,
        hook: &NetHook,
        prog: &Path,
        existing: Option<TcFilter>,
    ) -> Result<(TcFilter, bool)> {
        Kernel::install_tc(self, hook, prog, existing)
    }
    fn install_tc_link(&self, hook: &NetHook, prog: &Path, hook_link: &Path) -> Result<()> {
        Kernel::install_tc_link(self, hook, prog, hook_link)
    }
    fn remove_tc(&self, hook: &NetHook, f: TcFilter) -> Result<()> {
        Kernel::remove_tc(self, hook, f)
    }
    fn ext_target(&self, kind: HookKind) -> Result<PathBuf> {
        Kernel::ext_target(self, kind)
    }
    fn load_extension(
        &self,
        bytes: Vec<u8>,
        plan: LoadPlan,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        pin: &Path,
    ) -> Result<u32> {
        Kernel::load_extension(self, bytes, plan, kind, dispatcher, slot, pin)
    }
    fn attach_extension(
        &self,
        ext: &Path,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        link_pin: &Path,
    ) -> Result<Attached> {
        Kernel::attach_extension(self, ext, kind, dispatcher, slot, link_pin)
    }
}
