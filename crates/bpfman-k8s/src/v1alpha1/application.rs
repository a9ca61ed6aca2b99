//! Owns the two application kinds users write: `ClusterBpfApplication` (cluster-scoped, every
//! program type, host or any pods) and `BpfApplication` (namespaced, network and uprobe types
//! only, confined to its own namespace's pods), their program lists and the CEL rules that tie
//! each program's `type` to its one member.

// kube's printcolumn(...) repeats `type_ = "string"` per column, which clippy reads as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use super::links::{
    FentryProgramInfo, KprobeAttachInfo, KretprobeAttachInfo, LinkList, NsTcAttachInfo,
    NsTcxAttachInfo, NsUprobeAttachInfo, NsXdpAttachInfo, TcAttachInfo, TcxAttachInfo,
    TracepointAttachInfo, UprobeAttachInfo, XdpAttachInfo,
};
use super::shared::{
    ByteCodeSelector, Condition, GlobalData, NAME_PATTERN, conditions, label_selector, spec_enum,
};

spec_enum!(
    /// A program type a cluster-scoped application may hold, as the CRDs spell it.
    ProgramType {
        Xdp = "XDP",
        Tc = "TC",
        Tcx = "TCX",
        FEntry = "FEntry",
        FExit = "FExit",
        KProbe = "KProbe",
        KRetProbe = "KRetProbe",
        UProbe = "UProbe",
        URetProbe = "URetProbe",
        TracePoint = "TracePoint",
    }
);

impl ProgramType {
    /// Every known type with its spelling and the member field that carries its configuration.
    pub const ALL: [(ProgramType, &'static str, &'static str); 10] = [
        (ProgramType::Xdp, "XDP", "xdp"),
        (ProgramType::Tc, "TC", "tc"),
        (ProgramType::Tcx, "TCX", "tcx"),
        (ProgramType::FEntry, "FEntry", "fentry"),
        (ProgramType::FExit, "FExit", "fexit"),
        (ProgramType::KProbe, "KProbe", "kprobe"),
        (ProgramType::KRetProbe, "KRetProbe", "kretprobe"),
        (ProgramType::UProbe, "UProbe", "uprobe"),
        (ProgramType::URetProbe, "URetProbe", "uretprobe"),
        (ProgramType::TracePoint, "TracePoint", "tracepoint"),
    ];

    /// The member field that carries this type's configuration; none for an unknown type.
    pub fn member(&self) -> Option<&'static str> {
        Self::ALL
            .iter()
            .find(|(t, _, _)| t == self)
            .map(|(_, _, m)| *m)
    }

    /// bpfman's own program kind name for it (`bpfman_types::ProgramKind`); none for an
    /// unknown type.
    pub fn bpfman_kind(&self) -> Option<&'static str> {
        Some(match self {
            Self::Xdp => "xdp",
            Self::Tc => "tc",
            Self::Tcx => "tcx",
            Self::FEntry => "fentry",
            Self::FExit => "fexit",
            Self::KProbe => "kprobe",
            Self::KRetProbe => "kretprobe",
            Self::UProbe => "uprobe",
            Self::URetProbe => "uretprobe",
            Self::TracePoint => "tracepoint",
            Self::Other(_) => return None,
        })
    }

    /// Whether a namespaced `BpfApplication` may hold it.
    pub fn namespaced(&self) -> bool {
        matches!(
            self,
            Self::Xdp | Self::Tc | Self::Tcx | Self::UProbe | Self::URetProbe
        )
    }
}

spec_enum!(
    /// A program type a namespaced application may hold: those that act inside a pod.
    NsProgramType {
        Xdp = "XDP",
        Tc = "TC",
        Tcx = "TCX",
        UProbe = "UProbe",
        URetProbe = "URetProbe",
    }
);

impl From<NsProgramType> for ProgramType {
    fn from(t: NsProgramType) -> Self {
        match t {
            NsProgramType::Xdp => ProgramType::Xdp,
            NsProgramType::Tc => ProgramType::Tc,
            NsProgramType::Tcx => ProgramType::Tcx,
            NsProgramType::UProbe => ProgramType::UProbe,
            NsProgramType::URetProbe => ProgramType::URetProbe,
            NsProgramType::Other(s) => ProgramType::Other(s),
        }
    }
}

/// The CEL rules tying `type` to its member, one per type in `types`: the member is present
/// exactly when `type` names it. Same rule text as upstream; messages name the type as spelt.
pub(crate) fn union_rules(schema: &mut Schema, types: &[(&str, &str)]) {
    let rules: Vec<serde_json::Value> = types
        .iter()
        .map(|(t, m)| {
            serde_json::json!({
                "message": format!("{m} configuration is required when type is {t}, and forbidden otherwise"),
                "rule": format!("has(self.type) && self.type == '{t}' ?  has(self.{m}) : !has(self.{m})"),
            })
        })
        .collect();
    schema.insert("x-kubernetes-validations".into(), rules.into());
}

fn cluster_rules(schema: &mut Schema) {
    let types: Vec<(&str, &str)> = ProgramType::ALL.iter().map(|(_, t, m)| (*t, *m)).collect();
    union_rules(schema, &types);
}

pub(crate) fn namespaced_rules(schema: &mut Schema) {
    let types: Vec<(&str, &str)> = ProgramType::ALL
        .iter()
        .filter(|(t, _, _)| t.namespaced())
        .map(|(_, t, m)| (*t, *m))
        .collect();
    union_rules(schema, &types);
}

/// One program of a cluster-scoped application: its name in the bytecode, its type, and the
/// one member for that type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cluster_rules)]
pub struct ClusterProgram {
    /// The program's (function's) name in the bytecode.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The program type; exactly the matching member below must be set.
    #[serde(rename = "type")]
    pub type_: ProgramType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<LinkList<XdpAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<LinkList<TcAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<LinkList<TcxAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fentry: Option<FentryProgramInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fexit: Option<FentryProgramInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kprobe: Option<LinkList<KprobeAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kretprobe: Option<LinkList<KretprobeAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<LinkList<UprobeAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<LinkList<UprobeAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<LinkList<TracepointAttachInfo>>,
}

/// One program of a namespaced application.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = namespaced_rules)]
pub struct NsProgram {
    /// The program's (function's) name in the bytecode.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The program type; exactly the matching member below must be set.
    #[serde(rename = "type")]
    pub type_: NsProgramType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<LinkList<NsXdpAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc: Option<LinkList<NsTcAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcx: Option<LinkList<NsTcxAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uprobe: Option<LinkList<NsUprobeAttachInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uretprobe: Option<LinkList<NsUprobeAttachInfo>>,
}

/// A set of eBPF programs from one bytecode source, loaded together on every selected node
/// (they share maps and global data) and attached where their links say.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bpfman.io",
    derive = "PartialEq",
    version = "v1alpha1",
    kind = "ClusterBpfApplication",
    plural = "clusterbpfapplications",
    status = "BpfApplicationStatus",
    printcolumn(
        name = "NodeSelector",
        type_ = "string",
        json_path = ".spec.nodeSelector"
    ),
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
#[serde(rename_all = "camelCase")]
pub struct ClusterBpfApplicationSpec {
    /// Which nodes load the programs; `{}` selects every node.
    #[schemars(schema_with = "label_selector")]
    pub node_selector: LabelSelector,
    /// Where the bytecode comes from.
    pub byte_code: ByteCodeSelector,
    /// Values for global variables, set at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_data: Option<GlobalData>,
    /// Another application whose maps these programs share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub map_owner_selector: Option<LabelSelector>,
    /// The programs.
    #[schemars(length(min = 1))]
    pub programs: Vec<ClusterProgram>,
}

/// A namespaced set of eBPF programs: network and uprobe programs confined to the pods of its
/// own namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "bpfman.io",
    derive = "PartialEq",
    version = "v1alpha1",
    kind = "BpfApplication",
    plural = "bpfapplications",
    namespaced,
    status = "BpfApplicationStatus",
    printcolumn(
        name = "NodeSelector",
        type_ = "string",
        json_path = ".spec.nodeSelector"
    ),
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
#[serde(rename_all = "camelCase")]
pub struct BpfApplicationSpec {
    /// Which nodes load the programs; `{}` selects every node.
    #[schemars(schema_with = "label_selector")]
    pub node_selector: LabelSelector,
    /// Where the bytecode comes from.
    pub byte_code: ByteCodeSelector,
    /// Values for global variables, set at load time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_data: Option<GlobalData>,
    /// Another application whose maps these programs share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector")]
    pub map_owner_selector: Option<LabelSelector>,
    /// The programs.
    #[schemars(length(min = 1))]
    pub programs: Vec<NsProgram>,
}

/// What the operator reports about an application: one condition rolled up from every node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct BpfApplicationStatus {
    /// Pending, Success, Error or DeleteError.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}
