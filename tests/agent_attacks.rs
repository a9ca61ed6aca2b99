//! Attacks on the Kubernetes node agent through what a cluster user controls: application
//! manifests, Secrets, pods and labels (see tests/common/agent.rs for the harness).

mod common;
