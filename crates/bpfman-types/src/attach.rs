//! How an attachment is described: the hook, its priority and proceed-on codes for the
//! hooks a dispatcher shares, the probe target for the others.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// XDP return codes a program may continue the chain on (and the dispatcher's own).
pub const XDP_PROCEED_ON: &[(&str, i32)] = &[
    ("aborted", 0),
    ("drop", 1),
    ("pass", 2),
    ("tx", 3),
    ("redirect", 4),
    ("dispatcher_return", 31),
];
/// TC return codes a program may continue the chain on.
pub const TC_PROCEED_ON: &[(&str, i32)] = &[
    ("unspec", -1),
    ("ok", 0),
    ("reclassify", 1),
    ("shot", 2),
    ("pipe", 3),
    ("stolen", 4),
    ("queued", 5),
    ("repeat", 6),
    ("redirect", 7),
    ("trap", 8),
    ("dispatcher_return", 30),
];

/// The proceed-on vocabulary of one dispatched hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProceedOn {
    Xdp,
    Tc,
}

impl ProceedOn {
    pub fn table(self) -> &'static [(&'static str, i32)] {
        match self {
            Self::Xdp => XDP_PROCEED_ON,
            Self::Tc => TC_PROCEED_ON,
        }
    }

    fn hook(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        }
    }

    /// The code a name stands for.
    pub fn code(self, name: &str) -> Option<i32> {
        self.table()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }

    /// Codes from names, each entry a name or a comma-separated list of them.
    pub fn codes<S: AsRef<str>>(self, names: &[S]) -> Result<Vec<i32>, Invalid> {
        names
            .iter()
            .flat_map(|n| n.as_ref().split(','))
            .filter(|n| !n.is_empty())
            .map(|n| {
                self.code(n).ok_or_else(|| {
                    Invalid(format!(
                        "unknown {} --proceed-on '{n}': use {}",
                        self.hook(),
                        self.names().join(", ")
                    ))
                })
            })
            .collect()
    }

    /// The first code not in the vocabulary, if any.
    pub fn unknown(self, codes: &[i32]) -> Option<i32> {
        codes
            .iter()
            .copied()
            .find(|c| !self.table().iter().any(|(_, v)| v == c))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.table().iter().map(|(n, _)| *n).collect()
    }
}

/// Direction on a TC/TCX hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "ingress" => Ok(Self::Ingress),
            "egress" => Ok(Self::Egress),
            _ => Err(Invalid(format!(
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

    /// The proceed-on vocabulary of the hook, for the hooks a dispatcher chains.
    pub fn proceed_on(&self) -> Option<ProceedOn> {
        match self {
            Self::Xdp(_) => Some(ProceedOn::Xdp),
            Self::Tc(_) => Some(ProceedOn::Tc),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProgramKind;

    #[test]
    fn proceed_on_names_and_codes() {
        assert_eq!(
            ProceedOn::Xdp.codes(&["pass,drop", "dispatcher_return"]),
            Ok(vec![2, 1, 31])
        );
        assert_eq!(ProceedOn::Tc.codes(&["unspec"]), Ok(vec![-1]));
        let e = ProceedOn::Tc.codes(&["pass"]).unwrap_err();
        assert!(
            e.0.contains("unknown tc --proceed-on 'pass'") && e.0.contains("trap"),
            "{e}"
        );
        assert_eq!(ProceedOn::Xdp.unknown(&[2, 31]), None);
        assert_eq!(ProceedOn::Xdp.unknown(&[2, 7]), Some(7));
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
