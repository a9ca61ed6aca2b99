//! Owns the `Config` controller: from the singleton `bpfman-config` it keeps the namespace,
//! the ConfigMap holding the daemon's `bpfman.toml`, the `bpfman-daemon` DaemonSet (the daemon
//! and the agent on every node) and the `CSIDriver` object in line with the Config, puts back
//! what is deleted or edited, leaves alone what an `overrides` entry marks `unmanaged`, and
//! rolls the daemon pods when the configuration changes (the pod template carries it).
//!
//! What is rendered is pure (`render`), with unit tests; the controller applies it by
//! server-side apply under the field manager `bpfman-operator` with force, so an edit by hand
//! of a field the operator sets is taken back, and applying what is already there changes
//! nothing (no write, no new resourceVersion). Owned objects carry the Config as their
//! controller, so deleting the Config lets garbage collection take them; the namespace is not
//! owned (the operator itself may live in it).

use std::sync::Arc;
use std::time::Duration;

use bpfman_k8s::names::FINALIZER_CONFIG;
use bpfman_k8s::v1alpha1::{
    AgentSpec, CONFIG_NAME, ComponentOverride, Config, ConfigSpec, DaemonSpec,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "bpfman-operator";
/// The default namespace of the daemon and agent.
pub const DEFAULT_NAMESPACE: &str = "bpfman";
/// The DaemonSet.
pub const DAEMONSET: &str = "bpfman-daemon";
/// The ConfigMap.
pub const CONFIGMAP: &str = "bpfman-config";
/// The CSI driver's name.
pub const CSI_DRIVER: &str = "csi.bpfman.io";
/// Pod-template annotations carrying the configuration (upstream's keys): a change rolls the
/// pods. The configuration itself is in the ConfigMap; the annotation carries its digest
/// (`sha256:HEX`), since an annotation holds at most 256 KiB and upstream's whole-text value
/// makes a large configuration undeployable.
pub const ANNOTATION_TOML: &str = "bpfman.io.bpfman.toml";
pub const ANNOTATION_LOG: &str = "bpfman.io.bpfman.log.level";
pub const ANNOTATION_AGENT_LOG: &str = "bpfman.io.bpfman.agent.log.level";

/// Upstream's default `bpfman.toml` (`internal.DefaultConfiguration`), in this daemon's terms.
pub const DEFAULT_CONFIGURATION: &str = "[database]\nmax_retries = 30\nmillisec_delay = 10000\n\n[signing]\nallow_unsigned = true\nverify_enabled = true\n";

/// What the pod template's `bpfman.io.bpfman.toml` annotation holds for `configuration`.
pub fn config_digest(configuration: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(configuration.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The Config the operator creates at start when there is none.
pub fn default_config(daemon_image: &str, agent_image: &str) -> Config {
    Config::new(
        CONFIG_NAME,
        ConfigSpec {
            agent: AgentSpec {
                image: agent_image.to_string(),
                log_level: Some("info".to_string()),
                health_probe_port: 8175,
            },
            configuration: DEFAULT_CONFIGURATION.to_string(),
            daemon: DaemonSpec {
                image: daemon_image.to_string(),
                log_level: Some("info".to_string()),
                csi_registrar_image: None,
            },
            namespace: Some(DEFAULT_NAMESPACE.to_string()),
            overrides: None,
        },
    )
}

/// One object the operator manages.
#[derive(Clone, Debug, PartialEq)]
pub struct Managed {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub body: Value,
}

impl Managed {
    /// Whether an `overrides` entry leaves it alone.
    pub fn unmanaged(&self, overrides: &[ComponentOverride]) -> bool {
        let group = |v: &str| {
            v.rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default()
        };
        overrides.iter().any(|o| {
            o.unmanaged
                && o.kind == self.kind
                && group(&o.api_version) == group(self.api_version)
                && o.name == self.name
                && (self.namespace.is_none() || Some(&o.namespace) == self.namespace.as_ref())
        })
    }
}

/// The namespace the Config deploys to.
pub fn namespace_of(spec: &ConfigSpec) -> String {
    spec.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

fn owner(c: &Config) -> Value {
    json!([{
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "Config",
        "name": c.name_any(),
        "uid": c.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// Everything the Config stands for, in the order it is applied.
pub fn render(c: &Config) -> Vec<Managed> {
    let spec = &c.spec;
    let ns = namespace_of(spec);
    let log = spec
        .daemon
        .log_level
        .clone()
        .unwrap_or_else(|| "info".to_string());
    let agent_log = spec
        .agent
        .log_level
        .clone()
        .unwrap_or_else(|| "info".to_string());
    let owner = owner(c);
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {
            // The daemon's pod needs host namespaces and host paths.
            "pod-security.kubernetes.io/enforce": "privileged",
            "pod-security.kubernetes.io/audit": "privileged",
            "pod-security.kubernetes.io/warn": "privileged",
        }},
    });
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": ns, "ownerReferences": owner},
        "data": {
            "bpfman.toml": spec.configuration,
            "bpfman.log.level": log,
            "bpfman.agent.log.level": agent_log,
        },
    });
    let csidriver = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
        "metadata": {"name": CSI_DRIVER, "ownerReferences": owner},
        "spec": {
            "attachRequired": false,
            "podInfoOnMount": true,
            "volumeLifecycleModes": ["Ephemeral"],
            "fsGroupPolicy": "ReadWriteOnceWithFSType",
            "requiresRepublish": false,
            "storageCapacity": false,
            "seLinuxMount": false,
        },
    });
    let daemonset = daemonset(c, &ns, &log, &agent_log, owner);
    vec![
        Managed {
            api_version: "v1",
            kind: "Namespace",
            namespace: None,
            name: ns.clone(),
            body: namespace,
        },
        Managed {
            api_version: "v1",
            kind: "ConfigMap",
            namespace: Some(ns.clone()),
            name: CONFIGMAP.to_string(),
            body: configmap,
        },
        Managed {
            api_version: "storage.k8s.io/v1",
            kind: "CSIDriver",
            namespace: None,
            name: CSI_DRIVER.to_string(),
            body: csidriver,
        },
        Managed {
            api_version: "apps/v1",
            kind: "DaemonSet",
            namespace: Some(ns),
            name: DAEMONSET.to_string(),
            body: daemonset,
        },
    ]
}

fn host_path(name: &str, path: &str, kind: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path, "type": kind}})
}

/// The daemon and agent on every node.
///
/// Privileges: the daemon container is `privileged` because the kernel and the kubelet force
/// it: its runtime directory (the store and the bpffs holding every pin) is mounted with
/// `Bidirectional` propagation so the bpffs it mounts outlives the container (programs stay
/// loaded across a roll), and the kubelet allows `Bidirectional` only in privileged
/// containers; loading needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN (bpffs,
/// entering network namespaces) anyway. The agent is not privileged: uid 0 (the daemon
/// serves root's requests on behalf of Kubernetes namespaces) with every capability dropped
/// but CAP_SYS_PTRACE (reading other processes' `/proc/PID/ns/net` to find pods' network
/// namespaces); it reaches the daemon through the shared socket and the container runtime
/// through its socket.
fn daemonset(c: &Config, ns: &str, log: &str, agent_log: &str, owner: Value) -> Value {
    let spec = &c.spec;
    let labels = json!({"name": DAEMONSET, "app.kubernetes.io/name": "bpfman", "app.kubernetes.io/component": "daemon"});
    let node_env = json!({"name": "KUBE_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}});
    let daemon = json!({
        "name": "bpfman",
        "image": spec.daemon.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bpfman"],
        "args": ["--socket", "/run/bpfman-sock/bpfman.sock", "daemon",
                 "--config", "/etc/bpfman/bpfman.toml", "--runtime-dir", "/run/bpfman"],
        "env": [
            {"name": "BPFMAN_LOG", "valueFrom": {"configMapKeyRef": {"name": CONFIGMAP, "key": "bpfman.log.level"}}},
            node_env,
        ],
        "securityContext": {"privileged": true, "runAsUser": 0},
        "volumeMounts": [
            {"name": "bpfman-sock", "mountPath": "/run/bpfman-sock"},
            {"name": "runtime", "mountPath": "/run/bpfman", "mountPropagation": "Bidirectional"},
            {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "Bidirectional"},
            {"name": "tracefs", "mountPath": "/sys/kernel/tracing"},
            {"name": "host-proc", "mountPath": "/host/proc", "mountPropagation": "HostToContainer"},
            {"name": "host-netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer"},
            {"name": "config", "mountPath": "/etc/bpfman/bpfman.toml", "subPath": "bpfman.toml", "readOnly": true},
        ],
    });
    let agent = json!({
        "name": "bpfman-agent",
        "image": spec.agent.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bpfman-agent"],
        "args": ["--socket", "/run/bpfman-sock/bpfman.sock", "--proc-dir", "/host/proc"],
        "env": [
            {"name": "BPFMAN_LOG", "valueFrom": {"configMapKeyRef": {"name": CONFIGMAP, "key": "bpfman.agent.log.level"}}},
            node_env,
        ],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]},
        },
        "volumeMounts": [
            {"name": "bpfman-sock", "mountPath": "/run/bpfman-sock"},
            {"name": "host-proc", "mountPath": "/host/proc", "mountPropagation": "HostToContainer", "readOnly": true},
            {"name": "containerd-sock", "mountPath": "/run/containerd/containerd.sock"},
            {"name": "crio-sock", "mountPath": "/run/crio/crio.sock"},
        ],
    });
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": DAEMONSET, "namespace": ns, "labels": labels, "ownerReferences": owner},
        "spec": {
            "selector": {"matchLabels": {"name": DAEMONSET}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        ANNOTATION_TOML: config_digest(&spec.configuration),
                        ANNOTATION_LOG: log,
                        ANNOTATION_AGENT_LOG: agent_log,
                    },
                },
                "spec": {
                    "serviceAccountName": "bpfman-daemon",
                    "automountServiceAccountToken": true,
                    // Interfaces are named in the host's network namespace, and processes
                    // (uprobe targets, pods' namespaces) by host pids.
                    "hostNetwork": true,
                    "hostPID": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "terminationGracePeriodSeconds": 15,
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
                    ],
                    "containers": [daemon, agent],
                    "volumes": [
                        {"name": "bpfman-sock", "emptyDir": {}},
                        host_path("runtime", "/run/bpfman", "DirectoryOrCreate"),
                        host_path("bpffs", "/sys/fs/bpf", "DirectoryOrCreate"),
                        host_path("tracefs", "/sys/kernel/tracing", "Directory"),
                        host_path("host-proc", "/proc", "Directory"),
                        host_path("host-netns", "/run/netns", "DirectoryOrCreate"),
                        host_path("containerd-sock", "/run/containerd/containerd.sock", ""),
                        host_path("crio-sock", "/run/crio/crio.sock", ""),
                        {"name": "config", "configMap": {"name": CONFIGMAP}},
                    ],
                },
            },
        },
    })
}

/// What the Config controller reads.
pub struct Ctx {
    pub client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

async fn apply(client: &Client, m: &Managed) -> Result<(), Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(&m.body);
    let r = match m.kind {
        "Namespace" => Api::<Namespace>::all(client.clone())
            .patch(&m.name, &pp, &patch)
            .await
            .map(|_| ()),
        "ConfigMap" => {
            Api::<ConfigMap>::namespaced(client.clone(), m.namespace.as_deref().unwrap_or_default())
                .patch(&m.name, &pp, &patch)
                .await
                .map(|_| ())
        }
        "CSIDriver" => Api::<CSIDriver>::all(client.clone())
            .patch(&m.name, &pp, &patch)
            .await
            .map(|_| ()),
        _ => {
            Api::<DaemonSet>::namespaced(client.clone(), m.namespace.as_deref().unwrap_or_default())
                .patch(&m.name, &pp, &patch)
                .await
                .map(|_| ())
        }
    };
    r.map_err(|source| Error::Apply {
        kind: m.kind,
        name: m.name.clone(),
        source,
    })
}

/// Deletes what this Config owns under the managed names in namespaces it no longer deploys
/// to (its namespace was changed): otherwise two DaemonSets would run two daemons per node.
async fn remove_moved(
    client: &Client,
    c: &Config,
    ns: &str,
    overrides: &[ComponentOverride],
) -> Result<(), Error> {
    let uid = c.uid().unwrap_or_default();
    let owned =
        |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.into_iter()
                .flatten()
                .any(|o| o.kind == "Config" && o.uid == uid && o.controller == Some(true))
        };
    let unmanaged = |api_version: &'static str, kind: &'static str, other: &str, name: &str| {
        Managed {
            api_version,
            kind,
            namespace: Some(other.to_string()),
            name: name.to_string(),
            body: Value::Null,
        }
        .unmanaged(overrides)
    };
    let lp = kube::api::ListParams::default().fields(&format!("metadata.name={DAEMONSET}"));
    for d in Api::<DaemonSet>::all(client.clone()).list(&lp).await?.items {
        let other = d.namespace().unwrap_or_default();
        if other != ns
            && owned(d.metadata.owner_references.as_ref())
            && !unmanaged("apps/v1", "DaemonSet", &other, DAEMONSET)
        {
            tracing::info!(
                namespace = other,
                "the Config moved: deleting its DaemonSet left there"
            );
            Api::<DaemonSet>::namespaced(client.clone(), &other)
                .delete(DAEMONSET, &Default::default())
                .await?;
        }
    }
    let lp = kube::api::ListParams::default().fields(&format!("metadata.name={CONFIGMAP}"));
    for m in Api::<ConfigMap>::all(client.clone()).list(&lp).await?.items {
        let other = m.namespace().unwrap_or_default();
        if other != ns
            && owned(m.metadata.owner_references.as_ref())
            && !unmanaged("v1", "ConfigMap", &other, CONFIGMAP)
        {
            tracing::info!(
                namespace = other,
                "the Config moved: deleting its ConfigMap left there"
            );
            Api::<ConfigMap>::namespaced(client.clone(), &other)
                .delete(CONFIGMAP, &Default::default())
                .await?;
        }
    }
    Ok(())
}

async fn reconcile(c: Arc<Config>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if c.name_any() != CONFIG_NAME {
        tracing::warn!(
            config = c.name_any(),
            "only the Config named {CONFIG_NAME} is reconciled: ignored"
        );
        return Ok(Action::await_change());
    }
    let api: Api<Config> = Api::all(ctx.client.clone());
    let has_fin = c.finalizers().iter().any(|f| f == FINALIZER_CONFIG);
    if c.meta().deletion_timestamp.is_some() {
        crate::finalizer::remove(&api, c.as_ref(), FINALIZER_CONFIG).await?;
        return Ok(Action::await_change());
    }
    if !has_fin {
        crate::finalizer::add(&api, c.as_ref(), FINALIZER_CONFIG).await?;
        return Ok(Action::await_change());
    }
    let overrides = c.spec.overrides.clone().unwrap_or_default();
    let ns = namespace_of(&c.spec);
    let r = async {
        for m in render(&c) {
            if m.unmanaged(&overrides) {
                tracing::debug!(
                    kind = m.kind,
                    name = m.name,
                    "unmanaged by an override: left alone"
                );
                continue;
            }
            apply(&ctx.client, &m).await?;
        }
        remove_moved(&ctx.client, &c, &ns, &overrides).await
    }
    .await;
    let (t, msg) = match &r {
        Ok(()) => (
            "Success",
            format!(
                "Deployed to namespace {ns}: ConfigMap {CONFIGMAP}, DaemonSet {DAEMONSET}, CSIDriver {CSI_DRIVER} (unmanaged overrides left alone)"
            ),
        ),
        Err(e) => (
            "Error",
            crate::rollup::bound(format!("{e}; fix the Config")),
        ),
    };
    let old = c.status.as_ref().and_then(|s| s.conditions.first());
    if old.is_none_or(|o| o.type_ != t || o.message != msg) {
        let cond = bpfman_k8s::conditions::Condition {
            type_: t.to_string(),
            status: "True".to_string(),
            reason: t.to_string(),
            message: msg,
            last_transition_time: bpfman_k8s::conditions::now_rfc3339(),
            observed_generation: c.meta().generation,
        };
        api.patch_status(
            CONFIG_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [cond]}})),
        )
        .await?;
    }
    r.map(|()| Action::await_change())
}

fn error_policy(_: Arc<Config>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "Config reconcile failed: retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Creates the default Config when there is none.
pub async fn ensure_default(
    client: &Client,
    daemon_image: &str,
    agent_image: &str,
) -> Result<(), kube::Error> {
    let api: Api<Config> = Api::all(client.clone());
    if api.get_opt(CONFIG_NAME).await?.is_some() {
        return Ok(());
    }
    match api
        .create(
            &PostParams::default(),
            &default_config(daemon_image, agent_image),
        )
        .await
    {
        Ok(_) => {
            tracing::info!("created the default Config {CONFIG_NAME}");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the Config controller until the process ends.
pub async fn run(client: Client) {
    let by_name = || watcher::Config::default();
    let configs: Api<Config> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    Controller::new(
        configs,
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_NAME}")),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        by_name().fields(&format!("metadata.name={CONFIGMAP}")),
    )
    .owns(
        Api::<DaemonSet>::all(client.clone()),
        by_name().fields(&format!("metadata.name={DAEMONSET}")),
    )
    .owns(
        Api::<CSIDriver>::all(client.clone()),
        by_name().fields(&format!("metadata.name={CSI_DRIVER}")),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "Config controller");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = default_config("quay.io/x/bpfman:1", "quay.io/x/agent:1");
        c.metadata.uid = Some("u-1".into());
        c
    }

    #[test]
    fn renders_the_four_objects_owned_by_the_config() {
        let objs = render(&config());
        let kinds: Vec<&str> = objs.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap", "CSIDriver", "DaemonSet"]);
        for m in &objs[1..] {
            assert_eq!(
                m.body["metadata"]["ownerReferences"][0]["uid"], "u-1",
                "{}",
                m.kind
            );
            assert_eq!(m.body["metadata"]["ownerReferences"][0]["controller"], true);
        }
        assert!(objs[0].body["metadata"]["ownerReferences"].is_null());
        let ds = &objs[3].body;
        assert_eq!(ds["metadata"]["namespace"], "bpfman");
        let containers = ds["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers[0]["image"], "quay.io/x/bpfman:1");
        assert_eq!(containers[1]["image"], "quay.io/x/agent:1");
        assert_eq!(
            containers[1]["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        assert!(containers[1]["securityContext"]["privileged"].is_null());
        assert_eq!(objs[1].body["data"]["bpfman.toml"], DEFAULT_CONFIGURATION);
    }

    #[test]
    fn a_configuration_change_changes_the_pod_template() {
        let a = render(&config());
        let mut c = config();
        c.spec.configuration.push_str("\n[registry]\n");
        let b = render(&c);
        assert_ne!(a[3].body["spec"]["template"], b[3].body["spec"]["template"]);
        c = config();
        c.spec.agent.log_level = Some("debug".into());
        let b = render(&c);
        assert_ne!(a[3].body["spec"]["template"], b[3].body["spec"]["template"]);
        assert_eq!(render(&config()), a, "rendering is deterministic");
    }

    #[test]
    fn overrides_match_kind_group_namespace_and_name() {
        let objs = render(&config());
        let o = |api: &str, kind: &str, ns: &str, name: &str, unmanaged: bool| ComponentOverride {
            api_version: api.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            unmanaged,
        };
        let ds = &objs[3];
        assert!(ds.unmanaged(&[o("apps/v1", "DaemonSet", "bpfman", DAEMONSET, true)]));
        assert!(!ds.unmanaged(&[o("apps/v1", "DaemonSet", "bpfman", DAEMONSET, false)]));
        assert!(!ds.unmanaged(&[o("apps/v1", "DaemonSet", "other", DAEMONSET, true)]));
        assert!(!ds.unmanaged(&[o(
            "extensions/v1beta1",
            "DaemonSet",
            "bpfman",
            DAEMONSET,
            true
        )]));
        assert!(!ds.unmanaged(&[o("apps/v1", "Deployment", "bpfman", DAEMONSET, true)]));
        let cm = &objs[1];
        assert!(cm.unmanaged(&[o("v1", "ConfigMap", "bpfman", CONFIGMAP, true)]));
        let csi = &objs[2];
        assert!(csi.unmanaged(&[o("storage.k8s.io/v1", "CSIDriver", "", CSI_DRIVER, true)]));
    }
}
