//! Control-plane benchmark: latency of load, attach, detach and unload through the real
//! daemon over gRPC (and through the CLI binary), throughput with 16 concurrent clients,
//! and the daemon's RSS. Run as root: `cargo bench --bench control_plane`.
//! Prints a Markdown report for docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bpfman_api::v1::{self, bpfman_client::BpfmanClient};
use tonic::transport::{Channel, Endpoint};

mod common;

use common::BPFMAN;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn load_req(path: &str, kind: v1::BpfmanProgramType, name: &str) -> v1::LoadRequest {
    v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(v1::bytecode_location::Location::File(path.into())),
        }),
        info: vec![v1::LoadInfo {
            name: name.into(),
            program_type: kind as i32,
            info: None,
        }],
        ..Default::default()
    }
}

fn xdp_attach(iface: &str) -> v1::AttachInfo {
    v1::AttachInfo {
        info: Some(v1::attach_info::Info::XdpAttachInfo(v1::XdpAttachInfo {
            priority: 50,
            iface: iface.into(),
            ..Default::default()
        })),
    }
}

/// Syscalls with tracepoints, one per concurrent client.
const SYSCALLS: [&str; 16] = [
    "getpid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "gettid",
    "sched_yield",
    "getpgrp",
    "getsid",
    "umask",
    "sync",
    "times",
    "newuname",
    "getcwd",
    "getrusage",
];

fn tp_attach() -> v1::AttachInfo {
    tp_attach_on(SYSCALLS[0])
}

fn tp_attach_on(syscall: &str) -> v1::AttachInfo {
    v1::AttachInfo {
        info: Some(v1::attach_info::Info::TracepointAttachInfo(
            v1::TracepointAttachInfo {
                tracepoint: format!("syscalls/sys_enter_{syscall}"),
                ..Default::default()
            },
        )),
    }
}

#[derive(Default)]
struct Phases {
    load: Vec<Duration>,
    attach: Vec<Duration>,
    detach: Vec<Duration>,
    unload: Vec<Duration>,
    cycle: Vec<Duration>,
}

async fn cycle(
    c: &mut BpfmanClient<Channel>,
    req: v1::LoadRequest,
    attach: v1::AttachInfo,
    ph: &mut Phases,
) {
    let t0 = Instant::now();
    let r = c
        .load(req)
        .await
        .unwrap_or_else(|e| panic!("load: {}", e.message()))
        .into_inner();
    let t1 = Instant::now();
    let id = r.programs[0].kernel_info.as_ref().expect("kernel info").id;
    let l = c
        .attach(v1::AttachRequest {
            id,
            attach: Some(attach),
        })
        .await
        .unwrap_or_else(|e| panic!("attach: {}", e.message()))
        .into_inner()
        .link_id;
    let t2 = Instant::now();
    c.detach(v1::DetachRequest { link_id: l })
        .await
        .expect("detach");
    let t3 = Instant::now();
    c.unload(v1::UnloadRequest { id })
        .await
        .unwrap_or_else(|e| panic!("unload: {}", e.message()));
    let t4 = Instant::now();
    ph.load.push(t1 - t0);
    ph.attach.push(t2 - t1);
    ph.detach.push(t3 - t2);
    ph.unload.push(t4 - t3);
    ph.cycle.push(t4 - t0);
}

fn report(name: &str, ph: &mut Phases) {
    for (op, v) in [
        ("load", &mut ph.load),
        ("attach", &mut ph.attach),
        ("detach", &mut ph.detach),
        ("unload", &mut ph.unload),
        ("full cycle", &mut ph.cycle),
    ] {
        println!(
            "| {name} | {op} | {:.2} | {:.2} |",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP control_plane bench: needs root");
        return;
    }
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let xdp_obj = common::object("xdp_test.bpf.o");
    let tp_obj = common::object("tracing_test.bpf.o");

    for s in SYSCALLS {
        assert!(
            Path::new(&format!(
                "/sys/kernel/tracing/events/syscalls/sys_enter_{s}"
            ))
            .exists(),
            "no tracepoint for {s} (is tracefs mounted?)"
        );
    }
    let t = Instant::now();
    let daemon = common::BenchDaemon::start("bbench0");
    let ready = t.elapsed();
    let (pid, sock) = (daemon.pid(), daemon.sock.clone());
    daemon.veth_pair("bbench1");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let uri = format!("unix://{}", sock.display());
    rt.block_on(async {
        let ch = Endpoint::from_shared(uri.clone()).expect("uri").connect().await.expect("connect");
        let mut c = BpfmanClient::new(ch);
        let rss_start = rss_kib(pid);
        // Warm-up.
        let mut warm = Phases::default();
        for _ in 0..5 {
            cycle(&mut c, load_req(&tp_obj, v1::BpfmanProgramType::Tracepoint, "tp_count"), tp_attach(), &mut warm).await;
        }
        let rss_one = rss_kib(pid);
        let mut xdp = Phases::default();
        let mut tp = Phases::default();
        for _ in 0..iterations {
            cycle(&mut c, load_req(&xdp_obj, v1::BpfmanProgramType::Xdp, "xdp_drop_proto"), xdp_attach("bbench0"), &mut xdp).await;
            cycle(&mut c, load_req(&tp_obj, v1::BpfmanProgramType::Tracepoint, "tp_count"), tp_attach(), &mut tp).await;
        }
        let rss_after = rss_kib(pid);

        // Isolated cycles: the kernel has finished tearing down the previous attachment
        // (RCU grace periods) before the next cycle starts, as for a user's one-off change.
        let mut iso = Phases::default();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            cycle(&mut c, load_req(&tp_obj, v1::BpfmanProgramType::Tracepoint, "tp_count"), tp_attach(), &mut iso).await;
        }

        // 16 concurrent clients, each its own connection, tracepoint cycles.
        let clients = 16;
        let per = (iterations / 4).max(10);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for syscall in SYSCALLS.iter().take(clients) {
            let uri = uri.clone();
            let obj = tp_obj.clone();
            tasks.push(tokio::spawn(async move {
                let ch = Endpoint::from_shared(uri).expect("uri").connect().await.expect("connect");
                let mut c = BpfmanClient::new(ch);
                let mut ph = Phases::default();
                for _ in 0..per {
                    cycle(&mut c, load_req(&obj, v1::BpfmanProgramType::Tracepoint, "tp_count"), tp_attach_on(syscall), &mut ph).await;
                }
                ph
            }));
        }
        let mut conc = Phases::default();
        for t in tasks {
            let ph = t.await.expect("client");
            conc.load.extend(ph.load);
            conc.attach.extend(ph.attach);
            conc.detach.extend(ph.detach);
            conc.unload.extend(ph.unload);
            conc.cycle.extend(ph.cycle);
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let ops = (clients * per * 4) as f64;
        let rss_end = rss_kib(pid);

        // The same cycle through the CLI binary (process start included).
        let mut cli = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let run = |args: &[&str]| -> String {
                let o = Command::new(BPFMAN).args(args).env("BPFMAN_SOCKET", &sock).output().expect("cli");
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            let out = run(&["-o", "json", "load", "file", "--path", &tp_obj, "--programs", "tracepoint:tp_count"]);
            let id = out.split("\"id\": ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).expect("id").to_string();
            let out = run(&["-o", "json", "attach", &id, "tracepoint", "-t", "syscalls/sys_enter_getpid"]);
            let link = out.split("\"link_id\": ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).expect("link").to_string();
            run(&["detach", &link]);
            run(&["unload", &id]);
            cli.push(t.elapsed());
        }

        println!("## Control plane (bpfman daemon, gRPC over a unix socket)\n");
        println!("{iterations} cycles of each kind, sequential, one client; daemon ready {:.0} ms after spawn.\n", ready.as_secs_f64() * 1000.0);
        println!("| program | operation | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        report("xdp", &mut xdp);
        report("tracepoint", &mut tp);
        println!("\nIsolated tracepoint cycles (150 ms idle before each, 30 cycles):\n");
        println!("| program | operation | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        report("tracepoint (isolated)", &mut iso);
        println!("\n{clients} concurrent clients x {per} tracepoint cycles: {:.0} operations/s ({} ops in {:.2} s)\n", ops / elapsed, ops as u64, elapsed);
        println!("| 16 clients | operation | p50 ms | p99 ms |");
        println!("|---|---|---|---|");
        report("tracepoint", &mut conc);
        println!("\nCLI (`bpfman load/attach/detach/unload`, 4 processes) full tracepoint cycle: p50 {:.2} ms, p99 {:.2} ms\n", pct(&mut cli, 0.5), pct(&mut cli, 0.99));
        println!("| daemon RSS | KiB |");
        println!("|---|---|");
        println!("| after start | {rss_start} |");
        println!("| after 5 cycles | {rss_one} |");
        println!("| after {} sequential cycles | {rss_after} |", 5 + 2 * iterations);
        println!("| after {} more concurrent cycles | {rss_end} |", clients * per);
    });
}
