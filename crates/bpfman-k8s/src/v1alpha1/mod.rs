//! The `bpfman.io/v1alpha1` API: the five kinds and their sub-structures, field for field as
//! upstream bpfman-operator defines them (its manifests and stored objects read unchanged).

mod application;
mod config;
mod links;
mod shared;
mod state;

pub use application::{
    BpfApplication, BpfApplicationSpec, BpfApplicationStatus, ClusterBpfApplication,
    ClusterBpfApplicationSpec, ClusterProgram, NsProgram, NsProgramType, ProgramType,
};
pub use config::{
    AgentSpec, CONFIG_NAME, ComponentOverride, Config, ConfigSpec, ConfigStatus, DaemonSpec,
};
pub use links::{
    AttachMode, DEFAULT_PRIORITY, Direction, FentryAttachInfo, FentryProgramInfo, KprobeAttachInfo,
    KretprobeAttachInfo, LinkList, NsTcAttachInfo, NsTcxAttachInfo, NsUprobeAttachInfo,
    NsXdpAttachInfo, TcAttachInfo, TcProceedOn, TcxAttachInfo, TracepointAttachInfo,
    UprobeAttachInfo, XdpAttachInfo, XdpProceedOn,
};
pub use shared::{
    ByteCodeImage, ByteCodeSelector, CONDITION_REASON_PATTERN, ClusterContainerSelector,
    ClusterNetworkNamespaceSelector, Condition, ContainerSelector, GlobalData, GlobalValue,
    ImagePullSecret, InterfaceDiscovery, InterfaceSelector, NAME_PATTERN, NetworkNamespaceSelector,
    PullPolicy, now_rfc3339,
};
pub use state::{
    AppLoadStatus, BpfApplicationState, BpfApplicationStateFields, BpfApplicationStateStatus,
    ClusterBpfApplicationState, ClusterBpfApplicationStateFields, ClusterBpfApplicationStateStatus,
    ClusterProgramState, FentryProgramState, KprobeLinkState, KretprobeLinkState, LinkStateCommon,
    LinkStatus, LinksState, NsProgramState, NsTcLinkState, NsTcxLinkState, NsXdpLinkState,
    ProgramLinkStatus, TcLinkState, TcxLinkState, TracepointLinkState, UprobeLinkState,
    XdpLinkState,
};
