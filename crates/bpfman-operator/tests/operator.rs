//! The operator against a real kube-apiserver + etcd + kube-controller-manager (RBAC and the
//! OwnerReferencesPermissionEnforcement admission plugin on), run as a host process whose
//! kubeconfig holds a TokenRequest token of its own service account, bound by exactly the roles
//! in deploy/kubernetes/rbac/operator.yaml. Per-node States are written by the test the way
//! agents write them (labels, controller owner reference, agent finalizer, one condition with
//! the application's generation), so each rollup case is set up exactly; the agent suites run
//! the real agent against the same kinds.
//!
//! The operator acts on the whole cluster, so the tests here take turns (one lock).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use common::*;
use serde_json::{Value, json};

/// The operator binary, run with `kubeconfig`.
struct Operator {
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    kubeconfig: PathBuf,
    env: Vec<(String, String)>,
}

impl Operator {
    fn start(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Operator {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log =
            std::env::temp_dir().join(format!("bpfman-operator-{}-{n}.log", std::process::id()));
        let mut o = Operator {
            child: None,
            log,
            args: args.iter().map(|s| s.to_string()).collect(),
            kubeconfig: kubeconfig.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        o.spawn();
        o
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut c = Command::new(env!("CARGO_BIN_EXE_bpfman-operator"));
        c.args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("BPFMAN_LOG", "info,kube=warn")
            .env_remove("BPFMAN_IMG")
            .env_remove("BPFMAN_AGENT_IMG")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().expect("start bpfman-operator"));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn term(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix_kill(c.id(), 15);
            let _ = c.wait();
        }
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn nix_kill(pid: u32, sig: i32) -> std::io::Result<()> {
    let r = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()?;
    if r.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill"))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A Node (the node lifecycle controller is off in the test plane: readiness is what the test
/// says).
fn node(p: &ControlPlane, name: &str, labels: &[(&str, &str)], ready: bool) {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/hostname".into(), json!(name));
    for (k, v) in labels {
        l.insert(k.to_string(), json!(v));
    }
    apply(
        p,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": l}}),
    );
    set_ready(p, name, ready);
}

fn set_ready(p: &ControlPlane, name: &str, ready: bool) {
    let status = if ready { "True" } else { "Unknown" };
    let patch = json!({"status": {"conditions": [{
        "type": "Ready", "status": status, "reason": if ready {"KubeletReady"} else {"NodeStatusUnknown"},
        "message": "set by the test", "lastHeartbeatTime": "2026-12-01T00:00:00Z",
        "lastTransitionTime": "2026-12-01T00:00:00Z",
    }]}});
    p.kubectl_ok(
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
}

fn cluster_app(name: &str, selector: &str) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplication",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"bpfman-op-test": selector}},
            "byteCode": {"path": "/opt/none.o"},
            "programs": [{"name": "tp_count", "type": "TracePoint",
                          "tracepoint": {"links": [{"name": "syscalls/sys_enter_getpid"}]}}],
        },
    })
}

fn app(p: &ControlPlane, name: &str) -> Value {
    kube_json(p, &["get", "clusterbpfapplication", name]).unwrap_or(Value::Null)
}

/// Waits until the application's condition is `t` and its message holds every `needles`.
fn wait_cond(p: &ControlPlane, name: &str, t: &str, needles: &[&str], secs: u64) -> Value {
    wait_for(&format!("{name} {t} {needles:?}"), secs, || {
        let a = app(p, name);
        let (ct, m, _) = cond_of(&a);
        if ct == t && needles.iter().all(|n| m.contains(n)) {
            Ok(a)
        } else {
            Err(format!("{ct}: {m}"))
        }
    })
}

/// A State for `app` on `node`, as an agent writes it.
fn state(
    p: &ControlPlane,
    app_name: &str,
    node: &str,
    t: &str,
    msg: &str,
    generation: i64,
) -> String {
    let a = app(p, app_name);
    let uid = a["metadata"]["uid"].as_str().expect("app uid").to_string();
    let name = format!("{app_name}-{node}");
    apply(
        p,
        &json!({
            "apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplicationState",
            "metadata": {
                "name": name,
                "labels": {"bpfman.io/ownedByProgram": app_name, "kubernetes.io/hostname": node},
                "finalizers": ["bpfman.io.clbpfapplicationcontroller/finalizer"],
                "ownerReferences": [{"apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplication",
                    "name": app_name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
            },
        }),
    );
    set_state(p, &name, node, t, msg, generation);
    name
}

fn set_state(p: &ControlPlane, name: &str, node: &str, t: &str, msg: &str, generation: i64) {
    let reason = if t == "Pending" { "NotYetComplete" } else { t };
    let status = json!({"status": {
        "updateCount": 1, "node": node, "appLoadStatus": if t == "Success" {"LoadSuccess"} else {"NotLoaded"},
        "conditions": [{"type": t, "status": "True", "reason": reason, "message": msg,
            "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": generation}],
    }});
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplicationstate",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    );
}

fn drop_state_finalizer(p: &ControlPlane, name: &str) {
    let _ = p.kubectl(&[
        "patch",
        "clusterbpfapplicationstate",
        name,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

#[test]
fn an_applications_condition_rolls_up_the_states_of_the_nodes_it_selects() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("roll-{u}");
    let (n1, n2, n3) = (
        format!("op-a-{u}"),
        format!("op-b-{u}"),
        format!("op-c-{u}"),
    );
    node(p, &n1, &[("bpfman-op-test", &sel)], true);
    node(p, &n2, &[("bpfman-op-test", &sel)], true);
    node(p, &n3, &[("bpfman-op-test", "other")], true);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("roll-{u}");
    apply(p, &cluster_app(&name, &sel));
    // The operator's finalizer, and Pending naming both selected nodes (not the third).
    let a = wait_cond(
        p,
        &name,
        "Pending",
        &["Waiting for 2 of 2 node(s)", &n1, &n2],
        30,
    );
    assert!(!cond_of(&a).1.contains(&n3), "{:?}", cond_of(&a));
    assert_eq!(
        a["metadata"]["finalizers"],
        json!(["bpfman.io.operator/finalizer"])
    );
    assert_eq!(a["status"]["conditions"][0]["reason"], "Pending");
    let s1 = state(p, &name, &n1, "Success", "loaded", 1);
    wait_cond(
        p,
        &name,
        "Pending",
        &["Waiting for 1 of 2", &n2, "no State yet"],
        20,
    );
    let s2 = state(p, &name, &n2, "Success", "loaded", 1);
    let a = wait_cond(p, &name, "Success", &["on 2 node(s)"], 20);
    assert_eq!(cond_of(&a).2, Some(1), "observedGeneration");
    // One node fails: Error naming it and its cause.
    set_state(
        p,
        &s2,
        &n2,
        "Error",
        "attaching tp_count: EBUSY; detach the other program",
        1,
    );
    wait_cond(
        p,
        &name,
        "Error",
        &[&n2, "EBUSY; detach the other program"],
        20,
    );
    set_state(p, &s2, &n2, "Success", "loaded", 1);
    wait_cond(p, &name, "Success", &[], 20);
    // A node that stops reporting is called out, and comes back.
    set_ready(p, &n2, false);
    wait_cond(p, &name, "Error", &["stopped reporting", &n2], 20);
    set_ready(p, &n2, true);
    wait_cond(p, &name, "Success", &[], 20);
    // A new generation: Pending until every node reports on it.
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplication",
            &name,
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/byteCode/path","value":"/opt/other.o"}]"#,
        ],
        None,
    );
    wait_cond(
        p,
        &name,
        "Pending",
        &["describes generation 1 (current 2)"],
        20,
    );
    set_state(p, &s1, &n1, "Success", "loaded", 2);
    set_state(p, &s2, &n2, "Success", "loaded", 2);
    let a = wait_cond(p, &name, "Success", &[], 20);
    assert_eq!(cond_of(&a).2, Some(2));
    // A third node labelled in: Pending for it.
    p.kubectl_ok(
        &[
            "label",
            "node",
            &n3,
            &format!("bpfman-op-test={sel}"),
            "--overwrite",
        ],
        None,
    );
    wait_cond(p, &name, "Pending", &["Waiting for 1 of 3", &n3], 20);
    p.kubectl_ok(
        &["label", "node", &n3, "bpfman-op-test=other", "--overwrite"],
        None,
    );
    wait_cond(p, &name, "Success", &["on 2 node(s)"], 20);
    // Events on each change of type.
    let ev = events_for(p, &name);
    for r in ["Pending", "Success", "Error"] {
        assert!(ev.iter().any(|(er, _)| er == r), "no {r} event: {ev:?}");
    }
    assert!(
        ev.iter().any(|(r, n)| r == "Error" && n.contains(&n2)),
        "the Error event names the node: {ev:?}"
    );
    // Idle: no writes (the resourceVersion stays).
    let rv = app(p, &name)["metadata"]["resourceVersion"].clone();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        app(p, &name)["metadata"]["resourceVersion"],
        rv,
        "a write at idle"
    );
    // Deletion: waits on the nodes, DeleteError when one cannot clean up, gone when all did.
    p.kubectl_ok(
        &["delete", "clusterbpfapplication", &name, "--wait=false"],
        None,
    );
    wait_cond(p, &name, "Pending", &["Being deleted", &n1, &n2], 20);
    set_state(
        p,
        &s1,
        &n1,
        "UnloadError",
        "detaching link 7: EPERM; check the daemon's log",
        2,
    );
    wait_cond(p, &name, "DeleteError", &[&n1, "EPERM"], 20);
    drop_state_finalizer(p, &s1);
    drop_state_finalizer(p, &s2);
    wait_for("the application gone", 30, || {
        kube_json(p, &["get", "clusterbpfapplication", &name]).map_or(Ok(()), |a| {
            Err(format!("{:?}", a["metadata"]["finalizers"]))
        })
    });
    assert!(op.alive(), "{}", op.log());
    for n in [&n1, &n2, &n3] {
        let _ = p.kubectl(&["delete", "node", n, "--wait=false"]);
    }
}

#[test]
fn an_application_selecting_no_node_or_with_a_bad_selector_is_never_success() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let _op = Operator::start(&kc, &[], &[]);
    let name = format!("none-{u}");
    apply(p, &cluster_app(&name, &format!("nobody-{u}")));
    wait_cond(p, &name, "Pending", &["No node matches"], 30);
    let bad = format!("badsel-{u}");
    let mut v = cluster_app(&bad, "x");
    v["spec"]["nodeSelector"] =
        json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]});
    apply(p, &v);
    wait_cond(p, &bad, "Error", &["nodeSelector is invalid", "Near"], 30);
    for n in [&name, &bad] {
        p.kubectl_ok(
            &["delete", "clusterbpfapplication", n, "--wait=false"],
            None,
        );
    }
    for n in [&name, &bad] {
        wait_for("deleted", 30, || {
            kube_json(p, &["get", "clusterbpfapplication", n])
                .map_or(Ok(()), |_| Err("still there".into()))
        });
    }
}

fn config(ns: &str, toml: &str, overrides: Value) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1", "kind": "Config",
        "metadata": {"name": "bpfman-config"},
        "spec": {
            "namespace": ns,
            "agent": {"image": "localhost/bpfman:test", "logLevel": "info"},
            "daemon": {"image": "localhost/bpfman:test", "logLevel": "info"},
            "configuration": toml,
            "overrides": overrides,
        },
    })
}

#[test]
fn the_config_deploys_its_objects_and_keeps_them_in_line() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let ns = format!("bpfman-cfg-{u}");
    let op = Operator::start(&kc, &[], &[]);
    apply(
        p,
        &config(&ns, "[signing]\nallow_unsigned = true\n", json!([])),
    );
    wait_for("the DaemonSet", 30, || {
        ds_annotation(p, &ns).ok_or_else(|| "none".to_string())
    });
    let cfg = kube_json(p, &["get", "config", "bpfman-config"]).expect("Config");
    assert_eq!(
        cfg["metadata"]["finalizers"],
        json!(["bpfman.io/config-finalizer"])
    );
    let uid = cfg["metadata"]["uid"].as_str().expect("uid").to_string();
    let cm = kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"]).expect("ConfigMap");
    assert_eq!(
        cm["data"]["bpfman.toml"],
        "[signing]\nallow_unsigned = true\n"
    );
    assert_eq!(cm["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    let csi = kube_json(p, &["get", "csidriver", "csi.bpfman.io"]).expect("CSIDriver");
    assert_eq!(csi["spec"]["volumeLifecycleModes"], json!(["Ephemeral"]));
    assert_eq!(csi["spec"]["attachRequired"], false);
    assert_eq!(csi["spec"]["podInfoOnMount"], true);
    let nsv = kube_json(p, &["get", "namespace", &ns]).expect("namespace");
    assert_eq!(
        nsv["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    // Deleted: put back.
    p.kubectl_ok(&["delete", "configmap", "-n", &ns, "bpfman-config"], None);
    wait_for("the ConfigMap back", 20, || {
        kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"])
            .ok_or_else(|| "gone".to_string())
    });
    p.kubectl_ok(&["delete", "daemonset", "-n", &ns, "bpfman-daemon"], None);
    wait_for("the DaemonSet back", 20, || {
        ds_annotation(p, &ns).ok_or_else(|| "gone".to_string())
    });
    p.kubectl_ok(&["delete", "csidriver", "csi.bpfman.io"], None);
    wait_for("the CSIDriver back", 20, || {
        kube_json(p, &["get", "csidriver", "csi.bpfman.io"]).ok_or_else(|| "gone".to_string())
    });
    // Edited by hand: put back.
    p.kubectl_ok(
        &[
            "set",
            "image",
            "-n",
            &ns,
            "daemonset/bpfman-daemon",
            "bpfman=evil/image:1",
        ],
        None,
    );
    wait_for("the daemon image back", 20, || {
        let d =
            kube_json(p, &["get", "daemonset", "-n", &ns, "bpfman-daemon"]).unwrap_or(Value::Null);
        let img = d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        (img == "localhost/bpfman:test")
            .then_some(())
            .ok_or(format!("{img}"))
    });
    p.kubectl_ok(
        &[
            "patch",
            "configmap",
            "-n",
            &ns,
            "bpfman-config",
            "--type=merge",
            "-p",
            r#"{"data":{"bpfman.toml":"[policy]\n"}}"#,
        ],
        None,
    );
    wait_for("the ConfigMap's bpfman.toml back", 20, || {
        let c =
            kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"]).unwrap_or(Value::Null);
        (c["data"]["bpfman.toml"] == "[signing]\nallow_unsigned = true\n")
            .then_some(())
            .ok_or(format!("{}", c["data"]))
    });
    // A configuration change rolls the pods: the template carries it.
    apply(
        p,
        &config(&ns, "[signing]\nallow_unsigned = false\n", json!([])),
    );
    wait_for("the new configuration in the pod template", 20, || {
        let a = ds_annotation(p, &ns).unwrap_or_default();
        (a == bpfman_operator::config::config_digest("[signing]\nallow_unsigned = false\n"))
            .then_some(())
            .ok_or(a)
    });
    // Unmanaged: left alone, edited or deleted.
    apply(
        p,
        &config(
            &ns,
            "[signing]\nallow_unsigned = false\n",
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "namespace": ns, "name": "bpfman-config", "unmanaged": true}]),
        ),
    );
    std::thread::sleep(Duration::from_secs(1));
    p.kubectl_ok(
        &[
            "patch",
            "configmap",
            "-n",
            &ns,
            "bpfman-config",
            "--type=merge",
            "-p",
            r#"{"data":{"bpfman.toml":"[policy]\n"}}"#,
        ],
        None,
    );
    // Something else the operator manages changes meanwhile, so it surely reconciles.
    p.kubectl_ok(&["delete", "daemonset", "-n", &ns, "bpfman-daemon"], None);
    wait_for("the DaemonSet back", 20, || {
        ds_annotation(p, &ns).ok_or_else(|| "gone".to_string())
    });
    let c = kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"]).expect("ConfigMap");
    assert_eq!(
        c["data"]["bpfman.toml"], "[policy]\n",
        "an unmanaged ConfigMap was changed"
    );
    // Deleting the Config: the finalizer goes, garbage collection takes what it owned.
    drop(op);
    let _op = Operator::start(&kc, &[], &[]);
    p.kubectl_ok(&["delete", "config", "bpfman-config", "--wait=false"], None);
    wait_for("the DaemonSet collected", 60, || {
        ds_annotation(p, &ns).map_or(Ok(()), |_| Err("still there".to_string()))
    });
    wait_for("the Config gone", 20, || {
        kube_json(p, &["get", "config", "bpfman-config"])
            .map_or(Ok(()), |_| Err("still there".into()))
    });
    let _ = p.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn a_default_config_is_made_at_start_when_there_is_none() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let _op = Operator::start(
        &kc,
        &[],
        &[
            ("BPFMAN_IMG", "localhost/d:1"),
            ("BPFMAN_AGENT_IMG", "localhost/a:1"),
        ],
    );
    let c = wait_for("the default Config", 30, || {
        kube_json(p, &["get", "config", "bpfman-config"]).ok_or_else(|| "none".to_string())
    });
    assert_eq!(c["spec"]["daemon"]["image"], "localhost/d:1");
    assert_eq!(c["spec"]["agent"]["image"], "localhost/a:1");
    assert_eq!(c["spec"]["namespace"], "bpfman");
    wait_for("its DaemonSet", 30, || {
        ds_annotation(p, "bpfman").ok_or_else(|| "none".to_string())
    });
    remove_config(p);
}

#[test]
fn one_replica_leads_and_the_other_takes_over_without_losing_or_doubling() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("lead-{u}");
    let n1 = format!("op-lead-{u}");
    node(p, &n1, &[("bpfman-op-test", &sel)], true);
    let args = [
        "--leader-elect",
        "--lease-duration",
        "4",
        "--lease-retry",
        "1",
    ];
    let env = |id: &str| {
        vec![
            ("POD_NAMESPACE".to_string(), "bpfman".to_string()),
            ("POD_NAME".to_string(), id.to_string()),
        ]
    };
    let ea = env(&format!("op-a-{u}"));
    let eb = env(&format!("op-b-{u}"));
    let pairs = |e: &Vec<(String, String)>| {
        e.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let (pa, pb) = (pairs(&ea), pairs(&eb));
    let ra: Vec<(&str, &str)> = pa.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rb: Vec<(&str, &str)> = pb.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut a = Operator::start(&kc, &args, &ra);
    wait_for("a leads", 20, || {
        let h = lease_holder(p);
        (h == format!("op-a-{u}")).then_some(()).ok_or(h)
    });
    let mut b = Operator::start(&kc, &args, &rb);
    let first = format!("lead1-{u}");
    apply(p, &cluster_app(&first, &sel));
    let s1 = state(p, &first, &n1, "Success", "loaded", 1);
    wait_cond(p, &first, "Success", &[], 20);
    assert!(b.log().contains("another replica leads"), "{}", b.log());
    assert!(
        !b.log().contains("bpfman-operator running"),
        "b acts while a leads: {}",
        b.log()
    );
    // The leader killed (no clean release): b takes over once the Lease expires.
    a.kill();
    let killed = Instant::now();
    wait_for("b leads", 20, || {
        let h = lease_holder(p);
        (h == format!("op-b-{u}")).then_some(()).ok_or(h)
    });
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "hand-over took {took:?}");
    let second = format!("lead2-{u}");
    apply(p, &cluster_app(&second, &sel));
    let s2 = state(p, &second, &n1, "Success", "loaded", 1);
    wait_cond(p, &second, "Success", &[], 20);
    // Nothing doubled: one finalizer, one condition each.
    for n in [&first, &second] {
        let v = app(p, n);
        assert_eq!(
            v["metadata"]["finalizers"],
            json!(["bpfman.io.operator/finalizer"]),
            "{n}"
        );
        assert_eq!(
            v["status"]["conditions"].as_array().map(Vec::len),
            Some(1),
            "{n}"
        );
    }
    // A clean stop releases the Lease at once: a restarted a takes over within a retry.
    a.spawn();
    std::thread::sleep(Duration::from_secs(2));
    b.term();
    let stopped = Instant::now();
    wait_for("a leads again", 10, || {
        let h = lease_holder(p);
        (h == format!("op-a-{u}")).then_some(()).ok_or(h)
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopped.elapsed()
    );
    // Nothing lost across the hand-overs: a change made meanwhile is rolled up.
    set_state(
        p,
        &s1,
        &n1,
        "Error",
        "lost a link; the agent re-attaches it",
        1,
    );
    wait_cond(p, &first, "Error", &["lost a link"], 20);
    for (n, s) in [(&first, &s1), (&second, &s2)] {
        p.kubectl_ok(
            &["delete", "clusterbpfapplication", n, "--wait=false"],
            None,
        );
        drop_state_finalizer(p, s);
    }
    for n in [&first, &second] {
        wait_for("deleted", 30, || {
            kube_json(p, &["get", "clusterbpfapplication", n])
                .map_or(Ok(()), |_| Err("still there".into()))
        });
    }
    assert!(a.alive(), "{}", a.log());
    let _ = p.kubectl(&["delete", "node", &n1, "--wait=false"]);
}

/// The documents of a deploy/ YAML file.
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).expect("read");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Puts deploy/'s operator roles back when dropped.
struct RolesBack<'a>(&'a ControlPlane, Vec<Value>);

impl Drop for RolesBack<'_> {
    fn drop(&mut self) {
        for r in &self.1 {
            apply(self.0, r);
        }
    }
}

/// One run of everything the operator does, with whatever roles are in place; returns what
/// happened within `secs`.
fn exercise(
    p: &ControlPlane,
    kc: &Path,
    secs: u64,
) -> (std::collections::BTreeSet<&'static str>, Duration) {
    let u = unique();
    let sel = format!("rbac-{u}");
    let n = format!("op-rbac-{u}");
    let ns = format!("bpfman-rbac-{u}");
    let app_name = format!("rbac-{u}");
    let id = format!("op-rbac-{u}");
    remove_config(p);
    node(p, &n, &[("bpfman-op-test", &sel)], true);
    apply(
        p,
        &config(&ns, "[signing]\nallow_unsigned = true\n", json!([])),
    );
    apply(p, &cluster_app(&app_name, &sel));
    let s = state(p, &app_name, &n, "Success", "loaded", 1);
    let mut op = Operator::start(
        kc,
        &[
            "--leader-elect",
            "--lease-duration",
            "4",
            "--lease-retry",
            "1",
        ],
        &[
            ("POD_NAMESPACE", "bpfman"),
            ("POD_NAME", &id),
            ("BPFMAN_IMG", "localhost/bpfman:test"),
            ("BPFMAN_AGENT_IMG", "localhost/bpfman:test"),
        ],
    );
    let all = [
        "lease",
        "Config condition",
        "app finalizer",
        "app condition",
        "app Success",
        "event",
        "Config finalizer",
        "namespace",
        "ConfigMap",
        "CSIDriver",
        "DaemonSet",
    ];
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(secs) && seen.len() < all.len() {
        if lease_holder(p) == id {
            seen.insert("lease");
        }
        let a = app(p, &app_name);
        if a["metadata"]["finalizers"] == json!(["bpfman.io.operator/finalizer"]) {
            seen.insert("app finalizer");
        }
        let (t, _, _) = cond_of(&a);
        if !t.is_empty() {
            seen.insert("app condition");
        }
        if t == "Success" {
            seen.insert("app Success");
        }
        if !events_for(p, &app_name).is_empty() {
            seen.insert("event");
        }
        let c = kube_json(p, &["get", "config", "bpfman-config"]).unwrap_or(Value::Null);
        if c["metadata"]["finalizers"] == json!(["bpfman.io/config-finalizer"]) {
            seen.insert("Config finalizer");
        }
        if c["status"]["conditions"][0]["type"] == "Success" {
            seen.insert("Config condition");
        }
        if kube_json(p, &["get", "namespace", &ns]).is_some() {
            seen.insert("namespace");
        }
        if kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"]).is_some() {
            seen.insert("ConfigMap");
        }
        if kube_json(p, &["get", "csidriver", "csi.bpfman.io"]).is_some() {
            seen.insert("CSIDriver");
        }
        if ds_annotation(p, &ns).is_some() {
            seen.insert("DaemonSet");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = start.elapsed();
    op.kill();
    // Clean up as admin, whatever the operator managed.
    let _ = p.kubectl(&[
        "patch",
        "clusterbpfapplication",
        &app_name,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let _ = p.kubectl(&["delete", "clusterbpfapplication", &app_name, "--wait=false"]);
    drop_state_finalizer(p, &s);
    let _ = p.kubectl(&["delete", "clusterbpfapplicationstate", &s, "--wait=false"]);
    remove_config(p);
    let _ = p.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    let _ = p.kubectl(&["delete", "node", &n, "--wait=false"]);
    let _ = p.kubectl(&["delete", "lease", "-n", "bpfman", LEASE, "--wait=false"]);
    (seen, took)
}

#[test]
fn the_operator_needs_every_rule_of_its_roles_and_no_more() {
    let _t = turn();
    let (p, kc) = plane();
    let docs = yaml_docs(&repo().join("deploy/kubernetes/rbac/operator.yaml"));
    let roles: Vec<Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .cloned()
        .collect();
    assert_eq!(
        roles.len(),
        2,
        "the operator's ClusterRole and its leader-election Role"
    );
    let _back = RolesBack(p, roles.clone());
    // Everything works with exactly these roles.
    let (full, took) = exercise(p, &kc, 30);
    assert_eq!(
        full.len(),
        11,
        "with deploy/'s roles only {full:?} happened"
    );
    eprintln!("with every rule: everything within {took:?}");
    // Each rule taken away in turn: something the operator does stops working.
    let mut report = Vec::new();
    for (ri, role) in roles.iter().enumerate() {
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        for i in 0..rules.len() {
            let mut cut = role.clone();
            let mut rs = rules.clone();
            let gone = rs.remove(i);
            cut["rules"] = json!(rs);
            apply(p, &cut);
            std::thread::sleep(Duration::from_secs(1));
            let (seen, _) = exercise(p, &kc, 12);
            let lost: Vec<&&str> = full.difference(&seen).collect();
            eprintln!("without {} rule {i} {}: lost {lost:?}", role["kind"], gone);
            assert!(
                !lost.is_empty(),
                "nothing needs {} rule {i} ({gone}): it is not least privilege",
                role["kind"]
            );
            report.push(format!("{}[{i}] {gone}: {lost:?}", role["kind"]));
            apply(p, &roles[ri]);
        }
    }
    assert!(report.len() >= 13, "{report:#?}");
}
