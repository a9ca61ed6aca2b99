//! The bare-aya baseline for the control-plane cycle: load, attach, detach and unload
//! of the same tracepoint program the daemon's benchmark uses, with aya alone (no
//! daemon, no store, no gRPC), 30 cycles with 150 ms idle before each (as the daemon's
//! "isolated" cycles). Detach here is aya's: dropping the link closes it, and the close
//! waits out the tracepoint's grace periods. Also when the link id and the program id
//! left the kernel's id tables (what a client of the daemon can observe).
//! Run as root: `cargo bench -p bpfman --bench aya_cycle`. Prints Markdown.

use std::time::{Duration, Instant};

use aya::programs::TracePoint;
use aya::programs::links::FdLink;
use bpfman::inspect::{Object, opens};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("aya_cycle: needs root (it loads eBPF programs); skipped");
        return;
    }
    let path = format!(
        "{}/../../target/bpf/tracing_test.bpf.o",
        env!("CARGO_MANIFEST_DIR")
    );
    let status = std::process::Command::new("make")
        .args(["-s", "-C"])
        .arg(format!("{}/../../bpf", env!("CARGO_MANIFEST_DIR")))
        .status();
    assert!(status.is_ok_and(|s| s.success()), "make -C bpf failed");
    let bytes = std::fs::read(&path).expect("target/bpf/tracing_test.bpf.o");
    let n = 30;
    let (mut plain_load, mut parse, mut load, mut attach, mut detach, mut unload, mut cycle) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n + 1 {
        std::thread::sleep(Duration::from_millis(150));
        // aya's default loader parses the kernel's BTF on every load.
        let t = Instant::now();
        drop(aya::Ebpf::load(&bytes).expect("Ebpf::load"));
        let plain = t.elapsed();

        // The object with no BTF (EbpfLoader::new() still parses it once, as
        // Ebpf::load does; the daemon's loader threads avoid that).
        let t = Instant::now();
        let mut ebpf = aya::EbpfLoader::new()
            .btf(None)
            .load(&bytes)
            .expect("loading the object");
        let t_parse = t.elapsed();
        let start = Instant::now();
        let tp: &mut TracePoint = ebpf
            .program_mut("tp_count")
            .expect("tp_count")
            .try_into()
            .expect("tracepoint");
        tp.load().expect("loading tp_count");
        let prog_id = tp.info().expect("info").id();
        let t_load = start.elapsed();
        let t = Instant::now();
        let id = tp
            .attach("syscalls", "sys_enter_getpid")
            .expect("attaching");
        let link: FdLink = tp
            .take_link(id)
            .expect("link")
            .try_into()
            .expect("a bpf_link");
        let t_attach = t.elapsed();
        let link_id = link.info().expect("link info").id();
        let t = Instant::now();
        drop(link);
        let t_detach = t.elapsed();
        let lg = !opens(Object::Link, link_id).expect("asking");
        let t = Instant::now();
        drop(ebpf);
        let t_unload = t.elapsed();
        let total = start.elapsed();
        assert!(
            !opens(Object::Program, prog_id).expect("asking"),
            "the program outlived the drop of its object and link"
        );
        if i == 0 {
            continue; // warm-up
        }
        assert!(lg, "the link id outlived the close");
        plain_load.push(plain);
        parse.push(t_parse);
        load.push(t_load);
        attach.push(t_attach);
        detach.push(t_detach);
        unload.push(t_unload);
        cycle.push(total);
    }
    println!("Bare aya, {n} isolated tracepoint cycles (150 ms idle before each):\n");
    println!("| operation | p50 ms | p99 ms |\n|---|---|---|");
    for (name, v) in [
        (
            "`Ebpf::load` of the object (parses kernel BTF)",
            &mut plain_load,
        ),
        (
            "`EbpfLoader::new().btf(None).load` (parses it too)",
            &mut parse,
        ),
        ("load (the program: BPF_PROG_LOAD)", &mut load),
        ("attach", &mut attach),
        ("detach (drop the link: close waits)", &mut detach),
        ("unload (drop the object)", &mut unload),
        ("full cycle (program load to unload)", &mut cycle),
    ] {
        println!("| {name} | {:.2} | {:.2} |", pct(v, 0.5), pct(v, 0.99));
    }
}
