//! The daemon's Prometheus endpoint, read by a real Prometheus server (Debian's `prometheus`,
//! on 127.0.0.1, scraping every second): an XDP program's run count rises with the packets
//! sent through a veth pair, a denied request shows in the denial counter, a link deleted
//! behind the daemon's back turns its gauge to 0 and reconciliation's repair counter up; a
//! scrape passes `promtool check metrics`; bad `[metrics]` settings stop the daemon at start
//! with the setting named.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::{Prometheus, curl};
use common::{BPFMAN, Daemon, Netns, free_port, obj};

const TENANTS: &str = "bpfmt-mgroup";
const TENANT: &str = "bpfmt-mtenant";

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn prometheus_sees_runs_denials_and_repairs() {
    if !common::is_root() {
        println!("SKIP: needs root (loads programs, makes users and network namespaces)");
        return;
    }
    if !have("prometheus") {
        println!("SKIP: no `prometheus` binary (scripts/setup.sh installs Debian's prometheus)");
        return;
    }
    common::ensure_group(TENANTS);
    common::ensure_user(TENANT, Some(TENANTS), &[]);
    let port = free_port();
    let objs = common::objs_dir();
    let d = Daemon::start_with_config(&format!(
        r#"
[api]
socket_group = "{TENANTS}"

[metrics]
listen = "127.0.0.1:{port}"
program_stats = true
metadata_labels = ["team"]

[daemon]
reconcile_interval_secs = 0

[[policy.rule]]
name = "tracers"
users = ["{TENANT}"]
actions = ["load", "list", "get"]
program_types = ["tracepoint"]
file_dirs = ["{}"]
"#,
        objs.display()
    ));
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));

    // Run counts: real packets through an XDP program on a veth pair.
    let ns = Netns::new();
    let xdp = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
        "--metadata",
        "team=red",
    ]);
    d.attach(&[&xdp.to_string(), "xdp", "--iface", &ns.host_if]);
    prom.wait_for(
        &format!("bpfman_program_info{{id=\"{xdp}\",team=\"red\",type=\"xdp\"}}"),
        "the XDP program's info series with its metadata label",
        |v| v == 1.0,
    );
    let before = prom
        .query(&format!("bpfman_program_runs_total{{id=\"{xdp}\"}}"))
        .first()
        .map(|(_, v)| *v)
        .unwrap_or(0.0);
    let sent = 30;
    ns.ping_many(sent, "0.02");
    let after = prom.wait_for(
        &format!("bpfman_program_runs_total{{id=\"{xdp}\"}}"),
        "the XDP run count rising by the packets sent",
        |v| v >= before + f64::from(sent),
    );
    println!("XDP runs: {before} -> {after} after {sent} echo requests");
    prom.wait_for(
        &format!("bpfman_program_run_time_seconds_total{{id=\"{xdp}\"}}"),
        "run time",
        |v| v > 0.0,
    );
    prom.wait_for("bpfman_kernel_run_stats_enabled", "stats gauge", |v| {
        v == 1.0
    });

    // A denial: the tenant's rule grants tracepoints only.
    let out = d.cli_as(
        TENANT,
        &[
            "load",
            "file",
            "--path",
            &obj("xdp_test.bpf.o"),
            "--programs",
            "xdp:xdp_drop_proto",
        ],
    );
    assert!(
        !out.status.success(),
        "an XDP load outside the rule is refused"
    );
    prom.wait_for(
        "bpfman_policy_denials_total{action=\"load\",rule=\"tracers\"}",
        "the denial counter",
        |v| v >= 1.0,
    );
    prom.wait_for(
        "bpfman_requests_total{method=\"/bpfman.v1.Bpfman/Load\",code=\"PERMISSION_DENIED\"}",
        "the request counter by code",
        |v| v >= 1.0,
    );

    // A link deleted outside bpfman: its gauge goes to 0, reconciliation repairs it.
    let tp = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    let link = d.attach(&[
        &tp.to_string(),
        "tracepoint",
        "--tracepoint",
        "syscalls/sys_enter_getpid",
    ]);
    let q = format!("bpfman_link_attached{{link_id=\"{link}\"}}");
    prom.wait_for(&q, "the new link attached", |v| v == 1.0);
    let got = d.json(&["get", "link", &link.to_string()]);
    let pin = PathBuf::from(got["pin_path"].as_str().expect("the link's pin path"));
    std::fs::remove_file(&pin).expect("delete the link's pin behind the daemon's back");
    prom.wait_for(&q, "the deleted link's gauge at 0", |v| v == 0.0);
    let repairs_before = prom
        .query("sum(bpfman_reconcile_repairs_total{kind=\"link\",outcome=\"repaired\"})")
        .first()
        .map(|(_, v)| *v)
        .unwrap_or(0.0);
    let out = d.cli(&["system", "reconcile"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    prom.wait_for(
        "sum(bpfman_reconcile_repairs_total{kind=\"link\",outcome=\"repaired\"})",
        "the repair counter up after reconciliation",
        |v| v > repairs_before,
    );
    // The repaired link's series is gone from the next scrape (bounded cardinality).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !curl(&format!("http://127.0.0.1:{port}/metrics"))
        .lines()
        .all(|l| !l.contains(&format!("link_id=\"{link}\"")))
    {
        assert!(
            Instant::now() < deadline,
            "the removed link's series stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A scrape with real objects in it is clean for promtool.
    if have("promtool") {
        let text = curl(&format!("http://127.0.0.1:{port}/metrics"));
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool: {said}\n{text}"
        );
        // And the example alert rules load.
        let rules = common::repo().join("deploy/prometheus/bpfman-alerts.yml");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool check rules: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!("SKIP promtool check: no promtool (Debian's prometheus package ships it)");
    }
    drop(ns);
}

/// Starts `bpfman daemon` with `config` and expects it to exit at once; returns its stderr.
fn start_fails(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bpfman.toml");
    std::fs::write(&cfg, config).expect("config");
    let mut child = Command::new(BPFMAN)
        .args(["daemon", "--runtime-dir"])
        .arg(dir.path().join("run"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                !status.success(),
                "the daemon exited 0 with a bad [metrics] config"
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon kept running with config:\n{config}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_metrics_settings_stop_the_daemon_naming_the_setting() {
    if !common::is_root() {
        println!("SKIP: needs root (starts daemons)");
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let e = start_fails(&format!("[metrics]\nlisten = \"{addr}\"\n"));
    assert!(
        e.contains("[metrics] listen") && e.contains("in use"),
        "{e}"
    );
    let e = start_fails("[metrics]\nlisten = \"localhost\"\n");
    assert!(
        e.contains("[metrics] listen") && e.contains("127.0.0.1:9464"),
        "{e}"
    );
    let e = start_fails("[metrics]\nsocket = \"/nonexistent-bpfman-dir/m.sock\"\n");
    assert!(
        e.contains("[metrics] socket") && e.contains("does not exist"),
        "{e}"
    );
    let e = start_fails("[metrics]\nsocket = \"relative.sock\"\n");
    assert!(
        e.contains("[metrics] socket") && e.contains("absolute"),
        "{e}"
    );
    let e = start_fails("[metrics]\nlabels = [\"team\"]\n");
    assert!(e.contains("labels") && e.contains("unknown field"), "{e}");
    let e = start_fails("[metrics]\nmetadata_labels = [\"id\"]\n");
    assert!(e.contains("metadata_labels") && e.contains("'id'"), "{e}");
    let e = start_fails("[metrics]\nmetadata_labels = [\"a.b\", \"a_b\"]\n");
    assert!(e.contains("both become label 'a_b'"), "{e}");
    // A file where the socket should go is never replaced.
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("not-a-socket");
    std::fs::write(&f, "keep").expect("write");
    let e = start_fails(&format!("[metrics]\nsocket = \"{}\"\n", f.display()));
    assert!(e.contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&f).expect("kept"), "keep");
}
