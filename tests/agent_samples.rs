//! Upstream's operator samples (their local equivalents in examples/kubernetes/samples)
//! against the real agent, daemon, API server and kernel: each converges with its bytecode
//! from the local object, and with its image on a registry host that refuses connections
//! each State reports the pull failure. Samples with pods run on the real node.
//!
//! Each sample is read as it is, then fitted to this test (see the samples' README): its
//! own node selected, its names and namespaces suffixed, discovery narrowed to its own veth,
//! and (for the converging run, on a kernel without them) kprobe and fentry programs removed,
//! said on stderr.

mod common;

use std::collections::BTreeSet;

use bpfman_k8s_testenv::ControlPlane;
use common::agent::*;
use common::*;
use serde_json::Value;

const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/kubernetes/samples"
);

/// How a sample is fitted to one test run.
struct Fit<'a> {
    u: String,
    node: &'a str,
    /// Where the bytecode comes from.
    bytecode: Bytecode,
    /// The veth discovery may find.
    discover: Option<&'a str>,
    /// Program types to remove (with why).
    drop_types: Vec<(&'static str, String)>,
}

enum Bytecode {
    Local,
    /// The sample's image, its registry host replaced by one that refuses connections.
    Unreachable(String),
}

/// The sample as JSON (kubectl reads the YAML as any client would).
fn read_sample(p: &ControlPlane, file: &str) -> Value {
    let path = format!("{SAMPLES}/{file}");
    let out = p.kubectl_ok(
        &["create", "--dry-run=client", "-o", "json", "-f", &path],
        None,
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path} as JSON: {e}"))
}

fn rename_namespaces(v: &mut Value, u: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x.as_str()) {
                    ("namespace", Some(ns)) => *x = Value::String(format!("{ns}-{u}")),
                    ("app", Some("test-target")) => *x = Value::String(format!("test-target-{u}")),
                    ("name", Some("bpfman-daemon")) => {
                        *x = Value::String(format!("bpfman-daemon-{u}"))
                    }
                    _ => rename_namespaces(x, u),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rename_namespaces(x, u)),
        _ => {}
    }
}

fn narrow_discovery(v: &mut Value, iface: &str) {
    match v {
        Value::Object(m) => {
            if m.get("interfaceAutoDiscovery") == Some(&Value::Bool(true)) {
                m.insert("allowedInterfaces".into(), serde_json::json!([iface]));
            }
            m.values_mut().for_each(|x| narrow_discovery(x, iface));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| narrow_discovery(x, iface)),
        _ => {}
    }
}

fn fit(mut v: Value, f: &Fit) -> Value {
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    v["metadata"]["name"] = format!("{name}-{}", f.u).into();
    rename_namespaces(&mut v["metadata"], &f.u);
    rename_namespaces(&mut v["spec"]["programs"], &f.u);
    if let Some(s) = v["spec"]["byteCode"]["image"].get_mut("imagePullSecret") {
        rename_namespaces(s, &f.u);
    }
    v["spec"]["nodeSelector"] =
        serde_json::json!({"matchLabels": {"kubernetes.io/hostname": f.node}});
    if let Some(i) = f.discover {
        narrow_discovery(&mut v["spec"]["programs"], i);
    }
    match &f.bytecode {
        Bytecode::Local => {
            v["spec"]["byteCode"] = serde_json::json!({"path": obj("app_test.bpf.o")});
        }
        Bytecode::Unreachable(host) => {
            let url = v["spec"]["byteCode"]["image"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let path = url
                .trim_start_matches("https://")
                .split_once('/')
                .map(|(_, p)| p.to_string())
                .unwrap_or(url);
            v["spec"]["byteCode"]["image"]["url"] = format!("{host}/{path}").into();
        }
    }
    if let Some(ps) = v["spec"]["programs"].as_array_mut() {
        ps.retain(|p| {
            let t = p["type"].as_str().unwrap_or_default();
            match f.drop_types.iter().find(|(d, _)| *d == t) {
                Some((_, why)) => {
                    eprintln!(
                        "SKIP program {} ({t}) of sample {name}: {why}",
                        p["name"].as_str().unwrap_or_default()
                    );
                    false
                }
                None => true,
            }
        });
    }
    v
}

fn state_of(p: &ControlPlane, app: &Value, node: &str) -> Option<Value> {
    let name = app["metadata"]["name"].as_str().unwrap_or_default();
    match app["metadata"]["namespace"].as_str() {
        Some(ns) => ns_state(p, ns, name, node),
        None => state(p, name, node),
    }
}

fn wait_state(p: &ControlPlane, app: &Value, node: &str, secs: u64, want: &str) -> Value {
    wait_until(
        &format!("{} on {node}: {want}", app["metadata"]["name"]),
        secs,
        || {
            let s = state_of(p, app, node).ok_or("no State yet".to_string())?;
            if cond(&s).0 == want {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
}

fn delete(p: &ControlPlane, app: &Value, node: &str) {
    let kind = app["kind"].as_str().unwrap_or_default().to_lowercase();
    let name = app["metadata"]["name"].as_str().unwrap_or_default();
    let mut args = vec!["delete", kind.as_str(), name, "--ignore-not-found"];
    let ns = app["metadata"]["namespace"].as_str().map(str::to_string);
    if let Some(ns) = &ns {
        args.extend(["-n", ns.as_str()]);
    }
    p.kubectl_ok(&args, None);
    wait_for("the sample's State gone", 60, || {
        state_of(p, app, node).is_none().then_some(())
    });
}

/// Program types this kernel cannot run, with why.
fn unsupported(d: &Daemon) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if !has_feature(d, "kprobe") {
        let why = "this kernel has no kprobes (scripts/vm-test.sh runs them)".to_string();
        v.push(("KProbe", why.clone()));
        v.push(("KRetProbe", why));
    }
    if !has_feature(d, "fentry") {
        let why = "this kernel refuses fentry/fexit (scripts/vm-test.sh runs them)".to_string();
        v.push(("FEntry", why.clone()));
        v.push(("FExit", why));
    }
    v
}

/// The types the daemon refuses at load (before any pull): fentry and fexit.
fn load_refused(drop: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    drop.iter()
        .filter(|(t, _)| t.starts_with('F'))
        .cloned()
        .collect()
}

/// What to drop from sample `file`: without links a kprobe only loads (no kprobe PMU needed).
fn drop_types_for(drop: &[(&'static str, String)], file: &str) -> Vec<(&'static str, String)> {
    drop.iter()
        .filter(|(t, _)| !(file.contains("no_links") && t.contains("Probe")))
        .cloned()
        .collect()
}

/// The recorded program ids and the daemon's programs of the State agree, and every
/// recorded link is attached.
fn assert_truthful(d: &Daemon, s: &Value) {
    let uid = s["metadata"]["uid"].as_str().unwrap_or_default();
    let held: BTreeSet<u64> = programs_of(d, uid)
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    let (recorded, links_) = recorded_ids(s);
    assert_eq!(
        recorded.iter().copied().collect::<BTreeSet<_>>(),
        held,
        "{s}"
    );
    let live: BTreeSet<u64> = links(d)
        .iter()
        .filter_map(|l| l["link_id"].as_u64())
        .collect();
    for l in links_ {
        assert!(
            live.contains(&l),
            "link {l} recorded but not in the daemon: {s}"
        );
    }
}

fn tenant_policy(namespace: &str) -> String {
    let objs = std::path::Path::new(&obj("app_test.bpf.o"))
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        r#"
[policy]
audit_log = "@DIR@/audit.log"

[[policy.rule]]
name = "acme"
kubernetes_namespaces = ["{namespace}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["xdp", "tc", "tcx", "uprobe", "uretprobe"]
file_dirs = ["{objs}"]
images = ["127.0.0.1:"]
interfaces = ["eth0"]
netns = ["/proc/*/ns/net"]
uprobe_targets = ["/bin/uprobe-target"]
other_processes = true
priority = [0, 1000]
"#
    )
}

/// A pod on the real node with containers `names`, each running the uprobe target.
fn target_pod(p: &ControlPlane, node: &str, ns: &str, name: &str, labels: &str, names: &[&str]) {
    let containers: String = names
        .iter()
        .map(|c| {
            format!(
                "    - name: {c}\n      image: {img}\n      imagePullPolicy: Never\n      command: [\"/bin/uprobe-target\"]\n",
                img = bpfman_k8s_testenv::node::IMAGE
            )
        })
        .collect();
    p.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{labels}spec:\n  nodeName: {node}\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 0\n  containers:\n{containers}"
        )),
    );
    pod_ip(p, ns, name);
}

fn assert_alive(a: &mut Agent) {
    let exited = a
        .child
        .as_mut()
        .map(|c| !matches!(c.try_wait(), Ok(None)))
        .unwrap_or(true);
    assert!(!exited, "the agent exited: {}", a.log());
}

/// A port on 127.0.0.1 nothing listens on: pulls from it are refused at once.
fn refusing_registry() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `kubectl apply` as upstream's users run it on the samples (client-side: server-side apply
/// refuses globalData as integer lists, the samples' form).
fn apply_client_side(p: &ControlPlane, app: &Value) {
    p.kubectl_ok(&["apply", "-f", "-"], Some(&app.to_string()));
}

/// Applies `app`, checks its State says the pull failed, and deletes it.
fn assert_pull_failure(p: &ControlPlane, d: &Daemon, app: &Value, node: &str) {
    apply_client_side(p, app);
    let s = wait_state(p, app, node, 60, "Error");
    let (_, _, msg) = cond(&s);
    let url = app["spec"]["byteCode"]["image"]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains(url) && (msg.contains("pull") || msg.contains("refused")),
        "the pull failure is not what the State says: {msg}"
    );
    assert_eq!(s["status"]["appLoadStatus"], "LoadError", "{s}");
    assert!(
        programs_of(d, s["metadata"]["uid"].as_str().unwrap_or_default()).is_empty(),
        "nothing is loaded"
    );
    delete(p, app, node);
}

#[test]
fn samples_without_pods_converge_and_report_an_unreachable_image() {
    require_root!();
    let p = plane();
    let node = node_name("samples");
    let veth = Netns::new();
    make_node(p, &node, &[], &veth.host_ip);
    let d = Daemon::start();
    let mut agent = Agent::start(p, &node, &d);
    let u = unique().to_string();
    let drop = unsupported(&d);
    for file in [
        "clusterbpfapplication_no_links.yaml",
        "clusterbpfapplication_with_intf_discovery.yaml",
        "globals_kprobeprogram.yaml",
    ] {
        let sample = read_sample(p, file);
        // Without links a kprobe only loads (which needs no kprobe PMU).
        let drop_types = drop_types_for(&drop, file);
        let local = fit(
            sample.clone(),
            &Fit {
                u: u.clone(),
                node: &node,
                bytecode: Bytecode::Local,
                discover: Some(&veth.host_if),
                drop_types,
            },
        );
        if local["spec"]["programs"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            eprintln!("SKIP converging sample {file}: none of its programs runs on this kernel");
        } else {
            apply_client_side(p, &local);
            let s = wait_state(p, &local, &node, 60, "Success");
            assert_truthful(&d, &s);
            let n = local["spec"]["programs"].as_array().map_or(0, |a| a.len());
            assert_eq!(
                recorded_ids(&s).0.len(),
                n,
                "{file}: every program loaded: {s}"
            );
            if file.contains("discovery") {
                // Discovery found the test's veth: XDP, TC and two TCX links on it.
                let (_, l) = recorded_ids(&s);
                assert_eq!(l.len(), 4, "{file}: {s}");
                assert!(veth.ping(), "pass programs pass");
            }
            if file.contains("globals") {
                let id = recorded_ids(&s).0[0];
                let g = d.json(&["get", "program", &id.to_string()]);
                assert_eq!(g["global_data"]["GLOBAL_u32"], "0d0c0b0a", "{g}");
            }
            delete(p, &local, &node);
        }
        let unreachable = fit(
            sample,
            &Fit {
                u: u.clone(),
                node: &node,
                bytecode: Bytecode::Unreachable(refusing_registry()),
                discover: Some(&veth.host_if),
                // The daemon refuses fentry on a kernel without it before pulling.
                drop_types: load_refused(&drop),
            },
        );
        assert_pull_failure(p, &d, &unreachable, &node);
    }
    assert!(
        links(&d).is_empty()
            && d.json(&["list", "programs"])
                .as_array()
                .is_none_or(|a| a.is_empty())
    );
    assert_alive(&mut agent);
}

#[test]
fn the_private_image_sample_loads_with_its_pull_secret() {
    require_root!();
    if !Registry::available() {
        eprintln!(
            "SKIP the private image sample: docker-registry is not installed (scripts/setup.sh installs it)"
        );
        return;
    }
    let p = plane();
    let node = node_name("private");
    let veth = Netns::new();
    make_node(p, &node, &[], &veth.host_ip);
    let d = Daemon::start();
    let mut agent = Agent::start(p, &node, &d);
    let u = unique().to_string();
    let reg = Registry::start_with_auth("puller", "sample-pw");
    let sample = read_sample(p, "xdp_pass_private.yaml");
    let mut app = fit(
        sample.clone(),
        &Fit {
            u: u.clone(),
            node: &node,
            bytecode: Bytecode::Unreachable(reg.addr.clone()),
            discover: None,
            drop_types: Vec::new(),
        },
    );
    // The image: the local object, pushed under the sample's path.
    let url = app["spec"]["byteCode"]["image"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let work = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["image", "build", "-b", &obj("app_test.bpf.o"), "-t", &url],
        vec!["image", "push", &url, "--registry-auth", &reg.auth_b64()],
    ] {
        let out = std::process::Command::new(BPFMAN)
            .args(&args)
            .env("BPFMAN_IMAGE_DIR", work.path())
            .env("HOME", work.path())
            .output()
            .expect("bpfman image");
        assert!(
            out.status.success(),
            "bpfman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ns = app["spec"]["byteCode"]["image"]["imagePullSecret"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    namespace(p, &ns);
    // Credentials for the test's registry and for the refusing one (so the unreachable run
    // fails at the pull, not for want of credentials).
    let refusing = refusing_registry();
    let cfg = serde_json::json!({"auths": {
        reg.addr.clone(): {"auth": reg.auth_b64()},
        refusing.clone(): {"auth": reg.auth_b64()},
    }});
    p.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "regcred", "namespace": ns},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(cfg.to_string().as_bytes())},
            })
            .to_string(),
        ),
    );
    apply_client_side(p, &app);
    let s = wait_state(p, &app, &node, 60, "Success");
    assert_truthful(&d, &s);
    // The primary node interface: the one holding the Node's InternalIP (the veth).
    assert_eq!(
        xdp_link(&s, 0)["interfaceName"],
        veth.host_if.as_str(),
        "{s}"
    );
    assert!(veth.ping());
    delete(p, &app, &node);
    // Without the secret's credentials: refused, said so.
    app["spec"]["byteCode"]["image"]
        .as_object_mut()
        .map(|m| m.remove("imagePullSecret"));
    apply_client_side(p, &app);
    let s = wait_state(p, &app, &node, 60, "Error");
    assert!(cond(&s).2.contains(&url), "{s}");
    delete(p, &app, &node);
    let unreachable = fit(
        sample,
        &Fit {
            u,
            node: &node,
            bytecode: Bytecode::Unreachable(refusing),
            discover: None,
            drop_types: Vec::new(),
        },
    );
    assert_pull_failure(p, &d, &unreachable, &node);
    let _ = p.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    assert_alive(&mut agent);
}

#[test]
fn samples_with_pods_converge_on_the_real_node_and_report_an_unreachable_image() {
    require_root!();
    let Some(node) = real_node() else { return };
    let p = plane();
    let u = unique().to_string();
    let (bpfman_ns, acme_ns) = (format!("bpfman-{u}"), format!("acme-{u}"));
    namespace(p, &bpfman_ns);
    namespace(p, &acme_ns);
    let d = Daemon::start_with_config(&tenant_policy(&acme_ns));
    let mut agent = Agent::on_node(p, node, &d);
    target_pod(
        p,
        &node.name,
        &bpfman_ns,
        "daemon",
        &format!("    name: bpfman-daemon-{u}\n"),
        &["bpfman", "bpfman-agent"],
    );
    for ns in [&bpfman_ns, &acme_ns] {
        target_pod(
            p,
            &node.name,
            ns,
            "target",
            &format!("    app: test-target-{u}\n"),
            &["main"],
        );
    }
    let drop = unsupported(&d);
    for file in [
        "clusterbpfapplication_netns.yaml",
        "bpfapplication.yaml",
        "clusterbpfapplication.yaml",
    ] {
        let sample = read_sample(p, file);
        let local = fit(
            sample.clone(),
            &Fit {
                u: u.clone(),
                node: &node.name,
                bytecode: Bytecode::Local,
                discover: None,
                drop_types: drop.clone(),
            },
        );
        apply_client_side(p, &local);
        let s = wait_state(p, &local, &node.name, 90, "Success");
        assert_truthful(&d, &s);
        let (_, l) = recorded_ids(&s);
        match file {
            // Two pods carry app=test-target (one per namespace): XDP, TC and TCX in each.
            "clusterbpfapplication_netns.yaml" => assert_eq!(l.len(), 6, "{s}"),
            // Only the pod of its own namespace: XDP, TC, TCX and the two uprobes.
            "bpfapplication.yaml" => assert_eq!(l.len(), 5, "{s}"),
            // Tracepoint 1; TC, TCX and XDP 2 each (the primary interface and the pod);
            // the uprobes 2 each (two containers); kprobes and fentry when the kernel has them.
            _ => assert!(l.len() >= 11, "{s}"),
        }
        delete(p, &local, &node.name);
        let unreachable = fit(
            sample,
            &Fit {
                u: u.clone(),
                node: &node.name,
                bytecode: Bytecode::Unreachable(refusing_registry()),
                discover: None,
                drop_types: load_refused(&drop),
            },
        );
        assert_pull_failure(p, &d, &unreachable, &node.name);
    }
    assert!(links(&d).is_empty(), "{:?}", links(&d));
    assert_alive(&mut agent);
    for ns in [&bpfman_ns, &acme_ns] {
        let _ = p.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
}
