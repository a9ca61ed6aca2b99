//! Owns the per-node State kinds the agent writes, `ClusterBpfApplicationState` and
//! `BpfApplicationState`: no spec, only a status recording what one node loaded and attached
//! for one application (program and link ids, per-link status, the load status strings), in
//! upstream's layout so States written by either agent read the same.

// kube's printcolumn(...) repeats `type_ = "string"` per column, which clippy reads as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::application::{NsProgramType, ProgramType};
use super::links::{Direction, TcProceedOn, XdpProceedOn};
use super::shared::{Condition, NAME_PATTERN, conditions, lenient_id, status_string};

status_string!(
    /// The load state of an application on one node (`status.appLoadStatus`).
    AppLoadStatus {
        NotLoaded = "NotLoaded",
        LoadSuccess = "LoadSuccess",
        LoadError = "LoadError",
        UnloadSuccess = "UnloadSuccess",
        UnloadError = "UnloadError",
        NotSelected = "NotSelected",
        ProgramListChangedError = "ProgramListChangedError",
    }
);

status_string!(
    /// Whether every link of one program is as wanted (`programLinkStatus`).
    ProgramLinkStatus {
        Pending = "Pending",
        Success = "Success",
        Error = "Error",
        UpdateAttachInfoError = "UpdateAttachInfoError",
    }
);

status_string!(
    /// The state of one link (`linkStatus`).
    LinkStatus {
        Attached = "Attached",
        NotAttached = "NotAttached",
        AttachError = "AttachError",
        DetachError = "DetachError",
    }
);

/// The fields every State link has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStateCommon {
    /// Whether the spec still wants this link.
    pub should_attach: bool,
    /// The link's identity, sent to bpfman as its `bpfman.io/uuid` metadata.
    pub uuid: String,
    /// The kernel link id once attached. Written as `format: int32` by upstream, holding
    /// unsigned ids above 2^31 in practice.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_id"
    )]
    #[schemars(with = "Option<i32>")]
    pub link_id: Option<u32>,
    /// Attached, NotAttached, AttachError or DetachError.
    pub link_status: LinkStatus,
}

macro_rules! network_link_state {
    ($(#[$meta:meta])* $name:ident, netns: $netns:ty, netns_attrs: [$($nattr:meta),*] $(, direction: $dir:ident)? $(, proceed_on: $po:ty)?) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(flatten)]
            pub common: LinkStateCommon,
            /// The interface.
            pub interface_name: String,
            $(#[$nattr])*
            pub netns_path: $netns,
            $(
            /// Which way traffic flows.
            pub $dir: Direction,
            )?
            /// The priority on the hook.
            #[schemars(range(min = 0, max = 1000))]
            pub priority: i32,
            $(
            /// Return codes after which the next program runs.
            pub proceed_on: Vec<$po>,
            )?
        }
    };
}

network_link_state!(
    /// One XDP link on one node (cluster-scoped application).
    XdpLinkState,
    netns: Option<String>,
    netns_attrs: [doc = "The network namespace (`/host/proc/<pid>/ns/net`); the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    proceed_on: XdpProceedOn
);
network_link_state!(
    /// One XDP link on one node (namespaced application: always in a pod).
    NsXdpLinkState,
    netns: String,
    netns_attrs: [doc = "The pod's network namespace (`/host/proc/<pid>/ns/net`)."],
    proceed_on: XdpProceedOn
);
network_link_state!(
    /// One TC link on one node (cluster-scoped application).
    TcLinkState,
    netns: Option<String>,
    netns_attrs: [doc = "The network namespace (`/host/proc/<pid>/ns/net`); the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    direction: direction,
    proceed_on: TcProceedOn
);
network_link_state!(
    /// One TC link on one node (namespaced application).
    NsTcLinkState,
    netns: String,
    netns_attrs: [doc = "The pod's network namespace (`/host/proc/<pid>/ns/net`)."],
    direction: direction,
    proceed_on: TcProceedOn
);
network_link_state!(
    /// One TCX link on one node (cluster-scoped application).
    TcxLinkState,
    netns: Option<String>,
    netns_attrs: [doc = "The network namespace (`/host/proc/<pid>/ns/net`); the host's when absent.", serde(default, skip_serializing_if = "Option::is_none")],
    direction: direction
);
network_link_state!(
    /// One TCX link on one node (namespaced application).
    NsTcxLinkState,
    netns: String,
    netns_attrs: [doc = "The pod's network namespace (`/host/proc/<pid>/ns/net`)."],
    direction: direction
);

/// A member's links on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(bound(deserialize = "L: Deserialize<'de>"))]
pub struct LinksState<L> {
    /// One entry per expanded link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<L>,
}

/// An fentry/fexit program on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct FentryProgramState {
    /// The kernel function.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub function: String,
    /// At most one link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    pub links: Vec<LinkStateCommon>,
}

/// A kprobe link on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KprobeLinkState {
    #[serde(flatten)]
    pub common: LinkStateCommon,
    /// The kernel function.
    pub function: String,
    /// Offset into it.
    #[serde(default)]
    pub offset: i64,
}

/// A kretprobe link on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct KretprobeLinkState {
    #[serde(flatten)]
    pub common: LinkStateCommon,
    /// The kernel function.
    pub function: String,
}

/// A tracepoint link on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TracepointLinkState {
    #[serde(flatten)]
    pub common: LinkStateCommon,
    /// `category/name`.
    pub name: String,
}

/// A uprobe/uretprobe link on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UprobeLinkState {
    #[serde(flatten)]
    pub common: LinkStateCommon,
    /// The binary or library.
    pub target: String,
    /// The symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Offset from the symbol.
    #[serde(default)]
    pub offset: i64,
    /// Only this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The container's PID (on the node) the probe was attached through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_pid: Option<i32>,
}

fn cluster_state_rules(schema: &mut schemars::Schema) {
    let types: Vec<(&str, &str)> = ProgramType::ALL.iter().map(|(_, t, m)| (*t, *m)).collect();
    super::application::union_rules(schema, &types);
}

/// One program of a cluster-scoped application on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cluster_state_rules)]
pub struct ClusterProgramState {
    /// The program's name in the bytecode.
    pub name: String,
    /// The program type.
    #[serde(rename = "type")]
    pub type_: ProgramType,
    /// The kernel program id once loaded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_id"
    )]
    #[schemars(with = "Option<i32>")]
    pub program_id: Option<u32>,
    /// Whether every link is as wanted.
    pub program_link_status: ProgramLinkStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<LinksState<XdpLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<LinksState<TcLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<LinksState<TcxLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fentry: Option<FentryProgramState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fexit: Option<FentryProgramState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kprobe: Option<LinksState<KprobeLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kretprobe: Option<LinksState<KretprobeLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<LinksState<UprobeLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<LinksState<UprobeLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<LinksState<TracepointLinkState>>,
}

/// One program of a namespaced application on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = super::application::namespaced_rules)]
pub struct NsProgramState {
    /// The program's name in the bytecode.
    pub name: String,
    /// The program type.
    #[serde(rename = "type")]
    pub type_: NsProgramType,
    /// The kernel program id once loaded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_id"
    )]
    #[schemars(with = "Option<i32>")]
    pub program_id: Option<u32>,
    /// Whether every link is as wanted.
    pub program_link_status: ProgramLinkStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<LinksState<NsXdpLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<LinksState<NsTcLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<LinksState<NsTcxLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<LinksState<UprobeLinkState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<LinksState<UprobeLinkState>>,
}

/// The per-node State of a cluster-scoped application (no spec: everything is status).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bpfman.io",
    derive = "PartialEq",
    version = "v1alpha1",
    kind = "ClusterBpfApplicationState",
    plural = "clusterbpfapplicationstates",
    status = "ClusterBpfApplicationStateStatus",
    no_spec,
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[0].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterBpfApplicationStateFields {}

/// The per-node State of a namespaced application.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bpfman.io",
    derive = "PartialEq",
    version = "v1alpha1",
    kind = "BpfApplicationState",
    plural = "bpfapplicationstates",
    namespaced,
    status = "BpfApplicationStateStatus",
    no_spec,
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[0].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BpfApplicationStateFields {}

macro_rules! state_status {
    ($(#[$meta:meta])* $name:ident, $program:ty) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            /// Bumped on every status write (1 at creation).
            pub update_count: i64,
            /// The node this State describes.
            pub node: String,
            /// The load state on that node.
            pub app_load_status: AppLoadStatus,
            /// One per spec program.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub programs: Vec<$program>,
            /// One condition: Pending, Success, Error, UnloadError, Unloaded,
            /// NotSelected or ProgramListChangedError.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            #[schemars(schema_with = "conditions")]
            pub conditions: Vec<Condition>,
        }
    };
}

state_status!(
    /// What one node has for a cluster-scoped application.
    ClusterBpfApplicationStateStatus,
    ClusterProgramState
);
state_status!(
    /// What one node has for a namespaced application.
    BpfApplicationStateStatus,
    NsProgramState
);
