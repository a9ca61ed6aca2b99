//! The Kubernetes node agent, end to end: the real `bpfman-agent` binary against a real etcd +
//! kube-apiserver + kube-controller-manager, the real daemon and the host kernel, with real
//! packets through veth pairs. Each test has its own node names (Node objects it creates), its
//! own daemons and agents; applications select their test's nodes only.

mod common;

use std::path::Path;
use std::time::Duration;

use bpfman_k8s_testenv::ControlPlane;
use common::agent::*;
use common::*;

#[test]
fn xdp_drop_icmp_on_a_named_veth_and_delete_restores_everything() {
    require_root!();
    let p = plane();
    let node = node_name("xdp");
    make_node(p, &node, &[], "10.250.0.1");
    let d = Daemon::start();
    let _agent = Agent::start(p, &node, &d);
    let ns = Netns::new();
    assert!(ns.ping(), "ping works before");
    let app = format!("drop-{}", unique());
    apply(p, &xdp_app(&app, &node, &ns.host_if, 100, ""));
    let s = wait_cond(p, &app, &node, "Success", 60);
    assert_eq!(s["status"]["appLoadStatus"], "LoadSuccess");
    assert_eq!(s["status"]["node"], node.as_str());
    assert!(s["status"]["updateCount"].as_i64().unwrap_or(0) >= 1);
    let pid = program_id(&s, 0);
    let l = xdp_link(&s, 0);
    assert_eq!(l["linkStatus"], "Attached");
    assert_eq!(l["interfaceName"], ns.host_if.as_str());
    assert_eq!(l["priority"], 100);
    let lid = l["linkId"].as_u64().expect("linkId");
    // Upstream's labels, finalizer, owner reference, metadata.
    let md = &s["metadata"];
    assert_eq!(md["labels"]["bpfman.io/ownedByProgram"], app.as_str());
    assert_eq!(md["labels"]["kubernetes.io/hostname"], node.as_str());
    assert_eq!(
        md["finalizers"][0],
        "bpfman.io.clbpfapplicationcontroller/finalizer"
    );
    assert_eq!(md["ownerReferences"][0]["kind"], "ClusterBpfApplication");
    assert_eq!(md["ownerReferences"][0]["controller"], true);
    let uid = md["uid"].as_str().expect("uid").to_string();
    let progs = programs_of(&d, &uid);
    assert_eq!(progs.len(), 1, "{progs:?}");
    let info = d.json(&["get", "program", &pid.to_string()]);
    let meta = info["metadata"].to_string();
    assert!(
        meta.contains(&format!("\"bpfman.io/ProgramName\":\"{app}\"")),
        "{meta}"
    );
    assert!(
        links(&d).iter().any(|x| x["link_id"].as_u64() == Some(lid)),
        "the daemon has link {lid}: {:?}",
        links(&d)
    );
    assert!(!ns.ping(), "ICMP is dropped on {}", ns.host_if);

    delete_app(p, &app);
    wait_for("the State to be gone", 60, || {
        state(p, &app, &node).is_none().then_some(())
    });
    assert!(ns.ping(), "ping is restored");
    assert!(programs_of(&d, &uid).is_empty());
    assert!(links(&d).is_empty(), "{:?}", links(&d));
    assert!(d.pins().is_empty(), "pins left: {:?}", d.pins());
}

fn tracepoint_app(name: &str, selector: &str, extra_links: &[&str]) -> String {
    let mut links = String::from("          - name: syscalls/sys_enter_getpid\n");
    for l in extra_links {
        links.push_str(&format!("          - name: {l}\n"));
    }
    format!(
        r#"apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector:
{selector}  byteCode:
    path: {path}
  programs:
    - name: tp_count
      type: TracePoint
      tracepoint:
        links:
{links}"#,
        path = obj("tracing_test.bpf.o"),
    )
}

#[test]
fn only_the_selected_node_loads_and_relabelling_moves_the_program() {
    require_root!();
    let p = plane();
    let tag = format!("sel{}", unique());
    let (na, nb) = (node_name("a"), node_name("b"));
    make_node(p, &na, &[("bpfman-test-role", &tag)], "10.250.0.2");
    make_node(p, &nb, &[("bpfman-test-role", "other")], "10.250.0.3");
    let (da, db) = (Daemon::start(), Daemon::start());
    let _aa = Agent::start(p, &na, &da);
    let _ab = Agent::start(p, &nb, &db);
    let app = format!("sel-{}", unique());
    apply(
        p,
        &tracepoint_app(
            &app,
            &format!("    matchLabels:\n      bpfman-test-role: \"{tag}\"\n"),
            &[],
        ),
    );
    let sa = wait_cond(p, &app, &na, "Success", 60);
    let sb = wait_cond(p, &app, &nb, "NotSelected", 60);
    assert_eq!(sb["status"]["appLoadStatus"], "NotSelected");
    assert_eq!(
        programs_of(&da, sa["metadata"]["uid"].as_str().unwrap()).len(),
        1
    );
    assert!(
        programs_of(&db, sb["metadata"]["uid"].as_str().unwrap()).is_empty(),
        "the unselected node loaded nothing"
    );
    // Move it: b gets the label, a loses it.
    label_node(p, &nb, &format!("bpfman-test-role={tag}"));
    label_node(p, &na, "bpfman-test-role=other");
    let sb = wait_cond(p, &app, &nb, "Success", 30);
    let sa = wait_cond(p, &app, &na, "NotSelected", 30);
    assert_eq!(
        programs_of(&db, sb["metadata"]["uid"].as_str().unwrap()).len(),
        1
    );
    assert!(programs_of(&da, sa["metadata"]["uid"].as_str().unwrap()).is_empty());
    assert!(links(&da).is_empty());
    delete_app(p, &app);
    for n in [&na, &nb] {
        wait_for("States gone", 60, || {
            state(p, &app, n).is_none().then_some(())
        });
    }
    assert!(links(&db).is_empty());
}

#[test]
fn updates_reattach_reload_and_move_links() {
    require_root!();
    let p = plane();
    let node = node_name("upd");
    make_node(p, &node, &[], "10.250.0.4");
    let d = Daemon::start();
    let _agent = Agent::start(p, &node, &d);
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let app = format!("upd-{}", unique());
    apply(p, &xdp_app(&app, &node, &ns1.host_if, 50, ""));
    let s = wait_cond(p, &app, &node, "Success", 60);
    let uid = s["metadata"]["uid"].as_str().unwrap().to_string();
    let pid1 = program_id(&s, 0);
    let lid1 = xdp_link(&s, 0)["linkId"].as_u64().unwrap();
    assert!(!ns1.ping());

    // Priority: re-attached at the new position, same program.
    apply(p, &xdp_app(&app, &node, &ns1.host_if, 60, ""));
    let s = wait_for("priority 60 in the State", 30, || {
        let s = state(p, &app, &node)?;
        (xdp_link(&s, 0)["priority"] == 60 && cond(&s).0 == "Success").then_some(s)
    });
    assert_eq!(program_id(&s, 0), pid1, "a priority change does not reload");
    let lid2 = xdp_link(&s, 0)["linkId"].as_u64().unwrap();
    assert_ne!(lid2, lid1);
    let ls = links(&d);
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["priority"], 60);
    assert!(!ns1.ping());

    // Interfaces: the link moves.
    apply(p, &xdp_app(&app, &node, &ns2.host_if, 60, ""));
    let s = wait_for("the link on the second veth", 30, || {
        let s = state(p, &app, &node)?;
        (xdp_link(&s, 0)["interfaceName"] == ns2.host_if.as_str() && cond(&s).0 == "Success")
            .then_some(s)
    });
    assert_eq!(
        s["status"]["programs"][0]["xdp"]["links"]
            .as_array()
            .map(|a| a.len()),
        Some(1)
    );
    assert!(ns1.ping(), "the first veth answers again");
    assert!(!ns2.ping(), "the second drops");

    // Global data: reloaded (drop TCP instead of ICMP: ping passes again).
    apply(
        p,
        &xdp_app(
            &app,
            &node,
            &ns2.host_if,
            60,
            "  globalData:\n    drop_proto: Bg==\n",
        ),
    );
    let s = wait_for("a reload with the new global data", 30, || {
        let s = state(p, &app, &node)?;
        (program_id(&s, 0) != pid1 && cond(&s).0 == "Success").then_some(s)
    });
    let pid2 = program_id(&s, 0);
    assert!(ns2.ping(), "ICMP passes once drop_proto is TCP");
    assert_eq!(programs_of(&d, &uid).len(), 1, "the old program is gone");

    // Program list: a second program joins (on the other veth: this kernel has no XDP
    // dispatcher without freplace, so one program per interface); one load holds both.
    let two = xdp_app(&app, &node, &ns2.host_if, 60, "").replace(
        "  programs:\n",
        "  programs:\n    - name: xdp_count_pass\n      type: XDP\n      xdp:\n        links:\n          - interfaceSelector:\n              interfaces: [IFACE]\n            priority: 10\n"
            .replace("IFACE", &ns1.host_if)
            .as_str(),
    );
    apply(p, &two);
    let s = wait_for("two programs", 30, || {
        let s = state(p, &app, &node)?;
        (s["status"]["programs"].as_array().map(|a| a.len()) == Some(2) && cond(&s).0 == "Success")
            .then_some(s)
    });
    let ids: Vec<u64> = (0..2).map(|i| program_id(&s, i)).collect();
    assert!(!ids.contains(&pid2), "reloaded: {ids:?}");
    assert_eq!(programs_of(&d, &uid).len(), 2);
    assert_eq!(links(&d).len(), 2);
    assert!(
        !ns2.ping(),
        "ICMP dropped again (global data back to the default)"
    );
    assert!(
        ns1.ping(),
        "the counting program on the first veth passes everything"
    );
    delete_app(p, &app);
    wait_for("State gone", 60, || {
        state(p, &app, &node).is_none().then_some(())
    });
    assert!(programs_of(&d, &uid).is_empty());
    assert!(links(&d).is_empty());
}

#[test]
fn failures_are_reported_with_what_to_do_and_never_as_success() {
    require_root!();
    let p = plane();
    let node = node_name("fail");
    make_node(p, &node, &[], "10.250.0.5");
    let d = Daemon::start();
    let _agent = Agent::start(p, &node, &d);
    let ns = Netns::new();
    let sel = format!("    matchLabels:\n      kubernetes.io/hostname: {node}\n");

    // A path that does not exist.
    let a1 = format!("nopath-{}", unique());
    apply(
        p,
        &tracepoint_app(&a1, &sel, &[]).replace(&obj("tracing_test.bpf.o"), "/nonexistent/x.o"),
    );
    let s = wait_cond(p, &a1, &node, "Error", 60);
    assert_eq!(s["status"]["appLoadStatus"], "LoadError");
    let (_, reason, msg) = cond(&s);
    assert_eq!(reason, "Error");
    assert!(msg.contains("/nonexistent/x.o"), "{msg}");
    assert!(programs_of(&d, s["metadata"]["uid"].as_str().unwrap()).is_empty());

    // A function the object does not have.
    let a2 = format!("nofn-{}", unique());
    apply(
        p,
        &tracepoint_app(&a2, &sel, &[]).replace("name: tp_count", "name: no_such_fn"),
    );
    let s = wait_cond(p, &a2, &node, "Error", 60);
    let (_, _, msg) = cond(&s);
    assert!(msg.contains("no_such_fn"), "{msg}");
    assert!(programs_of(&d, s["metadata"]["uid"].as_str().unwrap()).is_empty());

    // An interface that does not exist: loaded, the link fails, never Success.
    let a3 = format!("noif-{}", unique());
    apply(p, &xdp_app(&a3, &node, "nosuchif0", 100, ""));
    let s = wait_cond(p, &a3, &node, "Error", 60);
    let (_, _, msg) = cond(&s);
    assert!(msg.contains("nosuchif0"), "{msg}");
    assert_eq!(xdp_link(&s, 0)["linkStatus"], "AttachError");
    assert_eq!(s["status"]["programs"][0]["programLinkStatus"], "Error");

    // An image the registry refuses (a real registry on 127.0.0.1 that has no such image).
    if Registry::available() {
        let reg = Registry::start();
        let a4 = format!("noimg-{}", unique());
        let img = format!("{}/bpfman-test/absent:v1", reg.addr);
        let yaml = tracepoint_app(&a4, &sel, &[]).replace(
            &format!("    path: {}\n", obj("tracing_test.bpf.o")),
            &format!("    image:\n      url: {img}\n      imagePullPolicy: Always\n"),
        );
        apply(p, &yaml);
        let s = wait_cond(p, &a4, &node, "Error", 60);
        let (_, _, msg) = cond(&s);
        assert!(msg.contains(&img), "{msg}");
        assert!(programs_of(&d, s["metadata"]["uid"].as_str().unwrap()).is_empty());
        delete_app(p, &a4);
    } else {
        eprintln!(
            "SKIP the image case: docker-registry is not installed (scripts/setup.sh installs it)"
        );
    }

    // Zero matched links: interface discovery that lets nothing through.
    let a5 = format!("nomatch-{}", unique());
    let yaml = xdp_app(&a5, &node, "x", 100, "").replace(
        "              interfaces: [x]\n",
        "              interfacesDiscoveryConfig:\n                interfaceAutoDiscovery: true\n                allowedInterfaces: [\"/nosuchprefix.*/\"]\n",
    );
    apply(p, &yaml);
    let s = wait_cond(p, &a5, &node, "Pending", 60);
    let (_, reason, msg) = cond(&s);
    assert_eq!(reason, "NoMatchingLinks");
    assert!(msg.contains("found no interface"), "{msg}");
    assert_eq!(s["status"]["programs"][0]["programLinkStatus"], "Pending");

    for a in [&a1, &a2, &a3, &a5] {
        delete_app(p, a);
    }
    for a in [&a1, &a2, &a3, &a5] {
        wait_for("States gone", 60, || {
            state(p, a, &node).is_none().then_some(())
        });
    }
    assert!(links(&d).is_empty());
    assert!(ns.ping());
}

#[test]
fn reconverges_after_the_agent_dies_mid_reconcile_and_after_changes_behind_its_back() {
    require_root!();
    let p = plane();
    let node = node_name("conv");
    make_node(p, &node, &[], "10.250.0.6");
    let mut d = Daemon::start();
    let mut agent = Agent::start(p, &node, &d);
    let app = format!("conv-{}", unique());
    let extra = [
        "syscalls/sys_enter_getppid",
        "syscalls/sys_enter_gettid",
        "syscalls/sys_enter_getuid",
        "syscalls/sys_enter_geteuid",
        "syscalls/sys_enter_getgid",
    ];
    apply(
        p,
        &tracepoint_app(
            &app,
            &format!("    matchLabels:\n      kubernetes.io/hostname: {node}\n"),
            &extra,
        ),
    );
    // Kill the agent as soon as the daemon has the program (links are still being made).
    wait_for("the daemon to load the program", 60, || {
        let l = d.json(&[
            "list",
            "programs",
            "--metadata-selector",
            &format!("bpfman.io/ProgramName={app}"),
        ]);
        (l.as_array().map(|a| !a.is_empty()) == Some(true)).then_some(())
    });
    agent.kill();
    let before = links(&d).len();
    agent.spawn();
    let s = wait_cond(p, &app, &node, "Success", 60);
    let uid = s["metadata"]["uid"].as_str().unwrap().to_string();
    let (progs, lids) = recorded_ids(&s);
    assert_eq!(programs_of(&d, &uid).len(), 1, "one program, not two");
    assert_eq!(lids.len(), 6);
    assert_eq!(
        links(&d).len(),
        6,
        "no link twice (killed with {before} attached)"
    );

    // A link detached behind the agent's back comes back (no Kubernetes event).
    d.json(&["detach", &lids[0].to_string()]);
    let s = wait_for("the link re-attached", 15, || {
        let s = state(p, &app, &node)?;
        let (_, l) = recorded_ids(&s);
        (!l.contains(&lids[0]) && l.len() == 6).then_some(s)
    });
    assert_eq!(links(&d).len(), 6);
    assert_eq!(recorded_ids(&s).0, progs);

    // A program unloaded behind its back: reloaded and re-attached.
    d.json(&["unload", &progs[0].to_string()]);
    let s = wait_for("the program reloaded", 15, || {
        let s = state(p, &app, &node)?;
        let (pr, l) = recorded_ids(&s);
        (pr.len() == 1 && pr[0] != progs[0] && l.len() == 6 && cond(&s).0 == "Success").then_some(s)
    });
    assert_eq!(programs_of(&d, &uid).len(), 1);
    assert_eq!(links(&d).len(), 6);

    // The daemon killed and restarted: programs stay pinned, the agent notices the restart
    // and the State still holds; then one removed right after the restart comes back too.
    let (progs, _) = recorded_ids(&s);
    d.sigkill();
    d.spawn();
    d.json(&["unload", &progs[0].to_string()]);
    wait_for("the program reloaded after the daemon restart", 20, || {
        let s = state(p, &app, &node)?;
        let (pr, l) = recorded_ids(&s);
        (pr.len() == 1 && pr[0] != progs[0] && l.len() == 6 && cond(&s).0 == "Success")
            .then_some(())
    });
    assert_eq!(links(&d).len(), 6);
    assert!(
        agent.log().contains("the daemon restarted"),
        "the restart was noticed through the socket"
    );
    delete_app(p, &app);
    wait_for("State gone", 60, || {
        state(p, &app, &node).is_none().then_some(())
    });
    assert!(links(&d).is_empty());
    assert!(programs_of(&d, &uid).is_empty());
}

#[test]
fn reconverges_after_the_api_server_restarts() {
    require_root!();
    // A plane of its own: this test stops its API server.
    let p = ControlPlane::start(bpfman_k8s_testenv::Options::default()).expect("control plane");
    p.apply_crds(&repo().join("deploy/kubernetes/crds"))
        .expect("CRDs");
    let node = node_name("api");
    make_node(&p, &node, &[], "10.250.0.7");
    let d = Daemon::start();
    let _agent = Agent::start(&p, &node, &d);
    let sel = format!("    matchLabels:\n      kubernetes.io/hostname: {node}\n");
    let a1 = format!("api1-{}", unique());
    apply(&p, &tracepoint_app(&a1, &sel, &[]));
    let s = wait_cond(&p, &a1, &node, "Success", 60);
    let (_, lids) = recorded_ids(&s);
    // While the API server is down, a link disappears; the agent repairs the kernel side at
    // once and the State when the API server is back.
    // (Restarted from this thread: the new API server lives as long as the thread that
    // started it.)
    std::thread::scope(|sc| {
        sc.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            d.json(&["detach", &lids[0].to_string()]);
        });
        p.restart_apiserver(Duration::from_secs(4))
            .expect("API server back");
    });
    wait_for("the State to show the re-attached link", 60, || {
        let s = state(&p, &a1, &node)?;
        let (_, l) = recorded_ids(&s);
        (l.len() == 1 && l[0] != lids[0]).then_some(())
    });
    // The watches came back: a new application converges.
    let a2 = format!("api2-{}", unique());
    apply(&p, &tracepoint_app(&a2, &sel, &[]));
    wait_cond(&p, &a2, &node, "Success", 60);
    assert_eq!(links(&d).len(), 2);
    for a in [&a1, &a2] {
        p.kubectl_ok(
            &["delete", "clusterbpfapplication", a, "--wait=false"],
            None,
        );
    }
    // No controller manager here: the agent itself cleans up States whose application is gone.
    for a in [&a1, &a2] {
        wait_for("States gone", 60, || {
            state(&p, a, &node).is_none().then_some(())
        });
    }
    assert!(links(&d).is_empty());
}

#[test]
fn pods_on_a_real_node_get_links_in_their_own_network_namespace() {
    require_root!();
    let Some(node) = real_node() else { return };
    let p = plane();
    let u = unique();
    let (nsa, nsb) = (format!("team-a-{u}"), format!("team-b-{u}"));
    namespace(p, &nsa);
    namespace(p, &nsb);
    let objs = Path::new(&obj("xdp_test.bpf.o"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    // Namespace team-a may attach XDP inside pods at priorities 100..=200, nothing else.
    let d = Daemon::start_with_config(&format!(
        r#"
[policy]
audit_log = "@DIR@/audit.log"

[[policy.rule]]
name = "team-a"
kubernetes_namespaces = ["{nsa}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["xdp"]
file_dirs = ["{objs}"]
interfaces = ["eth0"]
netns = ["/proc/*/ns/net"]
priority = [100, 200]
"#
    ));
    let _agent = Agent::on_node(p, node, &d);
    let target = format!("target-{u}");
    pod(p, &node.name, &nsa, "web", &target);
    pod(p, &node.name, &nsa, "other", &format!("other-{u}"));
    pod(p, &node.name, &nsb, "web", &target);
    let (ip_web, ip_other, ip_b) = (
        pod_ip(p, &nsa, "web"),
        pod_ip(p, &nsa, "other"),
        pod_ip(p, &nsb, "web"),
    );
    for ip in [&ip_web, &ip_other, &ip_b] {
        assert!(pings(ip), "{ip} answers before anything is attached");
    }

    // A cluster-scoped application: pods labelled `target` in namespace team-b only.
    let app = format!("pods-{u}");
    apply(
        p,
        &pod_xdp_app(
            "ClusterBpfApplication",
            &app,
            Some(&nsb),
            &node.name,
            &target,
            300,
        ),
    );
    let s = wait_cond(p, &app, &node.name, "Success", 60);
    let l = xdp_link(&s, 0);
    assert!(
        l["netnsPath"]
            .as_str()
            .is_some_and(|n| n.starts_with("/proc/") && n.ends_with("/ns/net")),
        "{l}"
    );
    assert_eq!(
        s["status"]["programs"][0]["xdp"]["links"]
            .as_array()
            .map(|a| a.len()),
        Some(1)
    );
    assert!(!pings(&ip_b), "ICMP dropped inside team-b's web pod");
    assert!(
        pings(&ip_web),
        "team-a's pod of the same name and labels still answers"
    );
    assert!(
        pings(&ip_other),
        "its neighbour on the bridge still answers"
    );

    // A pod created later is picked up; deleting it removes its link.
    pod(p, &node.name, &nsb, "web2", &target);
    let ip_b2 = pod_ip(p, &nsb, "web2");
    wait_for("a second link for the new pod", 30, || {
        let s = state(p, &app, &node.name)?;
        (s["status"]["programs"][0]["xdp"]["links"]
            .as_array()
            .map(|a| a.len())
            == Some(2)
            && cond(&s).0 == "Success")
            .then_some(())
    });
    assert!(!pings(&ip_b2), "the new pod drops ICMP");
    p.kubectl_ok(
        &[
            "delete",
            "pod",
            "-n",
            &nsb,
            "web2",
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    wait_for("the deleted pod's link removed", 30, || {
        let s = state(p, &app, &node.name)?;
        (s["status"]["programs"][0]["xdp"]["links"]
            .as_array()
            .map(|a| a.len())
            == Some(1))
        .then_some(())
    });
    wait_for("one link left in the daemon", 15, || {
        (links(&d).len() == 1).then_some(())
    });

    // A namespaced BpfApplication in team-a: its own pods only, as its namespace's policy says.
    let nsapp = format!("mine-{u}");
    apply(
        p,
        &pod_xdp_app(
            "BpfApplication",
            &nsapp,
            Some(&nsa),
            &node.name,
            &target,
            150,
        ),
    );
    let s = wait_until("the namespaced application's State Success", 60, || {
        let s = ns_state(p, &nsa, &nsapp, &node.name).ok_or("no State")?;
        if cond(&s).0 == "Success" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(
        s["status"]["programs"][0]["xdp"]["links"]
            .as_array()
            .map(|a| a.len()),
        Some(1)
    );
    assert!(!pings(&ip_web), "team-a's web pod drops ICMP now");
    assert!(pings(&ip_other), "team-a's other pod does not");
    let owners: Vec<u64> = d
        .json(&["list", "programs"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["owner_uid"].as_u64())
        .collect();
    assert!(
        owners.iter().any(|o| *o >= 0xF000_0000),
        "loaded as the namespace: {owners:?}"
    );
    // Outside its priority range: refused by the daemon's policy, said in the State.
    let over = format!("over-{u}");
    apply(
        p,
        &pod_xdp_app(
            "BpfApplication",
            &over,
            Some(&nsa),
            &node.name,
            &format!("other-{u}"),
            900,
        ),
    );
    let s = wait_for("the out-of-range application's State Error", 60, || {
        let s = ns_state(p, &nsa, &over, &node.name)?;
        (cond(&s).0 == "Error").then_some(s)
    });
    let (_, _, msg) = cond(&s);
    assert!(msg.contains("priority") && msg.contains("team-a"), "{msg}");
    assert!(pings(&ip_other), "nothing attached to the other pod");

    // Clean up: everything comes down.
    delete_app(p, &app);
    for a in [&nsapp, &over] {
        p.kubectl_ok(
            &["delete", "bpfapplication", "-n", &nsa, a, "--wait=false"],
            None,
        );
    }
    wait_for("every link gone", 60, || links(&d).is_empty().then_some(()));
    assert!(pings(&ip_b) && pings(&ip_web));
    for ns in [&nsa, &nsb] {
        p.kubectl_ok(&["delete", "namespace", ns, "--wait=false"], None);
    }
}

#[test]
fn a_uprobe_containers_selector_attaches_to_the_selected_containers_process() {
    require_root!();
    let Some(node) = real_node() else { return };
    let p = plane();
    let u = unique();
    let ns = format!("up-{u}");
    namespace(p, &ns);
    let d = Daemon::start();
    let _agent = Agent::on_node(p, node, &d);
    let target = format!("probed-{u}");
    pod_running(
        p,
        &node.name,
        &ns,
        "probed",
        &target,
        r#"["/bin/uprobe-target"]"#,
    );
    pod_running(
        p,
        &node.name,
        &ns,
        "bystander",
        &format!("not-{u}"),
        r#"["/bin/uprobe-target"]"#,
    );
    pod_ip(p, &ns, "probed");
    pod_ip(p, &ns, "bystander");
    let app = format!("uprobe-{u}");
    apply(
        p,
        &format!(
            r#"apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {app}
spec:
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: {node}
  byteCode:
    path: {path}
  programs:
    - name: uprobe_count
      type: UProbe
      uprobe:
        links:
          - target: /bin/uprobe-target
            function: bpfman_container_target
            containers:
              namespace: {ns}
              pods:
                matchLabels:
                  app: {target}
"#,
            node = node.name,
            path = obj("tracing_test.bpf.o"),
        ),
    );
    let s = wait_cond(p, &app, &node.name, "Success", 60);
    let links_ = s["status"]["programs"][0]["uprobe"]["links"].clone();
    assert_eq!(
        links_.as_array().map(|a| a.len()),
        Some(1),
        "one container selected: {links_}"
    );
    assert!(
        links_[0]["containerPid"].as_i64().unwrap_or(0) > 0,
        "{links_}"
    );
    let id = program_id(&s, 0) as u32;
    // The selected container's process calls the function ten times a second.
    let hits = wait_for("uprobe hits from the container", 15, || {
        let h = d.map_u64(id, "uprobe_hits");
        (h >= 5).then_some(h)
    });
    assert!(hits >= 5);
    delete_app(p, &app);
    wait_for("State gone", 60, || {
        state(p, &app, &node.name).is_none().then_some(())
    });
    assert!(links(&d).is_empty());
    p.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"], None);
}

#[test]
fn an_application_that_does_not_read_blocks_no_other() {
    require_root!();
    let p = plane();
    let node = node_name("guard");
    make_node(p, &node, &[], "10.250.0.8");
    let d = Daemon::start();
    let _agent = Agent::start(p, &node, &d);
    // The schema (like upstream's) does not require spec: such an object is stored.
    let bad = format!("nospec-{}", unique());
    p.kubectl_ok(
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: bpfman.io/v1alpha1\nkind: ClusterBpfApplication\nmetadata:\n  name: {bad}\n"
        )),
    );
    let good = format!("good-{}", unique());
    apply(
        p,
        &tracepoint_app(
            &good,
            &format!("    matchLabels:\n      kubernetes.io/hostname: {node}\n"),
            &[],
        ),
    );
    wait_cond(p, &good, &node, "Success", 60);
    assert!(state(p, &bad, &node).is_none());
    for a in [&bad, &good] {
        delete_app(p, a);
    }
    wait_for("State gone", 60, || {
        state(p, &good, &node).is_none().then_some(())
    });
}
