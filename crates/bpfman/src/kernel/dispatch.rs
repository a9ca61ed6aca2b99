//! Kernel side of dispatchers: load a dispatcher with its config, load a program as an
//! extension of one of its slots, attach extensions into a (new) dispatcher, and put a
//! dispatcher on an interface or swap it in atomically (bpf_link_update).

use std::fs;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Extension, ProgramFd, Xdp};
use aya::{Ebpf, EbpfLoader};

use super::{Attached, Kernel, LoadPlan, chain, ifindex, kerr, netns, pin_taken};
use crate::error::{Error, Result};
use crate::model::NetHook;

static XDP_DISPATCHER: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_dispatcher.bpf.o"));

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
    /// Loads an XDP dispatcher whose `.rodata` config is `config` and pins it at `pin`.
    pub fn load_xdp_dispatcher(&self, config: Vec<u8>, pin: &Path) -> Result<u32> {
        let pin = pin.to_path_buf();
        self.workers
            .load(move || -> Result<u32> {
                let mut ebpf: Ebpf = EbpfLoader::new()
                    .btf(None)
                    .override_global("conf", config.as_slice(), true)
                    .load(XDP_DISPATCHER)
                    .map_err(|e| {
                        Error::kernel(format!("loading the XDP dispatcher: {}", chain(&e)))
                    })?;
                let p: &mut Xdp = ebpf
                    .program_mut("xdp_dispatcher")
                    .ok_or_else(|| Error::internal("xdp_dispatcher missing from its object"))?
                    .try_into()
                    .map_err(|e| kerr("the XDP dispatcher", e))?;
                p.load()
                    .map_err(|e| kerr("loading the XDP dispatcher", e))?;
                let id = p.info().map_err(|e| kerr("dispatcher info", e))?.id();
                if let Some(dir) = pin.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
                }
                p.pin(&pin)
                    .map_err(|e| kerr(format!("pinning the dispatcher at {}", pin.display()), e))?;
                Ok(id)
            })
            .ok_or_else(|| Error::internal("the loader thread is gone"))?
    }

    /// Loads program `plan.programs[0]` of `bytes` as an extension (freplace) of slot
    /// `slot` of the dispatcher pinned at `dispatcher`, with the plan's globals and
    /// shared maps, and pins it at `pin`. Returns its program id.
    pub fn load_extension(
        &self,
        bytes: Vec<u8>,
        plan: LoadPlan,
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
                let target = xdp_fd(&dispatcher)?;
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
            .ok_or_else(|| Error::internal("the loader thread is gone"))?
    }

    /// Attaches the extension pinned at `ext` into `slot` of the dispatcher pinned at
    /// `dispatcher`, pinning the freplace link at `link_pin`.
    pub fn attach_extension(
        &self,
        ext: &Path,
        dispatcher: &Path,
        slot: &str,
        link_pin: &Path,
    ) -> Result<Attached> {
        let what = format!("attaching extension {} into {slot}", ext.display());
        let target = xdp_fd(dispatcher)?;
        let mut p = Extension::from_pin(ext).map_err(|e| kerr(&what, e))?;
        let id = p
            .attach_to_program(&target, slot)
            .map_err(|e| kerr(&what, e))?;
        if let Some(dir) = link_pin.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        }
        pin_taken(p.take_link(id), &what, link_pin, None)
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
            let ifindex = ifindex(&hook.iface)?;
            let mode = super::xdp_mode_of(xdp_mode)?;
            let mut p = Xdp::from_pin(dispatcher, aya_obj::programs::XdpAttachType::Interface)
                .map_err(|e| kerr("opening the dispatcher", e))?;
            if hook_link.exists() {
                let link: FdLink = PinnedLink::from_pin(hook_link)
                    .map_err(|e| kerr(format!("opening {}", hook_link.display()), e))?
                    .into();
                let link = XdpLink::try_from(link)
                    .map_err(|e| kerr("the interface's link is not an XDP link", e))?;
                let id = p
                    .attach_to_link(link)
                    .map_err(|e| kerr(format!("swapping the dispatcher on {}", hook.iface), e))?;
                // The pin keeps the link; drop our fd.
                drop(p.take_link(id));
                Ok(Attached {
                    kernel_link_id: 0,
                    ifindex: Some(ifindex),
                })
            } else {
                let id = p.attach(&hook.iface, mode).map_err(|e| {
                    if super::has_errno(&e, libc::EBUSY) || super::has_errno(&e, libc::EEXIST) {
                        Error::exists(format!(
                            "interface {} already has an XDP program that bpfman did not attach; \
                             remove it first (ip link set dev {} xdp off)",
                            hook.iface, hook.iface
                        ))
                    } else {
                        kerr(format!("attaching the dispatcher to {}", hook.iface), e)
                    }
                })?;
                if let Some(dir) = hook_link.parent() {
                    fs::create_dir_all(dir)
                        .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
                }
                pin_taken(
                    p.take_link(id),
                    "attaching the dispatcher",
                    hook_link,
                    Some(ifindex),
                )
            }
        })
    }

    /// The dispatcher every extension is loaded against (its `prog0` slot) before it is
    /// attached into the slots of real dispatchers; loaded once, kept pinned, never
    /// attached anywhere. All its slots are enabled so none is pruned by the verifier
    /// (aya only keeps functions the program reaches).
    pub fn ext_target(&self) -> Result<PathBuf> {
        use crate::dispatcher::{MAX_PROGRAMS, SlotConfig, xdp_config, xdp_mask};
        let pin = self.bpffs().join("dispatchers").join("ext-target");
        if !pin.exists() {
            let slot = SlotConfig {
                chain_call_actions: xdp_mask(&[])?,
                run_prio: 0,
                flags: 0,
            };
            self.load_xdp_dispatcher(xdp_config(&[slot; MAX_PROGRAMS], false)?, &pin)?;
        }
        Ok(pin)
    }

    /// The slot function extensions are loaded against in [`Kernel::ext_target`].
    pub const EXT_TARGET_SLOT: &'static str = "prog0";

    /// Where a hook's dispatcher state lives on bpffs.
    pub fn dispatcher_dir(&self, hook_key: &str) -> PathBuf {
        self.bpffs()
            .join("dispatchers")
            .join(hook_key.replace('/', "_"))
    }
}
