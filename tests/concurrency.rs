//! Concurrency: 32 clients attach and detach at once, half of them on one shared hook and
//! half spread over other interfaces, for several rounds. Afterwards the daemon's links
//! are exactly those whose attach succeeded and whose detach was not called, and every
//! hook runs them in priority order (read back from the kernel, not from the store).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Barrier};

use common::{BPFMAN, Daemon, Netns, has_feature, obj};
use serde_json::Value;

const CLIENTS: usize = 32;
const ROUNDS: usize = 4;

fn cli(sock: &std::path::Path, args: &[&str]) -> Result<Value, String> {
    let mut a = vec!["-o", "json"];
    a.extend_from_slice(args);
    let out = Command::new(BPFMAN)
        .args(&a)
        .env("BPFMAN_SOCKET", sock)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn thirty_two_clients_attach_and_detach_concurrently() {
    require_root!();
    let d = Daemon::start();
    if !has_feature(&d, "tcx") {
        eprintln!(
            "SKIP concurrency: the host suite shares hooks through TCX, which this kernel lacks"
        );
        return;
    }
    // Interface 0 is shared by half the clients; the others get one of three more.
    let nets: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let ifaces: Vec<String> = nets.iter().map(|n| n.host_if.clone()).collect();
    let tc = obj("tc_test.bpf.o");
    let programs: Vec<u64> = (0..CLIENTS)
        .map(|_| {
            cli(
                &d.socket,
                &["load", "file", "--path", &tc, "--programs", "tcx:tc_count"],
            )
            .expect("load")[0]["id"]
                .as_u64()
                .expect("id")
        })
        .collect();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let sock = d.socket.clone();
            let iface = if i % 2 == 0 {
                ifaces[0].clone()
            } else {
                ifaces[1 + i % 3].clone()
            };
            let prog = programs[i];
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // (link id, iface, priority) of this client's live link, if any.
                let mut live: Option<(u64, String, u64)> = None;
                let mut errors = Vec::new();
                barrier.wait();
                for round in 0..ROUNDS {
                    // Few distinct priorities, so equal ones must order by link id.
                    let prio = 1 + ((i * 7 + round * 3) % 5) as u64 * 100;
                    if let Some((l, _, _)) = live.take()
                        && let Err(e) = cli(&sock, &["detach", &l.to_string()])
                    {
                        errors.push(format!("detach {l}: {e}"));
                    }
                    match cli(
                        &sock,
                        &[
                            "attach",
                            &prog.to_string(),
                            "tcx",
                            "-d",
                            "ingress",
                            "-i",
                            &iface,
                            "-p",
                            &prio.to_string(),
                        ],
                    ) {
                        Ok(v) => live = v["link_id"].as_u64().map(|l| (l, iface.clone(), prio)),
                        Err(e) => errors.push(format!("attach round {round}: {e}")),
                    }
                }
                // Every other client leaves its last link in place.
                if i % 2 == 1
                    && let Some((l, _, _)) = live.take()
                    && let Err(e) = cli(&sock, &["detach", &l.to_string()])
                {
                    errors.push(format!("final detach {l}: {e}"));
                }
                (prog, live, errors)
            })
        })
        .collect();
    let mut expected: BTreeMap<u64, (u64, String, u64)> = BTreeMap::new();
    let mut errors = Vec::new();
    for h in handles {
        let (prog, live, errs) = h.join().expect("client thread");
        errors.extend(errs);
        if let Some((l, iface, prio)) = live {
            expected.insert(l, (prog, iface, prio));
        }
    }
    assert!(
        errors.is_empty(),
        "calls failed under concurrency: {errors:#?}"
    );
    // The store: exactly the links the successful calls say.
    let links = cli(&d.socket, &["list", "links"]).expect("list links");
    let got: BTreeMap<u64, (u64, String, u64)> = links
        .as_array()
        .expect("array")
        .iter()
        .map(|l| {
            (
                l["link_id"].as_u64().unwrap(),
                (
                    l["program_id"].as_u64().unwrap(),
                    l["iface"].as_str().unwrap().to_string(),
                    l["priority"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        got, expected,
        "the daemon's links differ from what the calls returned"
    );
    // The kernel: each hook runs its links in (priority, link id) order.
    for iface in &ifaces {
        let mut want: Vec<(u64, u64, u64)> = expected
            .iter()
            .filter(|(_, (_, i, _))| i == iface)
            .map(|(l, (p, _, prio))| (*prio, *l, *p))
            .collect();
        want.sort();
        let want: Vec<u32> = want.iter().map(|(_, _, p)| *p as u32).collect();
        let (_, have) = bpfman::inspect::tcx_programs(iface, false).expect("query tcx");
        assert_eq!(have, want, "TCX order on {iface} is not the priority order");
    }
    eprintln!(
        "concurrency: {CLIENTS} clients x {ROUNDS} rounds, {} links left on {} interfaces, order checked",
        expected.len(),
        ifaces.len()
    );
    for p in programs {
        cli(&d.socket, &["unload", &p.to_string()]).expect("unload");
    }
}
