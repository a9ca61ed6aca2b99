//! The program kinds bpfman loads: the one table that says, for each kind, its name, its
//! `bpfman.v1` program type, the kernel's `bpf_prog_type`, what it needs at load time and
//! which attachments fit it. Everything else (the CLI's parser, the server's translation,
//! the image labels, the kernel module's section check) asks this table.

use std::fmt;
use std::str::FromStr;

use bpfman_api::v1::BpfmanProgramType as V1;
use serde::{Deserialize, Serialize};

use crate::{AttachSpec, Invalid, KernelFeature};

/// The kinds of program bpfman loads, named as the kernel and upstream bpfman name them.
/// The retprobe flavours are distinct kinds here because the ELF section decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramKind {
    Xdp,
    Tc,
    Tcx,
    Tracepoint,
    Kprobe,
    Kretprobe,
    Uprobe,
    Uretprobe,
    Fentry,
    Fexit,
    Lsm,
}

/// The kernel's `enum bpf_prog_type` for the kinds bpfman loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelProgType {
    Kprobe = 2,
    SchedCls = 3,
    Tracepoint = 5,
    Xdp = 6,
    Tracing = 26,
    Lsm = 29,
}

/// One row of the table.
struct Row {
    kind: ProgramKind,
    name: &'static str,
    v1: V1,
    kernel: KernelProgType,
    /// The kind of the other flavour of the same section family (entry/return), if any.
    family: &'static [ProgramKind],
    /// The kernel feature (`bpfman system info`) it needs beyond BPF itself.
    feature: Option<KernelFeature>,
    /// What the load-time target is called (kind needs one iff Some): words, placeholder.
    attach_fn: Option<(&'static str, &'static str)>,
}

use ProgramKind as K;

const KERNEL_FN: Option<(&str, &str)> = Some(("kernel function", "FUNCTION"));

const TABLE: [Row; 11] = [
    row(
        K::Xdp,
        "xdp",
        V1::Xdp,
        KernelProgType::Xdp,
        &[K::Xdp],
        None,
        None,
    ),
    row(
        K::Tc,
        "tc",
        V1::Tc,
        KernelProgType::SchedCls,
        &[K::Tc, K::Tcx],
        None,
        None,
    ),
    row(
        K::Tcx,
        "tcx",
        V1::Tcx,
        KernelProgType::SchedCls,
        &[K::Tc, K::Tcx],
        None,
        None,
    ),
    row(
        K::Tracepoint,
        "tracepoint",
        V1::Tracepoint,
        KernelProgType::Tracepoint,
        &[K::Tracepoint],
        None,
        None,
    ),
    row(
        K::Kprobe,
        "kprobe",
        V1::Kprobe,
        KernelProgType::Kprobe,
        &[K::Kprobe, K::Kretprobe],
        None,
        None,
    ),
    row(
        K::Kretprobe,
        "kretprobe",
        V1::Kprobe,
        KernelProgType::Kprobe,
        &[K::Kprobe, K::Kretprobe],
        None,
        None,
    ),
    row(
        K::Uprobe,
        "uprobe",
        V1::Uprobe,
        KernelProgType::Kprobe,
        &[K::Uprobe, K::Uretprobe],
        None,
        None,
    ),
    row(
        K::Uretprobe,
        "uretprobe",
        V1::Uprobe,
        KernelProgType::Kprobe,
        &[K::Uprobe, K::Uretprobe],
        None,
        None,
    ),
    row(
        K::Fentry,
        "fentry",
        V1::Fentry,
        KernelProgType::Tracing,
        &[K::Fentry],
        Some(KernelFeature::Fentry),
        KERNEL_FN,
    ),
    row(
        K::Fexit,
        "fexit",
        V1::Fexit,
        KernelProgType::Tracing,
        &[K::Fexit],
        Some(KernelFeature::Fentry),
        KERNEL_FN,
    ),
    row(
        K::Lsm,
        "lsm",
        V1::Lsm,
        KernelProgType::Lsm,
        &[K::Lsm],
        Some(KernelFeature::Lsm),
        Some(("LSM hook (e.g. file_open)", "HOOK")),
    ),
];

#[allow(clippy::too_many_arguments)]
const fn row(
    kind: ProgramKind,
    name: &'static str,
    v1: V1,
    kernel: KernelProgType,
    family: &'static [ProgramKind],
    feature: Option<KernelFeature>,
    attach_fn: Option<(&'static str, &'static str)>,
) -> Row {
    Row {
        kind,
        name,
        v1,
        kernel,
        family,
        feature,
        attach_fn,
    }
}

impl ProgramKind {
    pub const ALL: [ProgramKind; 11] = [
        K::Xdp,
        K::Tc,
        K::Tcx,
        K::Tracepoint,
        K::Kprobe,
        K::Kretprobe,
        K::Uprobe,
        K::Uretprobe,
        K::Fentry,
        K::Fexit,
        K::Lsm,
    ];

    fn row(self) -> &'static Row {
        // TABLE is in the order of the enum (checked by a test).
        let r = &TABLE[self as usize];
        debug_assert_eq!(r.kind, self);
        r
    }

    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The `bpfman.v1` program type (kprobe and kretprobe share one, as upstream's do).
    pub fn v1_type(self) -> V1 {
        self.row().v1
    }

    /// The kind a `bpfman.v1` program type number asks for (the entry flavour; the ELF
    /// section may make it the return one).
    pub fn from_v1(t: i32) -> Result<Self, Invalid> {
        let v = V1::try_from(t).map_err(|_| Invalid(format!("unknown program type {t}")))?;
        Self::ALL
            .into_iter()
            .find(|k| k.v1_type() == v)
            .ok_or_else(|| Invalid(format!("unknown program type {t}")))
    }

    /// The kernel's `bpf_prog_type`.
    pub fn kernel_type(self) -> KernelProgType {
        self.row().kernel
    }

    /// Whether a program of this kind may be loaded from a function whose ELF section
    /// makes it `section`: the same kind, or the other flavour of the same family (a
    /// kprobe request takes a kretprobe section; tc and tcx share the classifier section).
    pub fn fits_section(self, section: ProgramKind) -> bool {
        self.row().family.contains(&section)
    }

    /// Whether this kind is finer than the kernel's type (kretprobe vs kprobe, tc vs tcx):
    /// a listing filtered by it must look at bpfman's record, not the kernel's type.
    pub fn finer_than_kernel(self) -> bool {
        Self::ALL
            .into_iter()
            .any(|k| k != self && k.kernel_type() == self.kernel_type())
    }

    /// Whether the program needs a target at load time: the kernel function of
    /// fentry/fexit, the hook of LSM (without its `bpf_lsm_` prefix, e.g. `file_open`).
    pub fn needs_attach_fn(self) -> bool {
        self.row().attach_fn.is_some()
    }

    /// What the load-time target is called, in words and as the CLI's placeholder.
    pub fn attach_fn_words(self) -> (&'static str, &'static str) {
        self.row()
            .attach_fn
            .unwrap_or(("kernel function", "FUNCTION"))
    }

    /// The kernel feature (`bpfman system info`) loading a program of this kind needs
    /// beyond BPF itself.
    pub fn feature(self) -> Option<KernelFeature> {
        self.row().feature
    }

    /// Whether a program of this kind can be attached the way `attach` asks.
    pub fn accepts(self, attach: &AttachSpec) -> bool {
        matches!(
            (self, attach),
            (K::Xdp, AttachSpec::Xdp(_))
                | (K::Tc | K::Tcx, AttachSpec::Tc(_))
                | (K::Tc | K::Tcx, AttachSpec::Tcx(_))
                | (K::Tracepoint, AttachSpec::Tracepoint { .. })
                | (K::Kprobe | K::Kretprobe, AttachSpec::Kprobe { .. })
                | (K::Uprobe | K::Uretprobe, AttachSpec::Uprobe { .. })
                | (K::Fentry, AttachSpec::Fentry)
                | (K::Fexit, AttachSpec::Fexit)
                | (K::Lsm, AttachSpec::Lsm)
        )
    }

    /// The names, for messages that list what may be used.
    pub fn names() -> String {
        let n: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
        n.join(", ")
    }
}

impl KernelProgType {
    /// The kernel's `enum bpf_prog_type` names, by number, as `bpftool` prints them.
    const NAMES: [&'static str; 33] = [
        "unspec",
        "socket_filter",
        "kprobe",
        "sched_cls",
        "sched_act",
        "tracepoint",
        "xdp",
        "perf_event",
        "cgroup_skb",
        "cgroup_sock",
        "lwt_in",
        "lwt_out",
        "lwt_xmit",
        "sock_ops",
        "sk_skb",
        "cgroup_device",
        "sk_msg",
        "raw_tracepoint",
        "cgroup_sock_addr",
        "lwt_seg6local",
        "lirc_mode2",
        "sk_reuseport",
        "flow_dissector",
        "cgroup_sysctl",
        "raw_tracepoint_writable",
        "cgroup_sockopt",
        "tracing",
        "struct_ops",
        "ext",
        "lsm",
        "sk_lookup",
        "syscall",
        "netfilter",
    ];

    /// The kernel's name of program type number `t` ("unknown" past the table).
    pub fn name_of(t: u32) -> &'static str {
        Self::NAMES.get(t as usize).copied().unwrap_or("unknown")
    }

    /// The number of a program type named the kernel's way or bpfman's way.
    pub fn number_of(name: &str) -> Option<u32> {
        if let Ok(k) = name.parse::<ProgramKind>() {
            return Some(k.kernel_type() as u32);
        }
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|n| n as u32)
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProgramKind {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown program type '{s}': use one of {}",
                    Self::names()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order() {
        for (i, k) in ProgramKind::ALL.into_iter().enumerate() {
            assert_eq!(TABLE[i].kind, k);
            assert_eq!(k as usize, i);
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in ProgramKind::ALL {
            assert_eq!(k.as_str().parse::<ProgramKind>().ok(), Some(k));
            assert!(k.fits_section(k));
        }
        assert!("socket".parse::<ProgramKind>().is_err());
        assert_eq!(
            ProgramKind::from_v1(V1::Kprobe as i32),
            Ok(ProgramKind::Kprobe)
        );
        assert_eq!(ProgramKind::from_v1(V1::Lsm as i32), Ok(ProgramKind::Lsm));
        assert!(ProgramKind::from_v1(99).is_err());
    }

    #[test]
    fn families_and_kernel_types() {
        assert!(ProgramKind::Kprobe.fits_section(ProgramKind::Kretprobe));
        assert!(ProgramKind::Tcx.fits_section(ProgramKind::Tc));
        assert!(!ProgramKind::Kprobe.fits_section(ProgramKind::Uprobe));
        assert!(!ProgramKind::Fentry.fits_section(ProgramKind::Fexit));
        assert!(ProgramKind::Kretprobe.finer_than_kernel());
        assert!(!ProgramKind::Xdp.finer_than_kernel());
        assert!(!ProgramKind::Lsm.finer_than_kernel());
        assert_eq!(KernelProgType::number_of("sched_cls"), Some(3));
        assert_eq!(KernelProgType::number_of("uretprobe"), Some(2));
        assert_eq!(KernelProgType::number_of("netfilter"), Some(32));
        assert_eq!(KernelProgType::name_of(29), "lsm");
        assert_eq!(KernelProgType::number_of("fexit"), Some(26));
    }
}
