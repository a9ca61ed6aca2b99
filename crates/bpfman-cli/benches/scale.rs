//! The whole Kubernetes pipeline at scale, honestly simulated on one machine: 20 nodes, each
//! with its own real daemon (runtime dir, socket) and real agent, one real operator, one real
//! API server (+ controller manager) with its audit log counting each component's requests.
//!
//! * 25 applications selecting every node, created at once: each timed from its create until
//!   the operator's rolled-up condition on it says Success (all 20 nodes converged): 500
//!   States, 500 programs;
//! * then one more application: create to application Success;
//! * 60 s of idling: API requests per agent and by the operator;
//! * memory (VmRSS) of the agents and the operator.
//!
//! Run as root: `cargo build --release -p bpfman-agent -p bpfman-operator &&
//! cargo bench -p bpfman-cli --bench scale`.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_k8s::v1alpha1::ClusterBpfApplication;
use bpfman_k8s_testenv::{ControlPlane, Options};
use common::agent::{Agent, make_node, ms, pct, tracepoint};
use common::{BPFMAN, Daemon, obj};
use kube::api::{Api, ListParams, PostParams};

const NODES: usize = 20;
const APPS: usize = 25;

fn app(name: &str, tp: &str) -> ClusterBpfApplication {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "ClusterBpfApplication",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"bpfman-scale": "yes"}},
            "byteCode": {"path": obj("tracing_test.bpf.o")},
            "programs": [{"name": "tp_count", "type": "TracePoint", "tracepoint": {"links": [{"name": tp}]}}],
        },
    }))
    .expect("an application")
}

async fn app_success(apps: &Api<ClusterBpfApplication>) -> std::collections::BTreeSet<String> {
    apps.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            a.status
                .as_ref()
                .and_then(|s| s.conditions.first())
                .is_some_and(|c| c.type_ == "Success")
        })
        .filter_map(|a| a.metadata.name)
        .collect()
}

async fn converge(
    apps: &Api<ClusterBpfApplication>,
    names: &[String],
    first_tp: usize,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut t0 = Vec::new();
    for (i, n) in names.iter().enumerate() {
        apps.create(&PostParams::default(), &app(n, &tracepoint(first_tp + i)))
            .await
            .expect("create");
        t0.push(start.elapsed());
    }
    let mut done: Vec<Option<Duration>> = vec![None; names.len()];
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            let l = apps
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for a in l {
                let c = a.status.and_then(|s| s.conditions.first().cloned());
                eprintln!(
                    "{:?}: {:?}",
                    a.metadata.name,
                    c.map(|c| (c.type_, c.message))
                );
            }
            panic!("not converged in 300 s");
        }
        let ok = app_success(apps).await;
        for (i, n) in names.iter().enumerate() {
            if done[i].is_none() && ok.contains(n) {
                done[i] = Some(start.elapsed() - t0[i]);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.into_iter().flatten().collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    assert!(
        common::is_root(),
        "the scale benchmark loads programs: run it as root"
    );
    let plane = ControlPlane::start(Options {
        controller_manager: true,
        audit: true,
    })
    .expect("control plane");
    plane
        .apply_crds(&common::repo().join("deploy/kubernetes/crds"))
        .expect("CRDs");
    let client = plane.admin().await.expect("admin client");
    let apps: Api<ClusterBpfApplication> = Api::all(client);
    let node = |i: usize| format!("scale-node-{i}");
    let user = |i: usize| format!("scale-agent-{i}");
    let mut daemons = Vec::new();
    let mut agents = Vec::new();
    for i in 0..NODES {
        make_node(
            &plane,
            &node(i),
            &[("bpfman-scale", "yes")],
            &format!("10.254.0.{}", i + 1),
        );
        plane.kubectl_ok(
            &["patch", "node", &node(i), "--subresource=status", "--type=merge", "-p",
              r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"bench","lastHeartbeatTime":"2026-12-01T00:00:00Z","lastTransitionTime":"2026-12-01T00:00:00Z"}]}}"#],
            None,
        );
        daemons.push(Daemon::start());
    }
    for (i, d) in daemons.iter().enumerate() {
        let kc = plane
            .user_kubeconfig(&user(i), &["system:masters"])
            .expect("kubeconfig");
        agents.push(Agent::with_kubeconfig(&node(i), d, kc));
    }
    let op_kc = plane
        .user_kubeconfig("scale-operator", &["system:masters"])
        .expect("kubeconfig");
    let op_bin = std::path::Path::new(BPFMAN).with_file_name("bpfman-operator");
    let mut op = Command::new(&op_bin)
        .env("KUBECONFIG", &op_kc)
        .env("BPFMAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("bpfman-operator (cargo build --release -p bpfman-operator)");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let names: Vec<String> = (0..APPS).map(|i| format!("scale-{i}")).collect();
    let mut t = converge(&apps, &names, 0).await;
    println!(
        "{NODES} agents x {APPS} applications created at once ({} States): create to application Success p50 {}, p95 {}, all within {}",
        NODES * APPS,
        ms(pct(&mut t, 0.5)),
        ms(pct(&mut t, 0.95)),
        ms(pct(&mut t, 1.0))
    );
    let one = converge(&apps, &["scale-one".to_string()], APPS).await;
    println!(
        "one more application on {NODES} nodes: create to application Success {}",
        ms(one[0])
    );
    let before: Vec<_> = (0..NODES)
        .map(|i| plane.requests_by(&user(i)).expect("audit"))
        .collect();
    let op0 = plane.requests_by("scale-operator").expect("audit");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle: u64 = (0..NODES)
        .map(|i| plane.requests_by(&user(i)).expect("audit").0 - before[i].0)
        .sum();
    let op1 = plane.requests_by("scale-operator").expect("audit");
    println!(
        "idle 60 s: {:.2} API requests per agent, {} by the operator (leader election off)",
        idle as f64 / NODES as f64,
        op1.0 - op0.0
    );
    let mut rss: Vec<u64> = agents
        .iter()
        .filter_map(|a| a.child.as_ref().map(|c| rss_kib(c.id())))
        .collect();
    rss.sort();
    println!(
        "memory (VmRSS): agents median {} MiB, max {} MiB; operator {} MiB",
        rss[rss.len() / 2] / 1024,
        rss.last().copied().unwrap_or(0) / 1024,
        rss_kib(op.id()) / 1024
    );
    let _ = apps
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !apps
        .list(&ListParams::default())
        .await
        .map(|l| l.items.is_empty())
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            eprintln!("applications not gone within 120 s of deletion");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = op.kill();
    let _ = op.wait();
    drop(agents);
}
