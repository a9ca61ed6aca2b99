//! The foundation suite: the real daemon and CLI against the real kernel.
//! Runs as root. Tests that need kernel features this kernel lacks (kprobe, fentry,
//! fexit on the host) check the clear refusal here and run fully in the VM
//! (`scripts/vm-test.sh`), where the same tests find the features present.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, Netns, has_feature, le_hex, link_in, obj};
use serde_json::Value;

fn getpid_syscalls(n: u32) {
    for _ in 0..n {
        unsafe {
            libc::syscall(libc::SYS_getpid);
        }
    }
}

fn getppid_syscalls(n: u32) {
    for _ in 0..n {
        unsafe {
            libc::syscall(libc::SYS_getppid);
        }
    }
}

/// The uprobe target: a real function in this test binary.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn bpfman_uprobe_target(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(3).wrapping_add(1))
}

#[test]
fn xdp_drop_icmp_stops_ping_and_detach_restores_it() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    assert!(ns.ping(), "no connectivity before attaching anything");
    let progs = d.load(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    assert_eq!(progs[0]["name"], "xdp_drop_proto");
    assert_eq!(progs[0]["type"], "xdp");
    let id = progs[0]["id"].as_u64().unwrap() as u32;
    let link = d.attach(&[
        &id.to_string(),
        "xdp",
        "--iface",
        &ns.host_if,
        "--priority",
        "50",
    ]);
    assert!(
        !ns.ping(),
        "ping went through an XDP program that drops ICMP"
    );
    assert!(
        d.map_u64(id, "xdp_drops") >= 1,
        "the program counted no drop"
    );

    let links = d.json(&["list", "links"]);
    assert_eq!(links.as_array().map(|a| a.len()), Some(1));
    assert_eq!(links[0]["link_id"], link);
    assert_eq!(links[0]["program_id"], id);
    assert_eq!(links[0]["iface"], ns.host_if.as_str());
    assert_eq!(links[0]["priority"], 50);
    let got = d.json(&["get", "link", &link.to_string()]);
    assert_eq!(got["type"], "xdp");
    let prog = d.json(&["get", "program", &id.to_string()]);
    assert_eq!(prog["links"], serde_json::json!([link]));

    d.json(&["detach", &link.to_string()]);
    assert!(ns.ping(), "ping still fails after detach");
    d.json(&["unload", &id.to_string()]);
    assert!(
        d.pins().is_empty(),
        "pins left after unload: {:?}",
        d.pins()
    );
}

#[test]
fn xdp_in_another_network_namespace() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    let id = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    // The peer end lives in the test namespace: only --netns finds it.
    let err = d.fails(&["attach", &id.to_string(), "xdp", "-i", &ns.peer_if]);
    assert!(err.contains("does not exist"), "{err}");
    let link = d.attach(&[
        &id.to_string(),
        "xdp",
        "-i",
        &ns.peer_if,
        "--netns",
        &ns.path(),
    ]);
    // Echo replies arrive at the peer and are ICMP: dropped there.
    assert!(
        !ns.ping(),
        "ping went through the peer's ICMP-dropping program"
    );
    d.json(&["detach", &link.to_string()]);
    assert!(ns.ping());
}

#[test]
fn global_data_changes_behaviour() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    // drop_proto = 6 (TCP): ICMP passes.
    let tcp = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
        "--global",
        "drop_proto=06",
    ]);
    let p = d.json(&["get", "program", &tcp.to_string()]);
    assert_eq!(p["global_data"]["drop_proto"], "06");
    let link = d.attach(&[&tcp.to_string(), "xdp", "-i", &ns.host_if]);
    assert!(ns.ping(), "a program told to drop TCP dropped ICMP");
    assert_eq!(d.map_u64(tcp, "xdp_drops"), 0);
    d.json(&["detach", &link.to_string()]);
    // drop_proto = 1 (ICMP) explicitly: ping stops.
    let icmp = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
        "-g",
        "drop_proto=01",
    ]);
    d.attach(&[&icmp.to_string(), "xdp", "-i", &ns.host_if]);
    assert!(!ns.ping());
}

#[test]
fn tracepoint_counts_syscalls_into_a_map() {
    require_root!();
    let d = Daemon::start();
    let me = std::process::id();
    let id = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
        "--global",
        &format!("target_tgid={}", le_hex(me)),
        "--application",
        "counter",
        "--metadata",
        "team=a,env=test",
    ]);
    getpid_syscalls(10);
    assert_eq!(d.map_u64(id, "tp_hits"), 0, "counted before being attached");
    let link = d.attach(&[
        &id.to_string(),
        "tracepoint",
        "--tracepoint",
        "syscalls/sys_enter_getpid",
    ]);
    getpid_syscalls(100);
    let hits = d.map_u64(id, "tp_hits");
    assert!(
        (100..1000).contains(&hits),
        "expected about 100 getpid calls, counted {hits}"
    );
    // Metadata and application select it.
    let sel = d.json(&["list", "programs", "--metadata-selector", "team=a"]);
    assert_eq!(sel.as_array().map(|a| a.len()), Some(1));
    assert_eq!(sel[0]["application"], "counter");
    let none = d.json(&["list", "programs", "--application", "other"]);
    assert_eq!(none.as_array().map(|a| a.len()), Some(0));
    d.json(&["detach", &link.to_string()]);
    // Perf-event links are torn down by the kernel just after detach returns
    // (docs/architecture.md, "Reaper"): within a moment the count must stop moving.
    let mut last = d.map_u64(id, "tp_hits");
    let mut stable = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        getpid_syscalls(100);
        let now = d.map_u64(id, "tp_hits");
        if now == last {
            stable = true;
            break;
        }
        last = now;
    }
    assert!(
        stable,
        "the tracepoint program still counts 2 s after detach"
    );
    getpid_syscalls(100);
    assert_eq!(d.map_u64(id, "tp_hits"), last, "counted after detach");
}

#[test]
fn uprobe_and_uretprobe_fire_on_a_test_binary() {
    require_root!();
    let d = Daemon::start();
    let exe = std::env::current_exe().unwrap().display().to_string();
    let progs = d.load(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "uprobe:uprobe_count",
        "uretprobe:uretprobe_count",
    ]);
    assert_eq!(progs[0]["type"], "uprobe");
    assert_eq!(progs[1]["type"], "uretprobe");
    let up = progs[0]["id"].as_u64().unwrap() as u32;
    let ret = progs[1]["id"].as_u64().unwrap() as u32;
    let pid = std::process::id().to_string();
    for p in [up, ret] {
        d.attach(&[
            &p.to_string(),
            "uprobe",
            "--target",
            &exe,
            "--fn-name",
            "bpfman_uprobe_target",
            "--pid",
            &pid,
        ]);
    }
    for i in 0..25 {
        bpfman_uprobe_target(i);
    }
    // Both programs share the load's maps: they live under the first program.
    assert_eq!(d.map_u64(up, "uprobe_hits"), 25);
    assert_eq!(d.map_u64(up, "uretprobe_hits"), 25);
    let err = d.fails(&[
        "attach",
        &up.to_string(),
        "uprobe",
        "--target",
        &exe,
        "--fn-name",
        "no_such_function_here",
    ]);
    assert!(err.contains("no_such_function_here"), "{err}");
}

#[test]
fn tcx_attach_orders_by_priority_and_drops() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    let progs = d.load(&[
        "--path",
        &obj("tc_test.bpf.o"),
        "--programs",
        "tcx:tc_drop_icmp",
        "tcx:tc_count",
    ]);
    let drop = progs[0]["id"].as_u64().unwrap() as u32;
    let count = progs[1]["id"].as_u64().unwrap() as u32;
    // Attach the dropper first at priority 20, then the counter at 10: the counter
    // must still run first and see every packet.
    let l_drop = d.attach(&[
        &drop.to_string(),
        "tcx",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
        "-p",
        "20",
    ]);
    let l_count = d.attach(&[
        &count.to_string(),
        "tc",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
        "-p",
        "10",
    ]);
    assert!(!ns.ping(), "ICMP passed a TCX program that drops it");
    let seen = d.map_u64(drop, "tc_seen");
    let dropped = d.map_u64(drop, "tc_drops");
    assert!(
        dropped >= 1 && seen >= dropped,
        "seen {seen}, dropped {dropped}: counter did not run first"
    );
    let links = d.json(&["list", "links"]);
    let pos = |l: u32| Some(link_in(&links, l as u64)["position"].clone());
    assert_eq!(pos(l_count), Some(Value::from(0)));
    assert_eq!(pos(l_drop), Some(Value::from(1)));
    let err = d.fails(&[
        "attach",
        &drop.to_string(),
        "tcx",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
    ]);
    assert!(err.contains("already attached"), "{err}");
    d.json(&["detach", &l_drop.to_string()]);
    assert!(ns.ping(), "ping fails after detaching the dropper");
    let before = d.map_u64(drop, "tc_seen");
    assert!(ns.ping());
    assert!(
        d.map_u64(drop, "tc_seen") > before,
        "the counter stopped counting"
    );
}

#[test]
fn map_sharing_really_shares() {
    require_root!();
    let d = Daemon::start();
    let me = le_hex(std::process::id());
    let global = format!("target_tgid={me}");
    let owner = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_shared",
        "-g",
        &global,
    ]);
    let user = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_shared",
        "-g",
        &global,
        "--map-owner-id",
        &owner.to_string(),
    ]);
    let o = d.json(&["get", "program", &owner.to_string()]);
    let u = d.json(&["get", "program", &user.to_string()]);
    assert_eq!(u["map_owner_id"], owner);
    assert_eq!(u["map_pin_path"], o["map_pin_path"]);
    assert_eq!(o["map_used_by"], serde_json::json!([user.to_string()]));
    // The two programs reference the same kernel map.
    let ids = |v: &Value| -> BTreeSet<u64> {
        v["kernel"]["map_ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_u64())
            .collect()
    };
    assert!(
        !ids(&o).is_disjoint(&ids(&u)),
        "no map in common: {o} / {u}"
    );
    // Only the user is attached: what it writes, the owner's map holds.
    d.attach(&[
        &user.to_string(),
        "tracepoint",
        "-t",
        "syscalls/sys_enter_getppid",
    ]);
    getppid_syscalls(40);
    let n = common::read_counter(
        &std::path::Path::new(o["map_pin_path"].as_str().unwrap()).join("shared_hits"),
    );
    assert!((40..400).contains(&n), "owner's map shows {n}");
    // The owner cannot go while its maps are used.
    let err = d.fails(&["unload", &owner.to_string()]);
    assert!(err.contains("unload those first"), "{err}");
    d.json(&["unload", &user.to_string()]);
    d.json(&["unload", &owner.to_string()]);
    assert!(d.pins().is_empty(), "{:?}", d.pins());
}

#[test]
fn restart_keeps_programs_links_and_traffic_effect() {
    require_root!();
    let mut d = Daemon::start();
    let ns = Netns::new();
    let id = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    let tp = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    let link = d.attach(&[&id.to_string(), "xdp", "-i", &ns.host_if]);
    let tp_link = d.attach(&[
        &tp.to_string(),
        "tracepoint",
        "-t",
        "syscalls/sys_enter_getpid",
    ]);
    let before_p = d.json(&["list", "programs"]);
    let before_l = d.json(&["list", "links"]);
    d.kill();
    // Programs keep running while the daemon is down.
    assert!(!ns.ping(), "the XDP program stopped when the daemon died");
    d.spawn();
    assert_eq!(d.json(&["list", "programs"]), before_p);
    assert_eq!(d.json(&["list", "links"]), before_l);
    assert!(!ns.ping());
    let hits = d.map_u64(tp, "tp_hits");
    getpid_syscalls(50);
    assert!(
        d.map_u64(tp, "tp_hits") >= hits + 50,
        "tracepoint stopped counting after restart"
    );
    // New links get new ids; old ones still detach.
    d.json(&["detach", &link.to_string()]);
    assert!(ns.ping());
    let link2 = d.attach(&[&id.to_string(), "xdp", "-i", &ns.host_if]);
    assert!(link2 > tp_link && link2 > link, "link id {link2} reused");
    // A clean stop (SIGTERM) also leaves everything running.
    d.stop();
    assert!(!ns.ping());
    d.spawn();
    d.json(&["unload", &id.to_string()]);
    assert!(ns.ping());
}

#[test]
fn reconcile_drops_records_of_vanished_pins_and_orphan_pins() {
    require_root!();
    let mut d = Daemon::start();
    let a = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    let b = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_shared",
    ]);
    d.kill();
    // Someone removes a's pins behind the daemon's back, and leaves a stray pin.
    std::fs::remove_file(d.bpffs().join(format!("prog_{a}"))).unwrap();
    std::fs::remove_dir_all(d.bpffs().join(format!("maps/{a}"))).unwrap();
    std::fs::rename(
        d.bpffs().join(format!("prog_{b}")),
        d.bpffs().join("prog_999999"),
    )
    .unwrap();
    std::fs::rename(
        d.bpffs().join(format!("maps/{b}")),
        d.bpffs().join("maps/999999"),
    )
    .unwrap();
    d.spawn();
    let progs = d.json(&["list", "programs"]);
    assert_eq!(progs.as_array().map(|a| a.len()), Some(0), "{progs}");
    assert!(d.pins().is_empty(), "orphans left: {:?}", d.pins());
    let log = d.log();
    assert!(
        log.contains(&format!("program {a}")) && log.contains("prog_999999"),
        "{log}"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_nothing_behind() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    let xdp = obj("xdp_test.bpf.o");
    let not_elf = d.dir.path().join("not-elf.o");
    std::fs::write(&not_elf, b"this is not an object file").unwrap();
    let not_elf = not_elf.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "load",
                "file",
                "--path",
                "/no/such/file.o",
                "--programs",
                "xdp:x",
            ],
            "does not exist",
        ),
        (
            &["load", "file", "--path", &not_elf, "--programs", "xdp:x"],
            "not an ELF",
        ),
        (
            &["load", "file", "--path", &xdp, "--programs", "xdp:nope"],
            "not a program in this ELF",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "tracepoint:xdp_drop_proto",
            ],
            "is a xdp program",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "socket:xdp_drop_proto",
            ],
            "unknown program type",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "xdp:xdp_drop_proto",
                "-g",
                "drop_proto",
            ],
            "NAME=HEX",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "xdp:xdp_drop_proto",
                "-g",
                "drop_proto=zz",
            ],
            "NAME=HEX",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "xdp:xdp_drop_proto",
                "-g",
                "nosuch=01",
            ],
            "nosuch",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "xdp:xdp_drop_proto",
                "-g",
                "drop_proto=0102",
            ],
            "size",
        ),
        (
            &[
                "load",
                "file",
                "--path",
                &xdp,
                "--programs",
                "xdp:xdp_drop_proto",
                "--map-owner-id",
                "4000000",
            ],
            "4000000",
        ),
        (
            &["attach", "4000000", "xdp", "-i", "lo"],
            "program 4000000 is not loaded by bpfman",
        ),
        (&["detach", "4000000"], "link 4000000 does not exist"),
        (
            &["unload", "4000000"],
            "program 4000000 is not loaded by bpfman",
        ),
        (&["get", "link", "4000000"], "link 4000000 does not exist"),
    ];
    for (args, want) in cases {
        let err = d.fails(args);
        assert!(
            err.contains(want),
            "bpfman {}: expected '{want}' in: {err}",
            args.join(" ")
        );
    }
    let id = d.load_one(&["--path", &xdp, "--programs", "xdp:xdp_drop_proto"]);
    let sid = id.to_string();
    let attach_cases: &[(&[&str], &str)] = &[
        (
            &["attach", &sid, "xdp", "-i", "nosuchif0"],
            "interface 'nosuchif0' does not exist",
        ),
        (
            &["attach", &sid, "xdp", "-i", &ns.host_if, "-p", "0"],
            "priority 0 is out of range",
        ),
        (
            &[
                "attach",
                &sid,
                "xdp",
                "-i",
                &ns.host_if,
                "--proceed-on",
                "explode",
            ],
            "unknown xdp --proceed-on",
        ),
        (
            &[
                "attach",
                &sid,
                "tracepoint",
                "-t",
                "syscalls/sys_enter_getpid",
            ],
            "cannot be attached as tracepoint",
        ),
        (
            &[
                "attach",
                &sid,
                "xdp",
                "-i",
                &ns.host_if,
                "--netns",
                "/no/such/netns",
            ],
            "network namespace",
        ),
    ];
    for (args, want) in attach_cases {
        let err = d.fails(args);
        assert!(
            err.contains(want),
            "bpfman {}: expected '{want}' in: {err}",
            args.join(" ")
        );
    }
    // Duplicate attach on one interface.
    let link = d.attach(&[&sid, "xdp", "-i", &ns.host_if]);
    let err = d.fails(&["attach", &sid, "xdp", "-i", &ns.host_if]);
    assert!(err.contains("already has XDP program"), "{err}");
    let tp = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    let err = d.fails(&[
        "attach",
        &tp.to_string(),
        "tracepoint",
        "-t",
        "nosuchcat/nosuchtp",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    let err = d.fails(&["attach", &tp.to_string(), "tracepoint", "-t", "nocategory"]);
    assert!(err.contains("CATEGORY/NAME"), "{err}");

    // Nothing but what succeeded is left: one program's pin, its maps, one link.
    let mut want = vec![
        format!("links/{link}"),
        format!("maps/{id}/chain_hits"),
        format!("maps/{id}/frags_seen"),
        format!("maps/{id}/xdp_drops"),
        format!("maps/{id}/xdp_seen"),
        format!("maps/{tp}/tp_hits"),
        format!("prog_{id}"),
        format!("prog_{tp}"),
    ];
    let mut pins: Vec<String> = d
        .pins()
        .into_iter()
        .filter(|p| !p.starts_with(&format!("maps/{tp}/")) || p.ends_with("tp_hits"))
        .collect();
    pins.sort();
    want.sort();
    assert_eq!(pins, want);
    let links = d.json(&["list", "links"]);
    assert_eq!(links.as_array().map(|a| a.len()), Some(1), "{links}");
    // The daemon still serves.
    assert!(d.json(&["system", "info"])["kernel_release"].is_string());
}

#[test]
fn client_errors_without_daemon_and_with_bad_flags() {
    let out = std::process::Command::new(common::BPFMAN)
        .args(["list", "programs"])
        .env("BPFMAN_SOCKET", "/nonexistent/bpfman.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `bpfman daemon` running"), "{err}");
}

#[test]
fn list_all_includes_kernel_programs_not_loaded_by_bpfman() {
    require_root!();
    let d = Daemon::start();
    let id = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    let mine = d.json(&["list", "programs"]);
    assert_eq!(mine.as_array().map(|a| a.len()), Some(1));
    let all = d.json(&["list", "programs", "--all"]);
    let arr = all.as_array().unwrap();
    assert!(arr.iter().any(|p| p["id"] == id && p["managed"] == true));
    // Other daemons' (parallel tests') programs and the kernel's own show as unmanaged.
    assert!(
        arr.iter()
            .all(|p| p["id"].is_u64() && p["name"].is_string() && p["type"].is_string())
    );
    let tps = d.json(&["list", "programs", "--program-type", "tracepoint"]);
    assert_eq!(tps.as_array().map(|a| a.len()), Some(1));
    let xdps = d.json(&["list", "programs", "--program-type", "xdp"]);
    assert_eq!(xdps.as_array().map(|a| a.len()), Some(0));
}

/// kprobe/kretprobe: fire in the VM; on a kernel without kprobes, a clear refusal.
#[test]
fn kprobe_and_kretprobe_count_calls() {
    require_root!();
    let d = Daemon::start();
    let me = le_hex(std::process::id());
    let progs = d.load(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "kprobe:kprobe_count",
        "kretprobe:kretprobe_count",
        "-g",
        &format!("target_tgid={me}"),
    ]);
    assert_eq!(progs[1]["type"], "kretprobe");
    let kp = progs[0]["id"].as_u64().unwrap() as u32;
    let kr = progs[1]["id"].as_u64().unwrap() as u32;
    let f = "__x64_sys_getpid";
    if !has_feature(&d, "kprobe") {
        let err = d.fails(&["attach", &kp.to_string(), "kprobe", "--fn-name", f]);
        assert!(err.contains("'kprobe'"), "{err}");
        eprintln!("SKIP kprobe firing: this kernel has no kprobes; scripts/vm-test.sh runs it");
        return;
    }
    d.attach(&[&kp.to_string(), "kprobe", "--fn-name", f]);
    d.attach(&[&kr.to_string(), "kprobe", "--fn-name", f]);
    getpid_syscalls(30);
    std::thread::sleep(Duration::from_millis(10));
    let (a, b) = (
        d.map_u64(kp, "kprobe_hits"),
        d.map_u64(kp, "kretprobe_hits"),
    );
    assert!((30..300).contains(&a), "kprobe counted {a}");
    assert!((30..300).contains(&b), "kretprobe counted {b}");
    let _ = kr;
}

/// Naming an interface never makes the daemon load a kernel module. The daemon has
/// CAP_SYS_MODULE, and the kernel answers a name ioctl for an unknown device with
/// `request_module("netdev-NAME")` and `request_module("NAME")`: a tenant attaching to
/// "dummy" would load the dummy driver (and get a dummy0). Interfaces are looked up in
/// the netlink link dump instead. Needs a kernel with modules and a loadable, unloaded
/// `dummy` (the VM's stock kernels; scripts/vm-test.sh runs it as `modules`).
#[test]
fn modules_are_never_loaded_by_naming_an_interface() {
    require_root!();
    let module = "dummy";
    if !std::path::Path::new("/proc/sys/kernel/modprobe").exists() {
        eprintln!("SKIP modules: this kernel has no loadable modules; scripts/vm-test.sh runs it");
        return;
    }
    if std::path::Path::new(&format!("/sys/module/{module}")).exists() {
        eprintln!("SKIP modules: {module} is already loaded, so loading it could not be seen");
        return;
    }
    // The kernel could load it: so the check below can fail.
    let loadable = std::process::Command::new("modprobe")
        .args(["--dry-run", module])
        .output()
        .is_ok_and(|o| o.status.success());
    if !loadable {
        eprintln!("SKIP modules: no loadable {module} module for this kernel");
        return;
    }
    let d = Daemon::start();
    let progs = d.load(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_drop_proto",
    ]);
    let id = progs[0]["id"].as_u64().unwrap_or(0).to_string();
    let err = d.fails(&["attach", &id, "xdp", "--iface", module]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !std::path::Path::new(&format!("/sys/module/{module}")).exists(),
        "naming interface '{module}' made the daemon load the {module} module"
    );
}

/// fentry/fexit: fire in the VM; on a kernel that refuses them, a clear refusal.
#[test]
fn fentry_and_fexit_count_calls() {
    require_root!();
    let d = Daemon::start();
    let me = le_hex(std::process::id());
    // In BTF on every kernel since 5.6 (syscall wrappers often are not).
    let f = "do_sys_openat2";
    let args = [
        "--path".to_string(),
        obj("tracing_test.bpf.o"),
        "--programs".into(),
        format!("fentry:fentry_count:{f}"),
        format!("fexit:fexit_count:{f}"),
        "-g".into(),
        format!("target_tgid={me}"),
    ];
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    if !has_feature(&d, "fentry") {
        let mut a = vec!["load", "file"];
        a.extend_from_slice(&args);
        let err = d.fails(&a);
        assert!(err.contains("'fentry'"), "{err}");
        assert!(d.pins().is_empty(), "{:?}", d.pins());
        eprintln!("SKIP fentry/fexit firing: this kernel refuses them; scripts/vm-test.sh runs it");
        return;
    }
    let progs = d.load(&args);
    assert_eq!(progs[0]["type"], "fentry");
    assert_eq!(progs[1]["type"], "fexit");
    assert_eq!(progs[0]["attach_fn"], f);
    let fe = progs[0]["id"].as_u64().unwrap() as u32;
    let fx = progs[1]["id"].as_u64().unwrap() as u32;
    d.attach(&[&fe.to_string(), "fentry"]);
    d.attach(&[&fx.to_string(), "fexit"]);
    for _ in 0..30 {
        drop(std::fs::File::open("/proc/self/stat"));
    }
    let (a, b) = (d.map_u64(fe, "fentry_hits"), d.map_u64(fe, "fexit_hits"));
    assert!((30..300).contains(&a), "fentry counted {a}");
    assert!((30..300).contains(&b), "fexit counted {b}");
}

/// lsm: a program on the file_open hook denies opening one file the test picks (by
/// inode number and size), other files open, and Detach allows it again. Runs in the VM
/// (Debian's kernels have `bpf` among their LSMs); where the kernel refuses LSM
/// programs, the refusal names the kernel's answer and nothing is left behind.
#[test]
fn lsm_file_open_denies_one_file_until_detached() {
    use std::os::unix::fs::MetadataExt;
    require_root!();
    let d = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("denied");
    let other = dir.path().join("allowed");
    // A size no other file near it has, as the second half of the match.
    std::fs::write(&victim, vec![b'x'; 7919]).expect("writing");
    std::fs::write(&other, b"y").expect("writing");
    let md = std::fs::metadata(&victim).expect("stat");
    let hex = |v: u64| -> String { v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect() };
    let args = [
        "--path".to_string(),
        obj("lsm_test.bpf.o"),
        "--programs".into(),
        "lsm:lsm_deny_open:file_open".into(),
        "-g".into(),
        format!("deny_ino={}", hex(md.ino())),
        "-g".into(),
        format!("deny_size={}", hex(md.len())),
    ];
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    if !has_feature(&d, "lsm") {
        let mut a = vec!["load", "file"];
        a.extend_from_slice(&args);
        let err = d.fails(&a);
        assert!(err.contains("'lsm'") && err.contains("kernel"), "{err}");
        assert!(d.pins().is_empty(), "{:?}", d.pins());
        eprintln!(
            "SKIP lsm firing: this kernel refuses LSM programs ({}); scripts/vm-test.sh runs it",
            d.json(&["system", "info"])["features"]["lsm"]["detail"]
        );
        return;
    }
    // The hook is required at load.
    let err = d.fails(&[
        "load",
        "file",
        "--path",
        &obj("lsm_test.bpf.o"),
        "--programs",
        "lsm:lsm_deny_open",
    ]);
    assert!(err.contains("hook"), "{err}");
    let progs = d.load(&args);
    assert_eq!(progs[0]["type"], "lsm");
    assert_eq!(progs[0]["attach_fn"], "file_open");
    let id = progs[0]["id"].as_u64().unwrap() as u32;
    // Loaded, not attached: nothing is denied yet.
    assert!(std::fs::File::open(&victim).is_ok());
    let link = d.attach(&[&id.to_string(), "lsm"]);
    let e = std::fs::File::open(&victim).expect_err("the LSM program should deny the open");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(
        std::fs::File::open(&other).is_ok(),
        "another file was denied"
    );
    assert_eq!(d.map_u64(id, "lsm_denials"), 1);
    d.json(&["detach", &link.to_string()]);
    assert!(
        std::fs::File::open(&victim).is_ok(),
        "still denied after Detach returned"
    );
    d.json(&["unload", &id.to_string()]);
}

#[test]
fn config_sets_xdp_mode_and_bad_config_is_refused_with_its_line() {
    require_root!();
    let ns = Netns::new();
    let d = Daemon::start_with_config(&format!(
        "[interfaces.{}]\nxdp_mode = \"skb\"\n",
        ns.host_if
    ));
    let id = d.load_one(&[
        "--path",
        &obj("xdp_test.bpf.o"),
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    d.attach(&[&id.to_string(), "xdp", "-i", &ns.host_if]);
    let out = std::process::Command::new("ip")
        .args(["link", "show", "dev", &ns.host_if])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("xdpgeneric"),
        "not in skb (generic) mode: {text}"
    );
    assert!(ns.ping());
    assert!(d.map_u64(id, "xdp_seen") >= 1);

    // A config that does not parse: the daemon refuses to start and names the line.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[api]\nsocket_group = \"x\"\nsocket_grup = 1\n").unwrap();
    let out = std::process::Command::new(common::BPFMAN)
        .args(["daemon", "--runtime-dir"])
        .arg(dir.path().join("run"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3") && err.contains("socket_grup"),
        "{err}"
    );
}

/// Several XDP programs on one interface through the dispatcher: order by priority,
/// proceed-on semantics, detaching the middle one, a restart, and no lost packets.
/// Runs fully where the kernel has freplace (the VM); elsewhere checks the refusal.
#[test]
fn xdp_dispatcher_chains_programs_in_order() {
    require_root!();
    let mut d = Daemon::start();
    let ns = Netns::new();
    let load = |d: &Daemon, ret: &str| {
        d.load_one(&[
            "--path",
            &obj("xdp_test.bpf.o"),
            "--programs",
            "xdp:xdp_chain",
            "-g",
            &format!("ret_code={ret}"),
        ])
    };
    const PASS: &str = "02000000";
    const DROP: &str = "01000000";
    let a = load(&d, PASS);
    let b = load(&d, DROP);
    let c = load(&d, PASS);
    let attach = |d: &Daemon, id: u32, prio: &str, extra: &[&str]| {
        let mut args = vec![
            id.to_string(),
            "xdp".into(),
            "-i".into(),
            ns.host_if.clone(),
            "-p".into(),
            prio.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        d.attach(&args)
    };
    if !has_feature(&d, "freplace") {
        attach(&d, a, "10", &[]);
        let err = d.fails(&[
            "attach",
            &b.to_string(),
            "xdp",
            "-i",
            &ns.host_if,
            "-p",
            "20",
        ]);
        assert!(err.contains("'freplace'"), "{err}");
        eprintln!(
            "SKIP dispatcher chains: this kernel has no freplace; scripts/vm-test.sh runs it"
        );
        return;
    }
    let hits = |d: &Daemon, id: u32| d.map_u64(id, "chain_hits");
    // C (prio 30) attached first, then A (10), then B (20): order must be A, B, C.
    let lc = attach(&d, c, "30", &[]);
    // A lone program runs directly: no dispatcher in the way.
    assert_eq!(
        d.json(&["get", "link", &lc.to_string()])["dispatcher_revision"],
        0
    );
    let la = attach(&d, a, "10", &[]);
    assert!(ns.ping(), "two passing programs dropped ping");
    let lb = attach(&d, b, "20", &[]);
    let links = d.json(&["list", "links"]);
    let get = |l: u32| link_in(&links, l as u64);
    assert_eq!(get(la)["position"], 0);
    assert_eq!(get(lb)["position"], 1);
    assert_eq!(get(lc)["position"], 2);
    let rev = get(lb)["dispatcher_revision"].as_u64().unwrap();
    assert!(rev >= 3, "revision {rev} after three attaches");
    // B returns drop and drop is not in its proceed-on: the chain stops at B.
    let (a0, b0, c0) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(!ns.ping(), "B should have dropped ICMP");
    let (a1, b1, c1) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(
        a1 > a0 && b1 > b0,
        "A and B must have run: {a0}->{a1}, {b0}->{b1}"
    );
    assert_eq!(c1, c0, "C ran after B dropped");
    // Detach the middle program: A and C keep running, in order, and ping passes.
    d.json(&["detach", &lb.to_string()]);
    assert!(ns.ping());
    assert!(
        hits(&d, c) > c1,
        "C stopped running after the middle detach"
    );
    // B again, with drop in its proceed-on: the chain goes on to C, whose pass wins.
    let lb2 = attach(&d, b, "20", &["--proceed-on", "pass", "drop"]);
    let (a2, b2, c2) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(ns.ping(), "C's pass should win after B's proceed-on drop");
    assert!(hits(&d, a) > a2 && hits(&d, b) > b2 && hits(&d, c) > c2);
    // A restart with the dispatcher in place, then another attach.
    d.kill();
    assert!(ns.ping(), "the dispatcher stopped when the daemon died");
    d.spawn();
    let e = load(&d, PASS);
    let le = attach(&d, e, "40", &[]);
    let links = d.json(&["list", "links"]);
    assert_eq!(links.as_array().unwrap().len(), 4, "{links}");
    assert!(ns.ping());
    assert!(hits(&d, e) >= 1);
    // Ping through attaches and detaches of passing programs loses no packet.
    let pinger = ns.ping_in_background(60, "0.05");
    d.json(&["detach", &lb2.to_string()]);
    let lb3 = attach(&d, b, "25", &["--proceed-on", "pass", "drop"]);
    d.json(&["detach", &le.to_string()]);
    d.json(&["detach", &lb3.to_string()]);
    let out = pinger.join().unwrap();
    assert!(
        out.contains(" 0% packet loss"),
        "packets lost during rebuilds: {out}"
    );
    d.json(&["detach", &la.to_string()]);
    d.json(&["detach", &lc.to_string()]);
    assert!(ns.ping());
    // The last detach removed the hook's dispatcher state (only the shared extension
    // target stays).
    let left: Vec<String> = std::fs::read_dir(d.bpffs().join("dispatchers"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        left,
        vec!["ext-target".to_string()],
        "dispatcher state left behind"
    );
}

/// Several TC programs on one hook through the TC dispatcher on a kernel without TCX
/// (classic clsact filter, program replaced in place): order by priority, proceed-on
/// with TC codes, the middle detach, a restart, no lost packets, and the 11th program
/// refused. Runs fully where the kernel has freplace and lacks TCX (the VM's 6.1);
/// where TCX exists tc programs go through TCX instead (tests above).
#[test]
fn tc_dispatcher_chains_programs_in_order() {
    require_root!();
    let mut d = Daemon::start();
    let tcx = has_feature(&d, "tcx");
    if tcx && !has_feature(&d, "freplace") {
        eprintln!(
            "SKIP tc dispatcher chains: this kernel has TCX but no freplace, so tc programs \
             share hooks through TCX (tcx_attach_orders_by_priority_and_drops); \
             scripts/vm-test.sh runs the TC dispatcher on Linux 6.1 (classic clsact) and \
             6.12 (behind a TCX link)"
        );
        return;
    }
    let ns = Netns::new();
    let load = |d: &Daemon, ret: &str| {
        d.load_one(&[
            "--path",
            &obj("tc_test.bpf.o"),
            "--programs",
            "tc:tc_chain",
            "-g",
            &format!("ret_code={ret}"),
        ])
    };
    const OK: &str = "00000000";
    const SHOT: &str = "02000000";
    let attach = |d: &Daemon, id: u32, prio: &str, extra: &[&str]| {
        let mut args = vec![
            id.to_string(),
            "tc".into(),
            "-d".into(),
            "ingress".into(),
            "-i".into(),
            ns.host_if.clone(),
            "-p".into(),
            prio.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        d.attach(&args)
    };
    let a = load(&d, OK);
    let b = load(&d, SHOT);
    let c = load(&d, OK);
    if !has_feature(&d, "freplace") {
        attach(&d, a, "10", &[]);
        assert!(ns.ping(), "a lone passing tc program dropped ping");
        let err = d.fails(&[
            "attach",
            &b.to_string(),
            "tc",
            "-d",
            "ingress",
            "-i",
            &ns.host_if,
            "-p",
            "20",
        ]);
        assert!(err.contains("'freplace'"), "{err}");
        eprintln!("SKIP tc dispatcher chains: no freplace here; scripts/vm-test.sh runs it");
        return;
    }
    let hits = |d: &Daemon, id: u32| d.map_u64(id, "chain_hits");
    let lc = attach(&d, c, "30", &[]);
    // A lone program runs directly as the clsact filter.
    assert_eq!(
        d.json(&["get", "link", &lc.to_string()])["dispatcher_revision"],
        0
    );
    assert!(ns.ping(), "a lone passing tc program dropped ping");
    assert!(hits(&d, c) >= 1, "the lone tc program did not run");
    let la = attach(&d, a, "10", &[]);
    assert!(ns.ping(), "two passing programs dropped ping");
    let lb = attach(&d, b, "20", &[]);
    let links = d.json(&["list", "links"]);
    let get = |l: u32| link_in(&links, l as u64);
    assert_eq!(get(la)["position"], 0);
    assert_eq!(get(lb)["position"], 1);
    assert_eq!(get(lc)["position"], 2);
    assert!(get(lb)["dispatcher_revision"].as_u64().unwrap() >= 3);
    // B returns shot, not in its proceed-on (default ok, pipe, dispatcher_return): the
    // chain stops at B and the packet is dropped.
    let (a0, b0, c0) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(!ns.ping(), "B should have dropped ICMP");
    let (a1, b1, c1) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(
        a1 > a0 && b1 > b0,
        "A and B must have run: {a0}->{a1}, {b0}->{b1}"
    );
    assert_eq!(c1, c0, "C ran after B's shot");
    // Detach the middle: A and C run on, ping passes.
    d.json(&["detach", &lb.to_string()]);
    assert!(ns.ping());
    assert!(
        hits(&d, c) > c1,
        "C stopped running after the middle detach"
    );
    // B with shot in its proceed-on: the chain goes on to C, whose ok wins.
    let lb2 = attach(&d, b, "20", &["--proceed-on", "ok", "shot"]);
    let (a2, b2, c2) = (hits(&d, a), hits(&d, b), hits(&d, c));
    assert!(ns.ping(), "C's ok should win after B's proceed-on shot");
    assert!(hits(&d, a) > a2 && hits(&d, b) > b2 && hits(&d, c) > c2);
    // Restart with the dispatcher in place, then another attach.
    d.kill();
    assert!(ns.ping(), "the tc dispatcher stopped when the daemon died");
    d.spawn();
    let e = load(&d, OK);
    let le = attach(&d, e, "40", &[]);
    assert_eq!(d.json(&["list", "links"]).as_array().unwrap().len(), 4);
    assert!(ns.ping());
    assert!(hits(&d, e) >= 1);
    // Ping through attaches and detaches loses no packet.
    let pinger = ns.ping_in_background(60, "0.05");
    d.json(&["detach", &lb2.to_string()]);
    let lb3 = attach(&d, b, "25", &["--proceed-on", "ok", "shot"]);
    d.json(&["detach", &le.to_string()]);
    d.json(&["detach", &lb3.to_string()]);
    let out = pinger.join().unwrap();
    assert!(
        out.contains(" 0% packet loss"),
        "packets lost during rebuilds: {out}"
    );
    if tcx {
        tcx_programs_run_before_the_tc_dispatcher(&d, &ns, a, la);
    } else {
        clsact_deleted_under_the_tc_dispatcher_is_put_back(&d, &ns, a);
    }
    // Ten programs fill the dispatcher; the 11th is refused with a clear error.
    let mut more = Vec::new();
    for i in 0..8 {
        let id = load(&d, OK);
        more.push(attach(&d, id, &(100 + i).to_string(), &[]));
    }
    assert_eq!(d.json(&["list", "links"]).as_array().unwrap().len(), 10);
    let eleventh = load(&d, OK);
    let err = d.fails(&[
        "attach",
        &eleventh.to_string(),
        "tc",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
        "-p",
        "500",
    ]);
    assert!(err.contains("the most one dispatcher holds"), "{err}");
    assert!(ns.ping(), "ten passing programs dropped ping");
    for l in more.into_iter().chain([la, lc]) {
        d.json(&["detach", &l.to_string()]);
    }
    assert!(ns.ping());
    // The last detach removed the filter and the hook's dispatcher state.
    let out = std::process::Command::new("tc")
        .args(["filter", "show", "dev", &ns.host_if, "ingress"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "tc filter left behind"
    );
    let left: Vec<String> = std::fs::read_dir(d.bpffs().join("dispatchers"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n.starts_with("ext-target")),
        "dispatcher state left behind: {left:?}"
    );
    let out = std::process::Command::new("bpftool")
        .args(["net", "show", "dev", &ns.host_if])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(!out.contains("tcx/"), "TCX link left behind: {out}");
}

/// Outside interference with a classic TC dispatcher: its clsact qdisc deleted. The
/// programs stop seeing packets; reconciliation notices and puts the filter back.
fn clsact_deleted_under_the_tc_dispatcher_is_put_back(d: &Daemon, ns: &Netns, a: u32) {
    let hits = |id: u32| d.map_u64(id, "chain_hits");
    let st = std::process::Command::new("tc")
        .args(["qdisc", "del", "dev", &ns.host_if, "clsact"])
        .status()
        .unwrap();
    assert!(st.success(), "tc qdisc del failed");
    let a3 = hits(a);
    assert!(ns.ping());
    assert_eq!(hits(a), a3, "A ran with its qdisc deleted");
    let r = d.json(&["system", "reconcile"]);
    assert!(r.to_string().contains("tc filter was gone"), "{r}");
    assert!(ns.ping());
    assert!(hits(a) > a3, "A does not run again after the repair");
}

/// On a kernel with TCX the TC dispatcher sits in the hook's TCX list behind a link,
/// after every tcx program whatever its priority (classic TC runs after TCX too): a
/// tcx program that drops ICMP at priority 900 stops ping before the dispatcher's
/// programs (priority 10 and up) see it; detached, they run again.
fn tcx_programs_run_before_the_tc_dispatcher(d: &Daemon, ns: &Netns, a: u32, la: u32) {
    let hits = |id: u32| d.map_u64(id, "chain_hits");
    let dropper = d.load_one(&[
        "--path",
        &obj("tc_test.bpf.o"),
        "--programs",
        "tcx:tc_drop_icmp",
    ]);
    let ld = d.attach(&[
        &dropper.to_string(),
        "tcx",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
        "-p",
        "900",
    ]);
    let a0 = hits(a);
    assert!(
        !ns.ping(),
        "the tcx dropper did not run before the dispatcher"
    );
    assert!(
        d.map_u64(dropper, "tc_drops") >= 1,
        "the tcx dropper saw nothing"
    );
    assert_eq!(hits(a), a0, "the dispatcher ran before the tcx program");
    let links = d.json(&["list", "links"]);
    let pos = |l: u32| Some(link_in(&links, l as u64)["position"].clone());
    assert_eq!(pos(ld), Some(Value::from(0)), "{links}");
    assert_eq!(pos(la), Some(Value::from(1)), "{links}");
    assert_eq!(
        d.json(&["get", "link", &ld.to_string()])["dispatcher_revision"],
        0
    );
    // A rebuild (one more tc program) swaps the program of the dispatcher's TCX link
    // in place: the dispatcher keeps its place after the tcx program.
    let extra = d.load_one(&[
        "--path",
        &obj("tc_test.bpf.o"),
        "--programs",
        "tc:tc_chain",
        "-g",
        "ret_code=00000000",
    ]);
    let lx = d.attach(&[
        &extra.to_string(),
        "tc",
        "-d",
        "ingress",
        "-i",
        &ns.host_if,
        "-p",
        "1",
    ]);
    assert!(
        !ns.ping(),
        "the tcx dropper stopped running after a rebuild"
    );
    assert_eq!(
        hits(a),
        a0,
        "the rebuilt dispatcher moved ahead of the tcx program"
    );
    d.json(&["detach", &ld.to_string()]);
    assert!(ns.ping(), "ping fails after detaching the tcx dropper");
    assert!(
        hits(a) > a0,
        "the dispatcher does not run after the tcx program left"
    );
    d.json(&["detach", &lx.to_string()]);
    d.json(&["unload", &dropper.to_string()]);
    d.json(&["unload", &extra.to_string()]);
}

/// XDP multi-buffer: on a jumbo-MTU veth, two programs built with SEC("xdp.frags") run
/// through a dispatcher loaded with frags support and see 8 KB pings; a program without
/// it is refused with a clear error and the running dispatcher stays. Needs freplace
/// (the VM); on the host it checks the lone frags program only.
#[test]
fn xdp_dispatcher_supports_frags_when_every_program_does() {
    require_root!();
    let d = Daemon::start();
    let ns = Netns::new();
    let mtu = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {}", args.join(" "));
    };
    mtu(&["link", "set", &ns.host_if, "mtu", "9000"]);
    mtu(&[
        "netns",
        "exec",
        &ns.name,
        "ip",
        "link",
        "set",
        &ns.peer_if,
        "mtu",
        "9000",
    ]);
    let big_ping = || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "-s",
                "8000",
                &ns.host_ip,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        big_ping(),
        "no jumbo connectivity before attaching anything"
    );
    let load = |name: &str| {
        d.load_one(&[
            "--path",
            &obj("xdp_test.bpf.o"),
            "--programs",
            &format!("xdp:{name}"),
        ])
    };
    let a = load("xdp_frags_count");
    let la = d.attach(&[&a.to_string(), "xdp", "-i", &ns.host_if, "-p", "10"]);
    assert!(big_ping(), "8 KB ping failed through a frags program");
    assert!(d.map_u64(a, "frags_seen") >= 1);
    if !has_feature(&d, "freplace") {
        d.json(&["detach", &la.to_string()]);
        eprintln!("SKIP xdp frags dispatcher: no freplace here; scripts/vm-test.sh runs it");
        return;
    }
    let b = load("xdp_frags_count");
    d.attach(&[&b.to_string(), "xdp", "-i", &ns.host_if, "-p", "20"]);
    let (a0, b0) = (d.map_u64(a, "frags_seen"), d.map_u64(b, "frags_seen"));
    assert!(big_ping(), "8 KB ping failed through the frags dispatcher");
    assert!(d.map_u64(a, "frags_seen") > a0 && d.map_u64(b, "frags_seen") > b0);
    // A program without frags support cannot join: refused, and the chain stays.
    let c = load("xdp_count_pass");
    let e = d.fails(&[
        "attach",
        &c.to_string(),
        "xdp",
        "-i",
        &ns.host_if,
        "-p",
        "30",
    ]);
    assert!(e.contains("xdp.frags"), "{e}");
    assert_eq!(d.json(&["list", "links"]).as_array().unwrap().len(), 2);
    let a1 = d.map_u64(a, "frags_seen");
    assert!(
        big_ping(),
        "the running dispatcher stopped after the refused attach"
    );
    assert!(d.map_u64(a, "frags_seen") > a1);
}
