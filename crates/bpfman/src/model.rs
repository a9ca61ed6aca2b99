//! The objects bpfman manages, as plain data: programs, links, attach points, owners.
//! The store persists them, the kernel module realises them, the manager owns the rules.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The kinds of program bpfman loads, named as the kernel and upstream bpfman name them.
/// The retprobe flavours are distinct kinds here because the ELF section decides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl ProgramKind {
    pub const ALL: [ProgramKind; 11] = [
        Self::Xdp,
        Self::Tc,
        Self::Tcx,
        Self::Tracepoint,
        Self::Kprobe,
        Self::Kretprobe,
        Self::Uprobe,
        Self::Uretprobe,
        Self::Fentry,
        Self::Fexit,
        Self::Lsm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
            Self::Tcx => "tcx",
            Self::Tracepoint => "tracepoint",
            Self::Kprobe => "kprobe",
            Self::Kretprobe => "kretprobe",
            Self::Uprobe => "uprobe",
            Self::Uretprobe => "uretprobe",
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Lsm => "lsm",
        }
    }

    /// Whether the program needs a target at load time: the kernel function of
    /// fentry/fexit, the hook of LSM (without its `bpf_lsm_` prefix, e.g. `file_open`).
    pub fn needs_attach_fn(self) -> bool {
        matches!(self, Self::Fentry | Self::Fexit | Self::Lsm)
    }

    /// What the load-time target is called, in words and as the CLI's placeholder.
    pub fn attach_fn_words(self) -> (&'static str, &'static str) {
        match self {
            Self::Lsm => ("LSM hook (e.g. file_open)", "HOOK"),
            _ => ("kernel function", "FUNCTION"),
        }
    }

    /// The kernel feature (`bpfman system info`) loading a program of this kind needs
    /// beyond BPF itself.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Fentry | Self::Fexit => Some("fentry"),
            Self::Lsm => Some("lsm"),
            _ => None,
        }
    }

    /// Whether a program of this kind can be attached the way `attach` asks.
    pub fn accepts(self, attach: &AttachSpec) -> bool {
        matches!(
            (self, attach),
            (Self::Xdp, AttachSpec::Xdp(_))
                | (Self::Tc | Self::Tcx, AttachSpec::Tc(_))
                | (Self::Tc | Self::Tcx, AttachSpec::Tcx(_))
                | (Self::Tracepoint, AttachSpec::Tracepoint { .. })
                | (Self::Kprobe | Self::Kretprobe, AttachSpec::Kprobe { .. })
                | (Self::Uprobe | Self::Uretprobe, AttachSpec::Uprobe { .. })
                | (Self::Fentry, AttachSpec::Fentry)
                | (Self::Fexit, AttachSpec::Fexit)
                | (Self::Lsm, AttachSpec::Lsm)
        )
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProgramKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown program type '{s}': use one of xdp, tc, tcx, tracepoint, kprobe, \
                     kretprobe, uprobe, uretprobe, fentry, fexit, lsm"
                ))
            })
    }
}

/// Who asked: taken from the kernel (SO_PEERCRED), never from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Caller {
    /// The daemon itself (reconciliation, internal work).
    pub fn daemon() -> Self {
        Self {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: std::process::id() as i32,
        }
    }
}

/// Where a program's bytecode came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bytecode {
    File(String),
    Image {
        url: String,
        pull_policy: i32,
        /// The digest the image resolved to when it was loaded (provenance).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

/// One program to load from an object: its function name, kind, and the fentry/fexit target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSpec {
    pub name: String,
    pub kind: ProgramKind,
    pub attach_fn: Option<String>,
}

/// A load request after translation from the API.
#[derive(Debug, Clone, Default)]
pub struct LoadRequest {
    pub bytecode: Option<Bytecode>,
    pub programs: Vec<ProgramSpec>,
    pub global_data: BTreeMap<String, Vec<u8>>,
    pub metadata: BTreeMap<String, String>,
    pub map_owner_id: Option<u32>,
    /// Registry credentials for an image (user, password); used once, never stored.
    pub registry_auth: Option<(String, String)>,
}

/// A loaded program as bpfman records it. `id` is the kernel's program id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub id: u32,
    pub name: String,
    pub kind: ProgramKind,
    pub bytecode: Bytecode,
    pub attach_fn: Option<String>,
    pub global_data: BTreeMap<String, Vec<u8>>,
    pub metadata: BTreeMap<String, String>,
    /// The program whose maps this one uses (None: it owns its maps).
    pub map_owner_id: Option<u32>,
    /// Directory on bpffs where the maps this program uses are pinned.
    pub map_pin_path: String,
    /// Names of the maps pinned in `map_pin_path` (owner only).
    pub maps: Vec<String>,
    pub pin_path: String,
    pub owner: Caller,
    pub created_at: String,
    /// Kernel tag (hex), to recognise the program after a restart.
    pub tag: String,
}

/// Direction on a TC/TCX hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl FromStr for Direction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ingress" => Ok(Self::Ingress),
            "egress" => Ok(Self::Egress),
            _ => Err(Error::invalid(format!(
                "unknown direction '{s}': use ingress or egress"
            ))),
        }
    }
}

/// A network hook: interface (by name, in an optional network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetHook {
    pub iface: String,
    pub priority: i32,
    #[serde(default)]
    pub proceed_on: Vec<i32>,
    pub netns: Option<String>,
    pub direction: Option<Direction>,
}

/// Where and how to attach a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum AttachSpec {
    Xdp(NetHook),
    Tc(NetHook),
    Tcx(NetHook),
    Tracepoint {
        tracepoint: String,
    },
    Kprobe {
        fn_name: String,
        offset: u64,
        container_pid: Option<i32>,
    },
    Uprobe {
        fn_name: Option<String>,
        offset: u64,
        target: String,
        pid: Option<i32>,
        container_pid: Option<i32>,
    },
    Fentry,
    Fexit,
    /// An LSM program on the hook it was loaded for.
    Lsm,
}

impl AttachSpec {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Xdp(_) => "xdp",
            Self::Tc(_) => "tc",
            Self::Tcx(_) => "tcx",
            Self::Tracepoint { .. } => "tracepoint",
            Self::Kprobe { .. } => "kprobe",
            Self::Uprobe { .. } => "uprobe",
            Self::Fentry => "fentry",
            Self::Fexit => "fexit",
            Self::Lsm => "lsm",
        }
    }

    pub fn net_hook(&self) -> Option<&NetHook> {
        match self {
            Self::Xdp(h) | Self::Tc(h) | Self::Tcx(h) => Some(h),
            _ => None,
        }
    }

    /// The attach point in words, for listings.
    pub fn target(&self) -> String {
        match self {
            Self::Xdp(h) | Self::Tc(h) | Self::Tcx(h) => {
                let mut s = h.iface.clone();
                if let Some(d) = h.direction {
                    s = format!("{s}/{}", d.as_str());
                }
                if let Some(ns) = &h.netns {
                    s = format!("{s} (netns {ns})");
                }
                s
            }
            Self::Tracepoint { tracepoint } => tracepoint.clone(),
            Self::Kprobe {
                fn_name, offset, ..
            } => {
                if *offset == 0 {
                    fn_name.clone()
                } else {
                    format!("{fn_name}+{offset:#x}")
                }
            }
            Self::Uprobe {
                fn_name,
                offset,
                target,
                pid,
                ..
            } => {
                let mut s = format!("{target}:{}", fn_name.as_deref().unwrap_or(""));
                if *offset != 0 {
                    s = format!("{s}+{offset:#x}");
                }
                if let Some(pid) = pid {
                    s = format!("{s} (pid {pid})");
                }
                s
            }
            Self::Fentry | Self::Fexit | Self::Lsm => String::new(),
        }
    }
}

/// An attachment of a program, with the daemon-assigned link id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub id: u32,
    pub program_id: u32,
    pub spec: AttachSpec,
    /// Interface index at attach time (network hooks).
    pub ifindex: Option<u32>,
    /// The kernel's bpf_link id (0 when the attachment is not a bpf_link).
    pub kernel_link_id: u32,
    pub pin_path: String,
    pub metadata: BTreeMap<String, String>,
    pub owner: Caller,
    pub created_at: String,
    /// Position on a shared hook (0-based), when the hook orders programs.
    pub position: i32,
    /// The exclusive or ordered hook the link occupies (see `store::hook_key`).
    pub hook: Option<String>,
}

/// What the daemon found the kernel able to do, probed once at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub supported: bool,
    pub detail: String,
}

/// Renders `SystemTime::now()` as RFC 3339 UTC without pulling a date crate.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in ProgramKind::ALL {
            assert_eq!(k.as_str().parse::<ProgramKind>().ok(), Some(k));
        }
        assert!("socket".parse::<ProgramKind>().is_err());
    }

    #[test]
    fn rfc3339_known_instants() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(0);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn attach_kinds_fit() {
        let hook = NetHook {
            iface: "eth0".into(),
            priority: 50,
            proceed_on: vec![],
            netns: None,
            direction: None,
        };
        assert!(ProgramKind::Xdp.accepts(&AttachSpec::Xdp(hook.clone())));
        assert!(!ProgramKind::Tracepoint.accepts(&AttachSpec::Xdp(hook)));
        assert!(ProgramKind::Kretprobe.accepts(&AttachSpec::Kprobe {
            fn_name: "f".into(),
            offset: 0,
            container_pid: None
        }));
    }
}
