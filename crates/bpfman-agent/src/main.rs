//! `bpfman-agent`: the node agent binary. Node name from `--node-name` or `KUBE_NODE_NAME`,
//! daemon socket from `--socket` or `BPFMAN_SOCKET` (default `/run/bpfman-sock/bpfman.sock`),
//! cluster access from `KUBECONFIG` or the in-cluster service account.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "bpfman-agent",
    version,
    about = "bpfman's Kubernetes node agent"
)]
struct Args {
    /// This node's name (the DaemonSet sets KUBE_NODE_NAME from spec.nodeName).
    #[arg(long, env = "KUBE_NODE_NAME")]
    node_name: String,
    /// The daemon's socket.
    #[arg(long, env = "BPFMAN_SOCKET", default_value = bpfman_k8s::names::DEFAULT_AGENT_SOCKET)]
    socket: PathBuf,
    /// Where the node's /proc is seen (pods' network namespaces are named under it); default
    /// /host/proc when it exists (the DaemonSet's mount), else /proc.
    #[arg(long)]
    proc_dir: Option<String>,
    /// Seconds between checks of the daemon (restarts, programs or links removed behind the
    /// agent's back).
    #[arg(long, default_value_t = 1.0)]
    daemon_interval: f64,
    /// Seconds between checks of the host's interfaces (for interface discovery).
    #[arg(long, default_value_t = 2.0)]
    interface_interval: f64,
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--{what} must be a positive number of seconds"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BPFMAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if a.node_name.is_empty() {
        anyhow::bail!("the node name is empty: set KUBE_NODE_NAME or --node-name");
    }
    let proc_dir = a.proc_dir.unwrap_or_else(|| {
        if std::path::Path::new("/host/proc/1").exists() {
            bpfman_k8s::names::HOST_PROC.to_string()
        } else {
            "/proc".to_string()
        }
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no cluster access (KUBECONFIG or in-cluster): {e}"))?;
    bpfman_agent::run(
        client,
        bpfman_agent::Options {
            node: a.node_name,
            socket: a.socket,
            proc_dir,
            daemon_interval: secs(a.daemon_interval, "daemon-interval")?,
            interface_interval: secs(a.interface_interval, "interface-interval")?,
        },
    )
    .await
}
