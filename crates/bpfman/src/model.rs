//! The objects bpfman manages, as plain data: programs, links, owners. The vocabulary
//! they are written in (kinds, attach specs) is `bpfman-types`, re-exported here. The
//! store persists them, the kernel module realises them, the manager owns the rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use bpfman_types::{
    AttachSpec, Bytecode, Direction, KernelFeature, NetHook, ProceedOn, ProgramKind, ProgramSpec,
};

/// Who asked: taken from the kernel (SO_PEERCRED), never from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// Owner uids from here up are tenants root acts on behalf of (Kubernetes namespaces), not
/// users: `TENANT_UID_BASE + tenant id`. Callers whose own uid falls in the range are refused.
pub const TENANT_UID_BASE: u32 = 0xF000_0000;

/// Whether `uid` is a tenant's.
pub fn is_tenant_uid(uid: u32) -> bool {
    uid >= TENANT_UID_BASE
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
    /// Whether the program accepts multi-buffer XDP packets (`xdp.frags`), as its ELF
    /// said at load; `None` for records written before bpfman recorded it.
    #[serde(default)]
    pub xdp_frags: Option<bool>,
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
    /// The exclusive or ordered hook the link occupies.
    pub hook: Option<HookKey>,
}

/// Which shared hook a dispatcher serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookKind {
    Xdp,
    Tc,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xdp" => Some(Self::Xdp),
            "tc" => Some(Self::Tc),
            _ => None,
        }
    }
}

/// An exclusive or ordered hook: XDP on an interface, or one direction of TC on one,
/// in one network namespace. Written to the store as `xdp/<netns>/<ifindex>` or
/// `tc/<netns>/<ifindex>/<direction>` (its one encoding, [`HookKey::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HookKey {
    pub kind: HookKind,
    pub netns: u64,
    pub ifindex: u32,
    /// TC only (ingress when absent from a request).
    pub direction: Option<Direction>,
}

impl HookKey {
    /// The hook an attachment occupies, when it occupies an exclusive or ordered one.
    pub fn of(spec: &AttachSpec, ifindex: Option<u32>, netns: u64) -> Option<Self> {
        let ifindex = ifindex?;
        match spec {
            AttachSpec::Xdp(_) => Some(Self {
                kind: HookKind::Xdp,
                netns,
                ifindex,
                direction: None,
            }),
            AttachSpec::Tc(h) | AttachSpec::Tcx(h) => Some(Self {
                kind: HookKind::Tc,
                netns,
                ifindex,
                direction: Some(h.direction.unwrap_or(Direction::Ingress)),
            }),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match (self.kind, self.direction) {
            (HookKind::Xdp, _) => format!("xdp/{}/{}", self.netns, self.ifindex),
            (HookKind::Tc, d) => format!(
                "tc/{}/{}/{}",
                self.netns,
                self.ifindex,
                d.unwrap_or(Direction::Ingress).as_str()
            ),
        }
    }

    /// The key `s` encodes, only if `s` is exactly its encoding (no `+`, no leading
    /// zeros), so a name that merely parses never stands for a real hook.
    pub fn decode(s: &str) -> Option<Self> {
        Self::parse(s).filter(|k| k.encode() == s)
    }

    fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["xdp", ns, i] => Some(Self {
                kind: HookKind::Xdp,
                netns: ns.parse().ok()?,
                ifindex: i.parse().ok()?,
                direction: None,
            }),
            ["tc", ns, i, d] => Some(Self {
                kind: HookKind::Tc,
                netns: ns.parse().ok()?,
                ifindex: i.parse().ok()?,
                direction: Some(d.parse().ok()?),
            }),
            _ => None,
        }
    }

    /// The name of the hook's directory on bpffs (the encoding with `/` as `_`).
    pub fn dir_name(&self) -> String {
        self.encode().replace('/', "_")
    }

    /// The hook a bpffs directory name stands for (see [`HookKey::dir_name`]).
    pub fn from_dir_name(s: &str) -> Option<Self> {
        Self::decode(&s.replace('_', "/"))
    }
}

impl Serialize for HookKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for HookKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::decode(&s).ok_or_else(|| serde::de::Error::custom(format!("not a hook key: '{s}'")))
    }
}

impl std::fmt::Display for HookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Where a classic TC attachment is: its filter priority and handle on the clsact qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
}

/// How a hook's dispatcher is attached to the hook itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAttachment {
    /// A pinned bpf_link (XDP, TCX).
    Link(std::path::PathBuf),
    /// A classic TC filter on the clsact qdisc (kernels without TCX).
    TcFilter(TcFilter),
}

/// A hook's dispatcher, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherRecord {
    pub hook: HookKey,
    pub kind: HookKind,
    pub revision: u32,
    /// The dispatcher program's pin; `None` when one program is attached to the hook
    /// directly (no dispatcher).
    pub dispatcher_pin: Option<std::path::PathBuf>,
    pub attachment: HookAttachment,
    /// The kernel id of what the hook runs (dispatcher or the lone program), once known.
    pub program_id: Option<u32>,
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
    fn hook_keys_have_one_encoding() {
        let keys = [
            HookKey {
                kind: HookKind::Xdp,
                netns: 4026531840,
                ifindex: 3,
                direction: None,
            },
            HookKey {
                kind: HookKind::Tc,
                netns: 1,
                ifindex: 9,
                direction: Some(Direction::Egress),
            },
        ];
        for k in keys {
            assert_eq!(HookKey::decode(&k.encode()), Some(k));
        }
        assert_eq!(keys[1].encode(), "tc/1/9/egress");
        assert_eq!(keys[0].dir_name(), "xdp_4026531840_3");
        assert_eq!(HookKey::decode("tc/1/9"), None);
        assert_eq!(HookKey::decode("xdp/x/9"), None);
        assert_eq!(HookKey::decode("xdp/+1/9"), None);
        assert_eq!(HookKey::decode("xdp/01/9"), None);
        assert_eq!(HookKey::from_dir_name("xdp_+4026531840_3"), None);
    }

    #[test]
    fn rfc3339_known_instants() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(0);
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00Z");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }
}
