//! The kernel features bpfman probes at start-up, by the names `bpfman system info`
//! prints. Requests that need a missing one fail naming it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelFeature {
    Bpffs,
    Btf,
    Freplace,
    Fentry,
    Lsm,
    Kprobe,
    Uprobe,
    Tcx,
    XdpLink,
}

impl KernelFeature {
    pub const ALL: [KernelFeature; 9] = [
        Self::Bpffs,
        Self::Btf,
        Self::Freplace,
        Self::Fentry,
        Self::Lsm,
        Self::Kprobe,
        Self::Uprobe,
        Self::Tcx,
        Self::XdpLink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bpffs => "bpffs",
            Self::Btf => "btf",
            Self::Freplace => "freplace",
            Self::Fentry => "fentry",
            Self::Lsm => "lsm",
            Self::Kprobe => "kprobe",
            Self::Uprobe => "uprobe",
            Self::Tcx => "tcx",
            Self::XdpLink => "xdp_link",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for KernelFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in KernelFeature::ALL {
            assert_eq!(KernelFeature::parse(f.as_str()), Some(f));
        }
        assert_eq!(KernelFeature::parse("kprobes"), None);
    }
}
