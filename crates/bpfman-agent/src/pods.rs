//! Owns what the agent knows of the pods on its node: the running pods the API server places
//! here (one watch, `spec.nodeName` = this node), and, through the node's container runtime
//! (CRI, `runtime.v1`), each pod's sandbox and running containers with their host PIDs, which
//! give the network namespace (`<proc>/<pid>/ns/net`) and the process a uprobe enters.
//!
//! Pods are matched to sandboxes by pod UID (the `io.kubernetes.pod.uid` label every
//! kubelet sets), and the sandbox's namespace and UID are checked too: never by name alone
//! (two namespaces may hold pods of one name). Only the matched sandbox's containers are
//! listed and inspected, and a container's PID is remembered by container id.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::agent::Options;
use crate::expand::PodView;

pub mod cri {
    #![allow(clippy::all)]
    tonic::include_proto!("runtime.v1");
}

use cri::runtime_service_client::RuntimeServiceClient;

/// Upstream's probe order when `CONTAINER_RUNTIME_ENDPOINT` is unset.
pub const PROBE_ORDER: [&str; 6] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/dockershim.sock",
];

const CRI_TIMEOUT: Duration = Duration::from_secs(10);

/// The pods of this node.
pub struct Pods {
    client: Client,
    node: String,
    views: Mutex<Vec<PodView>>,
    /// Why the pods are not known (see [`Pods::error`]).
    error: Mutex<Option<String>>,
    pids: Mutex<HashMap<String, i32>>,
    runtime: tokio::sync::Mutex<Option<RuntimeServiceClient<Channel>>>,
}

fn endpoint_path(e: &str) -> &str {
    e.strip_prefix("unix://").unwrap_or(e)
}

async fn connect(path: &str) -> Result<RuntimeServiceClient<Channel>, String> {
    if !Path::new(path).exists() {
        return Err(format!("{path} does not exist"));
    }
    let ch = Endpoint::from_shared(format!("unix://{path}"))
        .map_err(|e| e.to_string())?
        .timeout(CRI_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let mut c = RuntimeServiceClient::new(ch);
    c.version(cri::VersionRequest {
        version: "v1".into(),
    })
    .await
    .map_err(|e| format!("{path}: Version: {}", e.message()))?;
    Ok(c)
}

impl Pods {
    pub fn new(client: Client, opts: &Options) -> Self {
        Self {
            client,
            node: opts.node.clone(),
            views: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            pids: Mutex::new(HashMap::new()),
            runtime: tokio::sync::Mutex::new(None),
        }
    }

    /// The running pods with their running containers, as last resolved.
    pub fn views(&self) -> Vec<PodView> {
        self.views.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the pods are not known: the watch's last attempt failed (with what the API server
    /// said, e.g. a missing `list pods` permission). Until the first listing the pods are
    /// simply none yet, and the listing wakes every application.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// The container runtime: `CONTAINER_RUNTIME_ENDPOINT`, else the first socket of upstream's
    /// probe order that answers `Version`.
    async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>, String> {
        let mut g = self.runtime.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = match std::env::var("CONTAINER_RUNTIME_ENDPOINT") {
            Ok(e) if !e.is_empty() => connect(endpoint_path(&e)).await?,
            _ => {
                let mut errs = Vec::new();
                let mut found = None;
                for p in PROBE_ORDER {
                    match connect(p).await {
                        Ok(c) => {
                            found = Some(c);
                            break;
                        }
                        Err(e) => errs.push(e),
                    }
                }
                found.ok_or_else(|| {
                    format!(
                        "no container runtime answered (set CONTAINER_RUNTIME_ENDPOINT): {}",
                        errs.join("; ")
                    )
                })?
            }
        };
        *g = Some(c.clone());
        Ok(c)
    }

    /// The running containers of one pod with their PIDs.
    async fn containers(&self, pod: &Pod) -> Result<Vec<(String, i32)>, String> {
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let mut rt = self.runtime().await?;
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    id: String::new(),
                    state: Some(cri::PodSandboxStateValue {
                        state: cri::PodSandboxState::SandboxReady as i32,
                    }),
                    label_selector: [("io.kubernetes.pod.uid".to_string(), uid.clone())].into(),
                }),
            })
            .await
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?
            .into_inner()
            .items;
        let mut out = Vec::new();
        for sb in sandboxes {
            let Some(m) = &sb.metadata else { continue };
            if m.uid != uid || m.namespace != ns {
                continue;
            }
            let cs = rt
                .list_containers(cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        id: String::new(),
                        state: Some(cri::ContainerStateValue {
                            state: cri::ContainerState::ContainerRunning as i32,
                        }),
                        pod_sandbox_id: sb.id.clone(),
                        label_selector: Default::default(),
                    }),
                })
                .await
                .map_err(|e| format!("ListContainers: {}", e.message()))?
                .into_inner()
                .containers;
            for c in cs {
                let name = c
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let known = self
                    .pids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&c.id)
                    .copied();
                let pid = match known {
                    Some(p) => p,
                    None => {
                        let r = rt
                            .container_status(cri::ContainerStatusRequest {
                                container_id: c.id.clone(),
                                verbose: true,
                            })
                            .await
                            .map_err(|e| format!("ContainerStatus: {}", e.message()))?
                            .into_inner();
                        let Some(pid) = pid_of(&r.info) else {
                            continue;
                        };
                        self.pids
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(c.id.clone(), pid);
                        pid
                    }
                };
                out.push((name, pid));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Watches this node's pods; after each change resolves the running ones and sends `()`
    /// when what applications can select changed.
    pub async fn run(self: Arc<Self>, tx: mpsc::Sender<()>) {
        let (store, writer) = reflector::store::<Pod>();
        let api: kube::Api<Pod> = kube::Api::all(self.client.clone());
        let stream = watcher(
            api,
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node)),
        )
        .default_backoff()
        .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        let mut warned = false;
        let mut listed = false;
        while let Some(ev) = stream.next().await {
            match &ev {
                Err(e) => {
                    tracing::warn!(error = %e, "watching pods");
                    // Never listed: the pods are unknown, and selectors say so. Once listed,
                    // what was last seen stands through a failing watch (an API server
                    // restart must not take links down).
                    if !listed {
                        let first = self.error().is_none();
                        self.set_error(Some(format!(
                            "listing pods on node {}: {e} (refused: the agent's service account needs list and watch on pods)",
                            self.node
                        )));
                        if first {
                            let _ = tx.try_send(());
                        }
                    }
                    continue;
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
            }
            // Listed (or a change after that): the pods are known from here.
            listed = true;
            let cleared = self.error().is_some();
            if cleared {
                self.set_error(None);
            }
            let mut views = Vec::new();
            let mut live_ids = Vec::new();
            for p in store.state() {
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if !running || p.meta().deletion_timestamp.is_some() {
                    continue;
                }
                match self.containers(&p).await {
                    Ok(cs) => {
                        live_ids.extend(cs.iter().map(|(_, pid)| *pid));
                        views.push(PodView {
                            namespace: p.namespace().unwrap_or_default(),
                            name: p.name_any(),
                            uid: p.uid().unwrap_or_default(),
                            labels: p.labels().clone().into_iter().collect::<BTreeMap<_, _>>(),
                            containers: cs,
                            host_network: p
                                .spec
                                .as_ref()
                                .and_then(|s| s.host_network)
                                .unwrap_or(false),
                        });
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "the container runtime: pods cannot be resolved");
                            warned = true;
                        }
                        *self.runtime.lock().await = None;
                    }
                }
            }
            views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            // Forget PIDs of containers that are gone.
            self.pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, pid| live_ids.contains(pid));
            let changed = {
                let mut g = self.views.lock().unwrap_or_else(|p| p.into_inner());
                let same = g.len() == views.len()
                    && g.iter().zip(&views).all(|(a, b)| {
                        a.uid == b.uid && a.labels == b.labels && a.containers == b.containers
                    });
                *g = views;
                !same
            };
            if (changed || cleared) && tx.send(()).await.is_err() {
                return;
            }
        }
    }
}

/// The PID in a verbose ContainerStatus: containerd and CRI-O put a JSON document under
/// `info` holding `pid`.
pub fn pid_of(info: &HashMap<String, String>) -> Option<i32> {
    let doc: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let pid = doc.get("pid")?.as_i64()?;
    i32::try_from(pid).ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_verbose_info() {
        let info = [(
            "info".to_string(),
            r#"{"sandboxID":"x","pid":4242,"runtimeSpec":{}}"#.to_string(),
        )]
        .into();
        assert_eq!(pid_of(&info), Some(4242));
        assert_eq!(pid_of(&HashMap::new()), None);
        let zero = [("info".to_string(), r#"{"pid":0}"#.to_string())].into();
        assert_eq!(pid_of(&zero), None, "an exited container has pid 0");
    }
}
