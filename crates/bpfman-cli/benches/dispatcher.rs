//! Dispatcher overhead in ns per packet, with BPF_PROG_TEST_RUN (repeat), for 1, 2, 5 and
//! 10 programs: bpfman's XDP dispatcher, the same program run directly, and libxdp's
//! dispatcher (`xdp-loader`), all in one run. Needs root and a kernel with freplace
//! (run it through `scripts/bench-dispatcher.sh`, which boots the VM).

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::BPFMAN;

fn bpf(cmd: u64, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: attr is a zeroed bpf_attr-sized buffer laid out for `cmd`.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn obj_get(path: &Path) -> i32 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let mut attr = [0u8; 128];
    attr[..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(7, &mut attr);
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    fd as i32
}

fn fd_by_id(id: u32) -> i32 {
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(13, &mut attr);
    assert!(
        fd >= 0,
        "BPF_PROG_GET_FD_BY_ID {id}: {}",
        std::io::Error::last_os_error()
    );
    fd as i32
}

/// Average ns per run of an XDP program over `repeat` runs on a 64-byte UDP frame.
fn test_run(fd: i32, repeat: u32) -> (u32, u32) {
    let mut pkt = [0u8; 64];
    pkt[12] = 0x08; // IPv4
    pkt[14] = 0x45;
    pkt[16..18].copy_from_slice(&50u16.to_be_bytes());
    pkt[22] = 64;
    pkt[23] = 17; // UDP
    let mut out = [0u8; 256];
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(pkt.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    let r = bpf(10, &mut attr);
    assert!(
        r == 0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    let retval = u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]);
    let duration = u32::from_ne_bytes([attr[36], attr[37], attr[38], attr[39]]);
    (retval, duration)
}

fn cli(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    let o = Command::new(BPFMAN)
        .args(&a)
        .env("BPFMAN_SOCKET", sock)
        .output()
        .expect("bpfman");
    assert!(
        o.status.success(),
        "bpfman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

fn sh(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        o.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The id of the XDP program on an interface (`ip -d link`: "prog/xdp id N").
fn xdp_prog_on(iface: &str) -> u32 {
    let out = sh(&["ip", "-d", "link", "show", "dev", iface]);
    out.split("prog/xdp id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {out}"))
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP dispatcher bench: needs root");
        return;
    }
    let repeat: u32 = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let obj = common::object("xdp_test.bpf.o");

    let daemon = common::BenchDaemon::start("bdisp0");
    let sock = daemon.sock.clone();
    let info = cli(&sock, &["system", "info"]);
    if info["features"]["freplace"]["supported"] != true {
        eprintln!(
            "SKIP dispatcher bench: no freplace here ({})",
            info["features"]["freplace"]["detail"]
        );
        return;
    }
    daemon.veth_pair("bdisp1");
    let bpffs = daemon.bpffs();

    // Direct: the program alone.
    let load_count_pass = || -> u64 {
        cli(
            &sock,
            &[
                "load",
                "file",
                "--path",
                &obj,
                "--programs",
                "xdp:xdp_count_pass",
            ],
        )[0]["id"]
            .as_u64()
            .expect("id")
    };
    let direct_id = load_count_pass() as u32;
    let direct_fd = obj_get(&bpffs.join(format!("prog_{direct_id}")));
    assert_eq!(test_run(direct_fd, 1000).0, 2, "XDP_PASS expected");

    let has_xdp_loader = Command::new("xdp-loader")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let rounds = 6;
    // Each count is set up `setups` times from scratch (fresh loads: the programs land
    // elsewhere in memory each time) and the samples of all setups pooled, so one lucky
    // or unlucky placement does not decide the comparison.
    let setups: usize = std::env::var("BENCH_SETUPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    // Under `-icount shift=0` (scripts/bench-dispatcher.sh's default) the guest clock
    // counts executed instructions: one "ns" is one x86 instruction.
    let clock = std::env::var("BENCH_CLOCK").unwrap_or_else(|_| "wall".into());
    println!(
        "## XDP dispatcher overhead (BPF_PROG_TEST_RUN, clock {clock}, {repeat} runs per sample, median of {rounds} interleaved samples x {setups} fresh setups, 64-byte frame)\n"
    );
    println!("| programs | direct (1 program) ns | bpfman dispatcher ns | libxdp dispatcher ns |");
    println!("|---|---|---|---|");
    let median = |mut v: Vec<u32>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    for n in [1usize, 2, 5, 10] {
        let (mut d, mut o, mut t) = (Vec::new(), Vec::new(), Vec::new());
        let mut theirs_err = None;
        for _setup in 0..setups {
            let mut links = Vec::new();
            let mut progs = Vec::new();
            for i in 0..n {
                let id = load_count_pass();
                let l = cli(
                    &sock,
                    &[
                        "attach",
                        &id.to_string(),
                        "xdp",
                        "-i",
                        "bdisp0",
                        "-p",
                        &(i + 1).to_string(),
                    ],
                )["link_id"]
                    .as_u64()
                    .expect("link");
                progs.push(id);
                links.push(l);
            }
            let ours_fd = fd_by_id(xdp_prog_on("bdisp0"));
            assert_eq!(test_run(ours_fd, 1000).0, 2, "the dispatcher should pass");
            let theirs_fd = if has_xdp_loader {
                let mut args = vec![
                    "xdp-loader",
                    "load",
                    "-m",
                    "skb",
                    "-n",
                    "xdp_count_pass",
                    "bdisp1",
                ];
                for _ in 0..n {
                    args.push(&obj);
                }
                let o = Command::new(args[0])
                    .args(&args[1..])
                    .output()
                    .expect("xdp-loader");
                if o.status.success() {
                    Ok(fd_by_id(xdp_prog_on("bdisp1")))
                } else {
                    Err(format!(
                        "failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ))
                }
            } else {
                Err("n/a (no xdp-loader)".to_string())
            };
            // Alternate which dispatcher runs first in a round, so neither gains from
            // running right after the other (caches, emulator state).
            for r in 0..rounds {
                d.push(test_run(direct_fd, repeat).1);
                if r % 2 == 0 {
                    o.push(test_run(ours_fd, repeat).1);
                }
                if let Ok(fd) = &theirs_fd {
                    t.push(test_run(*fd, repeat).1);
                }
                if r % 2 == 1 {
                    o.push(test_run(ours_fd, repeat).1);
                }
            }
            match &theirs_fd {
                Ok(fd) => {
                    unsafe { libc::close(*fd) };
                    let _ = Command::new("xdp-loader")
                        .args(["unload", "bdisp1", "--all"])
                        .output();
                }
                Err(e) => theirs_err = Some(e.clone()),
            }
            unsafe { libc::close(ours_fd) };
            for l in &links {
                cli(&sock, &["detach", &l.to_string()]);
            }
            for p in &progs {
                cli(&sock, &["unload", &p.to_string()]);
            }
        }
        let (direct, ours) = (median(d), median(o));
        let theirs = match theirs_err {
            Some(e) => e,
            None => median(t).to_string(),
        };
        println!("| {n} | {direct} | {ours} | {theirs} |");
        rows.push((n, ours, direct));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let per = (last.1 as f64 - first.1 as f64) / (last.0 - first.0) as f64;
        println!(
            "\nbpfman: {} ns over direct with one program; {per:.1} ns per extra program.",
            first.1 as i64 - first.2 as i64
        );
    }
    unsafe { libc::close(direct_fd) };
}
