//! `bpfman-operator`: the operator binary. Cluster access from `KUBECONFIG` or the in-cluster
//! service account; images of the default Config from `BPFMAN_IMG` and `BPFMAN_AGENT_IMG`
//! (upstream's variables); leader election with `--leader-elect` (upstream's flag).

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "bpfman-operator",
    version,
    about = "bpfman's Kubernetes operator"
)]
struct Args {
    /// Hold a Lease so that one replica acts at a time.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease's namespace (default: this pod's, from POD_NAMESPACE, else "bpfman").
    #[arg(long, env = "POD_NAMESPACE", default_value = "bpfman")]
    leader_election_namespace: String,
    /// This replica's identity (default: the pod's name from POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease not renewed stays held.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds between renewals (and between attempts while another replica leads).
    #[arg(long, default_value_t = 2)]
    lease_retry: u64,
    /// The daemon image of the default Config created when there is none.
    #[arg(long, env = "BPFMAN_IMG")]
    daemon_image: Option<String>,
    /// The agent image of the default Config created when there is none.
    #[arg(long, env = "BPFMAN_AGENT_IMG")]
    agent_image: Option<String>,
    /// Print the default Config (JSON, which kubectl takes) and exit (upstream's `default-config`).
    #[arg(long)]
    print_default_config: bool,
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
    let images = match (a.daemon_image, a.agent_image) {
        (Some(d), Some(g)) if !d.is_empty() && !g.is_empty() => Some((d, g)),
        (None, None) => None,
        _ => anyhow::bail!(
            "give both BPFMAN_IMG and BPFMAN_AGENT_IMG (--daemon-image, --agent-image) for the default Config, or neither"
        ),
    };
    if a.print_default_config {
        let (d, g) = images.clone().unwrap_or_else(|| {
            (
                "quay.io/bpfman/bpfman:latest".to_string(),
                "quay.io/bpfman/bpfman-agent:latest".to_string(),
            )
        });
        let c = bpfman_operator::config::default_config(&d, &g);
        print!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let identity = a.identity.unwrap_or_else(|| {
        nix_hostname().unwrap_or_else(|| format!("bpfman-operator-{}", std::process::id()))
    });
    if a.lease_retry == 0 || a.lease_duration <= a.lease_retry {
        anyhow::bail!("--lease-duration must be longer than --lease-retry, and both positive");
    }
    let leader = a.leader_elect.then(|| bpfman_operator::lease::Options {
        namespace: a.leader_election_namespace,
        name: bpfman_operator::lease::LEASE_NAME.to_string(),
        identity: identity.clone(),
        duration: Duration::from_secs(a.lease_duration),
        retry: Duration::from_secs(a.lease_retry),
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no cluster access (KUBECONFIG or in-cluster): {e}"))?;
    bpfman_operator::run(
        client,
        bpfman_operator::Options {
            default_images: images,
            leader,
            identity,
        },
    )
    .await
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
