//! Owns what differs between the two application kinds the agent serves: the cluster-scoped
//! `ClusterBpfApplication` (with its `ClusterBpfApplicationState`) and the namespaced
//! `BpfApplication` (with its `BpfApplicationState`): their finalizers, their API scopes, and
//! the translation of a namespaced spec into the cluster-scoped form with every pod selector
//! and pull secret confined to the application's own namespace. Everything else in the agent
//! works on the cluster-scoped form.

use std::fmt::Debug;

use bpfman_k8s::names::{FINALIZER_CLUSTER_AGENT, FINALIZER_NAMESPACED_AGENT};
use bpfman_k8s::v1alpha1::{
    BpfApplication, BpfApplicationState, ClusterBpfApplication, ClusterBpfApplicationSpec,
    ClusterBpfApplicationState, ClusterBpfApplicationStateStatus,
};
use kube::core::DeserializeGuard;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One application kind and its State kind.
pub trait AppKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    type State: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static;
    const KIND: &'static str;
    const STATE_KIND: &'static str;
    const FINALIZER: &'static str;
    /// The prefix of this kind's keys (`c/NAME`, `n/NAMESPACE/NAME`).
    const KEY: &'static str;

    /// The spec in the cluster-scoped form; a namespaced one confined to its namespace.
    fn cluster_spec(&self) -> Result<ClusterBpfApplicationSpec, String>;
    /// The application kind's API where `ns` lives (all of it for the cluster kind).
    fn app_api(client: Client, ns: Option<&str>) -> Api<Self>;
    /// The application kind's API read leniently: an object that does not read as the kind
    /// (a hand-made one without `spec`) is an `Err` in its place, never a failed list.
    fn guard_api(client: Client, ns: Option<&str>) -> Api<DeserializeGuard<Self>>;
    /// The State kind's API where `ns` lives.
    fn state_api(client: Client, ns: Option<&str>) -> Api<Self::State>;
    /// The State's status, read into the cluster-scoped form (a superset of the other).
    fn state_status(s: &Self::State) -> Option<ClusterBpfApplicationStateStatus>;
    /// The application's namespace (none for the cluster kind).
    fn scope(&self) -> Option<String> {
        self.namespace()
    }
    /// The key of an application by namespace and name.
    fn key_of(ns: Option<&str>, name: &str) -> String {
        match ns {
            Some(ns) => format!("{}/{ns}/{name}", Self::KEY),
            None => format!("{}/{name}", Self::KEY),
        }
    }
    fn key(&self) -> String {
        Self::key_of(self.namespace().as_deref(), &self.name_any())
    }
}

impl AppKind for ClusterBpfApplication {
    type State = ClusterBpfApplicationState;
    const KIND: &'static str = "ClusterBpfApplication";
    const STATE_KIND: &'static str = "ClusterBpfApplicationState";
    const FINALIZER: &'static str = FINALIZER_CLUSTER_AGENT;
    const KEY: &'static str = "c";

    fn cluster_spec(&self) -> Result<ClusterBpfApplicationSpec, String> {
        Ok(self.spec.clone())
    }
    fn app_api(client: Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn guard_api(client: Client, _: Option<&str>) -> Api<DeserializeGuard<Self>> {
        Api::all(client)
    }
    fn state_api(client: Client, _: Option<&str>) -> Api<Self::State> {
        Api::all(client)
    }
    fn state_status(s: &Self::State) -> Option<ClusterBpfApplicationStateStatus> {
        s.status.clone()
    }
}

impl AppKind for BpfApplication {
    type State = BpfApplicationState;
    const KIND: &'static str = "BpfApplication";
    const STATE_KIND: &'static str = "BpfApplicationState";
    const FINALIZER: &'static str = FINALIZER_NAMESPACED_AGENT;
    const KEY: &'static str = "n";

    fn cluster_spec(&self) -> Result<ClusterBpfApplicationSpec, String> {
        let ns = self.namespace().unwrap_or_default();
        confine(
            serde_json::to_value(&self.spec)
                .and_then(serde_json::from_value::<ClusterBpfApplicationSpec>)
                .map_err(|e| format!("the spec does not read as an application: {e}"))?,
            &ns,
        )
    }
    fn app_api(client: Client, ns: Option<&str>) -> Api<Self> {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn guard_api(client: Client, ns: Option<&str>) -> Api<DeserializeGuard<Self>> {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn state_api(client: Client, ns: Option<&str>) -> Api<Self::State> {
        match ns {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn state_status(s: &Self::State) -> Option<ClusterBpfApplicationStateStatus> {
        s.status
            .as_ref()
            .and_then(|st| serde_json::to_value(st).ok())
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// A namespaced application's spec confined to `ns`: every pod and container selector
/// reaches only `ns`, the pull secret is read only from `ns`, and every network link is
/// inside a pod (the namespaced schema has no host links; a spec that somehow lacks the
/// selector is refused rather than attached on the host).
pub fn confine(
    mut spec: ClusterBpfApplicationSpec,
    ns: &str,
) -> Result<ClusterBpfApplicationSpec, String> {
    if let Some(img) = spec.byte_code.image.as_mut()
        && let Some(s) = img.image_pull_secret.as_mut()
    {
        s.namespace = ns.to_string();
    }
    for p in &mut spec.programs {
        let name = p.name.clone();
        let host = |what: &str| {
            format!(
                "program {name}: a {what} link of a namespaced BpfApplication must select pods (networkNamespaces)"
            )
        };
        for l in p.xdp.iter_mut().flat_map(|m| m.links.iter_mut()) {
            l.network_namespaces
                .as_mut()
                .ok_or_else(|| host("xdp"))?
                .namespace = Some(ns.to_string());
        }
        for l in p.tc.iter_mut().flat_map(|m| m.links.iter_mut()) {
            l.network_namespaces
                .as_mut()
                .ok_or_else(|| host("tc"))?
                .namespace = Some(ns.to_string());
        }
        for l in p.tcx.iter_mut().flat_map(|m| m.links.iter_mut()) {
            l.network_namespaces
                .as_mut()
                .ok_or_else(|| host("tcx"))?
                .namespace = Some(ns.to_string());
        }
        for l in p
            .uprobe
            .iter_mut()
            .chain(p.uretprobe.iter_mut())
            .flat_map(|m| m.links.iter_mut())
        {
            l.containers
                .as_mut()
                .ok_or_else(|| host("uprobe"))?
                .namespace = Some(ns.to_string());
        }
        if !p.type_.namespaced() {
            return Err(format!(
                "program {name}: type {} is not allowed in a namespaced BpfApplication",
                p.type_.as_str()
            ));
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_specs_reach_only_their_namespace() {
        let app: BpfApplication = serde_json::from_value(serde_json::json!({
            "apiVersion": "bpfman.io/v1alpha1", "kind": "BpfApplication",
            "metadata": {"name": "a", "namespace": "team-a"},
            "spec": {
                "nodeSelector": {},
                "byteCode": {"image": {"url": "r/x:1", "imagePullSecret": {"name": "s", "namespace": "kube-system"}}},
                "programs": [
                    {"name": "x", "type": "XDP", "xdp": {"links": [{"interfaceSelector": {"interfaces": ["eth0"]}, "networkNamespaces": {"pods": {}}}]}},
                    {"name": "u", "type": "UProbe", "uprobe": {"links": [{"target": "/bin/sh", "containers": {"pods": {}}}]}}
                ]
            }
        }))
        .expect("a BpfApplication");
        let spec = app.cluster_spec().expect("confined");
        assert_eq!(
            spec.byte_code
                .image
                .unwrap()
                .image_pull_secret
                .unwrap()
                .namespace,
            "team-a"
        );
        let xdp = &spec.programs[0].xdp.as_ref().unwrap().links[0];
        assert_eq!(
            xdp.network_namespaces
                .as_ref()
                .unwrap()
                .namespace
                .as_deref(),
            Some("team-a")
        );
        let up = &spec.programs[1].uprobe.as_ref().unwrap().links[0];
        assert_eq!(
            up.containers.as_ref().unwrap().namespace.as_deref(),
            Some("team-a")
        );
    }
}
