//! Least privilege for the node agent, proven by the API server: the real agent runs with a
//! TokenRequest token of the `bpfman-daemon` service account bound by exactly
//! deploy/kubernetes/rbac/agent.yaml (RBAC and OwnerReferencesPermissionEnforcement on), and
//! everything it does works: its State made, finalized and written, its program loaded, an
//! image pull Secret read, this node's pods listed. Then each rule of its ClusterRole is taken
//! away in turn, and something it does stops working (a rule nothing needs is a defect). Needs
//! root (a real daemon and kernel).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use common::agent::*;
use common::*;
use serde_json::{Value, json};

fn yaml_docs(path: &std::path::Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).expect("read");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

fn apply_json(p: &ControlPlane, v: &Value) {
    p.kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&v.to_string()),
    );
}

/// The agent's service-account kubeconfig, its roles from deploy/ applied.
fn agent_account(p: &ControlPlane) -> PathBuf {
    let d = repo().join("deploy/kubernetes");
    p.deployed_account(
        &[d.join("namespace.yaml"), d.join("rbac/agent.yaml")],
        "bpfman",
        "bpfman-daemon",
    )
    .expect("the agent's service-account kubeconfig")
}

fn cluster_state(p: &ControlPlane, app: &str, node: &str) -> Value {
    state(p, app, node).unwrap_or(Value::Null)
}

/// Everything the agent does, with whatever roles are in place; what happened within `secs`.
fn exercise(
    p: &ControlPlane,
    d: &Daemon,
    kc: &std::path::Path,
    secs: u64,
) -> (BTreeSet<&'static str>, Duration) {
    let u = unique();
    let node = node_name("rbac");
    make_node(
        p,
        &node,
        &[],
        &format!("10.252.{}.{}", u / 200 % 250, u % 200 + 1),
    );
    let (tp, img, pods) = (
        format!("rbac-tp-{u}"),
        format!("rbac-img-{u}"),
        format!("rbac-pods-{u}"),
    );
    let secret = format!("rbac-pull-{u}");
    // A pull Secret with credentials for a registry that refuses connections.
    let auth = "dXNlcjpwYXNz"; // user:pass
    let cfg = json!({"auths": {"127.0.0.1:1": {"auth": auth}}}).to_string();
    apply_json(
        p,
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": secret, "namespace": "default"},
            "stringData": {".dockerconfigjson": cfg}}),
    );
    apply(
        p,
        &format!(
            "apiVersion: bpfman.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {tp}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubernetes.io/hostname: {node}\n  byteCode:\n    path: \"{}\"\n  programs:\n    - name: tp_count\n      type: TracePoint\n      tracepoint:\n        links:\n          - name: syscalls/sys_enter_getpid\n",
            obj("tracing_test.bpf.o")
        ),
    );
    apply(
        p,
        &format!(
            "apiVersion: bpfman.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {img}\nspec:\n  nodeSelector:\n    matchLabels:\n      kubernetes.io/hostname: {node}\n  byteCode:\n    image:\n      url: 127.0.0.1:1/bpfman/nothing:1\n      imagePullPolicy: Always\n      imagePullSecret:\n        name: {secret}\n        namespace: default\n  programs:\n    - name: tp_count\n      type: TracePoint\n      tracepoint:\n        links:\n          - name: syscalls/sys_enter_getpid\n"
        ),
    );
    apply(
        p,
        &pod_xdp_app(
            "ClusterBpfApplication",
            &pods,
            None,
            &node,
            &format!("nobody-{u}"),
            500,
        ),
    );
    let mut agent = Agent::with_kubeconfig(&node, d, kc.to_path_buf());
    let all = 7;
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(secs) && seen.len() < all {
        let s = cluster_state(p, &tp, &node);
        if !s.is_null() {
            seen.insert("State made");
        }
        if s["metadata"]["finalizers"].as_array().is_some_and(|f| {
            f.iter()
                .any(|x| x == "bpfman.io.clbpfapplicationcontroller/finalizer")
        }) {
            seen.insert("State finalizer");
        }
        let (t, _, _) = cond(&s);
        if !t.is_empty() {
            seen.insert("State condition");
        }
        if t == "Success" {
            seen.insert("State Success");
        }
        if let Some(uid) = s["metadata"]["uid"].as_str()
            && !programs_of(d, uid).is_empty()
        {
            seen.insert("program loaded");
        }
        let (it, _, im) = cond(&cluster_state(p, &img, &node));
        if !it.is_empty() && !im.contains("reading Secret") {
            seen.insert("pull Secret read");
        }
        let (pt, _, pm) = cond(&cluster_state(p, &pods, &node));
        if !pt.is_empty() && !pm.contains("pods are not known") {
            seen.insert("pods listed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = start.elapsed();
    agent.kill();
    // Clean up as admin: finalizers off, programs unloaded.
    for a in [&tp, &img, &pods] {
        let s = cluster_state(p, a, &node);
        if let Some(uid) = s["metadata"]["uid"].as_str() {
            for prog in programs_of(d, uid) {
                if let Some(id) = prog["id"].as_u64() {
                    let _ = d.cli(&["unload", &id.to_string()]);
                }
            }
        }
        if let Some(n) = s["metadata"]["name"].as_str() {
            let _ = p.kubectl(&[
                "patch",
                "clusterbpfapplicationstate",
                n,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
            let _ = p.kubectl(&["delete", "clusterbpfapplicationstate", n, "--wait=false"]);
        }
        let _ = p.kubectl(&["delete", "clusterbpfapplication", a, "--wait=false"]);
    }
    let _ = p.kubectl(&["delete", "secret", "-n", "default", &secret, "--wait=false"]);
    let _ = p.kubectl(&["delete", "node", &node, "--wait=false"]);
    (seen, took)
}

struct RoleBack<'a>(&'a ControlPlane, Value);

impl Drop for RoleBack<'_> {
    fn drop(&mut self) {
        apply_json(self.0, &self.1);
    }
}

#[test]
fn the_agent_needs_every_rule_of_its_role_and_no_more() {
    require_root!();
    let p = plane();
    let kc = agent_account(p);
    let d = Daemon::start();
    let role = yaml_docs(&repo().join("deploy/kubernetes/rbac/agent.yaml"))
        .into_iter()
        .find(|v| v["kind"] == "ClusterRole")
        .expect("the agent's ClusterRole");
    let _back = RoleBack(p, role.clone());
    let (full, took) = exercise(p, &d, &kc, 60);
    assert_eq!(full.len(), 7, "with deploy/'s role only {full:?} happened");
    eprintln!("with every rule: everything within {took:?}");
    let rules = role["rules"].as_array().cloned().unwrap_or_default();
    for i in 0..rules.len() {
        let mut cut = role.clone();
        let mut rs = rules.clone();
        let gone = rs.remove(i);
        cut["rules"] = json!(rs);
        apply_json(p, &cut);
        std::thread::sleep(Duration::from_secs(1));
        let (seen, _) = exercise(p, &d, &kc, 15);
        let lost: Vec<&&str> = full.difference(&seen).collect();
        eprintln!("without rule {i} {gone}: lost {lost:?}");
        assert!(
            !lost.is_empty(),
            "nothing the agent does needs rule {i} ({gone}): it is not least privilege"
        );
        apply_json(p, &role);
    }
    assert!(
        d.json(&["list", "programs"])
            .as_array()
            .is_none_or(Vec::is_empty),
        "programs left: {}",
        d.json(&["list", "programs"])
    );
}
