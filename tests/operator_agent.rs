//! The operator and the agent together, both with their own service accounts' tokens bound by
//! exactly deploy/kubernetes's roles, against the real API server, a real daemon and the host
//! kernel: an application's per-node State Success rolls up into the application's Success;
//! a node that fails (a missing function) makes it Error naming the node; deleting it unloads
//! the programs and releases both finalizers (the agent's on the State, the operator's on the
//! application): nothing hangs, nothing is left. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bpfman_k8s_testenv::ControlPlane;
use common::agent::*;
use common::*;
use serde_json::Value;

fn operator_bin() -> PathBuf {
    Path::new(BPFMAN).with_file_name("bpfman-operator")
}

fn accounts(p: &ControlPlane) -> (PathBuf, PathBuf) {
    let d = repo().join("deploy/kubernetes");
    let files = [
        d.join("namespace.yaml"),
        d.join("rbac/agent.yaml"),
        d.join("rbac/operator.yaml"),
    ];
    let agent = p
        .deployed_account(&files, "bpfman", "bpfman-daemon")
        .expect("agent kubeconfig");
    let op = p
        .deployed_account(&files, "bpfman", "bpfman-operator")
        .expect("operator kubeconfig");
    (agent, op)
}

struct Op(Child, PathBuf);

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- operator log ---\n{}",
                std::fs::read_to_string(&self.1).unwrap_or_default()
            );
        }
    }
}

fn app_json(p: &ControlPlane, name: &str) -> Value {
    let out = p.kubectl(&["get", "clusterbpfapplication", name, "-o", "json"]);
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

fn app_cond(v: &Value) -> (String, String) {
    let c = &v["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn the_operator_rolls_up_what_the_agents_do_and_deletion_releases_both_finalizers() {
    require_root!();
    let p = plane();
    let (agent_kc, op_kc) = accounts(p);
    let pool = format!("opag-{}-{}", std::process::id(), unique());
    let (na, nb) = (node_name("opaga"), node_name("opagb"));
    make_node(p, &na, &[("opag-pool", &pool)], "10.253.0.1");
    make_node(p, &nb, &[("opag-pool", &pool)], "10.253.0.2");
    for n in [&na, &nb] {
        p.kubectl_ok(
            &[
                "patch", "node", n, "--subresource=status", "--type=merge", "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"test","lastHeartbeatTime":"2026-12-01T00:00:00Z","lastTransitionTime":"2026-12-01T00:00:00Z"}]}}"#,
            ],
            None,
        );
    }
    let (da, db) = (Daemon::start(), Daemon::start());
    let _aa = Agent::with_kubeconfig(&na, &da, agent_kc.clone());
    let _ab = Agent::with_kubeconfig(&nb, &db, agent_kc);
    let log = da.dir.path().join("operator.log");
    let f = std::fs::File::create(&log).expect("log");
    let _op = Op(
        Command::new(operator_bin())
            .env("KUBECONFIG", &op_kc)
            .env("BPFMAN_LOG", "info,kube=warn")
            .env_remove("BPFMAN_IMG")
            .env_remove("BPFMAN_AGENT_IMG")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("start bpfman-operator (cargo build --workspace --bins)"),
        log,
    );
    let name = format!("opag-{}", unique());
    let yaml = |prog: &str| {
        format!(
            "apiVersion: bpfman.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {name}\nspec:\n  nodeSelector:\n    matchLabels:\n      opag-pool: {pool}\n  byteCode:\n    path: \"{}\"\n  programs:\n    - name: {prog}\n      type: TracePoint\n      tracepoint:\n        links:\n          - name: syscalls/sys_enter_getpid\n",
            obj("tracing_test.bpf.o")
        )
    };
    apply(p, &yaml("tp_count"));
    wait_until("the application Success on both nodes", 60, || {
        let (t, m) = app_cond(&app_json(p, &name));
        if t == "Success" && m.contains("2 node(s)") {
            Ok(())
        } else {
            Err(format!("{t}: {m}"))
        }
    });
    for d in [&da, &db] {
        assert_eq!(
            d.json(&["list", "programs"]).as_array().map(Vec::len),
            Some(1),
            "{}",
            d.json(&["list", "programs"])
        );
    }
    // A program the object does not have: each node's State is Error, and so is the
    // application, naming the nodes and the cause.
    apply(p, &yaml("no_such_function"));
    wait_until("the application Error naming both nodes", 60, || {
        let (t, m) = app_cond(&app_json(p, &name));
        if t == "Error" && m.contains(&na) && m.contains(&nb) && m.contains("no_such_function") {
            Ok(())
        } else {
            Err(format!("{t}: {m}"))
        }
    });
    apply(p, &yaml("tp_count"));
    wait_until("Success again", 60, || {
        let (t, m) = app_cond(&app_json(p, &name));
        (t == "Success").then_some(()).ok_or(format!("{t}: {m}"))
    });
    let v = app_json(p, &name);
    assert_eq!(
        v["metadata"]["finalizers"],
        serde_json::json!(["bpfman.io.operator/finalizer"])
    );
    // Deletion: the agents unload and release their States, the operator then the app.
    p.kubectl_ok(
        &["delete", "clusterbpfapplication", &name, "--wait=false"],
        None,
    );
    wait_until("the application gone", 60, || {
        let v = app_json(p, &name);
        if v.is_null() {
            Ok(())
        } else {
            Err(format!(
                "{:?} {:?}",
                v["metadata"]["finalizers"],
                app_cond(&v)
            ))
        }
    });
    for d in [&da, &db] {
        wait_until("no program left", 20, || {
            let l = d.json(&["list", "programs"]);
            if l.as_array().is_none_or(Vec::is_empty) {
                Ok(())
            } else {
                Err(l.to_string())
            }
        });
    }
    std::thread::sleep(Duration::from_millis(100));
    for n in [&na, &nb] {
        let _ = p.kubectl(&["delete", "node", n, "--wait=false"]);
    }
}
