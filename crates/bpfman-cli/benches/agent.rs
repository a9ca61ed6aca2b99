//! The node agent's speed and its cost to the API server: the real agent binary, real daemons
//! and a real API server (with its audit log, to count each agent's requests).
//!
//! * one agent: 30 applications created one after another, each timed from its create to its
//!   State's Success (the median and p95), then 30 more created at once;
//! * the API requests that agent made per application converged, and in 60 s of idling;
//! * four agents (four daemons): 50 applications selecting every node created at once, each
//!   timed until all four States say Success.
//!
//! Run as root: `cargo bench -p bpfman-cli --bench agent`.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bpfman_k8s::v1alpha1::{ClusterBpfApplication, ClusterBpfApplicationState};
use bpfman_k8s_testenv::{ControlPlane, Options};
use common::agent::{Agent, make_node, ms, pct, tracepoint};
use common::{Daemon, obj};
use kube::api::{Api, ListParams, PostParams};

fn app(name: &str, selector: &str, tp: &str) -> ClusterBpfApplication {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "ClusterBpfApplication",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"bpfman-bench": selector}},
            "byteCode": {"path": obj("tracing_test.bpf.o")},
            "programs": [{
                "name": "tp_count",
                "type": "TracePoint",
                "tracepoint": {"links": [{"name": tp}]},
            }],
        },
    }))
    .expect("an application")
}

/// How many of `app`'s States say Success.
async fn successes(states: &Api<ClusterBpfApplicationState>, app: &str) -> usize {
    let l = states
        .list(&ListParams::default().labels(&format!("bpfman.io/ownedByProgram={app}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    l.iter()
        .filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.conditions.first())
                .is_some_and(|c| c.type_ == "Success")
        })
        .count()
}

/// Creates `names` (all at once) and returns each one's time to `nodes` Successes.
async fn converge(
    apps: &Api<ClusterBpfApplication>,
    states: &Api<ClusterBpfApplicationState>,
    names: &[String],
    selector: &str,
    nodes: usize,
    first_tp: usize,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut t0 = Vec::new();
    for (i, n) in names.iter().enumerate() {
        apps.create(
            &PostParams::default(),
            &app(n, selector, &tracepoint(first_tp + i)),
        )
        .await
        .expect("create");
        t0.push(start.elapsed());
    }
    let mut done: Vec<Option<Duration>> = vec![None; names.len()];
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            for (i, n) in names.iter().enumerate() {
                if done[i].is_none() {
                    let l = states
                        .list(
                            &ListParams::default().labels(&format!("bpfman.io/ownedByProgram={n}")),
                        )
                        .await
                        .map(|l| l.items)
                        .unwrap_or_default();
                    eprintln!("{n}: {}", serde_json::to_string(&l).unwrap_or_default());
                }
            }
            panic!("not converged in 300 s");
        }
        for (i, n) in names.iter().enumerate() {
            if done[i].is_none() && successes(states, n).await == nodes {
                done[i] = Some(start.elapsed() - t0[i]);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done.into_iter().flatten().collect()
}

async fn clean(apps: &Api<ClusterBpfApplication>, states: &Api<ClusterBpfApplicationState>) {
    let _ = apps
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while states
        .list(&ListParams::default())
        .await
        .map(|l| !l.items.is_empty())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "States not gone in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    assert!(
        common::is_root(),
        "the agent benchmark loads programs: run it as root"
    );
    let plane = ControlPlane::start(Options {
        controller_manager: false,
        audit: true,
    })
    .expect("control plane");
    plane
        .apply_crds(&common::repo().join("deploy/kubernetes/crds"))
        .expect("CRDs");
    let client = plane.admin().await.expect("admin client");
    let apps: Api<ClusterBpfApplication> = Api::all(client.clone());
    let states: Api<ClusterBpfApplicationState> = Api::all(client);
    let user = |i: usize| format!("bench-agent-{i}");
    let node = |i: usize| format!("bench-node-{i}");
    let mut daemons = Vec::new();
    let mut agents = Vec::new();
    for i in 0..4 {
        let sel = if i == 0 { "one" } else { "many" };
        make_node(
            &plane,
            &node(i),
            &[("bpfman-bench", sel)],
            &format!("10.251.0.{}", i + 1),
        );
        daemons.push(Daemon::start());
    }
    let kc = plane
        .user_kubeconfig(&user(0), &["system:masters"])
        .expect("kubeconfig");
    agents.push(Agent::with_kubeconfig(&node(0), &daemons[0], kc));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One agent, one application at a time.
    let before = plane.requests_by(&user(0)).expect("audit");
    let mut seq = Vec::new();
    for i in 0..30 {
        let n = vec![format!("seq-{i}")];
        seq.extend(converge(&apps, &states, &n, "one", 1, i).await);
    }
    let after = plane.requests_by(&user(0)).expect("audit");
    let per_app = (after.0 - before.0) as f64 / 30.0;
    let writes_per_app = (after.1 - before.1) as f64 / 30.0;
    println!(
        "one agent, 30 applications one at a time: create to State Success p50 {}, p95 {}, max {}",
        ms(pct(&mut seq, 0.5)),
        ms(pct(&mut seq, 0.95)),
        ms(pct(&mut seq, 1.0))
    );
    println!(
        "  API requests by the agent per application converged: {per_app:.1} (writes {writes_per_app:.1})"
    );
    // Idle: nothing changes for 60 s.
    let idle0 = plane.requests_by(&user(0)).expect("audit");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle1 = plane.requests_by(&user(0)).expect("audit");
    println!(
        "  idle 60 s with 30 applications: {} requests ({} writes), {} watches (re)started",
        idle1.0 - idle0.0,
        idle1.1 - idle0.1,
        idle1.2 - idle0.2
    );
    // One agent, 30 at once.
    let burst: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    let mut b = converge(&apps, &states, &burst, "one", 1, 30).await;
    println!(
        "one agent, 30 more created at once: p50 {}, p95 {}, all within {}",
        ms(pct(&mut b, 0.5)),
        ms(pct(&mut b, 0.95)),
        ms(pct(&mut b, 1.0))
    );
    clean(&apps, &states).await;
    drop(agents);

    // Four agents, 50 applications selecting all of them (the first node relabelled).
    plane.kubectl_ok(
        &[
            "label",
            "node",
            &node(0),
            "bpfman-bench=many",
            "--overwrite",
        ],
        None,
    );
    let mut agents = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        let kc = plane
            .user_kubeconfig(&user(10 + i), &["system:masters"])
            .expect("kubeconfig");
        agents.push(Agent::with_kubeconfig(&node(i), d, kc));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<_> = (0..4)
        .map(|i| plane.requests_by(&user(10 + i)).expect("audit"))
        .collect();
    let many: Vec<String> = (0..50).map(|i| format!("many-{i}")).collect();
    let mut m = converge(&apps, &states, &many, "many", 4, 0).await;
    let reqs: u64 = (0..4)
        .map(|i| plane.requests_by(&user(10 + i)).expect("audit").0 - before[i].0)
        .sum();
    println!(
        "four agents, 50 applications at once (200 States): p50 {}, p95 {}, all within {}",
        ms(pct(&mut m, 0.5)),
        ms(pct(&mut m, 0.95)),
        ms(pct(&mut m, 1.0))
    );
    println!(
        "  API requests per State converged: {:.1}",
        reqs as f64 / 200.0
    );
    clean(&apps, &states).await;
    drop(agents);
}
