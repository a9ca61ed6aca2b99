//! bpfman's Kubernetes operator: it rolls every application's per-node States up into the
//! application's one condition (`apps`, by the rule in `rollup`), and deploys the daemon and
//! the agent from the `bpfman-config` Config (`config`): namespace, ConfigMap, DaemonSet and
//! CSIDriver, kept in line and rolled on change. One replica acts at a time when leader
//! election is on (`lease`). It never talks to a daemon: the agents do.

pub mod apps;
pub mod config;
pub mod finalizer;
pub mod lease;
pub mod rollup;

use bpfman_k8s::v1alpha1::{BpfApplication, ClusterBpfApplication};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The images of a default Config created at start when there is none (upstream's
    /// `BPFMAN_IMG`, `BPFMAN_AGENT_IMG`); `None`: no default is created.
    pub default_images: Option<(String, String)>,
    /// Leader election; `None`: this replica acts alone.
    pub leader: Option<lease::Options>,
    /// This replica's name in Events.
    pub identity: String,
}

/// Every controller, until one ends.
async fn controllers(client: Client, opts: &Options) -> anyhow::Result<()> {
    if let Some((d, a)) = &opts.default_images {
        config::ensure_default(&client, d, a)
            .await
            .map_err(|e| anyhow::anyhow!("creating the default Config: {e}"))?;
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "bpfman-operator".to_string(),
            instance: Some(opts.identity.clone()),
        },
    );
    let (nodes, mut changed, node_task) = apps::watch_nodes(client.clone(), 2);
    let (ns_changed, cl_changed) = match (changed.pop(), changed.pop()) {
        (Some(a), Some(b)) => (a, b),
        _ => anyhow::bail!("node subscriptions"),
    };
    tracing::info!(identity = opts.identity, "bpfman-operator running");
    futures::join!(
        node_task,
        config::run(client.clone()),
        apps::run_kind::<ClusterBpfApplication>(
            client.clone(),
            nodes.clone(),
            cl_changed,
            recorder.clone()
        ),
        apps::run_kind::<BpfApplication>(client.clone(), nodes, ns_changed, recorder),
    );
    Ok(())
}

/// Runs the operator until it is stopped (SIGINT or SIGTERM) or loses its Lease.
pub async fn run(client: Client, opts: Options) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let Some(lo) = opts.leader.clone() else {
        tokio::select! {
            r = controllers(client, &opts) => return r,
            _ = stop => return Ok(()),
        }
    };
    let held = tokio::select! {
        h = lease::acquire(client.clone(), lo) => h,
        _ = stop => return Ok(()),
    };
    // `stop` was consumed above only if it fired; make a new one for the leading phase.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let r = tokio::select! {
        r = controllers(client, &opts) => r,
        _ = held.keep() => Err(anyhow::anyhow!("lost the leader Lease: stopping so another replica leads")),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    held.release().await;
    r
}
