//! bpfman's Kubernetes node agent: beside the daemon on each node, it turns the `bpfman.io`
//! applications (`ClusterBpfApplication`, `BpfApplication`) that select its node into programs
//! loaded and attached by the daemon, reaching the daemon only through the client library, and
//! reports what it did in one State object per application and node, in upstream's layout
//! (labels, finalizers, metadata, status strings) so it can replace upstream's agent in place.
//!
//! Layout: `agent` (the controllers and their triggers), `converge` (one application against
//! the daemon), `expand` (spec to links, pure), `status` (the State's layout), `kinds` (what
//! differs between the two kinds), `select` (label selectors, from bpfman-k8s), `pods` (the node's pods and the
//! container runtime), `host` (interfaces), `daemon` (the connection and its watch), `secret`
//! (pull secrets).

pub mod agent;
pub mod converge;
pub mod daemon;
pub mod expand;
pub mod host;
pub mod kinds;
pub mod pods;
pub mod secret;
pub mod status;

/// Label selectors (shared with the operator).
pub use bpfman_k8s::select;

pub use agent::{Options, run};
