//! Owns what an application asks to attach, per program type: the `links` of each member
//! (`xdp`, `tc`, `tcx`, `fentry`, `fexit`, `kprobe`, `kretprobe`, `uprobe`, `uretprobe`,
//! `tracepoint`) in both the cluster-scoped form and the namespaced form, and the proceed-on and
//! direction vocabularies as the CRDs spell them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::{
    ClusterContainerSelector, ClusterNetworkNamespaceSelector, ContainerSelector,
    InterfaceSelector, NAME_PATTERN, NetworkNamespaceSelector, spec_enum,
};

/// The priority a link gets when it names none (upstream's `DefaultAttachPriority`).
pub const DEFAULT_PRIORITY: i32 = 1000;

spec_enum!(
    /// XDP return codes a dispatcher slot may proceed on, as the CRDs spell them.
    XdpProceedOn {
        Aborted = "Aborted",
        Drop = "Drop",
        Pass = "Pass",
        Tx = "TX",
        ReDirect = "ReDirect",
        DispatcherReturn = "DispatcherReturn",
    }
);

impl XdpProceedOn {
    /// The name bpfman's own vocabulary (`bpfman_types::ProceedOn`) uses for it; none for a
    /// value this version does not know.
    pub fn bpfman_name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Aborted => "aborted",
            Self::Drop => "drop",
            Self::Pass => "pass",
            Self::Tx => "tx",
            Self::ReDirect => "redirect",
            Self::DispatcherReturn => "dispatcher_return",
            Self::Other(_) => return None,
        })
    }
}

fn default_xdp_proceed_on() -> Vec<XdpProceedOn> {
    vec![XdpProceedOn::Pass, XdpProceedOn::DispatcherReturn]
}

spec_enum!(
    /// TC actions a dispatcher slot may proceed on, as the CRDs spell them. `UnSpec` is
    /// accepted and honoured (upstream's agent silently drops it: it matches `Unspec`).
    TcProceedOn {
        UnSpec = "UnSpec",
        Ok = "OK",
        ReClassify = "ReClassify",
        Shot = "Shot",
        Pipe = "Pipe",
        Stolen = "Stolen",
        Queued = "Queued",
        Repeat = "Repeat",
        ReDirect = "ReDirect",
        Trap = "Trap",
        DispatcherReturn = "DispatcherReturn",
    }
);

impl TcProceedOn {
    /// The name bpfman's own vocabulary (`bpfman_types::ProceedOn`) uses for it; none for a
    /// value this version does not know.
    pub fn bpfman_name(&self) -> Option<&'static str> {
        Some(match self {
            Self::UnSpec => "unspec",
            Self::Ok => "ok",
            Self::ReClassify => "reclassify",
            Self::Shot => "shot",
            Self::Pipe => "pipe",
            Self::Stolen => "stolen",
            Self::Queued => "queued",
            Self::Repeat => "repeat",
            Self::ReDirect => "redirect",
            Self::Trap => "trap",
            Self::DispatcherReturn => "dispatcher_return",
            Self::Other(_) => return None,
        })
    }
}

fn default_tc_proceed_on() -> Vec<TcProceedOn> {
    vec![TcProceedOn::Pipe, TcProceedOn::DispatcherReturn]
}

spec_enum!(
    /// Which way traffic a TC or TCX link sees flows.
    Direction {
        Ingress = "Ingress",
        Egress = "Egress",
    }
);

spec_enum!(
    /// How an fentry/fexit program is attached (there is one way).
    AttachMode {
        Attach = "Attach",
    }
);

/// A member that holds only a list of links (every type but fentry/fexit).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(bound(deserialize = "L: Deserialize<'de>"))]
pub struct LinkList<L> {
    /// Where to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<L>,
}

macro_rules! network_link {
    ($(#[$meta:meta])* $name:ident, netns: $netns:ty, netns_attrs: [$($nattr:meta),*] $(, direction: $dir:ident)? $(, proceed_on: $po:ty = $pod:literal)?) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// Which interfaces.
            pub interface_selector: InterfaceSelector,
            $(#[$nattr])*
            pub network_namespaces: $netns,
            $(
            /// Which way traffic flows.
            pub $dir: Direction,
            )?
            /// Order on the hook: lower runs first. 1000 when absent.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(range(min = 0, max = 1000))]
            pub priority: Option<i32>,
            $(
            /// Return codes after which the next program on the hook runs.
            #[serde(default = $pod)]
            pub proceed_on: Vec<$po>,
            )?
        }
    };
}

network_link!(
    /// An XDP link of a cluster-scoped application.
    XdpAttachInfo,
    netns: Option<ClusterNetworkNamespaceSelector>,
    netns_attrs: [doc = "Pods whose network namespaces the link enters; the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    proceed_on: XdpProceedOn = "default_xdp_proceed_on"
);
network_link!(
    /// An XDP link of a namespaced application: always inside its own pods.
    NsXdpAttachInfo,
    netns: NetworkNamespaceSelector,
    netns_attrs: [doc = "Pods (in the application's namespace) whose network namespaces the link enters."],
    proceed_on: XdpProceedOn = "default_xdp_proceed_on"
);
network_link!(
    /// A TC link of a cluster-scoped application.
    TcAttachInfo,
    netns: Option<ClusterNetworkNamespaceSelector>,
    netns_attrs: [doc = "Pods whose network namespaces the link enters; the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    direction: direction,
    proceed_on: TcProceedOn = "default_tc_proceed_on"
);
network_link!(
    /// A TC link of a namespaced application.
    NsTcAttachInfo,
    netns: NetworkNamespaceSelector,
    netns_attrs: [doc = "Pods (in the application's namespace) whose network namespaces the link enters."],
    direction: direction,
    proceed_on: TcProceedOn = "default_tc_proceed_on"
);
network_link!(
    /// A TCX link of a cluster-scoped application.
    TcxAttachInfo,
    netns: Option<ClusterNetworkNamespaceSelector>,
    netns_attrs: [doc = "Pods whose network namespaces the link enters; the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    direction: direction
);
network_link!(
    /// A TCX link of a namespaced application.
    NsTcxAttachInfo,
    netns: NetworkNamespaceSelector,
    netns_attrs: [doc = "Pods (in the application's namespace) whose network namespaces the link enters."],
    direction: direction
);

/// An fentry or fexit program: the kernel function it traces, and at most one link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FentryProgramInfo {
    /// The kernel function (the program is loaded against it).
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: String,
    /// Whether to attach: one entry attaches, none leaves it loaded only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub links: Vec<FentryAttachInfo>,
}

/// An fentry/fexit link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct FentryAttachInfo {
    /// Always `Attach`.
    pub mode: AttachMode,
}

/// A kprobe link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KprobeAttachInfo {
    /// The kernel function.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: String,
    /// Offset into the function.
    #[serde(default)]
    pub offset: i64,
}

/// A kretprobe link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KretprobeAttachInfo {
    /// The kernel function.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: String,
}

/// A tracepoint link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TracepointAttachInfo {
    /// `category/name`, e.g. `syscalls/sys_enter_openat`.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

/// A uprobe or uretprobe link of a cluster-scoped application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UprobeAttachInfo {
    /// The binary or library (a path, or a library name).
    pub target: String,
    /// The symbol; the offset alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: Option<String>,
    /// Offset from the symbol (or the start).
    #[serde(default)]
    pub offset: i64,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Containers to enter; the host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ClusterContainerSelector>,
}

/// A uprobe or uretprobe link of a namespaced application: always inside its own containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NsUprobeAttachInfo {
    /// The binary or library (a path, or a library name).
    pub target: String,
    /// The symbol; the offset alone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: Option<String>,
    /// Offset from the symbol (or the start).
    #[serde(default)]
    pub offset: i64,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Containers (in the application's namespace) to enter.
    pub containers: ContainerSelector,
}
