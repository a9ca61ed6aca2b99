//! Kernel side of dispatchers: load a dispatcher with its config, load a program as an
//! extension of one of its slots, attach extensions into a (new) dispatcher, and put a
//! dispatcher on an interface or swap it in atomically (bpf_link_update).

use std::fs;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, Link as _, PinnedLink};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::xdp::XdpLink;
use aya::programs::{Extension, ProgramFd, SchedClassifier, TcAttachType, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::{Attached, Kernel, LoadPlan, chain, ifindex, kerr, netns, pin_taken};
use crate::error::{Error, Result};
use crate::model::{HookKind, NetHook, TcFilter};

static XDP_DISPATCHER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_dispatcher.bpf.o"));
static TC_DISPATCHER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_dispatcher.bpf.o"));

/// The tc filter priority bpfman's classic (netlink) TC attachments use.
pub const TC_FILTER_PRIORITY: u16 = 50;
/// And the handle: fixed, so that where a new filter will be is known (and recorded)
/// before it is made, and a crash right after making it leaves nothing unknown.
pub const TC_FILTER_HANDLE: u32 = 0xb9f;

impl TcFilter {
    /// Where bpfman puts a hook's classic TC filter.
    pub const BPFMAN: TcFilter = TcFilter {
        priority: TC_FILTER_PRIORITY,
        handle: TC_FILTER_HANDLE,
    };
}

fn tc_attach_type(h: &NetHook) -> TcAttachType {
    match h.direction {
        Some(crate::model::Direction::Egress) => TcAttachType::Egress,
        _ => TcAttachType::Ingress,
    }
}

fn dispatcher_fd(kind: HookKind, pin: &Path) -> Result<ProgramFd> {
    match kind {
        HookKind::Xdp => xdp_fd(pin),
        HookKind::Tc => {
            let p = SchedClassifier::from_pin(pin)
                .map_err(|e| kerr(format!("opening dispatcher {}", pin.display()), e))?;
            p.fd()
                .map_err(|e| kerr("dispatcher fd", e))?
                .try_clone()
                .map_err(|e| Error::internal(format!("dup dispatcher fd: {e}")))
        }
    }
}

fn xdp_fd(pin: &Path) -> Result<ProgramFd> {
    let p = Xdp::from_pin(pin, aya_obj::programs::XdpAttachType::Interface)
        .map_err(|e| kerr(format!("opening dispatcher {}", pin.display()), e))?;
    let fd = p
        .fd()
        .map_err(|e| kerr("dispatcher fd", e))?
        .try_clone()
        .map_err(|e| Error::internal(format!("dup dispatcher fd: {e}")))?;
    Ok(fd)
}

impl Kernel {
    /// Loads a dispatcher of `kind` whose `.rodata` config is `config`, pinned at `pin`.
    /// `frags`: the XDP dispatcher is loaded with BPF_F_XDP_HAS_FRAGS (multi-buffer).
    pub fn load_dispatcher(
        &self,
        kind: HookKind,
        config: Vec<u8>,
        pin: &Path,
        frags: bool,
    ) -> Result<u32> {
        let pin = pin.to_path_buf();
        self.workers
            .load(move || -> Result<u32> {
                let (object, name) = match (kind, frags) {
                    (HookKind::Xdp, false) => (XDP_DISPATCHER, "xdp_dispatcher"),
                    (HookKind::Xdp, true) => (XDP_DISPATCHER, "xdp_dispatcher_frags"),
                    (HookKind::Tc, _) => (TC_DISPATCHER, "tc_dispatcher"),
                };
                let what = format!("loading the {} dispatcher", kind.as_str());
                let mut ebpf: Ebpf = EbpfLoader::new()
                    .btf(None)
                    .override_global("conf", config.as_slice(), true)
                    .load(object)
                    .map_err(|e| Error::kernel(format!("{what}: {}", chain(&e))))?;
                let prog = ebpf
                    .program_mut(name)
                    .ok_or_else(|| Error::internal(format!("{name} missing from its object")))?;
                let (id, pinned) = match kind {
                    HookKind::Xdp => {
                        let p: &mut Xdp = prog.try_into().map_err(|e| kerr(&what, e))?;
                        p.load().map_err(|e| kerr(&what, e))?;
                        let id = p.info().map_err(|e| kerr("dispatcher info", e))?.id();
                        (id, p.pin(&pin_parent(&pin)?))
                    }
                    HookKind::Tc => {
                        let p: &mut SchedClassifier =
                            prog.try_into().map_err(|e| kerr(&what, e))?;
                        p.load().map_err(|e| kerr(&what, e))?;
                        let id = p.info().map_err(|e| kerr("dispatcher info", e))?.id();
                        (id, p.pin(&pin_parent(&pin)?))
                    }
                };
                pinned
                    .map_err(|e| kerr(format!("pinning the dispatcher at {}", pin.display()), e))?;
                Ok(id)
            })
            .ok_or_else(|| Error::internal("the loader failed (see the daemon log)"))?
    }

    /// Puts the program pinned at `prog` on the hook as a classic TC filter (clsact
    /// qdisc, direct action): the first time as a new filter, afterwards by replacing
    /// the program of the existing filter in place (the kernel swaps it under RCU, so
    /// no packet misses the filter). If the existing filter is gone (its qdisc deleted
    /// by another tool, or a crash mid-detach), it is made again. Returns where the
    /// filter is and whether it had to be made again.
    pub fn install_tc(
        &self,
        hook: &NetHook,
        prog: &Path,
        existing: Option<TcFilter>,
    ) -> Result<(TcFilter, bool)> {
        match (self.place_tc(hook, prog, existing), existing) {
            (Err(_), Some(_)) => Ok((self.place_tc(hook, prog, None)?, true)),
            (r, _) => Ok((r?, false)),
        }
    }

    fn place_tc(
        &self,
        hook: &NetHook,
        prog: &Path,
        existing: Option<TcFilter>,
    ) -> Result<TcFilter> {
        netns::within(hook.netns.as_deref(), || {
            ifindex(&hook.iface)?;
            let at = tc_attach_type(hook);
            if let Err(e) = aya::programs::tc::qdisc_add_clsact(&hook.iface)
                && !clsact_exists(&e)
            {
                return Err(kerr(
                    format!("adding the clsact qdisc to {}", hook.iface),
                    e,
                ));
            }
            let mut p = SchedClassifier::from_pin(prog)
                .map_err(|e| kerr(format!("opening {}", prog.display()), e))?;
            let what = format!("attaching to {} {}", hook.iface, at_name(at));
            let id = match existing {
                Some(f) => {
                    let link = SchedClassifierLink::attached(
                        &hook.iface,
                        at,
                        f.priority,
                        TcHandle::from(f.handle),
                        None,
                    )
                    .map_err(|e| Error::internal(format!("{what}: {e}")))?;
                    p.attach_to_link(link).map_err(|e| kerr(&what, e))?
                }
                None => p
                    .attach_with_options(
                        &hook.iface,
                        at,
                        TcAttachOptions::Netlink(NlOptions {
                            priority: TC_FILTER_PRIORITY,
                            handle: TcHandle::from(TC_FILTER_HANDLE),
                            ..Default::default()
                        }),
                    )
                    .map_err(|e| kerr(&what, e))?,
            };
            let link = p.take_link(id).map_err(|e| kerr(&what, e))?;
            let f = TcFilter {
                priority: link.priority().map_err(|e| kerr(&what, e))?,
                handle: link.handle().map_err(|e| kerr(&what, e))?.into(),
            };
            // The filter stays; dropping aya's handle would remove it.
            std::mem::forget(link);
            Ok(f)
        })
    }

    /// Puts the program pinned at `prog` on a TC hook through a TCX link pinned at
    /// `hook_link`: the first time a new link, last on the hook (after every `tcx`
    /// program, as classic TC runs after TCX); afterwards by replacing the link's program
    /// (BPF_LINK_UPDATE), which keeps its place in the list and never leaves the hook
    /// without it.
    pub fn install_tc_link(&self, hook: &NetHook, prog: &Path, hook_link: &Path) -> Result<()> {
        netns::within(hook.netns.as_deref(), || {
            let ifindex = ifindex(&hook.iface)?;
            let p = SchedClassifier::from_pin(prog)
                .map_err(|e| kerr(format!("opening {}", prog.display()), e))?;
            let fd = p.fd().map_err(|e| kerr("dispatcher fd", e))?;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd));
            let what = format!(
                "attaching to {} {} through TCX",
                hook.iface,
                at_name(tc_attach_type(hook))
            );
            if hook_link.exists() {
                let link = super::tcx::obj_get(hook_link).map_err(|e| {
                    Error::kernel(format!("{what}: opening {}: {e}", hook_link.display()))
                })?;
                super::tcx::link_update(&link, raw)
                    .map_err(|e| Error::kernel(format!("{what}: BPF_LINK_UPDATE: {e}")))?;
            } else {
                let link =
                    super::tcx_link_create(hook, ifindex, raw, super::TcxAnchor::Last, &what)?;
                super::pin_tcx_link(&link, hook_link)?;
            }
            Ok(())
        })
    }

    /// The kernel id of the bpf_link pinned at `pin`.
    pub fn link_id(&self, pin: &Path) -> Option<u32> {
        super::pinned_link_id(pin)
    }

    /// Removes a classic TC filter bpfman installed (gone already is fine).
    pub fn remove_tc(&self, hook: &NetHook, f: TcFilter) -> Result<()> {
        netns::within(hook.netns.as_deref(), || {
            match ifindex(&hook.iface) {
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound => {
                    return Ok(()); // the interface is gone, and its filters with it
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            let at = tc_attach_type(hook);
            let link = SchedClassifierLink::attached(
                &hook.iface,
                at,
                f.priority,
                TcHandle::from(f.handle),
                None,
            )
            .map_err(|e| Error::internal(format!("removing the tc filter: {e}")))?;
            match link.detach() {
                Ok(()) => Ok(()),
                Err(e) if super::has_errno(&e, libc::ENOENT) => Ok(()),
                Err(e) => Err(kerr(format!("removing the tc filter on {}", hook.iface), e)),
            }
        })
    }

    /// Loads program `plan.programs[0]` of `bytes` as an extension (freplace) of slot
    /// `slot` of the dispatcher pinned at `dispatcher`, with the plan's globals and
    /// shared maps, and pins it at `pin`. Returns its program id.
    pub fn load_extension(
        &self,
        bytes: Vec<u8>,
        plan: LoadPlan,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        pin: &Path,
    ) -> Result<u32> {
        let (dispatcher, pin, slot) = (
            dispatcher.to_path_buf(),
            pin.to_path_buf(),
            slot.to_string(),
        );
        self.workers
            .load(move || -> Result<u32> {
                let spec = plan
                    .programs
                    .first()
                    .ok_or_else(|| Error::internal("extension load names no program"))?;
                let mut loader = EbpfLoader::new();
                loader.btf(None).extension(&spec.name);
                for (name, value) in &plan.global_data {
                    loader.override_global(name.as_str(), value.as_slice(), true);
                }
                if let Some((dir, names)) = &plan.shared_maps {
                    for name in names {
                        loader.map_pin_path(name.as_str(), dir.join(name));
                    }
                }
                let mut ebpf = loader
                    .load(&bytes)
                    .map_err(|e| Error::kernel(format!("loading the object: {}", chain(&e))))?;
                let target = dispatcher_fd(kind, &dispatcher)?;
                let ext: &mut Extension = ebpf
                    .program_mut(&spec.name)
                    .ok_or_else(|| {
                        Error::invalid(format!("function '{}' is not in the object", spec.name))
                    })?
                    .try_into()
                    .map_err(|e| kerr(format!("'{}' as an extension", spec.name), e))?;
                ext.load(target, &slot).map_err(|e| {
                    kerr(
                        format!(
                            "loading '{}' as an extension of dispatcher slot {slot}",
                            spec.name
                        ),
                        e,
                    )
                })?;
                let id = ext.info().map_err(|e| kerr("extension info", e))?.id();
                if let Some(dir) = pin.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
                }
                ext.pin(&pin)
                    .map_err(|e| kerr(format!("pinning the extension at {}", pin.display()), e))?;
                Ok(id)
            })
            .ok_or_else(|| Error::internal("the loader failed (see the daemon log)"))?
    }

    /// Attaches the extension pinned at `ext` into `slot` of the dispatcher pinned at
    /// `dispatcher`, pinning the freplace link at `link_pin`.
    pub fn attach_extension(
        &self,
        ext: &Path,
        kind: HookKind,
        dispatcher: &Path,
        slot: &str,
        link_pin: &Path,
    ) -> Result<Attached> {
        let what = format!("attaching extension {} into {slot}", ext.display());
        let target = dispatcher_fd(kind, dispatcher)?;
        let mut p = Extension::from_pin(ext).map_err(|e| kerr(&what, e))?;
        let id = p
            .attach_to_program(&target, slot)
            .map_err(|e| kerr(&what, e))?;
        if let Some(dir) = link_pin.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        }
        pin_taken(p.take_link(id), &what, link_pin)
    }

    /// Puts the dispatcher pinned at `dispatcher` on the hook: the first time by a new
    /// XDP bpf_link pinned at `hook_link`; afterwards by updating that link in place, so
    /// the interface never runs without a dispatcher.
    pub fn install_xdp(
        &self,
        hook: &NetHook,
        dispatcher: &Path,
        hook_link: &Path,
        xdp_mode: Option<&str>,
    ) -> Result<Attached> {
        netns::within(hook.netns.as_deref(), || {
            ifindex(&hook.iface)?;
            let mode = super::xdp_mode_of(xdp_mode)?;
            let mut p = Xdp::from_pin(dispatcher, aya_obj::programs::XdpAttachType::Interface)
                .map_err(|e| kerr("opening the dispatcher", e))?;
            if hook_link.exists() {
                let link: FdLink = PinnedLink::from_pin(hook_link)
                    .map_err(|e| kerr(format!("opening {}", hook_link.display()), e))?
                    .into();
                let link = XdpLink::try_from(link)
                    .map_err(|e| kerr("the interface's link is not an XDP link", e))?;
                let id = p.attach_to_link(link).map_err(|e| {
                    if super::has_errno(&e, libc::EOPNOTSUPP) || super::has_errno(&e, libc::ERANGE)
                    {
                        frags_error(&hook.iface)
                    } else {
                        kerr(format!("swapping the dispatcher on {}", hook.iface), e)
                    }
                })?;
                // The pin keeps the link; drop our fd.
                drop(p.take_link(id));
                Ok(Attached { kernel_link_id: 0 })
            } else {
                let id = p.attach(&hook.iface, mode).map_err(|e| {
                    if super::has_errno(&e, libc::EBUSY) || super::has_errno(&e, libc::EEXIST) {
                        Error::exists(format!(
                            "interface {} already has an XDP program that bpfman did not attach; \
                             remove it first (ip link set dev {} xdp off)",
                            hook.iface, hook.iface
                        ))
                    } else if super::has_errno(&e, libc::EOPNOTSUPP)
                        || super::has_errno(&e, libc::ERANGE)
                    {
                        frags_error(&hook.iface)
                    } else {
                        kerr(format!("attaching the dispatcher to {}", hook.iface), e)
                    }
                })?;
                if let Some(dir) = hook_link.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
                }
                pin_taken(p.take_link(id), "attaching the dispatcher", hook_link)
            }
        })
    }

    /// The dispatcher every extension is loaded against (its `prog0` slot) before it is
    /// attached into the slots of real dispatchers; loaded once, kept pinned, never
    /// attached anywhere. All its slots are enabled so none is pruned by the verifier
    /// (aya only keeps functions the program reaches).
    pub fn ext_target(&self, kind: HookKind) -> Result<PathBuf> {
        use crate::dispatcher::{
            MAX_PROGRAMS, SlotConfig, tc_config, tc_mask, xdp_config, xdp_mask,
        };
        let pin = self.layout.ext_target(kind == HookKind::Tc);
        if !pin.exists() {
            let config = match kind {
                HookKind::Xdp => {
                    let slot = SlotConfig {
                        chain_call_actions: xdp_mask(&[])?,
                        run_prio: 0,
                        flags: 0,
                    };
                    xdp_config(&[slot; MAX_PROGRAMS], false)?
                }
                HookKind::Tc => {
                    let slot = SlotConfig {
                        chain_call_actions: tc_mask(&[])?,
                        run_prio: 0,
                        flags: 0,
                    };
                    tc_config(&[slot; MAX_PROGRAMS])?
                }
            };
            self.load_dispatcher(kind, config, &pin, false)?;
        }
        Ok(pin)
    }

    /// The slot function extensions are loaded against in [`Kernel::ext_target`].
    pub const EXT_TARGET_SLOT: &'static str = "prog0";
}

/// Whether adding the clsact qdisc failed only because it is there already.
fn clsact_exists(e: &aya::programs::tc::TcError) -> bool {
    use aya::programs::tc::TcError;
    match e {
        TcError::AlreadyAttached => true,
        TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::EEXIST),
        other => super::has_errno(other, libc::EEXIST),
    }
}

/// Creates the directory of `pin` and returns `pin`.
fn pin_parent(pin: &Path) -> Result<PathBuf> {
    if let Some(dir) = pin.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(pin.to_path_buf())
}

/// The driver refused a program without multi-buffer support (an MTU above a page).
fn frags_error(iface: &str) -> Error {
    Error::precondition(format!(
        "interface {iface} needs XDP programs that accept multi-buffer packets (its MTU is \
         larger than one page): every program on it must be built with SEC(\"xdp.frags\"); \
         the interface keeps running what it ran"
    ))
}

fn at_name(at: TcAttachType) -> &'static str {
    match at {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}
