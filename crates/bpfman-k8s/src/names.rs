//! Owns the names a cluster depends on staying exactly as upstream's: labels, finalizers,
//! program and link metadata keys, the agent's environment and socket. Objects written by
//! upstream's operator and agent carry these, so ours must read and write the same.

/// Label on a State naming the application it belongs to.
pub const LABEL_OWNED_BY_PROGRAM: &str = "bpfman.io/ownedByProgram";
/// Label on a State naming the node it describes.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

/// The operator's finalizer on both application kinds.
pub const FINALIZER_OPERATOR: &str = "bpfman.io.operator/finalizer";
/// The agent's finalizer on a ClusterBpfApplicationState.
pub const FINALIZER_CLUSTER_AGENT: &str = "bpfman.io.clbpfapplicationcontroller/finalizer";
/// The agent's finalizer on a BpfApplicationState.
pub const FINALIZER_NAMESPACED_AGENT: &str = "bpfman.io.nsbpfapplicationcontroller/finalizer";
/// The operator's finalizer on the Config.
pub const FINALIZER_CONFIG: &str = "bpfman.io/config-finalizer";

/// Program metadata: the State's UID. Link metadata: the link's uuid.
pub const METADATA_UUID: &str = "bpfman.io/uuid";
/// Program metadata: the application's name (the CSI driver finds maps by it).
pub const METADATA_PROGRAM_NAME: &str = "bpfman.io/ProgramName";

/// The environment variable the agent reads its node name from.
pub const ENV_NODE_NAME: &str = "KUBE_NODE_NAME";
/// The daemon socket the agent uses by default (shared with the daemon container).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/bpfman-sock/bpfman.sock";
/// Where a pod's network namespace is seen from the agent's container.
pub const HOST_PROC: &str = "/host/proc";
