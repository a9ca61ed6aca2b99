//! bpfman's Kubernetes vocabulary, shared by the node agent and the operator: the
//! `bpfman.io/v1alpha1` custom resources as Rust types (the source of truth for the CRDs in
//! `deploy/kubernetes/crds/`), the labels, finalizers, metadata keys and condition vocabulary
//! that make a cluster running upstream's bpfman-operator switch to this one unchanged, and
//! label-selector matching as the API server defines it.
//!
//! No daemon, no client runtime: `kube` is used only for its derive and core types.

pub mod conditions;
pub mod crd;
pub mod names;
pub mod select;
pub mod v1alpha1;
