//! The only module that talks to the kernel (through aya): load, pin, attach, detach,
//! unpin, inspect, and probe what the running kernel can do.
//!
//! (Past 800 lines on purpose: load, attach and inspect share private aya helpers, the
//! errno translations and the pinning, that splitting would make crate-visible; the
//! dispatcher, TCX, id and netns parts are already their own files.)
//!
//! Everything is pinned on bpffs so it keeps running when the daemon stops:
//! `prog_<id>` for programs, `links/<link id>` for links, `maps/<owner id>/<map>` for maps.

pub mod dispatch;
pub mod ids;
mod netns;
pub(crate) mod ops;
pub mod probe;
pub mod stats;
mod tcx;
mod workers;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::programs::links::{FdLink, LinkType, PinnedLink};
use aya::programs::tc::TcAttachType;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use aya::programs::{
    FEntry, FExit, KProbe, Lsm, ProbeKind, Program, ProgramInfo, SchedClassifier, TracePoint,
    UProbe, Xdp, XdpMode,
};
use aya::{Btf, EbpfLoader, Endianness};

use crate::bpffs::Bpffs;
use crate::error::{Error, Result};
use crate::model::{AttachSpec, Direction, NetHook, ProgramKind, ProgramSpec};

pub use netns::netns_id;

/// What `load` needs beyond the bytecode.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub programs: Vec<ProgramSpec>,
    pub global_data: BTreeMap<String, Vec<u8>>,
    /// Reuse the maps pinned in this directory (map sharing), by map name.
    pub shared_maps: Option<(PathBuf, Vec<String>)>,
}

/// A program the kernel accepted, pinned.
#[derive(Debug, Clone)]
pub struct LoadedProgram {
    pub id: u32,
    /// The kind as the ELF section says (kprobe or kretprobe, uprobe or uretprobe).
    pub kind: ProgramKind,
    pub tag: String,
    pub pin_path: PathBuf,
}

/// The result of a load: programs in request order, plus the maps pinned for them.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub programs: Vec<LoadedProgram>,
    /// Where the maps are pinned, and their names (empty when the maps are shared).
    pub map_dir: PathBuf,
    pub maps: Vec<String>,
}

/// What the kernel made of an attach.
#[derive(Debug, Clone)]
pub struct Attached {
    pub kernel_link_id: u32,
}

/// Facts about a loaded program, as the kernel reports them (`bpf_prog_info`).
#[derive(Debug, Clone, Default)]
pub struct KernelProgram {
    pub id: u32,
    pub name: String,
    pub program_type: u32,
    pub loaded_at: String,
    pub tag: String,
    pub gpl_compatible: bool,
    pub map_ids: Vec<u32>,
    pub btf_id: u32,
    pub bytes_xlated: u32,
    pub jited: bool,
    pub bytes_jited: u32,
    pub bytes_memlock: u32,
    pub verified_insns: u32,
}

/// Handle on the kernel for one bpffs layout.
pub struct Kernel {
    layout: Bpffs,
    workers: Arc<workers::Workers>,
}

/// The kernel's BTF, read in the host's mount view and parsed on the loader thread.
fn kernel_btf_bytes() -> Option<Vec<u8>> {
    fs::read("/sys/kernel/btf/vmlinux").ok()
}

#[cfg(target_env = "gnu")]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim_heap() {}

/// An error and its sources, so the kernel's errno is never lost behind aya's summary.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        cur = src.source();
    }
    s.trim_end_matches(". Verifier output: ").to_string()
}

fn kerr<E: std::error::Error + 'static>(what: impl std::fmt::Display, e: E) -> Error {
    Error::kernel(format!("{what}: {}", chain(&e))).with_errno(what.to_string(), errno_of(&e))
}

/// The errno an aya error chain carries, if any.
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(n) = io.raw_os_error()
        {
            return Some(n);
        }
        cur = err.source();
    }
    None
}

/// Whether an aya error chain carries this errno.
fn has_errno(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    errno_of(e) == Some(errno)
}

impl Kernel {
    /// Pins under `layout` (which must be on a mounted bpffs).
    pub fn new(layout: &Bpffs) -> Self {
        Self {
            layout: layout.clone(),
            workers: workers::Workers::start(2),
        }
    }

    /// Loads the named programs of one object (they share its maps and globals) and pins
    /// each. On any failure nothing stays behind: pins are removed and fds closed.
    /// `bytes` is the object (a `Vec<u8>`, or bytes whose memory a budget accounts for
    /// until the load is done with them).
    pub fn load<B>(&self, bytes: B, plan: LoadPlan) -> Result<Loaded>
    where
        B: std::ops::Deref<Target = [u8]> + Send + 'static,
    {
        // Kernel BTF only when the object needs it: CO-RE relocations, or a BTF target.
        let needs_btf = plan.programs.iter().any(|p| p.kind.needs_attach_fn())
            || aya_obj::Object::parse(&bytes)
                .map(|o| o.has_btf_relocations())
                .map_err(|e| Error::invalid(format!("parsing the ELF object: {e}")))?;
        let btf_bytes = if needs_btf { kernel_btf_bytes() } else { None };
        let layout = self.layout.clone();
        self.workers
            .load(move || {
                let btf = btf_bytes.and_then(|b| Btf::parse(&b, Endianness::default()).ok());
                let r = load_object(&layout, btf.as_ref(), &bytes, &plan);
                if btf.is_some() {
                    drop(btf);
                    trim_heap();
                }
                r
            })
            .ok_or_else(|| Error::internal("the loader failed (see the daemon log)"))?
    }
}

fn remove_maps(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

/// Loads the named programs of one object (they share its maps and globals) and pins
/// each. On any failure nothing stays behind: pins are removed and fds closed.
fn load_object(layout: &Bpffs, btf: Option<&Btf>, bytes: &[u8], plan: &LoadPlan) -> Result<Loaded> {
    let mut loader = EbpfLoader::new();
    loader.btf(btf);
    for (name, value) in &plan.global_data {
        loader.override_global(name.as_str(), value.as_slice(), true);
    }
    if let Some((dir, names)) = &plan.shared_maps {
        for name in names {
            loader.map_pin_path(name.as_str(), dir.join(name));
        }
    }
    let mut ebpf = loader.load(bytes).map_err(|e| {
        let msg = chain(&e);
        // A --global that names no symbol, or has the wrong size for it.
        let globals = matches!(
            &e,
            aya::EbpfError::ParseError(
                aya_obj::ParseError::SymbolNotFound { .. }
                    | aya_obj::ParseError::InvalidGlobalData { .. }
            )
        );
        if globals {
            Error::invalid(format!(
                "loading the object: {msg}; check the --global names and sizes"
            ))
        } else {
            Error::kernel(format!("loading the object: {msg}"))
        }
    })?;

    let available: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    let mut done: Vec<LoadedProgram> = Vec::new();
    let result = (|| -> Result<()> {
        for spec in &plan.programs {
            let prog = ebpf.program_mut(&spec.name).ok_or_else(|| {
                Error::invalid(format!(
                    "function '{}' is not a program in this ELF file; it has: {}",
                    spec.name,
                    available.join(", ")
                ))
            })?;
            let kind = load_one(btf, prog, spec)?;
            let info = prog
                .info()
                .map_err(|e| kerr(format!("reading info of '{}'", spec.name), e))?;
            let id = info.id();
            let pin = layout.program(id);
            prog.pin(&pin)
                .map_err(|e| kerr(format!("pinning '{}' at {}", spec.name, pin.display()), e))?;
            done.push(LoadedProgram {
                id,
                kind,
                tag: format!("{:016x}", info.tag()),
                pin_path: pin,
            });
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in &done {
            let _ = fs::remove_file(&p.pin_path);
        }
        return Err(e);
    }

    // Pin the object's maps (not its global data sections) under the first program,
    // unless they are another program's maps.
    let first = done.first().map(|p| p.id).unwrap_or(0);
    if let Some((dir, _)) = &plan.shared_maps {
        return Ok(Loaded {
            programs: done,
            map_dir: dir.clone(),
            maps: Vec::new(),
        });
    }
    let map_dir = layout.maps(first);
    let mut maps = Vec::new();
    let pinned = (|| -> Result<()> {
        fs::create_dir_all(&map_dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", map_dir.display())))?;
        for (name, map) in ebpf.maps() {
            if name.starts_with('.') {
                continue;
            }
            map.pin(map_dir.join(name))
                .map_err(|e| kerr(format!("pinning map '{name}'"), e))?;
            maps.push(name.to_string());
        }
        Ok(())
    })();
    if let Err(e) = pinned {
        remove_maps(&map_dir);
        for p in &done {
            let _ = fs::remove_file(&p.pin_path);
        }
        return Err(e);
    }
    Ok(Loaded {
        programs: done,
        map_dir,
        maps,
    })
}

fn load_one(btf: Option<&Btf>, prog: &mut Program, spec: &ProgramSpec) -> Result<ProgramKind> {
    // The ELF section decides entry or return probe (upstream's rule): a kprobe or uprobe
    // request takes either flavour; the flavour is reported back.
    let section = match &*prog {
        Program::Xdp(_) => Some(ProgramKind::Xdp),
        Program::SchedClassifier(_) => Some(ProgramKind::Tc),
        Program::TracePoint(_) => Some(ProgramKind::Tracepoint),
        Program::KProbe(p) if matches!(p.kind(), ProbeKind::Return) => Some(ProgramKind::Kretprobe),
        Program::KProbe(_) => Some(ProgramKind::Kprobe),
        Program::UProbe(p) if matches!(p.kind(), ProbeKind::Return) => Some(ProgramKind::Uretprobe),
        Program::UProbe(_) => Some(ProgramKind::Uprobe),
        Program::FEntry(_) => Some(ProgramKind::Fentry),
        Program::FExit(_) => Some(ProgramKind::Fexit),
        Program::Lsm(_) => Some(ProgramKind::Lsm),
        _ => None,
    };
    let actual = match section {
        Some(s) if spec.kind.fits_section(s) => {
            if matches!(s, ProgramKind::Tc) {
                spec.kind
            } else {
                s
            }
        }
        _ => {
            let section_kind = section.map_or("unsupported", ProgramKind::as_str);
            return Err(Error::invalid(format!(
                "function '{}' is a {section_kind} program (from its ELF section), not {}; \
                 use --programs {section_kind}:{}",
                spec.name, spec.kind, spec.name
            )));
        }
    };
    let what = format!("loading {} program '{}'", actual, spec.name);
    let r = match prog {
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        Program::KProbe(p) => p.load(),
        Program::UProbe(p) => p.load(),
        Program::FEntry(p) => {
            let f = attach_fn(spec)?;
            p.load(f, need_btf(btf)?)
        }
        Program::FExit(p) => {
            let f = attach_fn(spec)?;
            p.load(f, need_btf(btf)?)
        }
        Program::Lsm(p) => {
            let hook = attach_fn(spec)?;
            p.load(hook, need_btf(btf)?)
        }
        _ => return Err(Error::invalid(format!("{what}: unsupported program type"))),
    };
    r.map_err(|e| {
        if has_errno(&e, libc::EPERM) && spec.kind.needs_attach_fn() {
            Error::unsupported(format!(
                "{what}: the kernel refused with EPERM; this kernel does not allow {} \
                     programs (feature '{}'; see `bpfman system info`)",
                spec.kind,
                spec.kind.feature().map_or("bpf", |f| f.as_str())
            ))
        } else if has_errno(&e, libc::ESRCH) || has_errno(&e, libc::ENOENT) {
            Error::invalid(format!("{what}: {e}; is the target function name right?"))
        } else {
            kerr(&what, e)
        }
    })?;
    Ok(actual)
}

fn need_btf(btf: Option<&Btf>) -> Result<&Btf> {
    btf.ok_or_else(|| {
        Error::unsupported(
            "this kernel exposes no BTF at /sys/kernel/btf/vmlinux (needed by fentry/fexit)",
        )
    })
}

impl Kernel {
    /// Facts about a pinned program.
    pub fn pinned_info(&self, pin: &Path) -> Result<KernelProgram> {
        let info = ProgramInfo::from_pin(pin)
            .map_err(|e| kerr(format!("reading program pinned at {}", pin.display()), e))?;
        Ok(kernel_program(&info))
    }

    /// The program a pinned bpf_link runs (None: no such pin, or not a link).
    pub fn link_program_id(&self, pin: &Path) -> Option<u32> {
        let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
        link.info().ok().map(|i| i.program_id())
    }

    /// Every program loaded in the kernel, bpfman's or not.
    pub fn all_programs(&self) -> Vec<KernelProgram> {
        aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .map(|p| kernel_program(&p))
            .collect()
    }

    /// Removes a program's pin; the kernel frees it once nothing else holds it.
    pub fn unpin_program(&self, pin: &Path) -> Result<()> {
        match fs::remove_file(pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(format!(
                "removing pin {}: {e}",
                pin.display()
            ))),
        }
    }

    /// Waits (up to 5 s) until a program or link id no longer opens: what a client sees
    /// of a detach or unload is done when it returns. Past the limit (another process
    /// holds the object) it says so in the log and returns.
    /// True once it is gone; false when it is still there at the limit.
    pub fn wait_gone(&self, obj: ids::Object, id: u32) -> bool {
        match ids::wait_gone(obj, id, std::time::Duration::from_secs(5)) {
            Ok(waited) => {
                if waited > std::time::Duration::from_millis(100) {
                    tracing::info!(%obj, id, ?waited, "gone from the kernel after a wait");
                }
                true
            }
            Err(why) => {
                tracing::warn!("{why}");
                false
            }
        }
    }

    /// Whether a program or link id is in the kernel now (an error to ask: yes).
    pub fn exists(&self, obj: ids::Object, id: u32) -> bool {
        ids::opens(obj, id).unwrap_or(true)
    }

    /// Removes a map directory and its pins.
    pub fn remove_maps(&self, dir: &Path) {
        remove_maps(dir)
    }

    // Long on purpose: one arm per attach type, each the few aya calls and errno
    // translations of that type; splitting would only move the match elsewhere.
    /// Attaches a pinned program and pins the resulting link at `link_pin`.
    pub fn attach(
        &self,
        kind: ProgramKind,
        prog_pin: &Path,
        spec: &AttachSpec,
        link_pin: &Path,
        tcx_order: Option<TcxAnchor>,
        xdp_mode: Option<&str>,
    ) -> Result<Attached> {
        let what = format!("attaching {} program {}", kind, prog_pin.display());
        match spec {
            AttachSpec::Xdp(hook) => netns::within(hook.netns.as_deref(), || {
                // A clear "no such interface" before aya's own error.
                ifindex(&hook.iface)?;
                let mut p = Xdp::from_pin(prog_pin, aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|e| kerr(&what, e))?;
                let mode = xdp_mode_of(xdp_mode)?;
                let id = p.attach(&hook.iface, mode).map_err(|e| {
                    if has_errno(&e, libc::EBUSY) || has_errno(&e, libc::EEXIST) {
                        Error::exists(format!(
                            "interface {} already has an XDP program attached; detach it first \
                             (several programs on one interface need the dispatcher)",
                            hook.iface
                        ))
                    } else {
                        kerr(&what, e)
                    }
                })?;
                pin_taken(p.take_link(id), &what, link_pin)
            }),
            AttachSpec::Tc(hook) | AttachSpec::Tcx(hook) => {
                netns::within(hook.netns.as_deref(), || {
                    let ifindex = ifindex(&hook.iface)?;
                    let p = SchedClassifier::from_pin(prog_pin).map_err(|e| kerr(&what, e))?;
                    let prog_fd = p.fd().map_err(|e| kerr(&what, e))?;
                    let raw = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(prog_fd));
                    let link = tcx_link_create(
                        hook,
                        ifindex,
                        raw,
                        tcx_order.unwrap_or(TcxAnchor::Last),
                        &what,
                    )?;
                    let kernel_link_id = pin_tcx_link(&link, link_pin)?;
                    Ok(Attached { kernel_link_id })
                })
            }
            AttachSpec::Tracepoint { tracepoint } => {
                let (cat, name) = tracepoint.split_once('/').ok_or_else(|| {
                    Error::invalid(format!(
                        "tracepoint '{tracepoint}' must be CATEGORY/NAME, e.g. syscalls/sys_enter_openat"
                    ))
                })?;
                let mut p = TracePoint::from_pin(prog_pin).map_err(|e| kerr(&what, e))?;
                let id = p.attach(cat, name).map_err(|e| {
                    if has_errno(&e, libc::E2BIG) {
                        Error::precondition(format!(
                            "tracepoint '{tracepoint}' already runs the kernel's maximum of 64 \
                             BPF programs; detach some first"
                        ))
                    } else if has_errno(&e, libc::ENOENT) {
                        Error::not_found(format!(
                            "tracepoint '{tracepoint}' does not exist (see /sys/kernel/tracing/events/)"
                        ))
                    } else {
                        kerr(&what, e)
                    }
                })?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
            AttachSpec::Kprobe {
                fn_name, offset, ..
            } => {
                let pk = if kind == ProgramKind::Kretprobe {
                    ProbeKind::Return
                } else {
                    ProbeKind::Entry
                };
                let mut p = KProbe::from_pin(prog_pin, pk).map_err(|e| kerr(&what, e))?;
                let id = p.attach(fn_name, *offset).map_err(|e| {
                    if !probe::kprobes_supported() {
                        Error::unsupported(format!(
                            "{what}: this kernel has no kprobe support (feature 'kprobe': \
                             no kprobe PMU; CONFIG_KPROBES is off): {e}"
                        ))
                    } else if has_errno(&e, libc::ENOENT) || has_errno(&e, libc::EINVAL) {
                        Error::not_found(format!(
                            "{what}: cannot probe kernel function '{fn_name}': {e}"
                        ))
                    } else {
                        kerr(&what, e)
                    }
                })?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
            AttachSpec::Uprobe {
                fn_name,
                offset,
                target,
                pid,
                container_pid,
            } => {
                let pk = if kind == ProgramKind::Uretprobe {
                    ProbeKind::Return
                } else {
                    ProbeKind::Entry
                };
                // A container's files are reached through its root, which names the same
                // inode the container sees; uprobes bind to inodes.
                let target_path = match container_pid {
                    Some(cpid) => {
                        let t = target.trim_start_matches('/');
                        PathBuf::from(format!("/proc/{cpid}/root/{t}"))
                    }
                    None => PathBuf::from(target),
                };
                let scope = match pid {
                    Some(pid) => {
                        let pid = u32::try_from(*pid)
                            .ok()
                            .and_then(std::num::NonZeroU32::new)
                            .ok_or_else(|| Error::invalid(format!("invalid pid {pid}")))?;
                        UProbeScope::OneProcess(pid)
                    }
                    None => UProbeScope::AllProcesses,
                };
                let location = match fn_name.as_deref() {
                    Some(f) if *offset != 0 => UProbeAttachLocation::SymbolOffset(f, *offset),
                    Some(f) => UProbeAttachLocation::Symbol(f),
                    None => UProbeAttachLocation::AbsoluteOffset(*offset),
                };
                let mut p = UProbe::from_pin(prog_pin, pk).map_err(|e| kerr(&what, e))?;
                let id = p.attach(location, &target_path, scope).map_err(|e| {
                    use aya::programs::uprobe::UProbeError as U;
                    let msg = chain(&e);
                    let unresolved = match &e {
                        aya::programs::ProgramError::UProbeError(u) => match u {
                            U::SymbolError { .. } | U::InvalidTarget { .. } => true,
                            U::FileError { io_error, .. } => {
                                io_error.kind() == std::io::ErrorKind::NotFound
                            }
                            _ => false,
                        },
                        _ => has_errno(&e, libc::ENOENT),
                    };
                    if unresolved {
                        Error::not_found(format!(
                            "{what}: cannot resolve uprobe target {}{}: {msg}",
                            target_path.display(),
                            fn_name
                                .as_deref()
                                .map(|f| format!(":{f}"))
                                .unwrap_or_default()
                        ))
                    } else {
                        Error::kernel(format!("{what}: {msg}"))
                    }
                })?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
            AttachSpec::Fentry => {
                let mut p = FEntry::from_pin(prog_pin).map_err(|e| kerr(&what, e))?;
                let id = p.attach().map_err(|e| kerr(&what, e))?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
            AttachSpec::Fexit => {
                let mut p = FExit::from_pin(prog_pin).map_err(|e| kerr(&what, e))?;
                let id = p.attach().map_err(|e| kerr(&what, e))?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
            AttachSpec::Lsm => {
                let mut p = Lsm::from_pin(prog_pin).map_err(|e| kerr(&what, e))?;
                let id = p.attach().map_err(|e| kerr(&what, e))?;
                pin_taken(p.take_link(id), &what, link_pin)
            }
        }
    }

    /// Detaches a link by removing its pin (the daemon holds no other reference).
    /// Returns the kernel link id to wait for ([`Kernel::wait_gone`]) once the caller has
    /// let go of its locks: a perf-event link's close runs on a reaper.
    pub fn detach(&self, link_pin: &Path) -> Result<Option<u32>> {
        if !link_pin.exists() {
            return Ok(None);
        }
        match PinnedLink::from_pin(link_pin) {
            Ok(l) => {
                let link = l.unpin().map_err(|e| {
                    Error::internal(format!("unpinning {}: {e}", link_pin.display()))
                })?;
                // Perf-event links unregister at close and then wait out RCU grace
                // periods inside close(); let the reaper wait instead of the caller,
                // but reply only once the link's id is gone (it goes before the wait).
                let info = link.info().ok();
                let id = info.as_ref().map(|i| i.id());
                let perf = info
                    .and_then(|i| i.link_type().ok())
                    .is_some_and(|t| t == LinkType::PerfEvent);
                if perf {
                    self.workers.reap(Box::new(link));
                } else {
                    drop(link);
                }
                Ok(id)
            }
            Err(_) => fs::remove_file(link_pin)
                .map(|()| None)
                .map_err(|e| Error::internal(format!("removing {}: {e}", link_pin.display()))),
        }
    }

    /// Whether an interface exists (in the hook's network namespace).
    pub fn check_interface(&self, hook: &NetHook) -> Result<u32> {
        netns::within(hook.netns.as_deref(), || ifindex(&hook.iface))
    }
}

/// The programs on a TCX hook, in the order the kernel runs them (ids), with the hook's
/// revision. For checks and diagnostics.
pub fn tcx_programs(iface: &str, egress: bool) -> Result<(u64, Vec<u32>)> {
    let at = if egress {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    };
    let (rev, progs) = SchedClassifier::query_tcx(iface, at)
        .map_err(|e| kerr(format!("querying the TCX hook of {iface}"), e))?;
    Ok((rev, progs.iter().map(|p| p.id()).collect()))
}

/// Where a TCX program goes relative to what is already on the hook.
pub use tcx::Anchor as TcxAnchor;

/// Creates a TCX link for `prog_fd` on the hook (in the caller's namespace) at
/// `anchor`. The link goes where the daemon computed only if the hook is still at the
/// revision just read (expected_revision); if another tool changed it in between, the
/// kernel says ESTALE and the revision is read again.
pub(crate) fn tcx_link_create(
    hook: &NetHook,
    ifindex: u32,
    prog_fd: std::os::fd::RawFd,
    anchor: TcxAnchor,
    what: &str,
) -> Result<std::os::fd::OwnedFd> {
    let dir = match hook.direction.unwrap_or(Direction::Ingress) {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    };
    let mut tries = 0;
    let link = loop {
        let (revision, _) = SchedClassifier::query_tcx(&hook.iface, dir)
            .map_err(|e| kerr(format!("{what}: querying the TCX hook"), e))?;
        match tcx::link_create(
            prog_fd,
            ifindex,
            matches!(dir, TcAttachType::Egress),
            anchor,
            revision,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && tries < 5 => {
                tries += 1;
            }
            r => break r,
        }
    };
    link.map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(0);
        if errno == libc::EEXIST {
            Error::exists(format!(
                "this program is already attached to {} {}; a program can be on one TCX \
                 hook once",
                hook.iface,
                dir_name(hook)
            ))
        } else if errno == libc::EINVAL && !probe::tcx_supported() {
            Error::unsupported(format!("{what}: this kernel has no TCX (needs Linux 6.6)"))
        } else if errno == libc::ESTALE {
            Error::conflict(format!(
                "{what}: the hook kept changing under other tools (expected_revision \
                 mismatch); try again"
            ))
        } else if errno == libc::ENOENT {
            Error::conflict(format!(
                "{what}: the neighbouring program the order was computed from left the \
                 hook; try again"
            ))
        } else {
            Error::syscall(format!("{what}: the BPF_LINK_CREATE syscall returned"), e)
        }
    })
}

/// Pins a fresh TCX link at `pin` and returns its kernel link id.
pub(crate) fn pin_tcx_link(link: &std::os::fd::OwnedFd, pin: &Path) -> Result<u32> {
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
    }
    tcx::pin(link, pin)
        .map_err(|e| Error::internal(format!("pinning link at {}: {e}", pin.display())))?;
    Ok(pinned_link_id(pin).unwrap_or(0))
}

/// The kernel id of the bpf_link pinned at `pin` (None: no such pin, or not a link).
pub(crate) fn pinned_link_id(pin: &Path) -> Option<u32> {
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    link.info().ok().map(|i| i.id())
}

fn dir_name(h: &NetHook) -> &'static str {
    h.direction.unwrap_or(Direction::Ingress).as_str()
}

fn attach_fn(spec: &ProgramSpec) -> Result<&str> {
    let (what, arg) = spec.kind.attach_fn_words();
    spec.attach_fn.as_deref().ok_or_else(|| {
        Error::invalid(format!(
            "{} program '{}' needs the {what} to attach to: --programs {}:{}:{arg}",
            spec.kind, spec.name, spec.kind, spec.name
        ))
    })
}

/// Takes ownership of a fresh attachment as a bpf_link and pins it.
fn pin_taken<L, E>(
    taken: std::result::Result<L, aya::programs::ProgramError>,
    what: &str,
    pin: &Path,
) -> Result<Attached>
where
    L: TryInto<FdLink, Error = E>,
    E: std::error::Error + 'static,
{
    let link: FdLink = taken
        .map_err(|e| kerr(what, e))?
        .try_into()
        .map_err(|e| kerr(format!("{what}: not a bpf_link"), e))?;
    pin_link(link, pin)
}

fn pin_link(link: FdLink, pin: &Path) -> Result<Attached> {
    let kernel_link_id = link.info().map(|i| i.id()).unwrap_or(0);
    link.pin(pin)
        .map_err(|e| kerr(format!("pinning link at {}", pin.display()), e))?;
    Ok(Attached { kernel_link_id })
}

/// The XDP attach mode a config value names (`interfaces.<if>.xdp_mode`); `None`
/// lets the kernel choose.
pub fn xdp_mode_of(name: Option<&str>) -> Result<XdpMode> {
    match name {
        None => Ok(XdpMode::Default),
        Some("drv") => Ok(XdpMode::Driver),
        Some("skb") => Ok(XdpMode::Skb),
        Some("hw") => Ok(XdpMode::Hardware),
        Some(other) => Err(Error::invalid(format!(
            "config: xdp_mode = '{other}': use drv, skb or hw"
        ))),
    }
}

/// The index of an interface in the calling thread's network namespace. NotFound only
/// when the kernel's list of links has no such name; any other failure (no fd left, say)
/// is a kernel error, so nobody takes it for a deleted interface.
///
/// Looked up in the netlink link dump (`if_nameindex`), never by name ioctl: the kernel
/// answers an ioctl for an unknown name by loading a module of that name
/// (`request_module("netdev-%s")`, and `"%s"` itself with CAP_SYS_MODULE), which would let
/// a tenant make the daemon load kernel modules by naming them.
pub fn ifindex(iface: &str) -> Result<u32> {
    let gone = || {
        Error::not_found(format!(
            "interface '{iface}' does not exist (see `ip link`; use --netns for another network namespace)"
        ))
    };
    if iface.is_empty()
        || iface.len() >= libc::IFNAMSIZ
        || iface.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(gone());
    }
    // The kernel's dev_valid_name: no ':' (an alias suffix the kernel would cut off, so
    // "eth0:x" would pass a policy glob and land on eth0), no white space, not . or ..
    if iface == "."
        || iface == ".."
        || iface
            .bytes()
            .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(Error::invalid(format!(
            "'{}' is not an interface name (no ':', white space, control characters, '.' or '..')",
            iface.escape_debug()
        )));
    }
    // SAFETY: if_nameindex takes no arguments; the list is freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(Error::syscall(
            format!("looking up interface '{iface}' (netlink link dump)"),
            e,
        ));
    }
    let mut found = None;
    let mut i = 0;
    loop {
        // SAFETY: the list ends with an entry whose if_index is 0; we stop there.
        let entry = unsafe { &*list.add(i) };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        // SAFETY: if_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.if_name) };
        if name.to_bytes() == iface.as_bytes() {
            found = Some(entry.if_index);
            break;
        }
        i += 1;
    }
    // SAFETY: list came from if_nameindex and is freed once.
    unsafe { libc::if_freenameindex(list) };
    found.ok_or_else(gone)
}

/// The file offset of `symbol` in the ELF file `file` (a uprobe target opened by the
/// caller): found in the symbol table or the dynamic one, translated from its address
/// through the section that holds it, as the kernel's uprobe wants it. Reads only the
/// parts of the file it needs.
pub fn uprobe_symbol_offset(file: &std::fs::File, symbol: &str) -> Result<u64> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let cache = object::read::ReadCache::new(file);
    let obj = object::File::parse(&cache)
        .map_err(|e| Error::invalid(format!("not an ELF file this daemon can read: {e}")))?;
    let sym = obj
        .symbols()
        .chain(obj.dynamic_symbols())
        .find(|s| s.name().is_ok_and(|n| n == symbol) && s.address() != 0)
        .ok_or_else(|| {
            Error::not_found(format!(
                "symbol '{symbol}' is not in its symbol tables (a stripped binary? give --offset)"
            ))
        })?;
    let section = sym
        .section_index()
        .and_then(|i| obj.section_by_index(i).ok())
        .ok_or_else(|| Error::invalid(format!("symbol '{symbol}' is in no section")))?;
    let (file_off, _) = section.file_range().ok_or_else(|| {
        Error::invalid(format!(
            "symbol '{symbol}' is in a section with no file data"
        ))
    })?;
    sym.address()
        .checked_sub(section.address())
        .and_then(|d| d.checked_add(file_off))
        .ok_or_else(|| Error::invalid(format!("symbol '{symbol}' lies outside its section")))
}

fn kernel_program(info: &ProgramInfo) -> KernelProgram {
    KernelProgram {
        id: info.id(),
        name: info.name_as_str().unwrap_or("").to_string(),
        program_type: info.program_type() as u32,
        loaded_at: info
            .loaded_at()
            .map(crate::model::rfc3339)
            .unwrap_or_default(),
        tag: format!("{:016x}", info.tag()),
        gpl_compatible: info.gpl_compatible().unwrap_or(false),
        map_ids: info.map_ids().ok().flatten().unwrap_or_default(),
        btf_id: info.btf_id().unwrap_or(0),
        bytes_xlated: info.size_translated().unwrap_or(0),
        jited: info.size_jitted() > 0,
        bytes_jited: info.size_jitted(),
        bytes_memlock: info.memory_locked().unwrap_or(0),
        verified_insns: info.verified_instruction_count().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn interface_names_are_checked_before_the_kernel_sees_them() {
        // Loopback is index 1 in every network namespace.
        assert_eq!(ifindex("lo").ok(), Some(1));
        let kind = |n: &str| ifindex(n).err().map(|e| e.kind());
        assert_eq!(kind("bpfman-no-such0"), Some(ErrorKind::NotFound));
        // An alias suffix would be cut off by the kernel and land on "lo".
        assert_eq!(kind("lo:t1"), Some(ErrorKind::InvalidArgument));
        for bad in [".", "..", "lo x", "l\x1bo", "lo\t"] {
            assert_eq!(kind(bad), Some(ErrorKind::InvalidArgument), "{bad:?}");
        }
        for gone in ["", "a/b", "x234567890123456"] {
            assert_eq!(kind(gone), Some(ErrorKind::NotFound), "{gone:?}");
        }
    }
}
