//! A second round of attacks on the Kubernetes node agent, against what changed in its State
//! ownership (States chosen by derived name, extras deleted, labels and finalizer repaired),
//! its orphan sweep (programs found by their `bpfman.io/agentState` metadata), its map owners
//! (read from the daemon, users kicked and torn down first) and its failure paths.
//!
//! The attacker is a cluster user who may create and edit applications, their States
//! (labels, finalizers, owner references), Secrets and pods; a few tests also load programs
//! as root through the daemon's socket with the agent's metadata. Every test has its own
//! nodes (10.251.1.x), daemon and agent, and cleans up what it made.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use common::agent::*;
use common::*;
use serde_json::Value;

const AGENT_FINALIZER: &str = "bpfman.io.clbpfapplicationcontroller/finalizer";

// ---------------------------------------------------------------------------------------
// Manifests.

/// A ClusterBpfApplication. `selector` goes under `nodeSelector.matchLabels` (6-space
/// indented lines), `meta` under `metadata:` (2 spaces), `extra` into the spec (2 spaces),
/// `programs` under `programs:`.
fn app_sel(name: &str, meta: &str, selector: &str, extra: &str, programs: &str) -> String {
    format!(
        "apiVersion: bpfman.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {name}\n{meta}spec:\n  nodeSelector:\n    matchLabels:\n{selector}  byteCode:\n    path: \"{}\"\n{extra}  programs:\n{programs}",
        obj("tracing_test.bpf.o")
    )
}

fn on_node(node: &str) -> String {
    format!("      kubernetes.io/hostname: {node}\n")
}

fn tp_prog(prog: &str, tps: &[&str]) -> String {
    let mut s =
        format!("    - name: {prog}\n      type: TracePoint\n      tracepoint:\n        links:\n");
    for t in tps {
        s.push_str(&format!("          - name: {t}\n"));
    }
    s
}

fn good_app(name: &str, node: &str) -> String {
    app_sel(
        name,
        "",
        &on_node(node),
        "",
        &tp_prog("tp_count", &["syscalls/sys_enter_getpid"]),
    )
}

/// An application labelled `attack2-map: <label>` (when given) whose maps are those of the
/// application labelled `attack2-map: <selects>` (when given).
fn map_app(name: &str, node: &str, label: Option<&str>, selects: Option<&str>) -> String {
    let meta = label
        .map(|l| format!("  labels:\n    attack2-map: \"{l}\"\n"))
        .unwrap_or_default();
    let extra = selects
        .map(|s| format!("  mapOwnerSelector:\n    matchLabels:\n      attack2-map: \"{s}\"\n"))
        .unwrap_or_default();
    app_sel(
        name,
        &meta,
        &on_node(node),
        &extra,
        &tp_prog("tp_shared", &["syscalls/sys_enter_getppid"]),
    )
}

// ---------------------------------------------------------------------------------------
// Lookups and assertions.

fn kube_json(p: &ControlPlane, args: &[&str]) -> Option<Value> {
    let out = p.kubectl(args).ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Every ClusterBpfApplicationState labelled for `node`.
fn node_states(p: &ControlPlane, node: &str) -> Vec<Value> {
    kube_json(
        p,
        &[
            "get",
            "clusterbpfapplicationstates",
            "-l",
            &format!("kubernetes.io/hostname={node}"),
            "-o",
            "json",
        ],
    )
    .and_then(|v| v["items"].as_array().cloned())
    .unwrap_or_default()
}

/// This node's live State of `app` (found by owner reference name), the newest first.
fn st(p: &ControlPlane, app: &str, node: &str) -> Option<Value> {
    let mut v: Vec<Value> = node_states(p, node)
        .into_iter()
        .filter(|s| s["metadata"]["deletionTimestamp"].is_null())
        .filter(|s| {
            s["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["name"] == app)
        })
        .collect();
    v.sort_by_key(|s| {
        std::cmp::Reverse(
            s["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    });
    v.into_iter().next()
}

fn st_by_name(p: &ControlPlane, name: &str) -> Option<Value> {
    kube_json(
        p,
        &["get", "clusterbpfapplicationstate", name, "-o", "json"],
    )
}

fn uid_of(s: &Value) -> String {
    s["metadata"]["uid"].as_str().expect("uid").to_string()
}

fn name_of(s: &Value) -> String {
    s["metadata"]["name"].as_str().expect("name").to_string()
}

fn wait_st(
    p: &ControlPlane,
    app: &str,
    node: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        if let Some(s) = st(p, app, node) {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {secs} s waiting for the State of {app} on {node} to be {what}; last: {}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn wait_type(p: &ControlPlane, app: &str, node: &str, type_: &str, secs: u64) -> Value {
    wait_st(p, app, node, secs, type_, |s| cond(s).0 == type_)
}

fn all_programs(d: &Daemon) -> Vec<Value> {
    d.json(&["list", "programs"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The programs the daemon holds whose `bpfman.io/ProgramName` is `app`.
fn programs_named(d: &Daemon, app: &str) -> Vec<Value> {
    d.json(&[
        "list",
        "programs",
        "--metadata-selector",
        &format!("bpfman.io/ProgramName={app}"),
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

fn ids(v: &[Value], key: &str) -> BTreeSet<u64> {
    v.iter().filter_map(|x| x[key].as_u64()).collect()
}

fn assert_alive(a: &mut Agent) {
    let exited = a
        .child
        .as_mut()
        .map(|c| !matches!(c.try_wait(), Ok(None)))
        .unwrap_or(true);
    assert!(!exited, "the agent exited: {}", a.log());
}

/// The State records exactly the programs the daemon holds for it.
fn truthful(d: &Daemon, s: &Value) -> Result<(), String> {
    let held = ids(&programs_of(d, &uid_of(s)), "id");
    let recorded: BTreeSet<u64> = recorded_ids(s).0.into_iter().collect();
    if recorded == held {
        Ok(())
    } else {
        Err(format!(
            "the State {} records programs {recorded:?} but the daemon holds {held:?} for it",
            name_of(s)
        ))
    }
}

fn assert_state_tells_the_truth(d: &Daemon, s: &Value) {
    if let Err(e) = truthful(d, s) {
        panic!(
            "{e}: {}",
            serde_json::to_string_pretty(s).unwrap_or_default()
        );
    }
}

fn update_count(s: &Value) -> u64 {
    s["status"]["updateCount"].as_u64().unwrap_or_default()
}

fn delete_cluster_apps(p: &ControlPlane, apps: &[String]) {
    if apps.is_empty() {
        return;
    }
    let mut args = vec![
        "delete",
        "clusterbpfapplication",
        "--ignore-not-found",
        "--wait=false",
    ];
    args.extend(apps.iter().map(String::as_str));
    let _ = p.kubectl(&args);
}

fn wait_states_gone(p: &ControlPlane, apps: &[String], node: &str, secs: u64) {
    for a in apps {
        wait_for(&format!("the States of {a} on {node} gone"), secs, || {
            (!node_states(p, node).iter().any(|s| {
                s["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| o["name"] == a.as_str())
            }))
            .then_some(())
        });
    }
}

fn remove_apps(p: &ControlPlane, apps: &[String], node: &str) {
    delete_cluster_apps(p, apps);
    wait_states_gone(p, apps, node, 60);
}

fn drop_finalizers(p: &ControlPlane, state: &str) {
    let _ = p.kubectl(&[
        "patch",
        "clusterbpfapplicationstate",
        state,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

fn app_uid(p: &ControlPlane, app: &str) -> String {
    p.kubectl_ok(
        &[
            "get",
            "clusterbpfapplication",
            app,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
}

fn map_owner_of(d: &Daemon, id: u64) -> Option<u64> {
    d.json(&["get", "program", &id.to_string()])["map_owner_id"].as_u64()
}

/// On drop: deletes the test's applications and namespaces and releases every State of its
/// nodes (and the forged ones it names), so nothing outlives the test in the shared API
/// server.
struct Tidy<'a> {
    p: &'a ControlPlane,
    nodes: Vec<String>,
    apps: Vec<String>,
    namespaces: Vec<String>,
    states: Vec<String>,
}

impl<'a> Tidy<'a> {
    fn new(p: &'a ControlPlane, nodes: &[&str]) -> Self {
        Tidy {
            p,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            apps: Vec::new(),
            namespaces: Vec::new(),
            states: Vec::new(),
        }
    }

    fn app(&mut self, a: &str) -> String {
        self.apps.push(a.to_string());
        a.to_string()
    }
}

impl Drop for Tidy<'_> {
    fn drop(&mut self) {
        delete_cluster_apps(self.p, &self.apps);
        let mut names = self.states.clone();
        for n in &self.nodes {
            for kind in ["clusterbpfapplicationstates", "bpfapplicationstates"] {
                let Some(v) = kube_json(
                    self.p,
                    &[
                        "get",
                        kind,
                        "-A",
                        "-l",
                        &format!("kubernetes.io/hostname={n}"),
                        "-o",
                        "json",
                    ],
                ) else {
                    continue;
                };
                for s in v["items"].as_array().into_iter().flatten() {
                    let name = s["metadata"]["name"].as_str().unwrap_or_default();
                    match s["metadata"]["namespace"].as_str() {
                        Some(ns) => {
                            let _ = self.p.kubectl(&[
                                "patch",
                                "bpfapplicationstate",
                                "-n",
                                ns,
                                name,
                                "--type=merge",
                                "-p",
                                r#"{"metadata":{"finalizers":null}}"#,
                            ]);
                        }
                        None => names.push(name.to_string()),
                    }
                }
            }
        }
        for s in names {
            drop_finalizers(self.p, &s);
            let _ = self.p.kubectl(&[
                "delete",
                "clusterbpfapplicationstate",
                &s,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        for ns in &self.namespaces {
            let _ = self.p.kubectl(&[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
}

fn setup(tag: &str, ip: &str) -> (&'static ControlPlane, String, Daemon, Agent) {
    let p = plane();
    let node = node_name(tag);
    make_node(p, &node, &[], ip);
    let d = Daemon::start();
    let a = Agent::start(p, &node, &d);
    (p, node, d, a)
}

/// Two nodes labelled `attack2-pool: <pool>`, each with its own daemon and agent.
struct Pair {
    na: String,
    nb: String,
    da: Daemon,
    db: Daemon,
    aa: Agent,
    ab: Agent,
    pool: String,
}

fn pair(tag: &str, ip_a: &str, ip_b: &str) -> Pair {
    let p = plane();
    let (na, nb) = (node_name(&format!("{tag}a")), node_name(&format!("{tag}b")));
    let pool = format!("{tag}-{}-{}", std::process::id(), unique());
    make_node(p, &na, &[("attack2-pool", &pool)], ip_a);
    make_node(p, &nb, &[("attack2-pool", &pool)], ip_b);
    let (da, db) = (Daemon::start(), Daemon::start());
    let aa = Agent::start(p, &na, &da);
    let ab = Agent::start(p, &nb, &db);
    Pair {
        na,
        nb,
        da,
        db,
        aa,
        ab,
        pool,
    }
}

fn pool_app(name: &str, pool: &str) -> String {
    app_sel(
        name,
        "",
        &format!("      attack2-pool: \"{pool}\"\n"),
        "",
        &tp_prog("tp_count", &["syscalls/sys_enter_getpid"]),
    )
}

/// The `attempt`th State name the agent derives (agent.rs `state_name`), with sha256sum.
fn derived_state_name(app: &str, node: &str, app_uid: &str, attempt: u32) -> String {
    use std::io::Write;
    let seed = match attempt {
        0 => format!("{node}/{app_uid}"),
        n => format!("{node}/{app_uid}/{n}"),
    };
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(seed.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)[..8].to_string();
    format!("{}-{hex}", app.chars().take(244).collect::<String>())
}

/// A program loaded as root through the CLI carrying `metadata` (KEY=VALUE,...).
fn cli_program_with(d: &Daemon, metadata: &str) -> u64 {
    d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_shared",
        "-m",
        metadata,
    ]) as u64
}

fn unload(d: &Daemon, id: u64) {
    let _ = d.cli(&["unload", &id.to_string()]);
}

/// Polls for `secs`, failing as soon as `bad` says something.
fn hold_for(secs: u64, mut bad: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(e) = bad() {
            panic!("{e}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------
// Owner references of the node's own State.

#[test]
fn a_state_whose_controller_reference_is_cleared_never_runs_its_application_twice() {
    require_root!();
    let (p, node, d, mut agent) = setup("noctl", "10.251.1.1");
    let mut tidy = Tidy::new(p, &[&node]);
    let a = tidy.app(&format!("noctl-{}", unique()));
    apply(p, &good_app(&a, &node));
    let s = wait_type(p, &a, &node, "Success", 60);
    let name = name_of(&s);
    tidy.states.push(name.clone());
    // The owner reference stays (garbage collection still follows it); it is no longer the
    // controller.
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplicationstate",
            &name,
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/metadata/ownerReferences/0/controller","value":false}]"#,
        ],
        None,
    );
    hold_for(10, || {
        let n = programs_named(&d, &a).len();
        (n > 1).then(|| {
            format!(
                "the application runs twice on one node: {:?}; States {:?}",
                programs_named(&d, &a),
                node_states(p, &node)
                    .iter()
                    .map(|s| (name_of(s), uid_of(s)))
                    .collect::<Vec<_>>()
            )
        })
    });
    assert_eq!(programs_named(&d, &a).len(), 1, "{:?}", all_programs(&d));
    // Deleting the application takes everything down and nothing hangs.
    delete_cluster_apps(p, std::slice::from_ref(&a));
    wait_until("the application's programs gone", 45, || {
        let left = programs_named(&d, &a);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    wait_until("the State gone", 30, || match st_by_name(p, &name) {
        None => Ok(()),
        Some(s) => Err(s.to_string()),
    });
    assert_alive(&mut agent);
}

#[test]
fn a_state_whose_owner_reference_names_another_application_never_runs_either_twice() {
    require_root!();
    let (p, node, d, mut agent) = setup("reown", "10.251.1.2");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let (a, b) = (
        tidy.app(&format!("reown-a-{u}")),
        tidy.app(&format!("reown-b-{u}")),
    );
    apply(p, &good_app(&a, &node));
    apply(p, &good_app(&b, &node));
    let sa = wait_type(p, &a, &node, "Success", 60);
    wait_type(p, &b, &node, "Success", 60);
    let name = name_of(&sa);
    tidy.states.push(name.clone());
    let buid = app_uid(p, &b);
    let patch = serde_json::json!([{"op": "replace", "path": "/metadata/ownerReferences", "value": [{
        "apiVersion": "bpfman.io/v1alpha1", "kind": "ClusterBpfApplication",
        "name": b, "uid": buid, "controller": true, "blockOwnerDeletion": true,
    }]}]);
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplicationstate",
            &name,
            "--type=json",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    hold_for(10, || {
        let (na, nb) = (programs_named(&d, &a).len(), programs_named(&d, &b).len());
        (na > 1 || nb > 1).then(|| {
            format!(
                "an application runs twice: {a}: {na}, {b}: {nb}; States {:?}",
                node_states(p, &node)
                    .iter()
                    .map(|s| (
                        name_of(s),
                        uid_of(s),
                        s["metadata"]["ownerReferences"].clone()
                    ))
                    .collect::<Vec<_>>()
            )
        })
    });
    // Deleting the first application leaves none of its programs behind.
    delete_cluster_apps(p, std::slice::from_ref(&a));
    wait_until("the first application's programs gone", 45, || {
        let left = programs_named(&d, &a);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let sb = wait_type(p, &b, &node, "Success", 30);
    assert_eq!(programs_named(&d, &b).len(), 1);
    assert_state_tells_the_truth(&d, &sb);
    assert_alive(&mut agent);
    remove_apps(p, &[b], &node);
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

// ---------------------------------------------------------------------------------------
// The orphan sweep.

#[test]
fn a_program_with_a_malformed_agent_state_never_stops_the_sweep() {
    require_root!();
    let (p, node, d, mut agent) = setup("poison", "10.251.1.3");
    let mut tidy = Tidy::new(p, &[&node]);
    // While the agent is down, the application's State is released without its finalizer
    // and the application deleted (garbage collection takes the State): only the sweep can
    // find its programs then.
    let orphan = |agent: &mut Agent, tidy: &mut Tidy| -> String {
        let a = tidy.app(&format!("poisoned-{}", unique()));
        apply(p, &good_app(&a, &node));
        let s = wait_type(p, &a, &node, "Success", 60);
        agent.kill();
        drop_finalizers(p, &name_of(&s));
        delete_cluster_apps(p, std::slice::from_ref(&a));
        wait_states_gone(p, std::slice::from_ref(&a), &node, 60);
        agent.spawn();
        a
    };
    let swept = |a: &str| {
        wait_until(
            &format!("the vanished State's programs of {a} unloaded by the sweep"),
            35,
            || {
                let left = programs_named(&d, a);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        )
    };
    // Control: the sweep finds such programs.
    let a = orphan(&mut agent, &mut tidy);
    swept(&a);
    // Root's program carrying the agent's metadata with an empty State name (and a uuid
    // that sorts before any State's UID).
    let poison = cli_program_with(
        &d,
        "bpfman.io/uuid=0,bpfman.io/agentState=c/,bpfman.io/ProgramName=poison",
    );
    let a = orphan(&mut agent, &mut tidy);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| swept(&a)));
    unload(&d, poison);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    assert!(links(&d).is_empty(), "{:?}", links(&d));
    assert_alive(&mut agent);
}

#[test]
fn programs_forging_the_agents_metadata_never_touch_the_real_state_s_programs() {
    require_root!();
    let (p, node, d, mut agent) = setup("forgemd", "10.251.1.4");
    let mut tidy = Tidy::new(p, &[&node]);
    let a = tidy.app(&format!("forgemd-{}", unique()));
    apply(p, &good_app(&a, &node));
    let s = wait_type(p, &a, &node, "Success", 60);
    let (name, pid) = (name_of(&s), program_id(&s, 0));
    let link_ids = ids(&links(&d), "link_id");
    // (1) Naming the real State with another uuid (an "earlier State" of that name); (2) a
    // State that never existed; (3) a namespaced State in a namespace that does not exist.
    let forged = [
        cli_program_with(
            &d,
            &format!(
                "bpfman.io/uuid=11111111-2222-4333-8444-555555555555,bpfman.io/agentState=c/{name},bpfman.io/ProgramName={a}"
            ),
        ),
        cli_program_with(
            &d,
            &format!(
                "bpfman.io/uuid=21111111-2222-4333-8444-555555555555,bpfman.io/agentState=c/gone-{name},bpfman.io/ProgramName={a}"
            ),
        ),
        cli_program_with(
            &d,
            &format!(
                "bpfman.io/uuid=31111111-2222-4333-8444-555555555555,bpfman.io/agentState=n/no-such-ns-{}/x,bpfman.io/ProgramName={a}",
                unique()
            ),
        ),
    ];
    // The sweep takes them down (they claim to be the agent's, and their States are gone).
    wait_until("the forged programs unloaded", 35, || {
        let held = ids(&all_programs(&d), "id");
        let left: Vec<u64> = forged
            .iter()
            .copied()
            .filter(|f| held.contains(f))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?} still loaded"))
        }
    });
    // The real program was never reloaded nor detached.
    std::thread::sleep(Duration::from_secs(2));
    let s = st(p, &a, &node).expect("the State");
    assert_eq!(cond(&s).0, "Success", "{s}");
    assert_eq!(program_id(&s, 0), pid, "reloaded: {s}");
    assert_eq!(ids(&all_programs(&d), "id"), BTreeSet::from([pid]));
    assert_eq!(ids(&links(&d), "link_id"), link_ids, "its link changed");
    assert_state_tells_the_truth(&d, &s);
    assert_alive(&mut agent);
    remove_apps(p, &[a], &node);
    assert!(all_programs(&d).is_empty());
}

// ---------------------------------------------------------------------------------------
// Map owners.

#[test]
fn map_owner_selectors_in_a_cycle_wait_quietly_and_load_once_the_cycle_is_broken() {
    require_root!();
    let (p, node, d, mut agent) = setup("cycle", "10.251.1.5");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let tag = |s: &str| format!("cyc-{s}-{u}-{}", std::process::id());
    let (x, y, z) = (
        tidy.app(&format!("cyc-x-{u}")),
        tidy.app(&format!("cyc-y-{u}")),
        tidy.app(&format!("cyc-z-{u}")),
    );
    // X shares Y's maps, Y shares X's; Z selects itself only.
    apply(p, &map_app(&x, &node, Some(&tag("x")), Some(&tag("y"))));
    apply(p, &map_app(&y, &node, Some(&tag("y")), Some(&tag("x"))));
    apply(p, &map_app(&z, &node, Some(&tag("z")), Some(&tag("z"))));
    let mut counts = Vec::new();
    for a in [&x, &y, &z] {
        let s = wait_type(p, a, &node, "Pending", 60);
        counts.push(update_count(&s));
    }
    // Quiet: no loads, no status churn (a loop of kicks would rewrite the States).
    std::thread::sleep(Duration::from_secs(12));
    for (a, before) in [&x, &y, &z].iter().zip(&counts) {
        let s = st(p, a, &node).expect("State");
        assert_eq!(cond(&s).0, "Pending", "{s}");
        assert!(
            update_count(&s) <= before + 1,
            "{a}: the status was rewritten {} times in 12 s",
            update_count(&s) - before
        );
    }
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
    // Y stops sharing: it loads, and X loads onto its maps.
    apply(p, &map_app(&y, &node, Some(&tag("y")), None));
    let sy = wait_type(p, &y, &node, "Success", 30);
    let sx = wait_type(p, &x, &node, "Success", 30);
    assert_eq!(
        map_owner_of(&d, program_id(&sx, 0)),
        Some(program_id(&sy, 0))
    );
    assert_eq!(cond(&st(p, &z, &node).expect("Z")).0, "Pending");
    assert_eq!(all_programs(&d).len(), 2, "{:?}", all_programs(&d));
    assert_alive(&mut agent);
    remove_apps(p, &[x, z], &node);
    remove_apps(p, &[y], &node);
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

#[test]
fn a_chain_of_map_users_never_hangs_its_heads_deletion_and_recovers() {
    require_root!();
    let (p, node, d, mut agent) = setup("chain", "10.251.1.6");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let tag = |s: &str| format!("chain-{s}-{u}-{}", std::process::id());
    let (a, b, c) = (
        tidy.app(&format!("chain-a-{u}")),
        tidy.app(&format!("chain-b-{u}")),
        tidy.app(&format!("chain-c-{u}")),
    );
    // C shares B's maps, B shares A's.
    apply(p, &map_app(&a, &node, Some(&tag("a")), None));
    apply(p, &map_app(&b, &node, Some(&tag("b")), Some(&tag("a"))));
    apply(p, &map_app(&c, &node, Some(&tag("c")), Some(&tag("b"))));
    let sa = wait_type(p, &a, &node, "Success", 60);
    let sb = wait_type(p, &b, &node, "Success", 60);
    let sc = wait_type(p, &c, &node, "Success", 60);
    let aid = program_id(&sa, 0);
    assert_eq!(map_owner_of(&d, program_id(&sb, 0)), Some(aid));
    // The daemon shares the maps of B's own owner.
    assert_eq!(map_owner_of(&d, program_id(&sc, 0)), Some(aid));
    let name_a = name_of(&sa);
    // Deleting the head: its State goes, its programs go, nothing hangs.
    delete_cluster_apps(p, std::slice::from_ref(&a));
    wait_until("the head's State gone", 45, || {
        match st_by_name(p, &name_a) {
            None => Ok(()),
            Some(s) => Err(serde_json::to_string(&s["status"]).unwrap_or_default()),
        }
    });
    wait_until("the head's programs gone", 15, || {
        if programs_named(&d, &a).is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", all_programs(&d)))
        }
    });
    // The users wait for an owner, say so, and hold nothing.
    for us in [&b, &c] {
        let s = wait_st(p, us, &node, 30, "Pending and truthful", |s| {
            cond(s).0 == "Pending" && truthful(&d, s).is_ok()
        });
        assert!(recorded_ids(&s).0.is_empty(), "{s}");
    }
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
    // The head comes back: the chain loads again.
    apply(p, &map_app(&a, &node, Some(&tag("a")), None));
    let sa = wait_type(p, &a, &node, "Success", 60);
    let sb = wait_type(p, &b, &node, "Success", 30);
    let sc = wait_type(p, &c, &node, "Success", 30);
    let aid = program_id(&sa, 0);
    assert_eq!(map_owner_of(&d, program_id(&sb, 0)), Some(aid));
    assert_eq!(map_owner_of(&d, program_id(&sc, 0)), Some(aid));
    for s in [&sa, &sb, &sc] {
        assert_state_tells_the_truth(&d, s);
    }
    assert_eq!(all_programs(&d).len(), 3, "{:?}", all_programs(&d));
    // Deleting the middle one moves nobody onto foreign maps and leaks nothing.
    remove_apps(p, std::slice::from_ref(&b), &node);
    let sc = wait_st(p, &c, &node, 30, "Pending and truthful", |s| {
        cond(s).0 == "Pending" && truthful(&d, s).is_ok()
    });
    assert!(recorded_ids(&sc).0.is_empty(), "{sc}");
    assert_alive(&mut agent);
    remove_apps(p, &[c], &node);
    remove_apps(p, &[a], &node);
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

#[test]
fn a_second_application_matching_a_map_users_selector_keeps_what_runs_and_says_so() {
    require_root!();
    let (p, node, d, mut agent) = setup("ambig", "10.251.1.7");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let tag = format!("ambig-{u}-{}", std::process::id());
    let (o, us, e) = (
        tidy.app(&format!("ambig-owner-{u}")),
        tidy.app(&format!("ambig-user-{u}")),
        tidy.app(&format!("ambig-evil-{u}")),
    );
    apply(p, &map_app(&o, &node, Some(&tag), None));
    let so = wait_type(p, &o, &node, "Success", 60);
    apply(p, &map_app(&us, &node, None, Some(&tag)));
    let su = wait_type(p, &us, &node, "Success", 60);
    let (oid, uid) = (program_id(&so, 0), program_id(&su, 0));
    assert_eq!(map_owner_of(&d, uid), Some(oid));
    // Another application takes the owner's label.
    apply(p, &map_app(&e, &node, Some(&tag), None));
    wait_type(p, &e, &node, "Success", 60);
    let s = wait_type(p, &us, &node, "Error", 30);
    assert!(
        cond(&s).2.contains("exactly one"),
        "the message says why: {:?}",
        cond(&s)
    );
    // What ran keeps running, on the owner's maps, and the State still names it.
    assert_eq!(recorded_ids(&s).0, vec![uid], "{s}");
    assert_state_tells_the_truth(&d, &s);
    assert_eq!(map_owner_of(&d, uid), Some(oid));
    // The second one goes: back to Success without a reload.
    remove_apps(p, std::slice::from_ref(&e), &node);
    let s = wait_type(p, &us, &node, "Success", 30);
    assert_eq!(recorded_ids(&s).0, vec![uid], "reloaded: {s}");
    assert_state_tells_the_truth(&d, &s);
    assert_alive(&mut agent);
    remove_apps(p, &[us], &node);
    remove_apps(p, &[o], &node);
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

// ---------------------------------------------------------------------------------------
// Other nodes' States.

#[test]
fn another_nodes_state_relabelled_here_and_deleted_leaves_neither_node_leaking() {
    require_root!();
    let p = plane();
    let mut pr = pair("rldel", "10.251.1.8", "10.251.1.9");
    let mut tidy = Tidy::new(p, &[&pr.na, &pr.nb]);
    let a = tidy.app(&format!("rldel-{}", unique()));
    apply(p, &pool_app(&a, &pr.pool));
    let sa = wait_type(p, &a, &pr.na, "Success", 60);
    let sb = wait_type(p, &a, &pr.nb, "Success", 60);
    let pa = program_id(&sa, 0);
    let name_b = name_of(&sb);
    p.kubectl_ok(
        &[
            "label",
            "--overwrite",
            "clusterbpfapplicationstate",
            &name_b,
            &format!("kubernetes.io/hostname={}", pr.na),
        ],
        None,
    );
    p.kubectl_ok(
        &[
            "delete",
            "clusterbpfapplicationstate",
            &name_b,
            "--wait=false",
        ],
        None,
    );
    // For 15 s neither daemon holds the application twice; node a is never reloaded.
    hold_for(15, || {
        let (ca, cb) = (all_programs(&pr.da).len(), all_programs(&pr.db).len());
        if ca > 1 || cb > 1 {
            return Some(format!("node a holds {ca}, node b {cb}"));
        }
        (ids(&all_programs(&pr.da), "id") != BTreeSet::from([pa]))
            .then(|| format!("node a's program changed: {:?}", all_programs(&pr.da)))
    });
    // Node b runs it again, once, under a State that says so.
    let sb2 = wait_st(p, &a, &pr.nb, 30, "Success and truthful", |s| {
        cond(s).0 == "Success" && truthful(&pr.db, s).is_ok()
    });
    assert_eq!(sb2["status"]["node"], pr.nb.as_str(), "{sb2}");
    assert_eq!(all_programs(&pr.db).len(), 1, "{:?}", all_programs(&pr.db));
    assert!(
        programs_of(&pr.db, &uid_of(&sb)).is_empty() || uid_of(&sb2) == uid_of(&sb),
        "the deleted State's programs leaked on node b"
    );
    let sa2 = st(p, &a, &pr.na).expect("node a's State");
    assert_eq!(uid_of(&sa2), uid_of(&sa));
    assert_state_tells_the_truth(&pr.da, &sa2);
    assert_alive(&mut pr.aa);
    assert_alive(&mut pr.ab);
    delete_cluster_apps(p, std::slice::from_ref(&a));
    wait_states_gone(p, std::slice::from_ref(&a), &pr.na, 60);
    wait_states_gone(p, std::slice::from_ref(&a), &pr.nb, 60);
    wait_for("both daemons empty", 30, || {
        (all_programs(&pr.da).is_empty() && all_programs(&pr.db).is_empty()).then_some(())
    });
}

#[test]
fn flapping_another_nodes_state_label_onto_this_node_never_doubles_or_reloads() {
    require_root!();
    let p = plane();
    let mut pr = pair("flap", "10.251.1.10", "10.251.1.11");
    let mut tidy = Tidy::new(p, &[&pr.na, &pr.nb]);
    let a = tidy.app(&format!("flap-{}", unique()));
    apply(p, &pool_app(&a, &pr.pool));
    let sa = wait_type(p, &a, &pr.na, "Success", 60);
    let sb = wait_type(p, &a, &pr.nb, "Success", 60);
    let (pa, pb) = (program_id(&sa, 0), program_id(&sb, 0));
    let name_b = name_of(&sb);
    tidy.states.push(name_b.clone());
    let check = |pr: &Pair| -> Option<String> {
        let (ga, gb) = (
            ids(&all_programs(&pr.da), "id"),
            ids(&all_programs(&pr.db), "id"),
        );
        (ga != BTreeSet::from([pa]) || gb != BTreeSet::from([pb]))
            .then(|| format!("node a holds {ga:?} (was {pa}), node b {gb:?} (was {pb})"))
    };
    for i in 0..12 {
        let to = if i % 2 == 0 { &pr.na } else { &pr.nb };
        let _ = p.kubectl(&[
            "label",
            "--overwrite",
            "clusterbpfapplicationstate",
            &name_b,
            &format!("kubernetes.io/hostname={to}"),
        ]);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(e) = check(&pr) {
            panic!("round {i}: {e}");
        }
    }
    hold_for(12, || check(&pr));
    let s = st_by_name(p, &name_b).expect("node b's State is kept");
    assert_eq!(
        s["metadata"]["labels"]["kubernetes.io/hostname"],
        pr.nb.as_str(),
        "node b's agent put its label back"
    );
    assert_eq!(s["status"]["node"], pr.nb.as_str());
    assert_state_tells_the_truth(&pr.db, &s);
    assert_state_tells_the_truth(&pr.da, &st(p, &a, &pr.na).expect("a's State"));
    assert_alive(&mut pr.aa);
    assert_alive(&mut pr.ab);
    delete_cluster_apps(p, std::slice::from_ref(&a));
    wait_states_gone(p, std::slice::from_ref(&a), &pr.na, 60);
    wait_states_gone(p, std::slice::from_ref(&a), &pr.nb, 60);
    wait_for("both daemons empty", 30, || {
        (all_programs(&pr.da).is_empty() && all_programs(&pr.db).is_empty()).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// Finalizers and deletions of the node's own State.

#[test]
fn deleting_the_state_without_its_finalizer_again_and_again_ends_with_one_program() {
    require_root!();
    let (p, node, d, mut agent) = setup("loopdel", "10.251.1.12");
    let mut tidy = Tidy::new(p, &[&node]);
    let a = tidy.app(&format!("loopdel-{}", unique()));
    apply(p, &good_app(&a, &node));
    wait_type(p, &a, &node, "Success", 60);
    let mut seen = BTreeSet::new();
    for _ in 0..8 {
        if let Some(s) = st(p, &a, &node) {
            seen.insert(uid_of(&s));
            drop_finalizers(p, &name_of(&s));
            let _ = p.kubectl(&[
                "delete",
                "clusterbpfapplicationstate",
                &name_of(&s),
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let s = wait_st(p, &a, &node, 45, "Success under a new State", |s| {
        cond(s).0 == "Success" && !seen.contains(&uid_of(s))
    });
    wait_until("exactly one program and one link", 30, || {
        let (n, l) = (all_programs(&d).len(), links(&d).len());
        if n == 1 && l == 1 {
            Ok(())
        } else {
            Err(format!("{n} programs, {l} links: {:?}", all_programs(&d)))
        }
    });
    let s = st(p, &a, &node).unwrap_or(s);
    assert_state_tells_the_truth(&d, &s);
    let mine: Vec<Value> = node_states(p, &node)
        .into_iter()
        .filter(|s| s["metadata"]["ownerReferences"][0]["name"] == a.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_alive(&mut agent);
    remove_apps(p, &[a], &node);
    assert!(all_programs(&d).is_empty());
    assert!(links(&d).is_empty());
}

#[test]
fn an_application_made_again_right_after_its_finalizerless_state_went_runs_once() {
    require_root!();
    let (p, node, d, mut agent) = setup("remade", "10.251.1.13");
    let mut tidy = Tidy::new(p, &[&node]);
    let a = tidy.app(&format!("remade-{}", unique()));
    for round in 0..3 {
        apply(p, &good_app(&a, &node));
        let s = wait_type(p, &a, &node, "Success", 60);
        drop_finalizers(p, &name_of(&s));
        p.kubectl_ok(
            &["delete", "clusterbpfapplication", &a, "--wait=true"],
            None,
        );
        // Made again at once (a new UID, so new State names), while the old State is being
        // collected and the sweep looks for its programs.
        apply(p, &good_app(&a, &node));
        let uid = app_uid(p, &a);
        let s = wait_st(p, &a, &node, 60, "Success for the new incarnation", |s| {
            cond(s).0 == "Success" && s["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
        });
        wait_until("one program (the old one swept)", 35, || {
            let n = programs_named(&d, &a);
            if n.len() == 1 {
                Ok(())
            } else {
                Err(format!("round {round}: {n:?}"))
            }
        });
        assert_state_tells_the_truth(&d, &s);
        assert_eq!(links(&d).len(), 1, "round {round}: {:?}", links(&d));
        p.kubectl_ok(
            &["delete", "clusterbpfapplication", &a, "--wait=true"],
            None,
        );
        wait_states_gone(p, std::slice::from_ref(&a), &node, 60);
        wait_for("nothing loaded", 30, || {
            all_programs(&d).is_empty().then_some(())
        });
    }
    assert_alive(&mut agent);
}

#[test]
fn a_foreign_finalizer_on_a_deleted_state_does_not_keep_the_application_down() {
    require_root!();
    let (p, node, d, mut agent) = setup("forfin", "10.251.1.14");
    let mut tidy = Tidy::new(p, &[&node]);
    let a = tidy.app(&format!("forfin-{}", unique()));
    apply(p, &good_app(&a, &node));
    let s = wait_type(p, &a, &node, "Success", 60);
    let (name, old) = (name_of(&s), uid_of(&s));
    tidy.states.push(name.clone());
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplicationstate",
            &name,
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"attack2.example.com/hold"}]"#,
        ],
        None,
    );
    p.kubectl_ok(
        &[
            "delete",
            "clusterbpfapplicationstate",
            &name,
            "--wait=false",
        ],
        None,
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let s = wait_st(p, &a, &node, 30, "running again under a new State", |s| {
            uid_of(s) != old && cond(s).0 == "Success"
        });
        assert_eq!(all_programs(&d).len(), 1, "{:?}", all_programs(&d));
        assert_state_tells_the_truth(&d, &s);
    }));
    // Whatever happened: the held State says what is loaded for it (nothing).
    let held = st_by_name(p, &name).expect("held by the foreign finalizer");
    let recorded = recorded_ids(&held).0;
    let dump = format!(
        "held State {}; daemon {:?}",
        serde_json::to_string_pretty(&held["status"]).unwrap_or_default(),
        all_programs(&d)
    );
    drop_finalizers(p, &name);
    if let Err(e) = r {
        eprintln!("{dump}");
        std::panic::resume_unwind(e);
    }
    assert!(programs_of(&d, &old).is_empty(), "{dump}");
    assert!(recorded.is_empty(), "{dump}");
    assert_alive(&mut agent);
    remove_apps(p, &[a], &node);
    assert!(all_programs(&d).is_empty());
}

// ---------------------------------------------------------------------------------------
// Many States, squatted names.

#[test]
fn forty_extra_states_for_an_application_are_deleted_without_touching_its_program() {
    require_root!();
    let (p, node, d, mut agent) = setup("extras", "10.251.1.15");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let a = tidy.app(&format!("extras-{u}"));
    let ctl = tidy.app(&format!("extras-ctl-{u}"));
    apply(p, &good_app(&a, &node));
    let s = wait_type(p, &a, &node, "Success", 60);
    let (real, pid) = (name_of(&s), program_id(&s, 0));
    let auid = app_uid(p, &a);
    let mut forged = Vec::new();
    let mut docs = Vec::new();
    for i in 0..40 {
        // Not named like any agent State of the application.
        let n = format!("zz-extra{i}-{u}-{}", std::process::id());
        forged.push(n.clone());
        tidy.states.push(n.clone());
        docs.push(
            serde_json::json!({
                "apiVersion": "bpfman.io/v1alpha1",
                "kind": "ClusterBpfApplicationState",
                "metadata": {
                    "name": n,
                    "labels": {"bpfman.io/ownedByProgram": a, "kubernetes.io/hostname": node},
                    "finalizers": [AGENT_FINALIZER],
                    "ownerReferences": [{"apiVersion": "bpfman.io/v1alpha1",
                        "kind": "ClusterBpfApplication", "name": a, "uid": auid,
                        "controller": true}],
                },
            })
            .to_string(),
        );
    }
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        docs.join(",")
    );
    p.kubectl_ok(&["create", "-f", "-"], Some(&list));
    // Meanwhile another application converges promptly.
    let t0 = Instant::now();
    apply(p, &good_app(&ctl, &node));
    wait_type(p, &ctl, &node, "Success", 30);
    let ctl_took = t0.elapsed();
    wait_until("every extra State gone", 60, || {
        let left: Vec<&String> = forged
            .iter()
            .filter(|n| st_by_name(p, n).is_some())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", left.len()))
        }
    });
    let s = st_by_name(p, &real).expect("the real State is kept");
    assert_eq!(cond(&s).0, "Success", "{s}");
    assert_eq!(program_id(&s, 0), pid, "reloaded");
    assert_eq!(programs_named(&d, &a).len(), 1);
    assert!(
        ctl_took < Duration::from_secs(20),
        "another application took {ctl_took:?}"
    );
    assert_alive(&mut agent);
    remove_apps(p, &[a, ctl], &node);
    assert!(all_programs(&d).is_empty());
}

#[test]
fn every_state_name_squatted_keeps_the_agent_serving_and_recovers_when_one_frees() {
    require_root!();
    let p = plane();
    let node = node_name("squat4");
    make_node(p, &node, &[], "10.251.1.16");
    let d = Daemon::start();
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let a = tidy.app(&format!("squat4-{u}"));
    let other = tidy.app(&format!("squat4-other-{u}"));
    apply(p, &good_app(&a, &node));
    let uid = app_uid(p, &a);
    let names: Vec<String> = (0..4)
        .map(|i| derived_state_name(&a, &node, &uid, i))
        .collect();
    for n in &names {
        tidy.states.push(n.clone());
        p.kubectl_ok(
            &["create", "-f", "-"],
            Some(
                &serde_json::json!({
                    "apiVersion": "bpfman.io/v1alpha1",
                    "kind": "ClusterBpfApplicationState",
                    "metadata": {"name": n},
                })
                .to_string(),
            ),
        );
    }
    let mut agent = Agent::start(p, &node, &d);
    apply(p, &good_app(&other, &node));
    wait_type(p, &other, &node, "Success", 30);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        programs_named(&d, &a).is_empty(),
        "loaded without a State to say so"
    );
    for n in &names {
        let s = st_by_name(p, n).expect("squatter");
        assert!(s["status"].is_null(), "a squatter got a status: {s}");
    }
    // One name frees: the application converges there.
    p.kubectl_ok(&["delete", "clusterbpfapplicationstate", &names[3]], None);
    let s = wait_type(p, &a, &node, "Success", 30);
    assert_eq!(name_of(&s), names[3]);
    assert_state_tells_the_truth(&d, &s);
    assert_alive(&mut agent);
    remove_apps(p, &[a, other], &node);
    assert!(all_programs(&d).is_empty());
}

// ---------------------------------------------------------------------------------------
// Namespaces.

fn ns_policy(namespaces: &[&str]) -> String {
    let objs = std::path::Path::new(&obj("xdp_test.bpf.o"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let list: Vec<String> = namespaces.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"
[policy]
audit_log = "@DIR@/audit.log"

[[policy.rule]]
name = "attack2-tenants"
kubernetes_namespaces = [{}]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["xdp"]
file_dirs = ["{objs}"]
interfaces = ["eth0"]
netns = ["/proc/*/ns/net"]
priority = [0, 1000]
"#,
        list.join(", ")
    )
}

fn ns_app(name: &str, ns: &str, node: &str) -> String {
    format!(
        r#"apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata:
  name: {name}
  namespace: {ns}
spec:
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: {node}
  byteCode:
    path: "{path}"
  programs:
    - name: xdp_drop_proto
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfaces: [eth0]
            networkNamespaces:
              pods:
                matchLabels:
                  app: nothing-{name}
            priority: 500
"#,
        path = obj("xdp_test.bpf.o")
    )
}

#[test]
fn deleting_the_namespace_of_a_bpf_application_unloads_it_and_completes() {
    require_root!();
    let p = plane();
    let node = node_name("nsdel");
    make_node(p, &node, &[], "10.251.1.17");
    let u = unique();
    let (ns, keep) = (
        format!("nsdel-{u}-{}", std::process::id()),
        format!("nskeep-{u}-{}", std::process::id()),
    );
    let d = Daemon::start_with_config(&ns_policy(&[&ns, &keep]));
    let mut agent = Agent::start(p, &node, &d);
    let mut tidy = Tidy::new(p, &[&node]);
    namespace(p, &ns);
    namespace(p, &keep);
    tidy.namespaces = vec![ns.clone(), keep.clone()];
    // The same application name in both namespaces; several in the doomed one.
    let apps: Vec<String> = (0..3).map(|i| format!("nsdel{i}-{u}")).collect();
    for a in &apps {
        apply(p, &ns_app(a, &ns, &node));
    }
    apply(p, &ns_app(&apps[0], &keep, &node));
    let mut held = BTreeSet::new();
    for a in &apps {
        let s = wait_for(&format!("{ns}/{a} loaded"), 60, || {
            let s = ns_state(p, &ns, a, &node)?;
            (cond(&s).1 == "NoMatchingLinks").then_some(s)
        });
        held.extend(ids(&programs_of(&d, &uid_of(&s)), "id"));
    }
    let sk = wait_for("the kept namespace's application loaded", 60, || {
        let s = ns_state(p, &keep, &apps[0], &node)?;
        (cond(&s).1 == "NoMatchingLinks").then_some(s)
    });
    let kept = ids(&programs_of(&d, &uid_of(&sk)), "id");
    assert_eq!(held.len(), 3);
    assert_eq!(kept.len(), 1);
    p.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"], None);
    wait_until("the namespace gone", 120, || {
        match kube_json(p, &["get", "namespace", &ns, "-o", "json"]) {
            None => Ok(()),
            Some(v) => Err(serde_json::to_string(&v["status"]).unwrap_or_default()),
        }
    });
    wait_until("its programs unloaded", 30, || {
        let now = ids(&all_programs(&d), "id");
        let left: Vec<&u64> = held.iter().filter(|i| now.contains(i)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    assert_eq!(ids(&all_programs(&d), "id"), kept, "the other namespace's");
    assert_alive(&mut agent);
    let _ = p.kubectl(&[
        "delete",
        "bpfapplication",
        "-n",
        &keep,
        &apps[0],
        "--wait=false",
    ]);
    wait_for("the kept namespace's State gone", 60, || {
        ns_state(p, &keep, &apps[0], &node).is_none().then_some(())
    });
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

// ---------------------------------------------------------------------------------------
// Liveness of map users and of applications that do not read.

#[test]
fn a_map_user_reconciled_while_its_owners_state_was_unlabelled_loads_again() {
    require_root!();
    let (p, node, d, mut agent) = setup("mostrip", "10.251.1.18");
    let mut tidy = Tidy::new(p, &[&node]);
    let u = unique();
    let tag = format!("strip-{u}-{}", std::process::id());
    let (o, us) = (
        tidy.app(&format!("strip-owner-{u}")),
        tidy.app(&format!("strip-user-{u}")),
    );
    apply(p, &map_app(&o, &node, Some(&tag), None));
    let so = wait_type(p, &o, &node, "Success", 60);
    apply(p, &map_app(&us, &node, None, Some(&tag)));
    wait_type(p, &us, &node, "Success", 60);
    let oid = program_id(&so, 0);
    // While the agent restarts, the owner's State loses its ownedByProgram label (the agent
    // puts it back on its first pass).
    agent.kill();
    p.kubectl_ok(
        &[
            "label",
            "clusterbpfapplicationstate",
            &name_of(&so),
            "bpfman.io/ownedByProgram-",
        ],
        None,
    );
    agent.spawn();
    wait_for("the owner's label put back", 30, || {
        let s = st_by_name(p, &name_of(&so))?;
        (s["metadata"]["labels"]["bpfman.io/ownedByProgram"] == o.as_str()).then_some(())
    });
    // The owner never changed: the user runs on its maps (after at most a blip).
    let s = wait_st(p, &us, &node, 20, "Success and truthful", |s| {
        cond(s).0 == "Success" && truthful(&d, s).is_ok()
    });
    assert_eq!(map_owner_of(&d, program_id(&s, 0)), Some(oid));
    assert_eq!(
        recorded_ids(&st(p, &o, &node).expect("owner")).0,
        vec![oid],
        "the owner was not reloaded"
    );
    assert_alive(&mut agent);
    remove_apps(p, &[us], &node);
    remove_apps(p, &[o], &node);
    assert!(all_programs(&d).is_empty(), "{:?}", all_programs(&d));
}

#[test]
fn an_application_that_does_not_read_is_taken_down_once_it_is_being_deleted() {
    require_root!();
    let (p, node, d, mut agent) = setup("unrdel", "10.251.1.19");
    let mut tidy = Tidy::new(p, &[&node]);
    // Held by another controller's finalizer, so its deletion takes a while.
    let held_app = |a: &str| {
        good_app(a, &node).replace(
            &format!("  name: {a}\n"),
            &format!("  name: {a}\n  finalizers: [\"attack2.example.com/hold\"]\n"),
        )
    };
    let release = |a: &str| {
        let _ = p.kubectl(&[
            "patch",
            "clusterbpfapplication",
            a,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    };
    // Control: a readable one is taken down as soon as its deletion starts.
    let c = tidy.app(&format!("unrdel-ctl-{}", unique()));
    apply(p, &held_app(&c));
    wait_type(p, &c, &node, "Success", 60);
    delete_cluster_apps(p, std::slice::from_ref(&c));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the control's programs unloaded", 30, || {
            programs_named(&d, &c).is_empty().then_some(())
        })
    }));
    release(&c);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    wait_states_gone(p, std::slice::from_ref(&c), &node, 60);
    let a = tidy.app(&format!("unrdel-{}", unique()));
    apply(p, &held_app(&a));
    let s = wait_type(p, &a, &node, "Success", 60);
    let uid = uid_of(&s);
    p.kubectl_ok(
        &[
            "patch",
            "clusterbpfapplication",
            &a,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec"}]"#,
        ],
        None,
    );
    wait_st(p, &a, &node, 30, "Error", |s| cond(s).0 == "Error");
    assert_eq!(
        programs_of(&d, &uid).len(),
        1,
        "kept while it does not read"
    );
    delete_cluster_apps(p, std::slice::from_ref(&a));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("the deleted application's programs unloaded", 30, || {
            let left = programs_named(&d, &a);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} programs; State {:?}",
                    left.len(),
                    st(p, &a, &node).map(|s| cond(&s))
                ))
            }
        })
    }));
    release(&a);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    wait_states_gone(p, std::slice::from_ref(&a), &node, 60);
    assert!(all_programs(&d).is_empty());
    assert_alive(&mut agent);
}
