//! Attacks on the Prometheus endpoint by a hostile tenant (an unprivileged user with a policy
//! rule, or with none) and by anyone who can reach the metrics address: exhausting the
//! endpoint's connections, malformed HTTP, label values that try to break the exposition
//! text, label-set growth, scrapes racing loads, the unix socket's file handling, and
//! counters that could be made to lie. Each test asserts the safe behaviour; those the code
//! does not meet today are `#[ignore = "finding: ..."]`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::{BPFMAN, Daemon, free_port, obj};
use serde_json::Value;

const GROUP: &str = "bpfma-group";
/// In the group, named by a rule granting tracepoint loads.
const TENANT: &str = "bpfma-tenant";
/// In the group, named by no rule.
const NORULE: &str = "bpfma-norule";
/// Not in the group.
const OUTSIDER: &str = "bpfma-outsider";

/// The endpoint's own limits (crates/bpfman-metrics/src/lib.rs).
const MAX_CONNECTIONS: usize = 64;

/// One test at a time: they flood the machine and measure latencies.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Root, users and group ready; else the reason to skip.
fn setup() -> Result<(), String> {
    if !common::is_root() {
        return Err("needs root (starts daemons, makes users)".into());
    }
    if !have("runuser") || !have("curl") {
        return Err("needs runuser and curl".into());
    }
    common::ensure_group(GROUP);
    common::ensure_user(TENANT, Some(GROUP), &[]);
    common::ensure_user(NORULE, Some(GROUP), &[]);
    common::ensure_user(OUTSIDER, None, &[]);
    Ok(())
}

macro_rules! setup_or_skip {
    () => {
        if let Err(why) = setup() {
            println!("SKIP {}: {why}", module_path!());
            return;
        }
    };
}

/// A daemon serving metrics on 127.0.0.1:`port`, with the tenant's rule.
fn daemon(port: u16, extra_metrics: &str) -> Daemon {
    let objs = common::objs_dir();
    let _ = obj("tracing_test.bpf.o");
    let d = Daemon::start_with_config(&format!(
        r#"
[api]
socket_group = "{GROUP}"

[metrics]
listen = "127.0.0.1:{port}"
metadata_labels = ["team"]
{extra_metrics}

[daemon]
reconcile_interval_secs = 0

[[policy.rule]]
name = "tracers"
users = ["{TENANT}"]
actions = ["load", "attach", "list", "get"]
program_types = ["tracepoint"]
file_dirs = ["{}"]
"#,
        objs.display()
    ));
    // The unprivileged users must reach the API socket inside the test's directory.
    let _ = std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755));
    d
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends `req` and reads until EOF or `timeout`: (bytes, whether the server closed).
fn raw(port: u16, req: &[u8], timeout: Duration) -> std::io::Result<(Vec<u8>, bool)> {
    let mut s = TcpStream::connect_timeout(&addr(port), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + timeout;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((out, true)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionReset
                    || e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                return Ok((out, true));
            }
            Err(_) => return Ok((out, false)),
        }
        if Instant::now() > deadline {
            return Ok((out, false));
        }
    }
}

/// One scrape: the body of a 200 answer within `timeout`, else why not.
fn scrape_with(port: u16, accept: &str, timeout: Duration) -> Result<String, String> {
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    let (out, closed) = raw(port, req.as_bytes(), timeout).map_err(|e| format!("io: {e}"))?;
    let text = String::from_utf8(out).map_err(|e| format!("not UTF-8: {e}"))?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "no 200 (closed={closed}): {:?}",
            text.chars().take(120).collect::<String>()
        ));
    }
    if !closed {
        return Err("the answer did not finish in time".into());
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}

fn scrape(port: u16) -> Result<String, String> {
    scrape_with(port, "*/*", Duration::from_secs(5))
}

fn scrape_om(port: u16) -> Result<String, String> {
    scrape_with(
        port,
        "application/openmetrics-text; version=1.0.0",
        Duration::from_secs(5),
    )
}

/// `promtool check metrics` on `text`: Err with what it said, unless clean. None without
/// promtool.
fn promtool(text: &str) -> Option<Result<(), String>> {
    if !have("promtool") {
        return None;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
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
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    })
}

/// The daemon's CPU time so far (user + system), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The sample value of the series whose line starts with `prefix` (text format).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Scrapes every `every` until `stop`, counting (ok, failed) and the first failure.
fn scraper(
    port: u16,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, Option<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut bad, mut first) = (0, 0, None);
        while !stop.load(Ordering::SeqCst) {
            match scrape_with(port, "*/*", Duration::from_secs(2)) {
                Ok(_) => ok += 1,
                Err(e) => {
                    bad += 1;
                    first.get_or_insert(e);
                }
            }
            std::thread::sleep(every);
        }
        (ok, bad, first)
    })
}

// ---------------------------------------------------------------------------------------
// Exhausting the endpoint
// ---------------------------------------------------------------------------------------

/// 64 keep-alive connections that each send one cheap `HEAD /metrics` every 3 s (inside the
/// 5 s header deadline, so none is ever closed): every other client is closed at accept.
/// Safe: a scraper still gets most of its scrapes through.
#[test]
fn keepalive_connection_flood_does_not_lock_out_scrapers() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    scrape(port).expect("a scrape before the attack");
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut max_held = 0usize;
            while !stop.load(Ordering::SeqCst) {
                while held.len() < MAX_CONNECTIONS + 4 {
                    match TcpStream::connect(addr(port)) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                held.retain_mut(|s| {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    if s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        .is_err()
                    {
                        return false;
                    }
                    let mut got = Vec::new();
                    let mut b = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => got.extend_from_slice(&b[..n]),
                        }
                    }
                    got.starts_with(b"HTTP/1.1 200")
                });
                max_held = max_held.max(held.len());
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            max_held
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let s = scraper(port, Duration::from_millis(250), stop.clone());
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::SeqCst);
    let (ok, bad, first) = s.join().expect("scraper");
    let held = attacker.join().expect("attacker");
    println!(
        "keep-alive flood: attacker held {held} connections, one HEAD each per 3 s; scrapes ok {ok}, failed {bad} in 12 s; first failure: {first:?}"
    );
    // The endpoint recovers once the attacker leaves.
    std::thread::sleep(Duration::from_secs(1));
    scrape(port).expect("a scrape after the attack");
    assert!(
        ok * 10 >= (ok + bad) * 9,
        "only {ok} of {} scrapes succeeded while an unauthenticated client held {MAX_CONNECTIONS} keep-alive connections ({first:?})",
        ok + bad
    );
    drop(d);
}

/// 64 connections that each pipeline thousands of GETs and never read: the server's
/// writes block once the socket buffers fill, and nothing times a write out. Safe: after
/// the header deadline has passed, scrapes get through.
#[test]
fn unread_pipelined_responses_do_not_pin_connections() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    let one = scrape(port).expect("a scrape before the attack");
    let pid = d.pid().expect("daemon pid");
    let cpu0 = cpu_secs(pid);
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut conns = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let Ok(mut s) = TcpStream::connect(addr(port)) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        // Several megabytes of answers, far past the socket buffers.
        let burst: Vec<u8> = get.repeat(3000);
        let _ = s.write_all(&burst);
        conns.push(s);
    }
    println!(
        "{} attacking connections, {} pipelined GETs each; one answer is {} bytes",
        conns.len(),
        3000,
        one.len()
    );
    // Past the 5 s header deadline; root's API meanwhile.
    let t0 = Instant::now();
    let mut lat = Vec::new();
    while t0.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        assert!(d.cli(&["list", "programs"]).status.success());
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = cpu_secs(pid) - cpu0;
    let p50 = percentile(&mut lat, 0.5);
    let p100 = percentile(&mut lat, 1.0);
    println!("root `list programs` during the attack: p50 {p50:.0} ms, max {p100:.0} ms");
    let results: Vec<Result<String, String>> = (0..5)
        .map(|_| {
            let r = scrape_with(port, "*/*", Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(200));
            r
        })
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "unread pipelining: daemon CPU {cpu:.1} s in 8 s; scrapes ok {ok}/5; {:?}",
        results.iter().find(|r| r.is_err())
    );
    drop(conns);
    std::thread::sleep(Duration::from_secs(1));
    scrape(port).expect("a scrape after the attacker left");
    assert!(
        ok >= 4,
        "{ok}/5 scrapes succeeded while {MAX_CONNECTIONS} clients left their answers unread"
    );
    drop(d);
}

/// A keep-alive connection that goes quiet after one scrape, and a client trickling its
/// request head a byte a second, are both closed by the 5 s header deadline.
#[test]
fn keepalive_and_slowloris_connections_are_closed() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    // Keep-alive, then silence.
    let mut s = TcpStream::connect(addr(port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    let closed_after = loop {
        match s.read(&mut buf) {
            Ok(0) => break Some(t0.elapsed()),
            Ok(n) => got += n,
            Err(_) => break None,
        }
    };
    println!("keep-alive: {got} bytes, then closed after {closed_after:?}");
    assert!(got > 0, "the scrape was answered");
    let closed_after = closed_after.expect("an idle keep-alive connection is closed");
    assert!(
        closed_after < Duration::from_secs(8),
        "an idle keep-alive connection lived {closed_after:?}"
    );

    // Slowloris: one byte a second.
    let mut s = TcpStream::connect(addr(port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = None;
    for b in head.iter().cycle().take(30) {
        if s.write_all(&[*b]).is_err() {
            closed = Some(t0.elapsed());
            break;
        }
        let mut one = [0u8; 512];
        if let Ok(n) = s.read(&mut one) {
            // An answer (408) or EOF: the server gave up on it.
            let _ = n;
            closed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    println!("slowloris: closed after {closed:?}");
    let closed = closed.expect("a trickled request head is cut off");
    assert!(
        closed < Duration::from_secs(8),
        "slowloris lived {closed:?}"
    );
    scrape(port).expect("scrapes still served");
    drop(d);
}

/// Malformed and unusual requests get an answer or a closed connection, never a crash or a
/// hang, and the endpoint serves the next scrape: HTTP/2 preface, 64 KiB of headers, POST,
/// HEAD, odd paths, absolute-form, pipelining, a smuggling-shaped request.
#[test]
fn malformed_requests_are_refused_and_the_endpoint_survives() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    let t = Duration::from_secs(7);
    let status = |req: &[u8]| -> (String, Vec<u8>, bool) {
        let (out, closed) = raw(port, req, t).expect("io");
        let line = String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        (line, out, closed)
    };
    let h2 = status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00");
    println!("h2 preface: {:?} closed={}", h2.0, h2.2);
    assert!(h2.2, "an HTTP/2 preface is refused promptly");
    assert!(!h2.0.starts_with("HTTP/1.1 200"), "{}", h2.0);

    let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1024 {
        big.extend_from_slice(format!("X-H{i}: {}\r\n", "a".repeat(60)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let huge = status(&big);
    println!("64 KiB of headers: {:?} closed={}", huge.0, huge.2);
    assert!(huge.2 && !huge.0.starts_with("HTTP/1.1 200"), "{}", huge.0);

    let post = status(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert!(post.0.starts_with("HTTP/1.1 405"), "POST: {}", post.0);

    let head = status(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let body = String::from_utf8_lossy(&head.1)
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.len())
        .unwrap_or(0);
    assert!(
        head.0.starts_with("HTTP/1.1 200") && body == 0,
        "HEAD: {} body {body}",
        head.0
    );

    for path in [
        "/metrics/../metrics",
        "/Metrics",
        "/metrics/",
        "//metrics",
        "*",
    ] {
        let r = status(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        println!("GET {path}: {}", r.0);
        assert!(r.2, "GET {path} got no end");
        assert!(!r.0.starts_with("HTTP/1.1 5"), "GET {path}: {}", r.0);
    }

    let piped = status(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let answers = String::from_utf8_lossy(&piped.1)
        .matches("HTTP/1.1 200")
        .count();
    // One request per connection: a pipelined second request is not answered (so a client
    // that never reads cannot queue scrapes on one connection).
    assert_eq!(answers, 1, "one answer per connection, then close");

    let smuggle = status(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n");
    println!("CL+TE: {:?}", smuggle.0);
    assert!(smuggle.2, "a CL+TE request got no end");

    let text = scrape(port).expect("scrapes still served");
    if let Some(r) = promtool(&text) {
        r.expect("promtool after malformed requests");
    }
    let mut dd = d;
    assert!(!dd.exited(), "the daemon survived");
}

// ---------------------------------------------------------------------------------------
// Exposition text
// ---------------------------------------------------------------------------------------

/// An interface with quotes, a backslash and a brace in its name (Linux allows them),
/// deleted on drop.
struct WeirdIface(String);

impl WeirdIface {
    fn new() -> Option<Self> {
        let name = format!("q\"\\}}{}", std::process::id() % 100000);
        let peer = format!("qp{}", std::process::id() % 100000);
        let ok = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let _ = Command::new("ip")
            .args(["link", "set", &name, "up"])
            .status();
        Some(Self(name))
    }
}

impl Drop for WeirdIface {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// The label sets of `query`'s series.
fn prom_labels(p: &Prometheus, query: &str) -> Vec<Value> {
    p.query(query)
        .into_iter()
        .map(|(labels, _)| labels)
        .collect()
}

/// A tenant's metadata value and application name with quotes, backslashes, newlines,
/// braces, `# EOF` and a fake series; root's XDP link on an interface named `q"\}…`.
/// Both formats stay valid (promtool on the text format, a real Prometheus on OpenMetrics)
/// and the values come back exactly as sent.
#[test]
fn hostile_label_values_are_escaped_end_to_end() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    let evil = "a\"b\\c\n}{x=\"1\"} 9\n# EOF\nbpfman_program_info{id=\"0\"} 1\n\u{2603}\\n";
    let evil_app = "app\",owner=\"0\",x=\"\\";
    let out = d.cli_as(
        TENANT,
        &[
            "-o",
            "json",
            "load",
            "file",
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "tracepoint:tp_count",
            "--metadata",
            &format!("team={evil}"),
            "--application",
            evil_app,
        ],
    );
    assert!(
        out.status.success(),
        "the tenant's load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let tp = progs[0]["id"].as_u64().expect("id");
    let weird = WeirdIface::new();
    let mut xdp = None;
    if let Some(w) = &weird {
        let id = d.load_one(&[
            "--path",
            &obj("xdp_test.bpf.o"),
            "--programs",
            "xdp:xdp_drop_proto",
        ]);
        let link = d.attach(&[&id.to_string(), "xdp", "--iface", &w.0]);
        xdp = Some((id, link));
    } else {
        println!("SKIP part: could not make an interface with quotes in its name");
    }
    let text = fresh_scrape(port);
    let info_lines = text
        .lines()
        .filter(|l| l.starts_with("bpfman_program_info{"))
        .count();
    let programs = 1 + usize::from(xdp.is_some());
    assert_eq!(
        info_lines, programs,
        "one info line per program, none injected:\n{text}"
    );
    assert!(
        text.contains(r#"team="a\"b\\c\n}{x=\"1\"} 9\n# EOF\n"#),
        "the value is escaped:\n{text}"
    );
    if let Some(r) = promtool(&text) {
        r.unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    }
    let om = scrape_om(port).expect("OpenMetrics scrape");
    assert_eq!(om.matches("\n# EOF").count(), 1, "one # EOF:\n{om}");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    if !have("prometheus") {
        println!("SKIP part: no prometheus binary to parse OpenMetrics");
        return;
    }
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let r = prom_labels(&prom, &format!("bpfman_program_info{{id=\"{tp}\"}}"));
        if let Some(m) = r.first() {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never ingested the tenant's program (an unparsable scrape?)"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    println!("Prometheus read: {got}");
    assert_eq!(got["team"].as_str(), Some(evil), "metadata round-trips");
    assert_eq!(got["application"].as_str(), Some(evil_app));
    if let (Some(w), Some((_, link))) = (&weird, xdp) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = prom_labels(
                &prom,
                &format!("bpfman_link_attached{{link_id=\"{link}\"}}"),
            );
            if let Some(m) = r.first() {
                let target = m["target"].as_str().unwrap_or("");
                assert!(target.contains(&w.0), "target {target:?} names {:?}", w.0);
                break;
            }
            assert!(Instant::now() < deadline, "the link's series never came");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    drop(prom);
    drop(d);
    drop(weird);
}

/// Distinct label sets of `family` (its sample lines, text format), without `le`.
fn label_sets(text: &str, family: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| {
            let (_, rest) = l.split_once('{')?;
            let (labels, _) = rest.rsplit_once('}')?;
            Some(
                labels
                    .split(',')
                    .filter(|kv| !kv.starts_with("le="))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect()
}

/// gRPC calls to `paths` on the API socket as `user` (h2c through curl, one connection per
/// call: curl does not reuse an h2c unix-socket connection here); how many were answered.
fn grpc_calls(d: &Daemon, user: &str, paths: &[String]) -> usize {
    let list = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(list.path(), paths.join("\n") + "\n").expect("write");
    std::fs::set_permissions(list.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!(
        "while read -r p; do curl -s --max-time 5 --http2-prior-knowledge --unix-socket '{}' \
         -X POST -H 'content-type: application/grpc' -H 'te: trailers' -o /dev/null \
         -w '%{{http_code}}\\n' \"http://localhost$p\"; done < '{}'",
        d.socket.display(),
        list.path().display()
    );
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", &script])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim() == "200")
        .count()
}

/// Hundreds of distinct made-up gRPC paths from root, a tenant with a rule and one with
/// none: `method` stays within the daemon's methods plus `unknown`, and the request,
/// latency and denial families do not grow with the number of paths.
#[test]
fn request_and_denial_labels_stay_bounded() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    let paths = |n: usize, tag: &str| -> Vec<String> {
        (0..n)
            .map(|i| match i % 4 {
                0 => format!("/bpfman.v1.Bpfman/{tag}Load{i}"),
                1 => format!("/evil.{tag}{i}/X"),
                2 => format!("/bpfman.v1.Bpfman/Load/{tag}{i}"),
                _ => format!("/{tag}%22%7D{i}"),
            })
            .collect()
    };
    let count = |text: &str| {
        (
            label_sets(text, "bpfman_requests_total").len(),
            label_sets(text, "bpfman_request_duration_seconds_bucket").len(),
            label_sets(text, "bpfman_policy_denials_total").len(),
        )
    };
    let mut answered = 0;
    for u in ["root", TENANT, NORULE] {
        answered += grpc_calls(&d, u, &paths(10, &format!("a{u}")));
    }
    if answered == 0 {
        println!("SKIP: curl could not speak h2c to the API socket");
        return;
    }
    let small = count(&fresh_scrape(port));
    for u in ["root", TENANT, NORULE] {
        answered += grpc_calls(&d, u, &paths(200, &format!("b{u}")));
    }
    let text = fresh_scrape(port);
    let big = count(&text);
    println!(
        "gRPC calls answered: {answered}; label sets (requests, latency, denials) after 30 paths {small:?}, after 630 {big:?}"
    );
    assert!(answered >= 600, "the calls reached the daemon ({answered})");
    assert_eq!(small, big, "label sets grew with distinct paths:\n{text}");
    for set in label_sets(&text, "bpfman_requests_total") {
        let method = set
            .split(',')
            .find_map(|kv| kv.strip_prefix("method="))
            .unwrap_or("");
        assert!(
            method == "\"unknown\"" || method.starts_with("\"/bpfman."),
            "method label {method}"
        );
        assert!(
            !method.contains("evil") && !method.contains("%22"),
            "{method}"
        );
    }
    drop(d);
}

// ---------------------------------------------------------------------------------------
// Scrapes under load
// ---------------------------------------------------------------------------------------

/// Root loads, attaches and unloads tracepoint programs in a loop while two scrapers read
/// nonstop: every scrape is a complete 200 (OpenMetrics ending in `# EOF`), a sample of them
/// passes promtool, and loads do not stall behind scrapes.
#[test]
fn scrapes_race_loads_attaches_and_unloads() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = Arc::new(daemon(port, ""));
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (d, stop, cycles) = (d.clone(), stop.clone(), cycles.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let id = d.load_one(&[
                    "--path",
                    &obj("tracing_test.bpf.o"),
                    "--programs",
                    "tracepoint:tp_shared",
                ]);
                d.attach(&[
                    &id.to_string(),
                    "tracepoint",
                    "--tracepoint",
                    "syscalls/sys_enter_getppid",
                ]);
                let out = d.cli(&["unload", &id.to_string()]);
                assert!(out.status.success(), "unload {id}");
                worst = worst.max(t.elapsed());
                cycles.fetch_add(1, Ordering::SeqCst);
            }
            worst
        })
    };
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut bad, mut samples, mut worst) =
                    (0, Vec::new(), Vec::new(), Duration::ZERO);
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    match scrape_om(port) {
                        Ok(b) if b.trim_end().ends_with("# EOF") => {
                            ok += 1;
                            if ok % 25 == 0 {
                                samples.push(b);
                            }
                        }
                        Ok(b) => bad.push(format!("no # EOF: {}", b.len())),
                        Err(e) => bad.push(e),
                    }
                    worst = worst.max(t.elapsed());
                }
                (ok, bad, samples, worst)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(15));
    stop.store(true, Ordering::SeqCst);
    let worst_cycle = churn.join().expect("churn");
    let (mut ok, mut bad, mut samples, mut worst_scrape) =
        (0, Vec::new(), Vec::new(), Duration::ZERO);
    for s in scrapers {
        let (o, b, sm, w) = s.join().expect("scraper");
        ok += o;
        bad.extend(b);
        samples.extend(sm);
        worst_scrape = worst_scrape.max(w);
    }
    println!(
        "race: {} load/attach/unload cycles (slowest {worst_cycle:?}), {ok} scrapes ok (slowest {worst_scrape:?}), {} failed {:?}",
        cycles.load(Ordering::SeqCst),
        bad.len(),
        bad.first()
    );
    assert!(cycles.load(Ordering::SeqCst) > 0, "no cycle finished");
    assert!(bad.is_empty(), "failed scrapes: {bad:?}");
    assert!(
        worst_scrape < Duration::from_secs(3),
        "a scrape took {worst_scrape:?}"
    );
    // Sampled scrapes, through the text format, pass promtool (a fresh encode: scrapes less
    // than 250 ms apart share one, and the scrapers just stopped).
    let text = fresh_scrape(port);
    if let Some(r) = promtool(&text) {
        r.expect("promtool");
    }
    for s in samples.iter().take(5) {
        assert_eq!(s.matches("# EOF").count(), 1, "{s}");
    }
    assert_eq!(
        sample(&text, "bpfman_managed_objects{object=\"program\"}"),
        0.0,
        "everything was unloaded:\n{text}"
    );
    drop(d);
}

/// Eight scrapers hammering the endpoint (plus a pipelining one) while root lists and
/// loads: root's requests are not slowed more than a few times over.
#[test]
fn scrape_flood_does_not_stall_root_requests() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    for _ in 0..20 {
        d.load_one(&[
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "tracepoint:tp_count",
        ]);
    }
    let measure = |d: &Daemon| -> (f64, f64) {
        let mut list = Vec::new();
        let mut load = Vec::new();
        for _ in 0..8 {
            let t = Instant::now();
            let out = d.cli(&["list", "programs"]);
            assert!(out.status.success());
            list.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let id = d.load_one(&[
                "--path",
                &obj("tracing_test.bpf.o"),
                "--programs",
                "tracepoint:tp_shared",
            ]);
            let out = d.cli(&["unload", &id.to_string()]);
            assert!(out.status.success());
            load.push(t.elapsed().as_secs_f64());
        }
        (percentile(&mut list, 0.5), percentile(&mut load, 0.5))
    };
    let base = measure(&d);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if scrape_with(port, "*/*", Duration::from_secs(5)).is_ok() {
                        scrapes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    let under = measure(&d);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    for f in flood {
        let _ = f.join();
    }
    let rate = scrapes.load(Ordering::SeqCst) as f64 / secs;
    println!(
        "root p50 list/load+unload: {:.0}/{:.0} ms alone, {:.0}/{:.0} ms under {rate:.0} scrapes/s of 20 programs",
        base.0 * 1e3,
        base.1 * 1e3,
        under.0 * 1e3,
        under.1 * 1e3
    );
    assert!(
        under.0 < base.0 * 4.0 + 0.2 && under.1 < base.1 * 4.0 + 0.3,
        "scrapes slowed root's requests: {base:?} -> {under:?}"
    );
    drop(d);
}

// ---------------------------------------------------------------------------------------
// The unix metrics socket
// ---------------------------------------------------------------------------------------

/// Starts `bpfman daemon` with `config`; Ok(stderr) when it exits non-zero within 20 s,
/// Err when it keeps running (killed, bpffs unmounted).
/// A scrape that sees everything done before it: the endpoint shares one encode among
/// scrapes less than 250 ms apart.
fn fresh_scrape(port: u16) -> String {
    std::thread::sleep(Duration::from_millis(300));
    scrape(port).expect("scrape")
}

/// A second daemon whose API socket and metrics socket are both `sock`: must refuse to start
/// (Err with its stderr).
fn start_fails_with_socket(sock: &std::path::Path) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bpfman.toml");
    std::fs::write(
        &cfg,
        format!("[metrics]\nsocket = \"{}\"\n", sock.display()),
    )
    .expect("config");
    let out = Command::new(BPFMAN)
        .args(["daemon", "--runtime-dir"])
        .arg(dir.path().join("run"))
        .arg("--socket")
        .arg(sock)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("daemon");
    let _ = Command::new("umount")
        .arg(dir.path().join("run/fs"))
        .output();
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() { Ok(e) } else { Err(e) }
}

fn start_fails(config: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bpfman.toml");
    std::fs::write(&cfg, config).expect("config");
    let run = dir.path().join("run");
    let mut child = Command::new(BPFMAN)
        .args(["daemon", "--runtime-dir"])
        .arg(&run)
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
            let out = child.wait_with_output().expect("output");
            let e = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = Command::new("umount").arg(run.join("fs")).output();
            return if status.success() {
                Err(format!("exited 0: {e}"))
            } else {
                Ok(e)
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("umount").arg(run.join("fs")).output();
            return Err("kept running".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The socket is root's, mode 0660, group `[api] socket_group`: a user in the group scrapes,
/// one outside cannot. Where a symlink (to a file, to a live socket, dangling), a directory
/// or a FIFO lies, the daemon refuses to start and leaves it as it was.
#[test]
fn metrics_socket_mode_owner_and_non_socket_files() {
    setup_or_skip!();
    let _s = serial();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("m.sock");
    let d = Daemon::start_with_config(&format!(
        "[api]\nsocket_group = \"{GROUP}\"\n[metrics]\nsocket = \"{}\"\n",
        sock.display()
    ));
    let m = std::fs::symlink_metadata(&sock).expect("the metrics socket");
    let gid = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(':')
                .nth(2)
                .and_then(|g| g.parse::<u32>().ok())
        })
        .expect("the group's gid");
    println!(
        "metrics socket: mode {:o} uid {} gid {} (group {gid})",
        m.mode() & 0o7777,
        m.uid(),
        m.gid()
    );
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o660);
    assert_eq!((m.uid(), m.gid()), (0, gid));
    let as_user = |u: &str| {
        Command::new("runuser")
            .args([
                "-u",
                u,
                "--",
                "curl",
                "-s",
                "--max-time",
                "5",
                "--unix-socket",
            ])
            .arg(&sock)
            .arg("http://x/metrics")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("bpfman_build_info"))
            .unwrap_or(false)
    };
    assert!(as_user(NORULE), "a user in the group scrapes");
    assert!(!as_user(OUTSIDER), "a user outside the group cannot");
    let mut d = d;
    d.stop();
    assert!(!sock.exists(), "the socket is removed at stop");

    let target = dir.path().join("precious");
    std::fs::write(&target, "keep").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let live = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).expect("a live socket");
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "symlink to a file",
            Box::new(|p| std::os::unix::fs::symlink(&target, p).unwrap()),
        ),
        (
            "symlink to a live socket",
            Box::new(|p| std::os::unix::fs::symlink(&live, p).unwrap()),
        ),
        (
            "dangling symlink",
            Box::new(|p| std::os::unix::fs::symlink("/nonexistent-bpfma", p).unwrap()),
        ),
        ("directory", Box::new(|p| std::fs::create_dir(p).unwrap())),
        (
            "FIFO",
            Box::new(|p| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }),
        ),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("case{i}"));
        make(&p);
        let before = std::fs::symlink_metadata(&p).unwrap();
        let r = start_fails(&format!("[metrics]\nsocket = \"{}\"\n", p.display()));
        let after = std::fs::symlink_metadata(&p).expect("still there");
        println!("{what}: {r:?}");
        let e = r.unwrap_or_else(|e| panic!("{what}: the daemon {e}"));
        assert!(e.contains("[metrics] socket"), "{what}: {e}");
        assert_eq!(
            (before.ino(), before.mode(), before.uid(), before.gid()),
            (after.ino(), after.mode(), after.uid(), after.gid()),
            "{what} left as it was"
        );
    }
    let t = std::fs::metadata(&target).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert_eq!(
        (t.mode() & 0o7777, t.gid()),
        (0o600, 0),
        "the symlink's target untouched"
    );
}

/// A socket someone is serving on is not stale: the metrics endpoint must not unlink it.
/// Two cases: another process's live socket, and the daemon's own API socket (`[metrics]
/// socket` set to the `--socket` path). Safe: the daemon refuses to start, or at least the
/// other socket still answers.
#[test]
fn metrics_socket_never_replaces_a_live_socket() {
    setup_or_skip!();
    let _s = serial();
    let dir = tempfile::tempdir().expect("tmp");
    let live = dir.path().join("other-service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&live).expect("bind");
    let ino = std::fs::symlink_metadata(&live).unwrap().ino();
    let r = start_fails(&format!("[metrics]\nsocket = \"{}\"\n", live.display()));
    let still = std::fs::symlink_metadata(&live)
        .map(|m| m.ino() == ino)
        .unwrap_or(false);
    println!("live socket of another process: daemon {r:?}; its socket kept: {still}");
    drop(listener);

    // The daemon's own API socket: refused at start, naming it.
    let d = Daemon::start();
    let same = start_fails_with_socket(&d.socket);
    println!("metrics socket = API socket: {same:?}");
    let out = d.cli(&["list", "programs"]);
    let api_ok = out.status.success();
    drop(d);
    assert!(still, "another process's live socket was unlinked ({r:?})");
    assert!(
        matches!(&same, Err(e) if e.contains("is the API socket")),
        "a metrics socket on the API socket path is refused: {same:?}"
    );
    assert!(api_ok, "the running daemon's API socket still answers");
}

// ---------------------------------------------------------------------------------------
// Counters that could lie
// ---------------------------------------------------------------------------------------

/// Each denied request counts once in `bpfman_policy_denials_total`, with the rule that
/// decided it, and `rule="none"` only for a caller no rule names (what the help text says).
#[test]
fn denials_are_counted_once_with_the_deciding_rule() {
    setup_or_skip!();
    let _s = serial();
    let port = free_port();
    let d = daemon(port, "");
    let denials = |t: &str, action: &str, rule: &str| {
        sample(
            t,
            &format!("bpfman_policy_denials_total{{action=\"{action}\",rule=\"{rule}\"}}"),
        )
    };
    let failures = |t: &str| {
        sample(
            t,
            "bpfman_program_load_failures_total{reason=\"permission\"}",
        )
    };
    let all = |t: &str| sample(t, "bpfman_policy_denials_total");
    let t0 = fresh_scrape(port);

    // Outside the tenant's rule (XDP): one denial, by "tracers".
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
    assert!(!out.status.success());
    let t1 = fresh_scrape(port);
    println!(
        "XDP load outside the rule: denials +{} (tracers +{}), load failures(permission) +{}",
        all(&t1) - all(&t0),
        denials(&t1, "load", "tracers") - denials(&t0, "load", "tracers"),
        failures(&t1) - failures(&t0)
    );
    assert_eq!(all(&t1) - all(&t0), 1.0, "one denial, counted once:\n{t1}");
    assert_eq!(
        denials(&t1, "load", "tracers") - denials(&t0, "load", "tracers"),
        1.0
    );

    // A caller no rule names: one denial, rule "none".
    let out = d.cli_as(
        NORULE,
        &[
            "load",
            "file",
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "tracepoint:tp_count",
        ],
    );
    assert!(!out.status.success());
    let t2 = fresh_scrape(port);
    println!(
        "load by a caller no rule names: denials +{} (none +{})",
        all(&t2) - all(&t1),
        denials(&t2, "load", "none") - denials(&t1, "load", "none")
    );
    assert_eq!(all(&t2) - all(&t1), 1.0, "one denial:\n{t2}");
    assert_eq!(
        denials(&t2, "load", "none") - denials(&t1, "load", "none"),
        1.0
    );

    // Named by "tracers", which does not grant unload: counted once, and not as "none".
    let out = d.cli_as(TENANT, &["unload", "1"]);
    assert!(!out.status.success());
    let t3 = fresh_scrape(port);
    let lines: Vec<&str> = t3
        .lines()
        .filter(|l| l.starts_with("bpfman_policy_denials_total{action=\"unload\""))
        .collect();
    println!(
        "unload by the tenant (action not in its rule): denials +{}: {lines:?}",
        all(&t3) - all(&t2)
    );
    assert_eq!(all(&t3) - all(&t2), 1.0, "one denial:\n{t3}");
    assert_eq!(
        denials(&t3, "unload", "none"),
        0.0,
        "a caller 'tracers' names is not counted as rule=\"none\": {lines:?}"
    );
    drop(d);
}
