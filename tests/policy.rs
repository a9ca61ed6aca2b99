//! Access control with real unprivileged users: each tenant runs the real CLI as itself
//! (`runuser`), the daemon identifies it by SO_PEERCRED and applies the config's policy.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::Once;

use common::{Daemon, Netns, link_in, obj};
use serde_json::Value;

const TENANTS: &str = "bpfmt-tenants";
const ALICE: &str = "bpfmt-alice"; // team a
const BOB: &str = "bpfmt-bob"; // team b
const CAROL: &str = "bpfmt-carol"; // not in the socket's group

/// Creates the test users and groups once (idempotent across runs).
fn users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for g in [TENANTS, "bpfmt-team-a", "bpfmt-team-b"] {
            common::ensure_group(g);
        }
        common::ensure_user(ALICE, Some(TENANTS), &["bpfmt-team-a"]);
        common::ensure_user(BOB, Some(TENANTS), &["bpfmt-team-b"]);
        common::ensure_user(CAROL, None, &[]);
    });
}

fn uid(user: &str) -> u64 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn policy(bpf_dir: &str, iface: &str, audit: &str, team_a_max_programs: u32) -> String {
    format!(
        r#"
[api]
socket_group = "{TENANTS}"

[policy]
audit_log = "{audit}"

[[policy.rule]]
name = "team-a"
groups = ["bpfmt-team-a"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["xdp", "tcx", "tracepoint"]
file_dirs = ["{bpf_dir}"]
images = ["127.0.0.1:1/team-a/"]
interfaces = ["{iface}"]
priority = [100, 500]
max_programs = {team_a_max_programs}
max_links = 4

[[policy.rule]]
name = "team-b"
users = ["{BOB}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["tcx"]
file_dirs = ["{bpf_dir}"]
interfaces = ["{iface}"]
priority = [501, 900]
"#
    )
}

struct Env {
    d: Daemon,
    ns: Netns,
    audit: String,
    cfg: std::path::PathBuf,
    bpf_dir: String,
}

fn setup(max_programs: u32) -> Env {
    users();
    let ns = Netns::new();
    let bpf_dir = std::path::Path::new(&obj("tc_test.bpf.o"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let audit_dir = tempfile::tempdir().unwrap().keep();
    let audit = audit_dir.join("audit.log").display().to_string();
    let d = Daemon::start_with_config(&policy(&bpf_dir, &ns.host_if, &audit, max_programs));
    // Tenants must reach the socket through the test's private directory.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = d.dir.path().join("bpfman.toml");
    Env {
        d,
        ns,
        audit,
        cfg,
        bpf_dir,
    }
}

impl Env {
    fn as_user(&self, user: &str, args: &[&str]) -> Output {
        self.d.cli_as(user, args)
    }

    fn ok(&self, user: &str, args: &[&str]) -> Value {
        self.d.json_as(user, args)
    }

    fn denied(&self, user: &str, args: &[&str], want: &str) {
        let o = self.as_user(user, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{user}: bpfman {} should be refused",
            args.join(" ")
        );
        assert!(
            err.contains(want),
            "{user}: bpfman {}: expected '{want}' in: {err}",
            args.join(" ")
        );
    }

    fn load(&self, user: &str, prog: &str) -> u64 {
        let v = self.ok(
            user,
            &[
                "load",
                "file",
                "--path",
                &obj("tc_test.bpf.o"),
                "--programs",
                prog,
            ],
        );
        v[0]["id"].as_u64().unwrap()
    }
}

#[test]
fn tenants_are_confined_to_their_grants() {
    require_root!();
    let e = setup(2);
    let a_uid = uid(ALICE);
    // Within grants.
    let p = e.load(ALICE, "tcx:tc_count");
    let prog = e.ok(ALICE, &["get", "program", &p.to_string()]);
    assert_eq!(prog["owner_uid"], a_uid, "{prog}");
    // Outside: program type, file source, quota.
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "kprobe:kprobe_count",
        ],
        "program type kprobe",
    );
    // LSM is a program type like the others: a rule without it refuses it (whether or
    // not this kernel could load it).
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &obj("lsm_test.bpf.o"),
            "--programs",
            "lsm:lsm_deny_open:file_open",
        ],
        "program type lsm",
    );
    let elsewhere = e.d.dir.path().join("copy.o");
    std::fs::copy(obj("tc_test.bpf.o"), &elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            elsewhere.to_str().unwrap(),
            "--programs",
            "tcx:tc_count",
        ],
        "file_dirs",
    );
    // Image source: outside the prefix is a policy denial; inside it gets as far as the
    // registry (nothing listens on 127.0.0.1:1).
    e.denied(
        ALICE,
        &[
            "load",
            "image",
            "--image-url",
            "quay.io/evil/xdp:latest",
            "--programs",
            "tcx:tc_count",
        ],
        "does not start with any of its images",
    );
    e.denied(
        ALICE,
        &[
            "load",
            "image",
            "--image-url",
            "127.0.0.1:1/team-a/tc:v1",
            "--programs",
            "tcx:tc_count",
        ],
        "cannot reach registry",
    );
    let _p2 = e.load(ALICE, "tcx:tc_drop_icmp");
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &obj("tc_test.bpf.o"),
            "--programs",
            "tcx:tc_count",
        ],
        "max_programs is 2",
    );
    // Attach: interface and priority range.
    e.denied(
        ALICE,
        &[
            "attach",
            &p.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            "lo",
            "-p",
            "200",
        ],
        "interface lo",
    );
    e.denied(
        ALICE,
        &[
            "attach",
            &p.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "50",
        ],
        "priority 50 is outside its range 100..=500",
    );
    let link = e.ok(
        ALICE,
        &[
            "attach",
            &p.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "200",
        ],
    )["link_id"]
        .as_u64()
        .unwrap();
    // Bob cannot touch Alice's objects; the error does not describe them.
    e.denied(BOB, &["unload", &p.to_string()], "belongs to another user");
    e.denied(
        BOB,
        &["detach", &link.to_string()],
        "belongs to another user",
    );
    e.denied(
        BOB,
        &[
            "attach",
            &p.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "600",
        ],
        "belongs to another user",
    );
    // Carol is not in the socket's group: she cannot even connect.
    e.denied(CAROL, &["list", "programs"], "permission denied");
    // Reload is root's.
    e.denied(ALICE, &["system", "reload"], "only root");
    // Listing shows owners.
    let list = e.ok(BOB, &["list", "programs"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["owner_uid"] == a_uid),
        "{list}"
    );
    // Root can do all.
    e.d.json(&["detach", &link.to_string()]);
    e.d.json(&["unload", &p.to_string()]);

    // The audit log has each mutating decision with the caller and the rule.
    let log = std::fs::read_to_string(&e.audit).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |uid: u64, action: &str, decision: &str| {
        entries
            .iter()
            .any(|x| x["uid"] == uid && x["action"] == action && x["decision"] == decision)
    };
    assert!(find(a_uid, "load", "allow"));
    assert!(find(a_uid, "load", "deny"));
    assert!(find(a_uid, "attach", "deny"));
    assert!(find(uid(BOB), "unload", "deny"));
    assert!(find(0, "unload", "allow"));
    let denied_attach = entries
        .iter()
        .find(|x| x["action"] == "attach" && x["decision"] == "deny")
        .unwrap();
    assert_eq!(denied_attach["rule"], "team-a");
    assert!(denied_attach["pid"].as_i64().unwrap() > 0);
    assert!(
        denied_attach["command"]
            .as_str()
            .unwrap()
            .contains("bpfman")
    );
}

#[test]
fn policy_reload_changes_the_outcome_and_a_bad_file_keeps_the_old_one() {
    require_root!();
    let e = setup(1);
    e.load(ALICE, "tcx:tc_count");
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &obj("tc_test.bpf.o"),
            "--programs",
            "tcx:tc_drop_icmp",
        ],
        "max_programs is 1",
    );
    // A file that does not parse: rejected with its line, old policy kept.
    let good = std::fs::read_to_string(&e.cfg).unwrap();
    let bad = good.replace("max_programs = 1", "max_programs = \"many\"");
    let line = bad.lines().position(|l| l.contains("\"many\"")).unwrap() + 1;
    std::fs::write(&e.cfg, &bad).unwrap();
    let err = e.d.fails(&["system", "reload"]);
    assert!(
        err.contains(&format!("line {line}")),
        "expected line {line}: {err}"
    );
    e.denied(
        ALICE,
        &[
            "load",
            "file",
            "--path",
            &obj("tc_test.bpf.o"),
            "--programs",
            "tcx:tc_drop_icmp",
        ],
        "max_programs is 1",
    );
    // Raise the quota: `bpfman system reload` applies it, programs stay.
    std::fs::write(&e.cfg, good.replace("max_programs = 1", "max_programs = 3")).unwrap();
    let r = e.d.json(&["system", "reload"]);
    assert_eq!(r["rules"], 2);
    e.load(ALICE, "tcx:tc_drop_icmp");
    assert_eq!(e.d.json(&["list", "programs"]).as_array().unwrap().len(), 2);
    // SIGHUP does the same.
    std::fs::write(&e.cfg, good.replace("max_programs = 1", "max_programs = 2")).unwrap();
    let pid = e.d.json(&["system", "info"])["daemon_pid"]
        .as_i64()
        .unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGHUP);
    }
    let mut refused = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let o = e.as_user(
            ALICE,
            &[
                "load",
                "file",
                "--path",
                &obj("tc_test.bpf.o"),
                "--programs",
                "tcx:tc_count",
            ],
        );
        if !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("max_programs is 2") {
            refused = true;
            break;
        }
    }
    assert!(refused, "SIGHUP did not apply the new quota");
    let _ = &e.bpf_dir;
}

#[test]
fn two_tenants_share_one_interface_in_the_order_the_policy_intends() {
    require_root!();
    let e = setup(2);
    // Bob (priority 501..900) attaches first; Alice (100..500) must still run before him.
    let b = e.load(BOB, "tcx:tc_drop_icmp");
    let a = e.load(ALICE, "tcx:tc_count");
    e.denied(
        BOB,
        &[
            "attach",
            &b.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "300",
        ],
        "outside its range 501..=900",
    );
    let lb = e.ok(
        BOB,
        &[
            "attach",
            &b.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "700",
        ],
    )["link_id"]
        .as_u64()
        .unwrap();
    let la = e.ok(
        ALICE,
        &[
            "attach",
            &a.to_string(),
            "tcx",
            "-d",
            "ingress",
            "-i",
            &e.ns.host_if,
            "-p",
            "200",
        ],
    )["link_id"]
        .as_u64()
        .unwrap();
    let links = e.ok(ALICE, &["list", "links"]);
    let pos = |l: u64| link_in(&links, l)["position"].clone();
    assert_eq!(pos(la), 0);
    assert_eq!(pos(lb), 1);
    // Traffic: Alice's counter sees every packet, then Bob's program drops ICMP.
    assert!(!e.ns.ping());
    let seen = e.d.map_u64(a as u32, "tc_seen");
    let dropped = e.d.map_u64(b as u32, "tc_drops");
    assert!(
        seen >= 1 && dropped >= 1 && seen >= dropped,
        "seen {seen}, dropped {dropped}"
    );
}

/// A rule with `require_signature` admits only images a trusted key verified, even
/// where the daemon's own signature policy lets unsigned images through.
#[test]
fn rule_requiring_signatures_refuses_unsigned_images() {
    require_root!();
    if !common::Registry::available() {
        eprintln!(
            "SKIP rule_requiring_signatures: docker-registry is not installed (scripts/setup.sh)"
        );
        return;
    }
    users();
    let reg = common::Registry::start();
    let work = tempfile::tempdir().unwrap();
    let local = |args: &[&str]| {
        let o = Command::new(common::BPFMAN)
            .args(args)
            .env("BPFMAN_IMAGE_DIR", work.path())
            .env("COSIGN_PASSWORD", "pw")
            .output()
            .expect("bpfman");
        assert!(
            o.status.success(),
            "bpfman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let signed = format!("{}/team-a/signed/xdp:v1", reg.addr);
    let unsigned = format!("{}/team-a/plain/xdp:v1", reg.addr);
    let key = work.path().join("k");
    local(&[
        "image",
        "generate-key-pair",
        "--output-key-prefix",
        key.to_str().unwrap(),
    ]);
    for i in [&signed, &unsigned] {
        local(&["image", "build", "-b", &obj("xdp_test.bpf.o"), "-t", i]);
        local(&["image", "push", i]);
    }
    local(&[
        "image",
        "sign",
        "--key",
        &format!("{}.key", key.display()),
        &signed,
    ]);
    let pubkey = format!("{}.pub", key.display());
    // Keep the key where the daemon may read it after the test dir goes.
    let d = Daemon::start_with_config(&format!(
        r#"
[api]
socket_group = "{TENANTS}"

[images]
cache_dir = "@DIR@/images"
[[images.signatures.trusted_keys]]
prefix = "{}/team-a/signed/"
key = "{pubkey}"

[[policy.rule]]
name = "team-a"
groups = ["bpfmt-team-a"]
actions = ["load", "list", "get"]
images = ["{}/team-a/"]
require_signature = true
"#,
        reg.addr, reg.addr
    ));
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_alice = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", ALICE, "--", "env"])
            .arg(format!("BPFMAN_SOCKET={}", d.socket.display()))
            .arg(common::BPFMAN)
            .args(args)
            .output()
            .expect("runuser")
    };
    // Root may pull the unsigned image (no key covers it; unsigned is allowed) ...
    d.json(&["image", "pull", &unsigned]);
    // ... but alice's rule demands a signature.
    let o = as_alice(&[
        "load",
        "image",
        "-i",
        &unsigned,
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("requires signed images"),
        "{e}"
    );
    let o = as_alice(&[
        "-o",
        "json",
        "load",
        "image",
        "-i",
        &signed,
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The Kubernetes agent's tenants: root acting on behalf of a namespace is decided by the
/// rules naming that namespace (types, tracepoints, quota), owns what it makes as the
/// namespace, reaches nothing else, and the audit log shows both; nobody else may ask.
#[test]
fn root_acts_for_kubernetes_namespaces_exactly_as_their_rules_grant() {
    require_root!();
    users();
    let dir = std::path::Path::new(&obj("tracing_test.bpf.o"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let d = Daemon::start_with_config(&format!(
        r#"
[api]
socket_group = "{TENANTS}"

[policy]
audit_log = "@DIR@/audit.log"

[[policy.rule]]
name = "ns-team-a"
kubernetes_namespaces = ["team-a"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
program_types = ["tracepoint"]
tracepoints = ["syscalls/sys_enter_getpid"]
file_dirs = ["{dir}"]
max_programs = 1

[[policy.rule]]
name = "alice"
users = ["{ALICE}"]
actions = ["list", "get"]
"#
    ));
    let tp = obj("tracing_test.bpf.o");
    let load = |ns: &str, prog: &str| {
        d.cli(&[
            "--on-behalf-of-namespace",
            ns,
            "-o",
            "json",
            "load",
            "file",
            "--path",
            &tp,
            "--programs",
            prog,
        ])
    };
    // Granted: its program type, as the namespace.
    let out = load("team-a", "tracepoint:tp_count");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["id"].as_u64().unwrap().to_string();
    let recs = d.json(&["list", "programs"]);
    let mine = recs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_u64().map(|i| i.to_string()) == Some(id.clone()))
        .cloned()
        .unwrap();
    let owner = mine["owner_uid"].as_u64().unwrap();
    assert!(
        owner >= 0xF000_0000,
        "owned by the namespace's tenant id, not root: {owner}"
    );
    // Its tracepoints only.
    let ns_attach = |args: &[&str]| {
        let mut a = vec!["--on-behalf-of-namespace", "team-a", "attach", &id];
        a.extend_from_slice(args);
        d.cli(&a)
    };
    let ok = ns_attach(&["tracepoint", "--tracepoint", "syscalls/sys_enter_getpid"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let no = ns_attach(&["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"]);
    assert!(!no.status.success());
    assert!(
        String::from_utf8_lossy(&no.stderr).contains("ns-team-a"),
        "{}",
        String::from_utf8_lossy(&no.stderr)
    );
    // Its quota: one program.
    let over = load("team-a", "tracepoint:tp_shared");
    assert!(!over.status.success());
    assert!(String::from_utf8_lossy(&over.stderr).contains("max_programs"));
    // Its types only.
    let xdp = d.cli(&[
        "--on-behalf-of-namespace",
        "team-a",
        "load",
        "file",
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    assert!(!xdp.status.success());
    // A namespace no rule names gets nothing.
    let other = load("team-b", "tracepoint:tp_count");
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(err.contains("Kubernetes namespace team-b"), "{err}");
    // Not a namespace name.
    let bad = load("Team_A/../x", "tracepoint:tp_count");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a Kubernetes namespace name"));
    // A root program is not the namespace's to remove.
    let root_id = d.load_one(&["--path", &tp, "--programs", "tracepoint:tp_count"]);
    let steal = d.cli(&[
        "--on-behalf-of-namespace",
        "team-a",
        "unload",
        &root_id.to_string(),
    ]);
    assert!(!steal.status.success());
    // Only root may ask: alice (named by a rule) is refused.
    let alice = d.cli_as(
        ALICE,
        &["--on-behalf-of-namespace", "team-a", "list", "programs"],
    );
    let err = String::from_utf8_lossy(&alice.stderr);
    assert!(!alice.status.success());
    assert!(err.contains("only root may act on behalf"), "{err}");
    // The audit log shows both the namespace and root.
    let audit = std::fs::read_to_string(d.dir.path().join("audit.log")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("\"action\":\"load\"") && l.contains("\"decision\":\"allow\""))
        .expect("an allowed load in the audit log");
    assert!(
        line.contains("\"on_behalf_of\":\"kubernetes-namespace/team-a\""),
        "{line}"
    );
    assert!(line.contains("\"via_uid\":0"), "{line}");
    // Root still manages the namespace's program.
    d.json(&["unload", &id]);
}
