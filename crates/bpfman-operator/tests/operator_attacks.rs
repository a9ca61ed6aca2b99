//! Adversarial tests of the operator against the real API server of the test plane (RBAC and
//! OwnerReferencesPermissionEnforcement on, node lifecycle controller off): inputs a cluster
//! user controls (forged or odd per-node States, odd applications, odd Configs, a hand-edited
//! Lease) and whether the operator's output stays right, bounded and quiet, and whether the
//! process survives. The harness is `operator.rs`'s: the operator is run as a host process with
//! a TokenRequest kubeconfig of its service account bound by deploy/'s roles, and States are
//! written by the test the way agents write them.
//!
//! A test that passes documents a defence; one marked `#[ignore = "BUG: ..."]` exposes a bug
//! and passes once it is fixed. The operator acts on the whole cluster: the tests take turns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use common::*;
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

const CLUSTER_FIN: &str = "bpfman.io.clbpfapplicationcontroller/finalizer";
const NS_FIN: &str = "bpfman.io.nsbpfapplicationcontroller/finalizer";
const HOLD: &str = "example.com/hold";

/// The operator binary, run with `kubeconfig`.
struct Operator {
    child: Option<Child>,
    log: PathBuf,
}

impl Operator {
    fn start(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Operator {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = std::env::temp_dir().join(format!(
            "bpfman-operator-attacks-{}-{n}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let mut c = Command::new(env!("CARGO_BIN_EXE_bpfman-operator"));
        c.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("BPFMAN_LOG", "info,kube=warn")
            .env_remove("BPFMAN_IMG")
            .env_remove("BPFMAN_AGENT_IMG")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        for (k, v) in env {
            c.env(k, v);
        }
        Operator {
            child: Some(c.spawn().expect("start bpfman-operator")),
            log,
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

    fn assert_alive(&mut self) {
        assert!(self.alive(), "the operator died: {}", self.log());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .chars()
                .rev()
                .take(20_000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("--- operator log (tail) ---\n{tail}");
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// kubectl commands run (as admin, errors ignored) when dropped, last first: clean-up that
/// happens even when the test fails. Declare it before the Operator so the operator is
/// stopped first.
struct Undo<'a> {
    p: &'a ControlPlane,
    cmds: Vec<Vec<String>>,
}

impl<'a> Undo<'a> {
    fn new(p: &'a ControlPlane) -> Self {
        Undo {
            p,
            cmds: Vec::new(),
        }
    }

    fn cmd(&mut self, args: &[&str]) {
        self.cmds.push(args.iter().map(|s| s.to_string()).collect());
    }

    fn node(&mut self, n: &str) {
        self.cmd(&["delete", "node", n, "--wait=false", "--ignore-not-found"]);
    }

    /// Deletes the object, then (run first) strips its finalizers.
    fn obj(&mut self, res: &str, ns: Option<&str>, name: &str) {
        let mut del = vec!["delete", res, name, "--wait=false", "--ignore-not-found"];
        let mut strip = vec![
            "patch",
            res,
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ];
        if let Some(ns) = ns {
            del.extend(["-n", ns]);
            strip.extend(["-n", ns]);
        }
        self.cmd(&del);
        self.cmd(&strip);
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for c in self.cmds.iter().rev() {
            let a: Vec<&str> = c.iter().map(String::as_str).collect();
            let _ = self.p.kubectl(&a);
        }
    }
}

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
    if ready {
        p.kubectl_ok(
            &[
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &ready_status().to_string(),
            ],
            None,
        );
    }
}

fn ready_status() -> Value {
    json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "set by the test", "lastHeartbeatTime": "2026-12-01T00:00:00Z",
        "lastTransitionTime": "2026-12-01T00:00:00Z",
    }]}})
}

fn cluster_app(name: &str, selector: &str) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplication",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"bpfman-atk": selector}},
            "byteCode": {"path": "/opt/none.o"},
            "programs": [{"name": "tp_count", "type": "TracePoint",
                          "tracepoint": {"links": [{"name": "syscalls/sys_enter_getpid"}]}}],
        },
    })
}

fn ns_app(name: &str, ns: &str, selector: &str) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1", "kind": "BpfApplication",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeSelector": {"matchLabels": {"bpfman-atk": selector}},
            "byteCode": {"path": "/opt/none.o"},
            "programs": [{
                "name": "my_uprobe", "type": "UProbe",
                "uprobe": {"links": [{"target": "libc", "function": "malloc",
                    "containers": {"pods": {"matchLabels": {"app": "mine"}}}}]}
            }]
        }
    })
}

fn get(p: &ControlPlane, res: &str, ns: Option<&str>, name: &str) -> Value {
    let mut a = vec!["get", res, name];
    if let Some(ns) = ns {
        a.extend(["-n", ns]);
    }
    kube_json(p, &a).unwrap_or(Value::Null)
}

fn app(p: &ControlPlane, name: &str) -> Value {
    get(p, "clusterbpfapplication", None, name)
}

fn uid(v: &Value) -> String {
    v["metadata"]["uid"]
        .as_str()
        .expect("an object with a uid")
        .to_string()
}

fn wait_cond_on(
    p: &ControlPlane,
    res: &str,
    ns: Option<&str>,
    name: &str,
    t: &str,
    needles: &[&str],
    secs: u64,
) -> Value {
    wait_for(&format!("{name} {t} {needles:?}"), secs, || {
        let a = get(p, res, ns, name);
        let (ct, m, _) = cond_of(&a);
        if ct == t && needles.iter().all(|n| m.contains(n)) {
            Ok(a)
        } else {
            Err(format!("{ct}: {}", m.chars().take(600).collect::<String>()))
        }
    })
}

fn wait_cond(p: &ControlPlane, name: &str, t: &str, needles: &[&str], secs: u64) -> Value {
    wait_cond_on(p, "clusterbpfapplication", None, name, t, needles, secs)
}

/// Asserts the application's condition stays `t` holding every `needles` for `secs` (the
/// operator had the time to act on what was just written and did not take it).
fn stays(p: &ControlPlane, name: &str, t: &str, needles: &[&str], secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let (ct, m, _) = cond_of(&app(p, name));
        assert!(
            ct == t && needles.iter().all(|n| m.contains(n)),
            "{name}: expected {t} {needles:?} to stay, got {ct}: {m}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How many times the object's resourceVersion changes in `secs`.
fn writes_in(p: &ControlPlane, res: &str, ns: Option<&str>, name: &str, secs: u64) -> usize {
    let mut last = get(p, res, ns, name)["metadata"]["resourceVersion"].clone();
    let mut n = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
        let rv = get(p, res, ns, name)["metadata"]["resourceVersion"].clone();
        if rv != last {
            n += 1;
            last = rv;
        }
    }
    n
}

/// Who a forged or genuine State names as its owner.
struct Owner<'a> {
    kind: &'a str,
    name: &'a str,
    uid: &'a str,
    controller: bool,
}

/// A State object (no status), as an agent creates it, with the owner and finalizers given.
#[allow(clippy::too_many_arguments)]
fn put_state(
    p: &ControlPlane,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    node: &str,
    o: &Owner,
    fins: &[&str],
    extra_labels: &[(&str, &str)],
) {
    let mut labels = serde_json::Map::new();
    labels.insert("bpfman.io/ownedByProgram".into(), json!(o.name));
    labels.insert("kubernetes.io/hostname".into(), json!(node));
    for (k, v) in extra_labels {
        labels.insert(k.to_string(), json!(v));
    }
    let mut meta = json!({
        "name": name,
        "labels": labels,
        "finalizers": fins,
        "ownerReferences": [{"apiVersion": "bpfman.io/v1alpha1", "kind": o.kind,
            "name": o.name, "uid": o.uid, "controller": o.controller, "blockOwnerDeletion": true}],
    });
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    apply(
        p,
        &json!({"apiVersion": "bpfman.io/v1alpha1", "kind": kind, "metadata": meta}),
    );
}

fn state_status(node: &str, t: &str, status: &str, msg: &str, generation: i64) -> Value {
    let reason = if t == "Pending" { "NotYetComplete" } else { t };
    json!({"status": {
        "updateCount": 1, "node": node, "appLoadStatus": if t == "Success" {"LoadSuccess"} else {"NotLoaded"},
        "conditions": [{"type": t, "status": status, "reason": reason, "message": msg,
            "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": generation}],
    }})
}

#[allow(clippy::too_many_arguments)]
fn set_status(
    p: &ControlPlane,
    res: &str,
    ns: Option<&str>,
    name: &str,
    node: &str,
    t: &str,
    msg: &str,
    generation: i64,
) {
    set_status_v(
        p,
        res,
        ns,
        name,
        &state_status(node, t, "True", msg, generation),
    );
}

fn set_status_v(p: &ControlPlane, res: &str, ns: Option<&str>, name: &str, v: &Value) {
    let body = v.to_string();
    let mut a = vec![
        "patch",
        res,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &body,
    ];
    if let Some(ns) = ns {
        a.extend(["-n", ns]);
    }
    p.kubectl_ok(&a, None);
}

/// A genuine ClusterBpfApplicationState for `app_name` on `node`, with the agent's finalizer.
#[allow(clippy::too_many_arguments)]
fn cluster_state(
    p: &ControlPlane,
    u: &mut Undo,
    app_name: &str,
    state_name: &str,
    node: &str,
    t: &str,
    msg: &str,
    generation: i64,
) {
    let a = app(p, app_name);
    let id = uid(&a);
    put_state(
        p,
        "ClusterBpfApplicationState",
        None,
        state_name,
        node,
        &Owner {
            kind: "ClusterBpfApplication",
            name: app_name,
            uid: &id,
            controller: true,
        },
        &[CLUSTER_FIN],
        &[],
    );
    u.obj("clusterbpfapplicationstate", None, state_name);
    set_status(
        p,
        "clusterbpfapplicationstate",
        None,
        state_name,
        node,
        t,
        msg,
        generation,
    );
}

fn config(name: &str, ns: &str, toml: &str) -> Value {
    json!({
        "apiVersion": "bpfman.io/v1alpha1", "kind": "Config",
        "metadata": {"name": name},
        "spec": {
            "namespace": ns,
            "agent": {"image": "localhost/bpfman:test", "logLevel": "info"},
            "daemon": {"image": "localhost/bpfman:test", "logLevel": "info"},
            "configuration": toml,
        },
    })
}

fn delete_lease(p: &ControlPlane) {
    let _ = p.kubectl(&[
        "delete",
        "lease",
        "-n",
        "bpfman",
        LEASE,
        "--ignore-not-found",
    ]);
}

/// A MicroTime `secs` from now (negative: in the past).
fn micro_time(secs: i64) -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    serde_json::to_value(MicroTime(
        Timestamp::now() + SignedDuration::from_secs(secs),
    ))
    .expect("MicroTime")
}

fn leader_args() -> [&'static str; 5] {
    [
        "--leader-elect",
        "--lease-duration",
        "4",
        "--lease-retry",
        "1",
    ]
}

// ---------------------------------------------------------------------------------------------
// Forged and odd States.
// ---------------------------------------------------------------------------------------------

/// States naming the application by name but with another application's uid, with the right
/// uid but the wrong kind, or without `controller: true`, do not count for it; nor does a
/// State of application A count for application B selecting the same node.
#[test]
fn forged_states_with_the_wrong_uid_kind_or_no_controller_do_not_count() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("forge-{u}");
    let n = format!("atk-forge-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let mut op = Operator::start(&kc, &[], &[]);
    let a = format!("forge-a-{u}");
    let b = format!("forge-b-{u}");
    for x in [&a, &b] {
        apply(p, &cluster_app(x, &sel));
        undo.obj("clusterbpfapplication", None, x);
    }
    wait_cond(p, &a, "Pending", &["no State yet", &n], 30);
    wait_cond(p, &b, "Pending", &["no State yet", &n], 30);
    let (ua, ub) = (uid(&app(p, &a)), uid(&app(p, &b)));
    let forged = [
        ("ClusterBpfApplication", a.as_str(), ub.as_str(), true),
        ("BpfApplication", a.as_str(), ua.as_str(), true),
        ("ClusterBpfApplication", a.as_str(), ua.as_str(), false),
    ];
    for (i, (kind, name, id, controller)) in forged.iter().enumerate() {
        let s = format!("forged-{i}-{u}");
        put_state(
            p,
            "ClusterBpfApplicationState",
            None,
            &s,
            &n,
            &Owner {
                kind,
                name,
                uid: id,
                controller: *controller,
            },
            // Held, so garbage collection (the owner does not resolve) does not take it.
            &[CLUSTER_FIN, HOLD],
            &[],
        );
        undo.obj("clusterbpfapplicationstate", None, &s);
        set_status(
            p,
            "clusterbpfapplicationstate",
            None,
            &s,
            &n,
            "Success",
            "forged",
            1,
        );
    }
    stays(p, &a, "Pending", &["no State yet", &n], 4);
    stays(p, &b, "Pending", &["no State yet", &n], 1);
    // A's genuine State: A converges, B does not.
    cluster_state(
        p,
        &mut undo,
        &a,
        &format!("real-a-{u}"),
        &n,
        "Success",
        "ok",
        1,
    );
    wait_cond(p, &a, "Success", &["on 1 node(s)"], 20);
    stays(p, &b, "Pending", &["no State yet", &n], 2);
    op.assert_alive();
}

/// Several States for one node and one application (an agent bug, or anyone allowed to create
/// States): a failure among them must not be hidden by another State saying Success. Which
/// State the operator happens to read first varies with its hash seed: with 15 decoys the bug
/// shows 15 runs in 16.
#[test]
fn a_failure_on_a_node_is_not_hidden_by_another_state_for_that_node() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("dup-{u}");
    let n = format!("atk-dup-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let name = format!("dup-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    cluster_state(
        p,
        &mut undo,
        &name,
        &format!("dup-err-{u}"),
        &n,
        "Error",
        "attaching tp_count: EBUSY",
        1,
    );
    for i in 0..15 {
        cluster_state(
            p,
            &mut undo,
            &name,
            &format!("dup-ok-{i}-{u}"),
            &n,
            "Success",
            "loaded",
            1,
        );
    }
    let mut op = Operator::start(&kc, &[], &[]);
    wait_cond(p, &name, "Error", &["EBUSY", &n], 20);
    op.assert_alive();
}

/// A State with no status, a condition of a type the operator does not know, and a Success
/// for a generation the application has not reached are all Pending, named, and quiet.
#[test]
fn states_without_status_of_unknown_type_or_a_future_generation_are_pending() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("odd-{u}");
    let ns: Vec<String> = (1..=3).map(|i| format!("atk-odd{i}-{u}")).collect();
    let mut undo = Undo::new(p);
    for n in &ns {
        node(p, n, &[("bpfman-atk", &sel)], true);
        undo.node(n);
    }
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("odd-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    wait_cond(p, &name, "Pending", &["Waiting for 3 of 3"], 30);
    let id = uid(&app(p, &name));
    let owner = Owner {
        kind: "ClusterBpfApplication",
        name: &name,
        uid: &id,
        controller: true,
    };
    let s: Vec<String> = (1..=3).map(|i| format!("odd{i}-{u}")).collect();
    for (st, n) in s.iter().zip(&ns) {
        put_state(
            p,
            "ClusterBpfApplicationState",
            None,
            st,
            n,
            &owner,
            &[CLUSTER_FIN],
            &[],
        );
        undo.obj("clusterbpfapplicationstate", None, st);
    }
    let r = "clusterbpfapplicationstate";
    set_status(p, r, None, &s[1], &ns[1], "Exploded", "what is this", 1);
    set_status(p, r, None, &s[2], &ns[2], "Success", "from the future", 99);
    let a = wait_cond(
        p,
        &name,
        "Pending",
        &[
            "Waiting for 3 of 3",
            &format!("{}: State {} has no condition yet", ns[0], s[0]),
            &format!("{}: Exploded: what is this", ns[1]),
            "describes generation 99 (current 1)",
        ],
        20,
    );
    assert_eq!(cond_of(&a).2, Some(1));
    assert_eq!(
        writes_in(p, "clusterbpfapplication", None, &name, 3),
        0,
        "writes at idle"
    );
    op.assert_alive();
}

/// A State whose Success condition has status False (the condition does not hold, in
/// metav1.Condition's terms) is not a converged node.
#[test]
fn a_success_condition_with_status_false_is_not_converged() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("false-{u}");
    let n = format!("atk-false-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("false-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    wait_cond(p, &name, "Pending", &["no State yet"], 30);
    let s = format!("false-{u}");
    cluster_state(p, &mut undo, &name, &s, &n, "Pending", "loading", 1);
    wait_cond(p, &name, "Pending", &["Pending: loading"], 20);
    set_status_v(
        p,
        "clusterbpfapplicationstate",
        None,
        &s,
        &state_status(&n, "Success", "False", "not loaded after all", 1),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (t, m, _) = cond_of(&app(p, &name));
    assert_ne!(t, "Success", "a Success condition with status False: {m}");
    op.assert_alive();
}

/// A State for a Node that does not exist (the node was deleted, or the label was made up)
/// saying Success does not make an application converge on the nodes it selects, and is not
/// counted among them.
#[test]
fn a_state_for_a_node_that_does_not_exist_does_not_count() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("ghost-{u}");
    let n1 = format!("atk-real-{u}");
    let n2 = format!("atk-real2-{u}");
    let mut undo = Undo::new(p);
    for n in [&n1, &n2] {
        node(p, n, &[("bpfman-atk", &sel)], true);
        undo.node(n);
    }
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("ghost-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    cluster_state(
        p,
        &mut undo,
        &name,
        &format!("g1-{u}"),
        &n1,
        "Success",
        "ok",
        1,
    );
    for i in 0..3 {
        cluster_state(
            p,
            &mut undo,
            &name,
            &format!("ghost{i}-{u}"),
            &format!("atk-nonexistent{i}-{u}"),
            "Success",
            "ok",
            1,
        );
    }
    wait_cond(
        p,
        &name,
        "Pending",
        &["Waiting for 1 of 2", &n2, "no State yet"],
        20,
    );
    stays(p, &name, "Pending", &["Waiting for 1 of 2"], 2);
    cluster_state(
        p,
        &mut undo,
        &name,
        &format!("g2-{u}"),
        &n2,
        "Success",
        "ok",
        1,
    );
    wait_cond(p, &name, "Success", &["on 2 node(s)"], 20);
    op.assert_alive();
}

/// Hundreds of selected Nodes and States, each with a long failure message: the condition's
/// message stays bounded and says how much was cut, the operator lives, and at idle it does
/// not write.
#[test]
fn hundreds_of_nodes_and_states_keep_the_message_bounded_and_the_operator_quiet() {
    const NODES: usize = 200;
    const GHOSTS: usize = 400;
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("bulk-{u}");
    let mut undo = Undo::new(p);
    undo.cmd(&[
        "delete",
        "nodes",
        "-l",
        &format!("bpfman-atk={sel}"),
        "--wait=false",
    ]);
    undo.cmd(&[
        "delete",
        "clusterbpfapplicationstates",
        "-l",
        &format!("bpfman-atk-bulk={u}"),
        "--wait=false",
    ]);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("bulk-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    wait_cond(p, &name, "Pending", &["No node matches"], 30);
    let id = uid(&app(p, &name));
    let started = Instant::now();
    rt().block_on(async {
        let c = p.admin().await.expect("admin client");
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(c.clone());
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("bpfman.io", "v1alpha1", "ClusterBpfApplicationState"),
            "clusterbpfapplicationstates",
        );
        let states: kube::Api<DynamicObject> = kube::Api::all_with(c, &ar);
        let pp = PatchParams::apply("atk").force();
        let nodes = &nodes;
        let states = &states;
        let pp = &pp;
        let id = &id;
        let name = &name;
        let sel = &sel;
        let u = &u;
        let results: Vec<Result<(), kube::Error>> = futures::stream::iter(0..NODES + GHOSTS)
            .map(|i| async move {
                let n = if i < NODES {
                    format!("atk-bulk{i}-{u}")
                } else {
                    format!("atk-bulk-ghost{i}-{u}")
                };
                if i < NODES {
                    nodes
                        .patch(
                            &n,
                            pp,
                            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node",
                                "metadata": {"name": n, "labels": {"bpfman-atk": sel,
                                    "kubernetes.io/hostname": n}}})),
                        )
                        .await?;
                    nodes
                        .patch_status(&n, &PatchParams::default(), &Patch::Merge(ready_status()))
                        .await?;
                }
                let s = format!("bulk{i}-{u}");
                states
                    .patch(
                        &s,
                        pp,
                        &Patch::Apply(json!({
                            "apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplicationState",
                            "metadata": {"name": s, "labels": {"kubernetes.io/hostname": n,
                                "bpfman.io/ownedByProgram": name, "bpfman-atk-bulk": u},
                                "ownerReferences": [{"apiVersion": "bpfman.io/v1alpha1",
                                    "kind": "ClusterBpfApplication", "name": name, "uid": id,
                                    "controller": true}]},
                        })),
                    )
                    .await?;
                let msg = format!("{i}: {}", "attaching failed: EBUSY ж😀 ".repeat(40));
                states
                    .patch_status(
                        &s,
                        &PatchParams::default(),
                        &Patch::Merge(state_status(&n, "Error", "True", &msg, 1)),
                    )
                    .await?;
                Ok(())
            })
            .buffer_unordered(12)
            .collect()
            .await;
        let errs: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert!(errs.is_empty(), "bulk writes failed: {:?}", &errs[..errs.len().min(3)]);
    });
    eprintln!(
        "{} objects written in {:?}",
        2 * NODES + GHOSTS,
        started.elapsed()
    );
    let a = wait_cond(
        p,
        &name,
        "Error",
        &[
            &format!("failed on {} node(s)", NODES + GHOSTS),
            "more bytes)",
        ],
        40,
    );
    let m = cond_of(&a).1;
    assert!(m.len() <= 4100, "message of {} bytes", m.len());
    op.assert_alive();
    assert_eq!(
        writes_in(p, "clusterbpfapplication", None, &name, 3),
        0,
        "writes at idle"
    );
    op.assert_alive();
}

/// A State's failure message of nearly 32 KiB of multibyte characters (emoji, Cyrillic,
/// combining marks, right-to-left override, NUL and U+FFFF) is cut on a character
/// boundary at the bound.
#[test]
fn a_huge_unicode_state_message_is_cut_on_a_character_boundary() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("uni-{u}");
    let n = format!("atk-uni-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("uni-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    let s = format!("uni-{u}");
    cluster_state(p, &mut undo, &name, &s, &n, "Pending", "x", 1);
    // 32768 characters is the schema's bound: stay under it in characters.
    let msg = format!("start\u{0}\u{ffff}{}", "😀жé\u{301}\u{202e}".repeat(6000));
    set_status_v(
        p,
        "clusterbpfapplicationstate",
        None,
        &s,
        &state_status(&n, "Error", "True", &msg, 1),
    );
    let a = wait_cond(p, &name, "Error", &[&n, "start", "more bytes)"], 20);
    let m = cond_of(&a).1;
    assert!(m.len() <= 4100, "message of {} bytes", m.len());
    assert!(m.contains("😀жé"), "{}", &m[..200.min(m.len())]);
    assert_eq!(
        writes_in(p, "clusterbpfapplication", None, &name, 3),
        0,
        "writes at idle"
    );
    op.assert_alive();
}

/// The Event published when the condition changes to Error carries the message: with a
/// message of multibyte characters too.
#[test]
fn the_error_event_is_published_for_a_multibyte_message() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("ev-{u}");
    let n = format!("atk-ev-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("ev-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    let s = format!("ev-{u}");
    cluster_state(p, &mut undo, &name, &s, &n, "Pending", "x", 1);
    wait_for("a Pending event", 20, || {
        let ev = events_for(p, &name);
        ev.iter()
            .any(|(r, _)| r == "Pending")
            .then_some(())
            .ok_or(format!("{ev:?}"))
    });
    set_status(
        p,
        "clusterbpfapplicationstate",
        None,
        &s,
        &n,
        "Error",
        &"ошибка ".repeat(200),
        1,
    );
    wait_cond(p, &name, "Error", &["ошибка"], 20);
    wait_for("an Error event", 10, || {
        let ev = events_for(p, &name);
        ev.iter()
            .any(|(r, _)| r == "Error")
            .then_some(())
            .ok_or(format!("{ev:?}"))
    });
    op.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Odd applications.
// ---------------------------------------------------------------------------------------------

/// An invalid nodeSelector whose operator is a very long string (the schema bounds neither the
/// key nor the operator) is still reported as an invalid selector.
#[test]
fn an_invalid_selector_with_a_huge_operator_is_still_reported() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let mut undo = Undo::new(p);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("hugesel-{u}");
    let mut v = cluster_app(&name, "x");
    v["spec"]["nodeSelector"] = json!({"matchExpressions": [
        {"key": "a", "operator": format!("Near{}", "r".repeat(20_000)), "values": ["b"]}]});
    apply(p, &v);
    undo.obj("clusterbpfapplication", None, &name);
    let a = wait_cond(p, &name, "Error", &["nodeSelector is invalid"], 20);
    assert!(cond_of(&a).1.len() <= 4100);
    op.assert_alive();
}

/// An application deleted and made again under the same name is a new uid: a State left of
/// the old one (held by a finalizer) does not count for the new one.
#[test]
fn a_state_of_a_deleted_application_does_not_count_for_its_namesake() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("again-{u}");
    let n = format!("atk-again-{u}");
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("again-{u}");
    apply(p, &cluster_app(&name, &sel));
    undo.obj("clusterbpfapplication", None, &name);
    wait_cond(p, &name, "Pending", &["no State yet"], 30);
    let old = uid(&app(p, &name));
    // The old application's State, kept by another finalizer, not the agent's (so deletion
    // does not wait for it).
    let s = format!("again-old-{u}");
    put_state(
        p,
        "ClusterBpfApplicationState",
        None,
        &s,
        &n,
        &Owner {
            kind: "ClusterBpfApplication",
            name: &name,
            uid: &old,
            controller: true,
        },
        &[HOLD],
        &[],
    );
    undo.obj("clusterbpfapplicationstate", None, &s);
    set_status(
        p,
        "clusterbpfapplicationstate",
        None,
        &s,
        &n,
        "Success",
        "old",
        1,
    );
    wait_cond(p, &name, "Success", &[], 20);
    p.kubectl_ok(
        &["delete", "clusterbpfapplication", &name, "--wait=false"],
        None,
    );
    wait_for("the old application gone", 30, || {
        kube_json(p, &["get", "clusterbpfapplication", &name])
            .map_or(Ok(()), |_| Err("still there".into()))
    });
    apply(p, &cluster_app(&name, &sel));
    let new = uid(&app(p, &name));
    assert_ne!(old, new);
    // The old State is still there (being collected, held).
    assert!(kube_json(p, &["get", "clusterbpfapplicationstate", &s]).is_some());
    wait_cond(p, &name, "Pending", &["no State yet", &n], 20);
    // Touch the old State so its owner's name is woken.
    set_status(
        p,
        "clusterbpfapplicationstate",
        None,
        &s,
        &n,
        "Success",
        "old again",
        1,
    );
    stays(p, &name, "Pending", &["no State yet", &n], 3);
    op.assert_alive();
}

/// Namespaced applications of the same name in two namespaces: a State in one namespace,
/// even one naming the other namespace's application by uid, counts only for its own.
#[test]
fn namespaced_namesakes_in_two_namespaces_are_kept_apart() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let sel = format!("nsn-{u}");
    let n = format!("atk-nsn-{u}");
    let (ns1, ns2) = (format!("atk-ns1-{u}"), format!("atk-ns2-{u}"));
    let mut undo = Undo::new(p);
    node(p, &n, &[("bpfman-atk", &sel)], true);
    undo.node(&n);
    for ns in [&ns1, &ns2] {
        p.kubectl_ok(&["create", "namespace", ns], None);
        undo.cmd(&["delete", "namespace", ns, "--wait=false"]);
    }
    let mut op = Operator::start(&kc, &[], &[]);
    let name = "same";
    for ns in [&ns1, &ns2] {
        apply(p, &ns_app(name, ns, &sel));
        undo.obj("bpfapplication", Some(ns), name);
    }
    for ns in [&ns1, &ns2] {
        wait_cond_on(
            p,
            "bpfapplication",
            Some(ns),
            name,
            "Pending",
            &["no State yet"],
            30,
        );
    }
    let u1 = uid(&get(p, "bpfapplication", Some(&ns1), name));
    let u2 = uid(&get(p, "bpfapplication", Some(&ns2), name));
    // In ns1: a State naming ns2's application (its uid), then ns1's own.
    for (s, id) in [(format!("cross-{u}"), &u2), (format!("own-{u}"), &u1)] {
        put_state(
            p,
            "BpfApplicationState",
            Some(&ns1),
            &s,
            &n,
            &Owner {
                kind: "BpfApplication",
                name,
                uid: id,
                controller: true,
            },
            &[NS_FIN, HOLD],
            &[],
        );
        undo.obj("bpfapplicationstate", Some(&ns1), &s);
        set_status(
            p,
            "bpfapplicationstate",
            Some(&ns1),
            &s,
            &n,
            "Success",
            "ok",
            1,
        );
    }
    wait_cond_on(p, "bpfapplication", Some(&ns1), name, "Success", &[], 20);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let (t, m, _) = cond_of(&get(p, "bpfapplication", Some(&ns2), name));
        assert!(t == "Pending" && m.contains("no State yet"), "{t}: {m}");
        std::thread::sleep(Duration::from_millis(300));
    }
    op.assert_alive();
}

/// An application being deleted that no longer carries the operator's finalizer (released;
/// another finalizer holds it): the operator does not try to add its own again, does not write
/// in a loop, and lives.
#[test]
fn an_application_deleted_and_held_by_another_finalizer_is_left_quiet() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let mut undo = Undo::new(p);
    let mut op = Operator::start(&kc, &[], &[]);
    let name = format!("held-{u}");
    let mut v = cluster_app(&name, &format!("nobody-{u}"));
    v["metadata"]["finalizers"] = json!([HOLD]);
    apply(p, &v);
    undo.obj("clusterbpfapplication", None, &name);
    wait_for("the operator's finalizer", 20, || {
        let f = app(p, &name)["metadata"]["finalizers"].clone();
        (f == json!([HOLD, "bpfman.io.operator/finalizer"]))
            .then_some(())
            .ok_or(f.to_string())
    });
    p.kubectl_ok(
        &["delete", "clusterbpfapplication", &name, "--wait=false"],
        None,
    );
    wait_for("the operator's finalizer released", 20, || {
        let f = app(p, &name)["metadata"]["finalizers"].clone();
        (f == json!([HOLD])).then_some(()).ok_or(f.to_string())
    });
    let a = app(p, &name);
    assert!(a["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        writes_in(p, "clusterbpfapplication", None, &name, 3),
        0,
        "writes to a deleting application"
    );
    assert_eq!(app(p, &name)["metadata"]["finalizers"], json!([HOLD]));
    op.assert_alive();
    assert!(!op.log().contains("panicked"), "{}", op.log());
}

/// A BpfApplication without a spec (the schema lets a tenant store one) does not stop the
/// operator: it is skipped, and the other applications are still rolled up.
#[test]
fn a_spec_less_application_does_not_stop_the_others() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    let ns = format!("atk-nospec-{u}");
    let mut undo = Undo::new(p);
    p.kubectl_ok(&["create", "namespace", &ns], None);
    undo.cmd(&["delete", "namespace", &ns, "--wait=false"]);
    let mut op = Operator::start(&kc, &[], &[]);
    apply(
        p,
        &json!({"apiVersion": "bpfman.io/v1alpha1", "kind": "BpfApplication",
            "metadata": {"name": "poison", "namespace": ns}}),
    );
    undo.obj("bpfapplication", Some(&ns), "poison");
    let name = format!("after-poison-{u}");
    apply(p, &ns_app(&name, &ns, &format!("nobody-{u}")));
    undo.obj("bpfapplication", Some(&ns), &name);
    wait_cond_on(
        p,
        "bpfapplication",
        Some(&ns),
        &name,
        "Pending",
        &["No node matches"],
        30,
    );
    let cl = format!("after-poison-cl-{u}");
    apply(p, &cluster_app(&cl, &format!("nobody-{u}")));
    undo.obj("clusterbpfapplication", None, &cl);
    wait_cond(p, &cl, "Pending", &["No node matches"], 20);
    assert_eq!(
        writes_in(p, "bpfapplication", Some(&ns), "poison", 2),
        0,
        "writes to the spec-less application"
    );
    op.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Odd Configs.
// ---------------------------------------------------------------------------------------------

/// A Config of another name is not acted on (no finalizer, no namespace, no DaemonSet), while
/// bpfman-config next to it is.
#[test]
fn a_config_of_another_name_is_ignored() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let other = format!("other-{u}");
    let (ns_other, ns_real) = (format!("atk-cfgo-{u}"), format!("atk-cfgr-{u}"));
    let mut undo = Undo::new(p);
    undo.cmd(&["delete", "namespace", &ns_other, "--wait=false"]);
    undo.cmd(&["delete", "namespace", &ns_real, "--wait=false"]);
    undo.obj("config", None, &other);
    undo.obj("config", None, "bpfman-config");
    let mut op = Operator::start(&kc, &[], &[]);
    apply(p, &config(&other, &ns_other, "[signing]\n"));
    apply(p, &config("bpfman-config", &ns_real, "[signing]\n"));
    wait_for("bpfman-config's DaemonSet", 30, || {
        ds_annotation(p, &ns_real).ok_or_else(|| "none".to_string())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(kube_json(p, &["get", "namespace", &ns_other]).is_none());
    let c = kube_json(p, &["get", "config", &other]).expect("the other Config");
    assert!(c["metadata"]["finalizers"].is_null(), "{}", c["metadata"]);
    op.assert_alive();
    drop(op);
    drop(undo);
    remove_config(p);
}

/// Moving the Config to another namespace moves the daemon: the DaemonSet is in the new
/// namespace and no longer in the old one (two would run two daemons on every node, both
/// managing /run/bpfman and the bpffs).
#[test]
fn moving_the_config_to_another_namespace_leaves_no_daemonset_behind() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let (a, b) = (format!("atk-mva-{u}"), format!("atk-mvb-{u}"));
    let mut undo = Undo::new(p);
    undo.cmd(&["delete", "namespace", &a, "--wait=false"]);
    undo.cmd(&["delete", "namespace", &b, "--wait=false"]);
    undo.obj("config", None, "bpfman-config");
    let mut op = Operator::start(&kc, &[], &[]);
    apply(p, &config("bpfman-config", &a, "[signing]\n"));
    wait_for("the DaemonSet in A", 30, || {
        ds_annotation(p, &a).ok_or_else(|| "none".to_string())
    });
    apply(p, &config("bpfman-config", &b, "[signing]\n"));
    wait_for("the DaemonSet in B", 30, || {
        ds_annotation(p, &b).ok_or_else(|| "none".to_string())
    });
    wait_for("no DaemonSet left in A", 15, || {
        ds_annotation(p, &a).map_or(Ok(()), |_| Err(format!("bpfman-daemon still in {a}")))
    });
    assert!(
        kube_json(p, &["get", "configmap", "-n", &a, "bpfman-config"]).is_none(),
        "the ConfigMap left in {a}"
    );
    op.assert_alive();
    drop(op);
    drop(undo);
    remove_config(p);
}

/// A Config deploying into an existing namespace keeps that namespace's other labels, and
/// deleting the Config leaves the namespace (it is not owned).
#[test]
fn a_config_in_an_existing_namespace_keeps_its_labels_and_leaves_it() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let ns = format!("atk-team-{u}");
    let mut undo = Undo::new(p);
    p.kubectl_ok(&["create", "namespace", &ns], None);
    undo.cmd(&["delete", "namespace", &ns, "--wait=false"]);
    undo.obj("config", None, "bpfman-config");
    p.kubectl_ok(
        &["label", "namespace", &ns, "team=blue", "cost-center=42"],
        None,
    );
    let mut op = Operator::start(&kc, &[], &[]);
    apply(p, &config("bpfman-config", &ns, "[signing]\n"));
    wait_for("the DaemonSet", 30, || {
        ds_annotation(p, &ns).ok_or_else(|| "none".to_string())
    });
    let l = kube_json(p, &["get", "namespace", &ns]).expect("ns")["metadata"]["labels"].clone();
    assert_eq!(l["team"], "blue", "{l}");
    assert_eq!(l["cost-center"], "42", "{l}");
    assert_eq!(l["pod-security.kubernetes.io/enforce"], "privileged", "{l}");
    p.kubectl_ok(&["delete", "config", "bpfman-config", "--wait=false"], None);
    wait_for("the Config gone", 20, || {
        kube_json(p, &["get", "config", "bpfman-config"])
            .map_or(Ok(()), |_| Err("still there".into()))
    });
    std::thread::sleep(Duration::from_secs(1));
    let v = kube_json(p, &["get", "namespace", &ns]).expect("the namespace stays");
    assert!(v["metadata"]["deletionTimestamp"].is_null());
    op.assert_alive();
}

/// A Config whose namespace is not a valid name is retried without the operator dying, and
/// fixed, deploys.
#[test]
fn a_config_with_an_invalid_namespace_is_survived_and_fixed() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let ns = format!("atk-fix-{u}");
    let mut undo = Undo::new(p);
    undo.cmd(&["delete", "namespace", &ns, "--wait=false"]);
    undo.obj("config", None, "bpfman-config");
    let mut op = Operator::start(&kc, &[], &[]);
    apply(
        p,
        &config("bpfman-config", "Not_A..Namespace", "[signing]\n"),
    );
    std::thread::sleep(Duration::from_secs(4));
    op.assert_alive();
    apply(p, &config("bpfman-config", &ns, "[signing]\n"));
    wait_for("the DaemonSet", 30, || {
        ds_annotation(p, &ns).ok_or_else(|| "none".to_string())
    });
    op.assert_alive();
    drop(op);
    drop(undo);
    remove_config(p);
}

/// A large configuration (300 KiB of bpfman.toml: the Config and the ConfigMap both take it)
/// is deployed.
#[test]
fn a_large_configuration_is_deployed() {
    let _t = turn();
    let (p, kc) = plane();
    remove_config(p);
    let u = unique();
    let ns = format!("atk-big-{u}");
    let mut undo = Undo::new(p);
    undo.cmd(&["delete", "namespace", &ns, "--wait=false"]);
    undo.obj("config", None, "bpfman-config");
    let mut op = Operator::start(&kc, &[], &[]);
    let toml = format!(
        "[signing]\nallow_unsigned = true\n# {}\n",
        "x".repeat(300 * 1024)
    );
    apply(p, &config("bpfman-config", &ns, &toml));
    wait_for("the ConfigMap with it", 30, || {
        let c =
            kube_json(p, &["get", "configmap", "-n", &ns, "bpfman-config"]).unwrap_or(Value::Null);
        (c["data"]["bpfman.toml"] == toml.as_str())
            .then_some(())
            .ok_or("not yet".to_string())
    });
    wait_for("the DaemonSet", 20, || {
        ds_annotation(p, &ns).ok_or_else(|| "none".to_string())
    });
    op.assert_alive();
    drop(op);
    drop(undo);
    remove_config(p);
}

// ---------------------------------------------------------------------------------------------
// A hand-edited Lease.
// ---------------------------------------------------------------------------------------------

fn ghost_lease(p: &ControlPlane, holder: &str, renew: Value, duration: i32) {
    apply(
        p,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": "bpfman"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "renewTime": renew, "acquireTime": renew, "leaseTransitions": 3}}),
    );
}

/// A Lease left by a replica that is gone, renewed last an hour ago: taken at once.
#[test]
fn a_stale_lease_of_a_vanished_holder_is_taken() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    delete_lease(p);
    ghost_lease(p, &format!("ghost-{u}"), micro_time(-3600), 4);
    let id = format!("atk-op-{u}");
    let mut op = Operator::start(
        &kc,
        &leader_args(),
        &[("POD_NAMESPACE", "bpfman"), ("POD_NAME", &id)],
    );
    wait_for("it leads", 10, || {
        let h = lease_holder(p);
        (h == id).then_some(()).ok_or(h)
    });
    op.assert_alive();
    drop(op);
    delete_lease(p);
}

/// A Lease whose renewTime is in the future (a replica with its clock ahead, or a hand edit)
/// held by a replica that no longer renews: leadership is taken once the Lease has not changed
/// for its duration (as client-go's elector does, by the time it observed it), not never.
#[test]
fn a_lease_renewed_in_the_future_by_a_gone_holder_is_taken_after_its_duration() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    delete_lease(p);
    ghost_lease(p, &format!("ghost-{u}"), micro_time(3600), 4);
    let id = format!("atk-op-{u}");
    let mut op = Operator::start(
        &kc,
        &leader_args(),
        &[("POD_NAMESPACE", "bpfman"), ("POD_NAME", &id)],
    );
    wait_for("it leads", 20, || {
        let h = lease_holder(p);
        (h == id).then_some(()).ok_or(h)
    });
    op.assert_alive();
    drop(op);
    delete_lease(p);
}

/// The Lease deleted while leading: the leader makes it again and goes on acting.
#[test]
fn the_lease_deleted_while_leading_is_made_again() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    delete_lease(p);
    let id = format!("atk-op-{u}");
    let mut undo = Undo::new(p);
    let mut op = Operator::start(
        &kc,
        &leader_args(),
        &[("POD_NAMESPACE", "bpfman"), ("POD_NAME", &id)],
    );
    wait_for("it leads", 15, || {
        let h = lease_holder(p);
        (h == id).then_some(()).ok_or(h)
    });
    delete_lease(p);
    wait_for("the Lease made again", 10, || {
        let h = lease_holder(p);
        (h == id).then_some(()).ok_or(h)
    });
    std::thread::sleep(Duration::from_secs(2));
    op.assert_alive();
    let name = format!("lease-{u}");
    apply(p, &cluster_app(&name, &format!("nobody-{u}")));
    undo.obj("clusterbpfapplication", None, &name);
    wait_cond(p, &name, "Pending", &["No node matches"], 20);
    op.assert_alive();
    drop(op);
    delete_lease(p);
}

/// The Lease hand-edited to another holder while leading: the leader stops (it does not fight
/// for the Lease, nor act on), and leaves the new holder in place.
#[test]
fn a_leader_whose_lease_is_taken_by_hand_stops_and_leaves_it() {
    let _t = turn();
    let (p, kc) = plane();
    let u = unique();
    delete_lease(p);
    let id = format!("atk-op-{u}");
    let mut op = Operator::start(
        &kc,
        &leader_args(),
        &[("POD_NAMESPACE", "bpfman"), ("POD_NAME", &id)],
    );
    wait_for("it leads", 15, || {
        let h = lease_holder(p);
        (h == id).then_some(()).ok_or(h)
    });
    let ghost = format!("ghost-{u}");
    let patch = json!({"spec": {"holderIdentity": ghost, "renewTime": micro_time(0),
        "leaseDurationSeconds": 30}});
    p.kubectl_ok(
        &[
            "patch",
            "lease",
            "-n",
            "bpfman",
            LEASE,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    wait_for("the leader to stop", 10, || {
        if op.alive() {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
    assert!(
        op.log().contains("another replica took the Lease"),
        "{}",
        op.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lease_holder(p), ghost);
    drop(op);
    delete_lease(p);
}
