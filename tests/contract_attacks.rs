//! Attacks on the contract changes (peers, NOT_FOUND, waiting Unload, LSM) by an
//! unprivileged tenant, written by a reviewer who did not write the changes. Runs as
//! root; creates the user `bpfmt-atk` and the group `bpfmt-atk-tenants`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use bpfman::inspect::{Object, opens};
use common::{Daemon, Netns, obj};

const EVE: &str = "bpfmt-atk";
const GROUP: &str = "bpfmt-atk-tenants";

fn users() {
    common::ensure_group(GROUP);
    common::ensure_user(EVE, Some(GROUP), &[]);
}

/// A world-readable directory holding a TC classifier object whose `arm` program arms a
/// self-re-arming bpf_timer (the timer holds a reference to `arm`), and a peer `peer`.
fn timer_object() -> (String, String) {
    let dir = tempfile::Builder::new()
        .prefix("bpfman-atk-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.join("timer_peer.bpf.c");
    std::fs::write(
        &src,
        r#"#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct elem { struct bpf_timer t; };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct elem);
} timers SEC(".maps");
volatile const __u32 slot = 0;
static int rearm(void *map, int *key, struct elem *val)
{
	bpf_timer_start(&val->t, 1000000, 0);
	return 0;
}
SEC("classifier")
int arm(void *ctx)
{
	__u32 k = slot;
	struct elem *e = bpf_map_lookup_elem(&timers, &k);
	if (!e)
		return 0;
	bpf_timer_init(&e->t, &timers, 1);
	bpf_timer_set_callback(&e->t, rearm);
	bpf_timer_start(&e->t, 1000000, 0);
	return 0;
}
SEC("classifier")
int peer(void *ctx) { return 0; }
char _license[] SEC("license") = "GPL";
"#,
    )
    .unwrap();
    let out = dir.join("timer_peer.bpf.o");
    let st = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
        .arg(format!(
            "-I/usr/include/{}-linux-gnu",
            std::env::consts::ARCH
        ))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("clang");
    assert!(st.success(), "clang failed");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir.display().to_string(), out.display().to_string())
}

/// A daemon with one tenant rule that grants loading from `file_dirs` and omits
/// `program_types` (as a config written before LSM support would).
fn daemon(file_dir: &str) -> Daemon {
    users();
    let objs = std::path::Path::new(&obj("lsm_test.bpf.o"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
        .display()
        .to_string();
    let d = Daemon::start_with_config(&format!(
        r#"[api]
socket_group = "{GROUP}"

[[policy.rule]]
name = "eve"
users = ["{EVE}"]
actions = ["load", "attach", "detach", "unload", "list", "get"]
file_dirs = ["{objs}", "{file_dir}"]
max_programs = 2
"#
    ));
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn eve_json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    d.json_as(EVE, args)
}

/// An LSM program can deny opens (and bpf()) system-wide, the daemon's own included.
/// A rule that never named "lsm" (program_types omitted: written before LSM existed)
/// must not grant it; today the tenant gets past the policy and only the kernel
/// feature check stops it (on a kernel with BPF LSM, the load succeeds).
#[test]
fn a_rule_that_never_named_lsm_does_not_grant_it() {
    require_root!();
    let (dir, _) = timer_object();
    let d = daemon(&dir);
    let o = d.cli_as(
        EVE,
        &[
            "load",
            "file",
            "--path",
            &obj("lsm_test.bpf.o"),
            "--programs",
            "lsm:lsm_deny_open:file_open",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "the tenant loaded an LSM program");
    assert!(
        err.contains("denied") || err.contains("program type lsm"),
        "not refused by the policy (got past it): {err}"
    );
}

/// A tenant's program whose own bpf_timer holds it (maps kept by a peer) outlives its
/// Unload. Found: the daemon waited the full 5 s holding the reconciliation gate, so a
/// reconcile waiting for the gate stalled every other caller's mutation meanwhile, and
/// the program then ran on outside the tenant's quota. Now the wait holds no lock or
/// gate, and a program that outlives its Unload counts against its owner's quota until
/// the kernel lets it go.
#[test]
fn a_tenant_cannot_stall_everyone_with_an_unload() {
    require_root!();
    let (dir, object) = timer_object();
    let d = daemon(&dir);
    let ns = Netns::new();
    let progs = eve_json(
        &d,
        &[
            "load",
            "file",
            "--path",
            &object,
            "--programs",
            "tcx:arm",
            "tcx:peer",
        ],
    );
    let arm = progs[0]["id"].as_u64().unwrap() as u32;
    let link = eve_json(
        &d,
        &[
            "attach",
            &arm.to_string(),
            "tcx",
            "-i",
            &ns.host_if,
            "-d",
            "ingress",
        ],
    )["link_id"]
        .as_u64()
        .unwrap();
    ns.ping(); // runs `arm` once: the timer now holds it
    eve_json(&d, &["detach", &link.to_string()]);

    let start = Instant::now();
    let unload = {
        let (sock, arm) = (d.socket.clone(), arm.to_string());
        std::thread::spawn(move || {
            Command::new("runuser")
                .args(["-u", EVE, "--", "env"])
                .arg(format!("BPFMAN_SOCKET={}", sock.display()))
                .arg(common::BPFMAN)
                .args(["unload", &arm])
                .output()
                .unwrap();
            start.elapsed()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let reconcile = {
        let sock = d.socket.clone();
        std::thread::spawn(move || {
            Command::new(common::BPFMAN)
                .args(["system", "reconcile"])
                .env("BPFMAN_SOCKET", &sock)
                .output()
                .unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // Root's unrelated load.
    let t = Instant::now();
    d.load(&[
        "--path",
        &obj("tc_test.bpf.o"),
        "--programs",
        "tcx:tc_count",
    ]);
    let unrelated = t.elapsed();
    let took = unload.join().unwrap();
    reconcile.join().unwrap();
    let alive = opens(Object::Program, arm).unwrap();
    eprintln!("unload took {took:?}, an unrelated load {unrelated:?}, program alive: {alive}");
    assert!(
        unrelated < Duration::from_secs(2),
        "another caller's load waited {unrelated:?} behind the tenant's unload"
    );
    if alive {
        // It still counts: eve has `peer` and the lingering `arm`, max_programs = 2.
        let o = d.cli_as(
            EVE,
            &["load", "file", "--path", &object, "--programs", "tcx:peer"],
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && err.contains("max_programs"),
            "a program that outlived its Unload escaped the quota: {err}"
        );
    }
    // Unloading the peer frees the maps, the timer with them, and then `arm`.
    eve_json(&d, &["unload", &progs[1]["id"].to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while opens(Object::Program, arm).unwrap() {
        assert!(Instant::now() < deadline, "program {arm} outlived its maps");
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = eve_json(
        &d,
        &["load", "file", "--path", &object, "--programs", "tcx:peer"],
    );
    eve_json(&d, &["unload", &again[0]["id"].to_string()]);
}
