//! Metrics benchmarks (docs/benchmarks.md "Metrics"):
//!
//! - `scrape` (the default): scrape time and size of `/metrics` with BENCH_PROGRAMS (1,000)
//!   programs loaded, each scrape reading every program's statistics from the kernel.
//! - `stats`: what kernel run statistics cost per run: BPF_PROG_TEST_RUN of an XDP program
//!   with statistics off and on, alternating in one run. Run it in the VM with the
//!   instruction-count clock (`scripts/bench-metrics.sh stats`), where "ns" per run is guest
//!   instructions and the difference is the cost of the two clock reads and the counter.

use std::process::Command;
use std::time::Instant;

mod common;

use common::BPFMAN;

fn bpf(cmd: u64, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: attr is a zeroed bpf_attr-sized buffer laid out for `cmd`.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn cli(sock: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(BPFMAN)
        .args(["-o", "json"])
        .args(args)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn scrape(port: u16) -> (f64, usize) {
    let t = Instant::now();
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
        ])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    (t.elapsed().as_secs_f64() * 1000.0, out.stdout.len())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn scrape_bench() {
    let n: usize = std::env::var("BENCH_PROGRAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let port = free_port();
    let daemon = common::BenchDaemon::start_with_config(
        "bmet0",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\nprogram_stats = true\n\n[daemon]\nreconcile_interval_secs = 0\nmax_programs = {}\nprograms_dir = \"@DIR@/programs.d\"\n",
            n + 16
        ),
    );
    let obj = common::object("tracing_test.bpf.o");
    let t = Instant::now();
    let mut first = None;
    for i in 0..n {
        let v = cli(
            &daemon.sock,
            &[
                "load",
                "file",
                "--path",
                &obj,
                "--programs",
                "tracepoint:tp_count",
            ],
        );
        if i == 0 {
            first = v[0]["id"].as_u64();
        }
    }
    // A tenth of them attached: link series too.
    let links = n / 10;
    let listed = cli(&daemon.sock, &["list", "programs"]);
    let ids: Vec<u64> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default();
    // The kernel runs at most 64 programs per tracepoint: spread them.
    let tracepoints = [
        "syscalls/sys_enter_getpid",
        "syscalls/sys_enter_getppid",
        "syscalls/sys_enter_getuid",
        "syscalls/sys_enter_getgid",
    ];
    for (i, id) in ids.iter().take(links).enumerate() {
        cli(
            &daemon.sock,
            &[
                "attach",
                &id.to_string(),
                "tracepoint",
                "--tracepoint",
                tracepoints[(i / 50) % tracepoints.len()],
            ],
        );
    }
    eprintln!(
        "loaded {n} programs ({links} attached) in {:.1} s (first id {first:?})",
        t.elapsed().as_secs_f64()
    );
    let _ = scrape(port);
    // Spaced past the endpoint's 250 ms encode sharing: every scrape reads the kernel.
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (ms, bytes) = scrape(port);
        times.push(ms);
        size = bytes;
    }
    let (p50, p95) = (pct(&mut times.clone(), 0.5), pct(&mut times, 0.95));
    println!(
        "scrape with {n} programs and {links} links (a fresh encode each): p50 {p50:.1} ms, p95 {p95:.1} ms, {size} bytes ({:.0} bytes per program), 30 scrapes 300 ms apart (curl wall time, OpenMetrics)",
        size as f64 / n as f64
    );
    let mut shared: Vec<f64> = (0..30).map(|_| scrape(port).0).collect();
    println!(
        "back-to-back scrapes (sharing encodes within 250 ms): p50 {:.1} ms",
        pct(&mut shared, 0.5)
    );
}

fn test_run(fd: i32, repeat: u32) -> u32 {
    let mut pkt = [0u8; 64];
    pkt[12] = 0x08;
    pkt[14] = 0x45;
    pkt[23] = 17;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(pkt.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    let r = bpf(10, &mut attr);
    assert!(
        r == 0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    u32::from_ne_bytes([attr[36], attr[37], attr[38], attr[39]])
}

fn stats_bench() {
    let repeat: u32 = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let daemon = common::BenchDaemon::start("bmet1");
    let obj = common::object("xdp_test.bpf.o");
    let id = cli(
        &daemon.sock,
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
        .expect("id") as u32;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(13, &mut attr);
    assert!(
        fd >= 0,
        "BPF_PROG_GET_FD_BY_ID: {}",
        std::io::Error::last_os_error()
    );
    let fd = fd as i32;
    test_run(fd, 1000);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        off.push(test_run(fd, repeat) as f64);
        // BPF_ENABLE_STATS (32), type BPF_STATS_RUN_TIME (0): on while the fd is open.
        let mut a = [0u8; 128];
        let sfd = bpf(32, &mut a);
        assert!(
            sfd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::last_os_error()
        );
        on.push(test_run(fd, repeat) as f64);
        // SAFETY: closing the stats fd we opened.
        unsafe { libc::close(sfd as i32) };
    }
    let (off50, on50) = (pct(&mut off.clone(), 0.5), pct(&mut on.clone(), 0.5));
    println!(
        "run statistics: off {off50:.0} ns/run, on {on50:.0} ns/run, cost {:.0} ns/run (median of 5 alternating samples of {repeat} runs; off {off:?}, on {on:?})",
        on50 - off50
    );
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP metrics bench: needs root");
        return;
    }
    match std::env::args().nth(1).as_deref() {
        Some("stats") => stats_bench(),
        _ => scrape_bench(),
    }
}
