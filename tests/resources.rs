//! Availability under floods, with real unprivileged users against the real daemon: idle
//! connections, half-sent gRPC messages on many HTTP/2 streams, FIFOs and unbounded files
//! as bytecode or uprobe targets, huge requests, metadata, a trickling registry, and
//! cancelled requests. Throughout, root must stay served (`bpfman system info` within a
//! second), the daemon's memory, fds and CPU must stay bounded, and afterwards nothing
//! loaded or attached may have changed (store and kernel compared before and after).
//!
//! Tenants act either through the real CLI (`runuser`) or, where a raw connection or a
//! hand-made request is needed, from a thread of this process whose credentials are the
//! tenant's (raw setresuid/setgroups syscalls change only the calling thread, and the
//! daemon identifies the peer by SO_PEERCRED, taken at connect).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bpfman_api::ext;
use bpfman_api::ext::bpfman_ext_client::BpfmanExtClient;
use bpfman_api::v1;
use bpfman_api::v1::bpfman_client::BpfmanClient;
use common::{BPFMAN, Daemon, Netns, obj};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------

/// The socket's group: every test user is in it.
const SOCK: &str = "bpfres-sock";
/// Tenant A: named by a rule that grants images, uprobes and a FIFO directory.
const A: &str = "bpfres-a";
/// Tenant B: named by a rule without `images`.
const B: &str = "bpfres-b";
/// In the socket group, named by no rule.
const NR: &str = "bpfres-nr";

fn users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        common::ensure_group(SOCK);
        for u in [A, B, NR] {
            common::ensure_user(u, Some(SOCK), &[]);
        }
        raise_nofile();
    });
}

fn id_of(user: &str, flag: &str) -> u32 {
    let o = Command::new("id").args([flag, user]).output().expect("id");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

#[derive(Clone, Copy, Debug)]
struct Who {
    uid: u32,
    gid: u32,
}

fn who(user: &str) -> Who {
    Who {
        uid: id_of(user, "-u"),
        gid: id_of(user, "-g"),
    }
}

/// This process holds many connections at once.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Runs `f` on a fresh thread whose credentials are `w`'s (that thread only).
fn as_user<T: Send + 'static>(w: Who, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let groups = [w.gid];
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()),
                0,
                "setgroups"
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresgid, w.gid, w.gid, w.gid),
                0,
                "setresgid"
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresuid, w.uid, w.uid, w.uid),
                0,
                "setresuid"
            );
        }
        f()
    })
    .join()
    .expect("user thread panicked")
}

/// Runs the real CLI as `user`.
/// `user` loads tc_count and attaches it by TCX on `iface` ingress at `priority`.
fn tcx_count_as(d: &Daemon, user: &str, iface: &str, priority: u32) {
    let id = ok_as(
        d,
        user,
        &[
            "load",
            "file",
            "--path",
            &obj("tc_test.bpf.o"),
            "--programs",
            "tcx:tc_count",
        ],
    )[0]["id"]
        .to_string();
    let p = priority.to_string();
    ok_as(
        d,
        user,
        &["attach", &id, "tcx", "-i", iface, "-d", "ingress", "-p", &p],
    );
}

fn cli_as(d: &Daemon, user: &str, args: &[&str]) -> Output {
    d.cli_as(user, args)
}

fn ok_as(d: &Daemon, user: &str, args: &[&str]) -> Value {
    d.json_as(user, args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------------------

/// Knobs of the test config.
struct Cfg {
    max_connections: usize,
    max_connections_per_uid: usize,
    max_requests: usize,
    max_requests_per_uid: usize,
    handshake: u64,
    idle: u64,
    pull_timeout: u64,
    max_pulls: u32,
    max_request_bytes: usize,
    bytecode_in_flight: u64,
    reconcile: u64,
    fifo_dir: String,
    iface: String,
}

impl Cfg {
    fn new(fifo_dir: &str, iface: &str) -> Self {
        Self {
            max_connections: 256,
            max_connections_per_uid: 16,
            max_requests: 64,
            max_requests_per_uid: 8,
            handshake: 10,
            idle: 120,
            pull_timeout: 300,
            max_pulls: 2,
            max_request_bytes: 1 << 20,
            bytecode_in_flight: 256 << 20,
            reconcile: 30,
            fifo_dir: fifo_dir.to_string(),
            iface: iface.to_string(),
        }
    }

    fn toml(&self) -> String {
        let objs = objs();
        format!(
            r#"
[api]
socket_group = "{SOCK}"
max_connections = {mc}
max_connections_per_uid = {mcu}
max_requests = {mr}
max_requests_per_uid = {mru}
handshake_timeout_secs = {hs}
idle_timeout_secs = {idle}

[daemon]
reconcile_interval_secs = {rec}
max_request_bytes = {mrb}
max_bytecode_bytes_in_flight = {bif}

[images]
cache_dir = "@DIR@/images"
pull_timeout_secs = {pt}
max_pulls_per_uid = {mp}

[[policy.rule]]
name = "tenant-a"
users = ["{A}"]
actions = ["load", "attach", "detach", "unload", "list", "get", "pull"]
program_types = ["xdp", "tcx", "tracepoint", "uprobe"]
file_dirs = ["{objs}", "{fifo}"]
uprobe_targets = ["{fifo}/*"]
images = ["127.0.0.1"]
interfaces = ["{iface}"]
priority = [100, 500]

[[policy.rule]]
name = "tenant-b"
users = ["{B}"]
actions = ["load", "attach", "detach", "unload", "list", "get", "pull"]
program_types = ["tcx"]
file_dirs = ["{objs}"]
interfaces = ["{iface}"]
priority = [501, 900]
"#,
            bif = self.bytecode_in_flight,
            mc = self.max_connections,
            mcu = self.max_connections_per_uid,
            mr = self.max_requests,
            mru = self.max_requests_per_uid,
            hs = self.handshake,
            idle = self.idle,
            rec = self.reconcile,
            mrb = self.max_request_bytes,
            pt = self.pull_timeout,
            mp = self.max_pulls,
            fifo = self.fifo_dir,
            iface = self.iface,
        )
    }
}

/// The directory of the world-readable test objects.
fn objs() -> String {
    Path::new(&obj("tc_test.bpf.o"))
        .parent()
        .expect("objs dir")
        .canonicalize()
        .expect("canonical objs dir")
        .display()
        .to_string()
}

/// A world-traversable directory for FIFOs and hostile files, removed on drop.
fn hostile_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("bpfres-files-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
}

struct Env {
    d: Daemon,
    ns: Netns,
    files: tempfile::TempDir,
}

fn start(f: impl FnOnce(&mut Cfg)) -> Env {
    start_with_env(f, &[])
}

fn start_with_env(f: impl FnOnce(&mut Cfg), env: &[(&str, &str)]) -> Env {
    users();
    let ns = Netns::new();
    let files = hostile_dir();
    let dir = files.path().canonicalize().unwrap().display().to_string();
    let mut c = Cfg::new(&dir, &ns.host_if);
    f(&mut c);
    let d = Daemon::start_with(&c.toml(), env);
    // Tenants reach the socket through the test's private directory.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Env { d, ns, files }
}

// ---------------------------------------------------------------------------------------
// Measuring the daemon
// ---------------------------------------------------------------------------------------

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

/// Peak RSS since the last `reset_peak`.
fn hwm_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM") as f64 / 1024.0
}

/// Resets VmHWM to the current RSS (Linux 4.0+).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// User + system CPU seconds the daemon has used.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Root's `bpfman system info`: how long it took, and whether it worked.
fn root_info(d: &Daemon) -> (Duration, bool, String) {
    let t = Instant::now();
    let o = d.cli(&["-o", "json", "system", "info"]);
    (t.elapsed(), o.status.success(), stderr(&o))
}

/// Samples, in the background: root's system info (and list) latency every 250 ms,
/// the daemon's RSS and fds every 25 ms.
struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<Stats>>,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    calls: u32,
    failures: Vec<String>,
    max_latency: Duration,
    max_rss_mib: f64,
    max_fds: usize,
}

impl Probe {
    fn start(d: &Daemon, with_list: bool) -> Self {
        let pid = d.pid().expect("daemon pid");
        reset_peak(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let socket = d.socket.clone();
        let (s1, st1) = (stop.clone(), stats.clone());
        let cli = std::thread::spawn(move || {
            // Bounded: at most 10 minutes of probing.
            let end = Instant::now() + Duration::from_secs(600);
            while !s1.load(Ordering::SeqCst) && Instant::now() < end {
                let mut cmds: Vec<Vec<&str>> = vec![vec!["-o", "json", "system", "info"]];
                if with_list {
                    cmds.push(vec!["-o", "json", "list", "programs"]);
                }
                for c in cmds {
                    let t = Instant::now();
                    let o = Command::new(BPFMAN)
                        .args(&c)
                        .env("BPFMAN_SOCKET", &socket)
                        .output()
                        .expect("bpfman");
                    let dt = t.elapsed();
                    let mut s = st1.lock().unwrap();
                    s.calls += 1;
                    s.max_latency = s.max_latency.max(dt);
                    if !o.status.success() {
                        s.failures.push(format!("{}: {}", c.join(" "), stderr(&o)));
                    } else if dt > Duration::from_secs(1) {
                        s.failures.push(format!("{} took {dt:?}", c.join(" ")));
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let (s2, st2) = (stop.clone(), stats.clone());
        let mem = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(600);
            while !s2.load(Ordering::SeqCst) && Instant::now() < end {
                let (r, f) = (rss_mib(pid), fds(pid));
                let mut s = st2.lock().unwrap();
                s.max_rss_mib = s.max_rss_mib.max(r);
                s.max_fds = s.max_fds.max(f);
                drop(s);
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Probe {
            stop,
            threads: vec![cli, mem],
            stats,
        }
    }

    fn finish(self, d: &Daemon) -> Stats {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let mut s = self.stats.lock().unwrap().clone();
        if let Some(pid) = d.pid() {
            s.max_rss_mib = s.max_rss_mib.max(hwm_mib(pid));
        }
        s
    }
}

/// Root stayed served: every probe call worked within a second.
fn assert_served(s: &Stats, what: &str) {
    assert!(s.calls >= 2, "{what}: the probe ran only {} calls", s.calls);
    assert!(
        s.failures.is_empty(),
        "{what}: root was not served within 1 s: {:?}",
        s.failures
    );
    assert!(s.max_latency < Duration::from_secs(1), "{what}: {s:?}");
}

// ---------------------------------------------------------------------------------------
// What is loaded and attached: store and kernel
// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// (id, name, type, owner uid) of every program the store has.
    programs: Vec<(u64, String, String, u64)>,
    /// (link id, program id, iface, kernel link id) of every link.
    links: Vec<(u64, u64, String, u64)>,
    /// Pins under bpffs.
    pins: Vec<String>,
}

fn snapshot(d: &Daemon) -> Snapshot {
    let mut programs: Vec<_> = d
        .json(&["list", "programs"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or("").to_string(),
                p["type"].as_str().unwrap_or("").to_string(),
                p["owner_uid"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    programs.sort();
    let mut links: Vec<_> = d
        .json(&["list", "links"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["link_id"].as_u64().unwrap_or(0),
                l["program_id"].as_u64().unwrap_or(0),
                l["iface"].as_str().unwrap_or("").to_string(),
                l["kernel_link_id"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    links.sort();
    // The kernel agrees: every program and kernel link the store names exists.
    for (id, name, ..) in &programs {
        let o = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()
            .expect("bpftool");
        assert!(
            o.status.success(),
            "program {id} ({name}) is in the store but not in the kernel"
        );
    }
    for (id, _, iface, kid) in &links {
        if *kid == 0 {
            continue;
        }
        let o = Command::new("bpftool")
            .args(["-j", "link", "show", "id", &kid.to_string()])
            .output()
            .expect("bpftool");
        assert!(
            o.status.success(),
            "link {id} on {iface} (kernel link {kid}) is in the store but not in the kernel"
        );
    }
    Snapshot {
        programs,
        links,
        pins: d.pins(),
    }
}

/// Programs and links of several owners: a programs.d XDP program on the veth (root,
/// static), tenant A's TCX link, tenant B's TCX link, root's tracepoint link.
fn populate(e: &Env) {
    let d = &e.d;
    let pd = d.dir.path().join("programs.d");
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::write(
        pd.join("static.toml"),
        format!(
            r#"
[[program]]
name = "count"
file = "{}"
function = "xdp_count_pass"
type = "xdp"

[[program.attach]]
type = "xdp"
iface = "{}"
priority = 50
"#,
            obj("xdp_test.bpf.o"),
            e.ns.host_if
        ),
    )
    .unwrap();
    tcx_count_as(d, A, &e.ns.host_if, 200);
    tcx_count_as(d, B, &e.ns.host_if, 600);
    let t = d.load_one(&[
        "--path",
        &obj("tracing_test.bpf.o"),
        "--programs",
        "tracepoint:tp_count",
    ]);
    d.attach(&[
        &t.to_string(),
        "tracepoint",
        "-t",
        "syscalls/sys_enter_getpid",
    ]);
    // The static program comes up within a poll or two (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let links = d.json(&["list", "links"]);
        let xdp = links
            .as_array()
            .map(|a| a.iter().filter(|l| l["type"] == "xdp").count())
            .unwrap_or(0);
        if xdp == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs.d program not attached: {links}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// Raw clients: tonic as a tenant, and a hand-encoded HTTP/2 client
// ---------------------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A channel whose connect runs on the calling thread (so with its credentials).
async fn channel(socket: &Path) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connecting")
}

fn file_load(path: &str, names: Vec<String>, kind: v1::BpfmanProgramType) -> v1::LoadRequest {
    v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(v1::bytecode_location::Location::File(path.to_string())),
        }),
        info: names
            .into_iter()
            .map(|name| v1::LoadInfo {
                name,
                program_type: kind as i32,
                info: None,
            })
            .collect(),
        ..Default::default()
    }
}

/// A hand-encoded HTTP/2 client: enough to open streams and leave messages half-sent.
mod h2raw {
    use super::*;

    pub const SETTINGS: u8 = 4;
    pub const HEADERS: u8 = 1;
    pub const DATA: u8 = 0;
    pub const RST: u8 = 3;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;

    pub fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
        f.extend_from_slice(&(sid & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn int7(out: &mut Vec<u8>, n: usize) {
        if n < 127 {
            out.push(n as u8);
        } else {
            out.push(127);
            let mut r = n - 127;
            while r >= 128 {
                out.push((r % 128 + 128) as u8);
                r /= 128;
            }
            out.push(r as u8);
        }
    }

    /// HPACK "literal header field without indexing, new name".
    pub fn header(out: &mut Vec<u8>, name: &str, value: &str) {
        out.push(0);
        int7(out, name.len());
        out.extend_from_slice(name.as_bytes());
        int7(out, value.len());
        out.extend_from_slice(value.as_bytes());
    }

    /// What the server did on one connection.
    #[derive(Default)]
    pub struct Seen {
        /// Streams that got a response HEADERS frame with END_STREAM (trailers-only:
        /// refused or answered at once).
        pub ended: Vec<u32>,
        /// Streams that got response HEADERS without END_STREAM.
        pub headers: Vec<u32>,
        pub rst: Vec<(u32, u32)>,
        pub goaway: bool,
        pub data_bytes: usize,
    }

    pub struct Conn {
        w: Arc<Mutex<UnixStream>>,
        next: u32,
        pub closed: Arc<AtomicBool>,
        pub seen: Arc<Mutex<Seen>>,
        conn_credit: Arc<AtomicI64>,
        stream_initial: Arc<AtomicI64>,
        stream_credit: Arc<Mutex<HashMap<u32, i64>>>,
        reader: Option<std::thread::JoinHandle<()>>,
    }

    impl Conn {
        pub fn open(s: UnixStream) -> Conn {
            let r = s.try_clone().expect("clone");
            let w = Arc::new(Mutex::new(s));
            {
                let mut g = w.lock().unwrap();
                g.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
                g.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
            }
            let closed = Arc::new(AtomicBool::new(false));
            let seen = Arc::new(Mutex::new(Seen::default()));
            let conn_credit = Arc::new(AtomicI64::new(65535));
            let stream_initial = Arc::new(AtomicI64::new(65535));
            let stream_credit = Arc::new(Mutex::new(HashMap::new()));
            let (w2, c2, s2, cc, si, sc) = (
                w.clone(),
                closed.clone(),
                seen.clone(),
                conn_credit.clone(),
                stream_initial.clone(),
                stream_credit.clone(),
            );
            let reader = std::thread::spawn(move || {
                let mut r = r;
                let mut hdr = [0u8; 9];
                loop {
                    if r.read_exact(&mut hdr).is_err() {
                        break;
                    }
                    let len =
                        ((hdr[0] as usize) << 16) | ((hdr[1] as usize) << 8) | hdr[2] as usize;
                    let (ty, flags) = (hdr[3], hdr[4]);
                    let sid = u32::from_be_bytes([hdr[5], hdr[6], hdr[7], hdr[8]]) & 0x7fff_ffff;
                    let mut p = vec![0u8; len];
                    if r.read_exact(&mut p).is_err() {
                        break;
                    }
                    match ty {
                        SETTINGS if flags & 1 == 0 => {
                            for kv in p.chunks(6) {
                                if kv.len() == 6 && u16::from_be_bytes([kv[0], kv[1]]) == 4 {
                                    let v = u32::from_be_bytes([kv[2], kv[3], kv[4], kv[5]]);
                                    let old = si.swap(v as i64, Ordering::SeqCst);
                                    let mut m = sc.lock().unwrap();
                                    for c in m.values_mut() {
                                        *c += v as i64 - old;
                                    }
                                }
                            }
                            let _ = w2.lock().unwrap().write_all(&frame(SETTINGS, 1, 0, &[]));
                        }
                        PING if flags & 1 == 0 => {
                            let _ = w2.lock().unwrap().write_all(&frame(PING, 1, 0, &p));
                        }
                        WINDOW_UPDATE if p.len() == 4 => {
                            let inc =
                                (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff) as i64;
                            if sid == 0 {
                                cc.fetch_add(inc, Ordering::SeqCst);
                            } else {
                                *sc.lock().unwrap().entry(sid).or_insert(0) += inc;
                            }
                        }
                        HEADERS => {
                            let mut s = s2.lock().unwrap();
                            if flags & 1 != 0 {
                                s.ended.push(sid);
                            } else {
                                s.headers.push(sid);
                            }
                        }
                        DATA => {
                            s2.lock().unwrap().data_bytes += len;
                            if flags & 1 != 0 {
                                s2.lock().unwrap().ended.push(sid);
                            }
                        }
                        RST if p.len() == 4 => {
                            let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                            s2.lock().unwrap().rst.push((sid, code));
                        }
                        GOAWAY => s2.lock().unwrap().goaway = true,
                        _ => {}
                    }
                }
                c2.store(true, Ordering::SeqCst);
            });
            Conn {
                w,
                next: 1,
                closed,
                seen,
                conn_credit,
                stream_initial,
                stream_credit,
                reader: Some(reader),
            }
        }

        fn write(&self, bytes: &[u8]) -> bool {
            self.w.lock().unwrap().write_all(bytes).is_ok()
        }

        /// Opens a gRPC stream for `path` (request headers, no body yet).
        pub fn start(&mut self, path: &str) -> u32 {
            let sid = self.next;
            self.next += 2;
            let mut h = Vec::new();
            header(&mut h, ":method", "POST");
            header(&mut h, ":scheme", "http");
            header(&mut h, ":path", path);
            header(&mut h, ":authority", "localhost");
            header(&mut h, "content-type", "application/grpc");
            header(&mut h, "te", "trailers");
            self.stream_credit
                .lock()
                .unwrap()
                .insert(sid, self.stream_initial.load(Ordering::SeqCst));
            self.write(&frame(HEADERS, 4, sid, &h));
            sid
        }

        /// Sends DATA on `sid` within the flow-control windows the server granted,
        /// waiting at most `wait` for more credit; returns the bytes sent.
        pub fn send(&self, sid: u32, mut bytes: &[u8], end: bool, wait: Duration) -> usize {
            let mut sent = 0;
            let deadline = Instant::now() + wait;
            while !bytes.is_empty() {
                {
                    let seen = self.seen.lock().unwrap();
                    if seen.ended.contains(&sid) || seen.rst.iter().any(|(s, _)| *s == sid) {
                        break;
                    }
                }
                let sc = *self.stream_credit.lock().unwrap().get(&sid).unwrap_or(&0);
                let cc = self.conn_credit.load(Ordering::SeqCst);
                let n = (bytes.len() as i64).min(16384).min(sc).min(cc);
                if n <= 0 {
                    if Instant::now() > deadline || self.closed.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let n = n as usize;
                let last = end && n == bytes.len();
                if !self.write(&frame(DATA, if last { 1 } else { 0 }, sid, &bytes[..n])) {
                    break;
                }
                self.conn_credit.fetch_sub(n as i64, Ordering::SeqCst);
                *self.stream_credit.lock().unwrap().entry(sid).or_insert(0) -= n as i64;
                bytes = &bytes[n..];
                sent += n;
            }
            sent
        }

        pub fn ended(&self) -> usize {
            self.seen.lock().unwrap().ended.len()
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            let _ = self.w.lock().unwrap().shutdown(std::net::Shutdown::Both);
            if let Some(t) = self.reader.take() {
                let _ = t.join();
            }
        }
    }

    /// A gRPC message prefix announcing `len` bytes.
    pub fn grpc_prefix(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }
}

/// Opens `n` raw connections as `w` (all before returning).
fn raw_connections(socket: &Path, w: Who, n: usize) -> Vec<UnixStream> {
    let socket = socket.to_path_buf();
    as_user(w, move || {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            match UnixStream::connect(&socket) {
                Ok(s) => v.push(s),
                Err(e) => panic!("connect #{} as uid {}: {e}", v.len(), w.uid),
            }
        }
        v
    })
}

/// How many of `conns` the daemon has closed (EOF or reset), polled without blocking.
fn closed_count(conns: &[UnixStream]) -> usize {
    let mut n = 0;
    for c in conns {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 256];
        match (&*c).read(&mut b) {
            Ok(0) => n += 1,
            Ok(_) => {} // server SETTINGS or data: still open
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => n += 1,
        }
    }
    n
}

// ---------------------------------------------------------------------------------------
// F2: idle-connection flood
// ---------------------------------------------------------------------------------------

#[test]
fn f2_idle_connection_flood_keeps_root_served_and_forgets_nothing() {
    require_root!();
    let e = start(|c| {
        c.max_connections_per_uid = 16;
        c.max_connections = 24;
        c.handshake = 4;
        c.idle = 3;
        c.reconcile = 1;
    });
    let d = &e.d;
    populate(&e);
    let before = snapshot(d);
    let pid = d.pid().unwrap();
    let fds0 = fds(pid);
    let nr = who(NR);
    let b = who(B);

    // ~1,100 raw connections from the no-rule member, 100 from tenant B, all held.
    let probe = Probe::start(d, true);
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let flood = raw_connections(&d.socket, nr, 1100);
    let flood_b = raw_connections(&d.socket, b, 100);
    let connect_time = t0.elapsed();
    // Give the daemon a moment to accept and refuse the excess.
    std::thread::sleep(Duration::from_millis(1500));
    let closed_nr = closed_count(&flood);
    let closed_b = closed_count(&flood_b);
    let fds_held = fds(pid);
    eprintln!(
        "F2: 1200 connections in {connect_time:?}; no-rule: {} of 1100 still open, tenant B: {} \
         of 100 still open; daemon fds {fds0} -> {fds_held}",
        1100 - closed_nr,
        100 - closed_b
    );
    assert_eq!(
        1100 - closed_nr,
        16,
        "the no-rule member holds exactly max_connections_per_uid (16) connections"
    );
    assert_eq!(
        100 - closed_b,
        8,
        "tenant B gets what is left of max_connections (24 - 16)"
    );
    assert!(
        fds_held <= fds0 + 24 + 16,
        "the daemon's fds grew from {fds0} to {fds_held} with 24 connections held"
    );
    // Root is never counted: served while the caps are full.
    let (dt, ok, err) = root_info(d);
    assert!(ok && dt < Duration::from_secs(1), "root: {dt:?} {err}");
    // No spinning over the next seconds (the excess was refused; nothing retries).
    std::thread::sleep(Duration::from_millis(2000));
    // After the handshake timeout (4 s) every idle connection is closed.
    let deadline = t0 + Duration::from_secs(9);
    while closed_count(&flood) < 1100 || closed_count(&flood_b) < 100 {
        assert!(
            Instant::now() < deadline,
            "idle connections not closed after handshake_timeout_secs = 4: {} and {} still open",
            1100 - closed_count(&flood),
            100 - closed_count(&flood_b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = t0.elapsed();
    let cpu = cpu_secs(pid) - cpu0;
    let stats = probe.finish(d);
    eprintln!(
        "F2: all idle connections closed {closed_after:?} after the flood began; daemon CPU \
         {cpu:.2} s over {:?} (probe included); {stats:?}",
        t0.elapsed()
    );
    assert!(
        closed_after >= Duration::from_secs(4),
        "closed before handshake_timeout_secs"
    );
    assert_served(&stats, "F2 flood");
    assert!(
        cpu < 1.5,
        "the daemon used {cpu:.2} s of CPU handling a connection flood (spinning?)"
    );
    drop(flood);
    drop(flood_b);

    // An idle connection that made a request: closed after idle_timeout_secs (3).
    let socket = d.socket.clone();
    let (idle_closed, answered) = as_user(who(A), move || {
        let s = UnixStream::connect(&socket).unwrap();
        let mut c = h2raw::Conn::open(s);
        let sid = c.start("/bpfman.ext.v1.BpfmanExt/SystemInfo");
        c.send(sid, &h2raw::grpc_prefix(0), true, Duration::from_secs(2));
        let t = Instant::now();
        while !c.closed.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let answered = c.seen.lock().unwrap().data_bytes > 0;
        (t.elapsed(), answered)
    });
    eprintln!("F2: a connection idle after one request closed after {idle_closed:?}");
    assert!(answered, "tenant A's raw SystemInfo got no answer");
    assert!(
        idle_closed >= Duration::from_secs(2) && idle_closed < Duration::from_secs(7),
        "idle_timeout_secs = 3, closed after {idle_closed:?}"
    );
    // Nothing was forgotten: programs.d, tenants' links, root's link.
    std::thread::sleep(Duration::from_secs(2)); // two more background reconciliations
    assert_eq!(
        snapshot(d),
        before,
        "the flood changed what is loaded or attached"
    );
}

#[test]
fn f2_fd_exhaustion_makes_the_daemon_forget_nothing_nor_spin() {
    require_root!();
    // Caps above the fd budget on purpose: the daemon runs out of fds.
    let e = start(|c| {
        c.max_connections_per_uid = 5000;
        c.max_connections = 5000;
        c.handshake = 6;
        c.reconcile = 1;
    });
    let d = &e.d;
    populate(&e);
    let before = snapshot(d);
    let pid = d.pid().unwrap();
    let used = fds(pid) as u64;
    let limit = used + 40;
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: 20000,
    };
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let flood = raw_connections(&d.socket, who(NR), 400);
    // Over at least three background reconciliations with no fd to spare.
    std::thread::sleep(Duration::from_millis(4500));
    let cpu = cpu_secs(pid) - cpu0;
    let held = fds(pid);
    eprintln!(
        "F2/EMFILE: soft limit {limit}, daemon fds {used} -> {held}; CPU {cpu:.2} s over \
         {:?}",
        t0.elapsed()
    );
    assert!(
        cpu < 1.5,
        "the daemon spun at EMFILE: {cpu:.2} s CPU in 4.5 s"
    );
    // The handshake timeout frees the fds; then the daemon must be whole again.
    drop(flood);
    unsafe {
        libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (dt, ok, _) = root_info(d);
        if ok && dt < Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon not served after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let removed: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains("record removed") || l.contains("could not check"))
        .map(|l| l.split("reconcile: ").last().unwrap_or(l).to_string())
        .collect();
    eprintln!("F2/EMFILE: reconciliation said: {removed:#?}");
    // Every link recorded before is still recorded, and still in the kernel.
    let after = snapshot(d);
    let lost: Vec<_> = before
        .links
        .iter()
        .filter(|l| !after.links.contains(l))
        .collect();
    let detached: Vec<_> = before
        .links
        .iter()
        .filter(|(_, _, _, kid)| {
            *kid != 0
                && !Command::new("bpftool")
                    .args(["link", "show", "id", &kid.to_string()])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
        })
        .collect();
    assert!(
        lost.is_empty() && detached.is_empty(),
        "fd exhaustion (EMFILE) made reconciliation forget links whose interface exists: \
         records lost {lost:?}, kernel links gone {detached:?}; reconcile said {removed:#?}"
    );
    assert_eq!(
        after, before,
        "fd exhaustion changed what is loaded or attached"
    );
    assert!(e.ns.ping(), "the veth stopped passing traffic");
}

// ---------------------------------------------------------------------------------------
// F12: half-sent messages on many streams
// ---------------------------------------------------------------------------------------

/// Opens `conns` connections as `w`, each with `streams` Load streams announcing a
/// message of `announce` bytes and sending `send` bytes of it. Returns the connections
/// (held) and how many streams were sent.
fn half_sent(
    socket: &Path,
    w: Who,
    conns: usize,
    streams: usize,
    announce: u32,
    send: usize,
    sent: &AtomicUsize,
) -> Vec<h2raw::Conn> {
    let socket = socket.to_path_buf();
    let v = as_user(w, move || {
        (0..conns)
            .map(|_| UnixStream::connect(&socket).expect("connect"))
            .collect::<Vec<_>>()
    });
    let mut out = Vec::new();
    for s in v {
        let mut c = h2raw::Conn::open(s);
        let body: Vec<u8> = h2raw::grpc_prefix(announce)
            .into_iter()
            .chain(std::iter::repeat_n(0x0a, send))
            .collect();
        for _ in 0..streams {
            let sid = c.start("/bpfman.v1.Bpfman/Load");
            // A moment for an immediate refusal to arrive first.
            std::thread::sleep(Duration::from_millis(5));
            let n = c.send(sid, &body, false, Duration::from_millis(300));
            sent.fetch_add(n, Ordering::SeqCst);
        }
        out.push(c);
    }
    out
}

#[test]
fn f12_half_sent_messages_on_many_streams_hold_bounded_memory() {
    require_root!();
    let e = start(|c| {
        c.handshake = 30;
        c.idle = 60;
    });
    let d = &e.d;
    let pid = d.pid().unwrap();
    let rss0 = rss_mib(pid);
    let probe = Probe::start(d, true);
    let t0 = Instant::now();
    // Tenants A and B: 4 connections x 8 streams each, every stream announcing a
    // message just under max_request_bytes and sending all of it but 64 bytes (as far
    // as flow control lets it). The no-rule
    // member: 4 x 8 more.
    let announce: u32 = (1 << 20) - 16;
    let part = announce as usize - 64;
    let sent = AtomicUsize::new(0);
    let a = half_sent(&d.socket, who(A), 4, 8, announce, part, &sent);
    let b = half_sent(&d.socket, who(B), 4, 8, announce, part, &sent);
    let nr = half_sent(&d.socket, who(NR), 4, 8, announce, part, &sent);
    let setup = t0.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let (dt, ok, err) = root_info(d);
    assert!(ok && dt < Duration::from_secs(1), "root: {dt:?} {err}");
    let answered = |v: &[h2raw::Conn]| v.iter().map(|c| c.ended()).sum::<usize>();
    let (ra, rb, rn) = (answered(&a), answered(&b), answered(&nr));
    let open = |v: &[h2raw::Conn]| {
        v.iter()
            .filter(|c| !c.closed.load(Ordering::SeqCst))
            .count()
    };
    let stats = probe.finish(d);
    eprintln!(
        "F12: 96 half-sent streams ({:.1} MiB of bodies sent) set up in {setup:?}; answered at once: A {ra}/32, B {rb}/32, \
         no-rule {rn}/32; connections open A {} B {} no-rule {}; RSS {rss0:.1} MiB -> peak \
         {:.1} MiB; root system info max {:?} over {} calls",
        sent.load(Ordering::SeqCst) as f64 / 1048576.0,
        open(&a),
        open(&b),
        open(&nr),
        stats.max_rss_mib,
        stats.max_latency,
        stats.calls
    );
    assert_served(&stats, "F12");
    // Each tenant holds at most max_requests_per_uid (8) half-sent requests; the rest
    // are refused at once, before their bodies are read.
    assert_eq!(ra, 32 - 8, "tenant A: exactly 8 requests admitted");
    assert_eq!(rb, 32 - 8, "tenant B: exactly 8 requests admitted");
    assert_eq!(rn, 32, "no-rule member: every stream refused at once");
    let bound = 200.0;
    assert!(
        stats.max_rss_mib < bound,
        "the daemon's RSS reached {:.1} MiB (bound {bound} MiB)",
        stats.max_rss_mib
    );
    drop((a, b, nr));
    // Afterwards too.
    let (dt, ok, err) = root_info(d);
    assert!(
        ok && dt < Duration::from_secs(1),
        "root after: {dt:?} {err}"
    );
    let o = cli_as(d, A, &["list", "programs"]);
    assert!(o.status.success(), "tenant A after: {}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// F9: bytecode of unbounded size
// ---------------------------------------------------------------------------------------

fn sparse_elf(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"\x7fELF\x02\x01\x01\0").unwrap();
    f.set_len(size).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// `n` loads of `path` as `user` at once, each by its own CLI process.
fn parallel_loads(
    d: &Daemon,
    user: &'static str,
    path: &Path,
    n: usize,
) -> Vec<std::thread::JoinHandle<Output>> {
    (0..n)
        .map(|_| {
            let (sock, p) = (d.socket.clone(), path.display().to_string());
            std::thread::spawn(move || {
                Command::new("runuser")
                    .args(["-u", user, "--", "env"])
                    .arg(format!("BPFMAN_SOCKET={}", sock.display()))
                    .args([
                        BPFMAN,
                        "load",
                        "file",
                        "--path",
                        &p,
                        "--programs",
                        "tcx:tc_count",
                    ])
                    .output()
                    .unwrap()
            })
        })
        .collect()
}

#[test]
fn f9_unbounded_bytecode_is_refused_with_bounded_memory() {
    require_root!();
    let e = start(|_| {});
    let d = &e.d;
    let dir = e.files.path().canonicalize().unwrap();
    let zero = dir.join("zero.o");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let huge = dir.join("huge.o");
    sparse_elf(&huge, 3 << 30);
    let near = dir.join("near.o");
    sparse_elf(&near, (64 << 20) - 4096);
    let pid = d.pid().unwrap();
    let rss0 = rss_mib(pid);
    let probe = Probe::start(d, false);
    let mut times = Vec::new();
    for (user, path, want) in [
        // The tenant is confined beneath its grant: the symlink out is refused first.
        (A, &zero, &["leads outside", "character device"][..]),
        ("root", &zero, &["character device"][..]),
        (A, &huge, &["at most"][..]),
        ("root", &huge, &["at most"][..]),
        (A, &near, &["eBPF"][..]),
    ] {
        let args = [
            "load",
            "file",
            "--path",
            path.to_str().unwrap(),
            "--programs",
            "tcx:tc_count",
        ];
        let t = Instant::now();
        let o = if user == "root" {
            d.cli(&args)
        } else {
            cli_as(d, user, &args)
        };
        let dt = t.elapsed();
        times.push((user, path.file_name().unwrap().to_owned(), dt));
        let err = stderr(&o);
        assert!(!o.status.success(), "{user} loaded {}", path.display());
        assert!(
            want.iter().any(|w| err.contains(w)),
            "{user} {}: expected {want:?} in: {err}",
            path.display()
        );
        assert!(
            dt < Duration::from_secs(3),
            "{user} {}: {dt:?}",
            path.display()
        );
    }
    // One tenant, eight near-cap files in parallel (max_requests_per_uid).
    let ths = parallel_loads(d, A, &near, 8);
    for t in ths {
        assert!(!t.join().unwrap().status.success());
    }
    let stats = probe.finish(d);
    eprintln!(
        "F9: {times:?}; RSS {rss0:.1} MiB -> peak {:.1} MiB (8 parallel 64 MiB-cap loads \
         included); root max {:?}",
        stats.max_rss_mib, stats.max_latency
    );
    assert_served(&stats, "F9");
    // The cap bounds it: a 3 GB file never reached memory. 8 x 64 MiB in flight at
    // most, plus the daemon itself.
    assert!(
        stats.max_rss_mib < rss0 + 8.0 * 64.0 + 64.0,
        "peak RSS {:.1} MiB",
        stats.max_rss_mib
    );
    let now = rss_mib(pid);
    eprintln!("F9: RSS afterwards {now:.1} MiB");
}

/// Many callers' near-cap files at once: the bytecode held in memory is bounded by
/// `max_bytecode_bytes_in_flight`, not by callers x `max_bytecode_bytes`. Loads past the
/// budget fail with RESOURCE_EXHAUSTED, saying which limit and to retry.
#[test]
fn f9_bytecode_in_memory_is_bounded_across_callers() {
    require_root!();
    let e = start(|c| {
        c.max_requests_per_uid = 24;
        c.max_connections_per_uid = 32;
        c.bytecode_in_flight = 128 << 20;
    });
    let d = &e.d;
    let dir = e.files.path().canonicalize().unwrap();
    let near = dir.join("near.o");
    sparse_elf(&near, (64 << 20) - 4096);
    let pid = d.pid().unwrap();
    let rss0 = rss_mib(pid);
    let probe = Probe::start(d, false);
    let ths = parallel_loads(d, A, &near, 24);
    let mut over_budget = 0;
    for t in ths {
        let o = t.join().unwrap();
        assert!(!o.status.success());
        let err = stderr(&o);
        if err.contains("max_bytecode_bytes_in_flight") {
            assert!(err.contains("try again"), "{err}");
            over_budget += 1;
        } else {
            assert!(err.contains("eBPF"), "expected an ELF/eBPF refusal: {err}");
        }
    }
    std::thread::sleep(Duration::from_secs(2)); // the probe keeps asking a while
    let stats = probe.finish(d);
    eprintln!(
        "F9 budget: 24 parallel 64 MiB loads, {over_budget} over the 128 MiB budget; RSS \
         {rss0:.1} MiB -> peak {:.1} MiB; root max {:?}",
        stats.max_rss_mib, stats.max_latency
    );
    assert_served(&stats, "F9 budget");
    // Two 64 MiB files fit the budget; the daemon's parse of each may briefly copy it.
    assert!(
        stats.max_rss_mib < rss0 + 3.0 * 128.0,
        "peak RSS {:.1} MiB",
        stats.max_rss_mib
    );
    // Afterwards the budget is whole again: one more load gets to the ELF check.
    let o = cli_as(
        d,
        A,
        &[
            "load",
            "file",
            "--path",
            near.to_str().unwrap(),
            "--programs",
            "tcx:tc_count",
        ],
    );
    assert!(stderr(&o).contains("eBPF"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// F10: FIFO in file_dirs
// ---------------------------------------------------------------------------------------

#[test]
fn f10_fifo_bytecode_loads_fail_fast_and_root_stays_served() {
    require_root!();
    // All 64 loads may be in progress at once (the default per-uid cap is 8).
    let e = start(|c| c.max_requests_per_uid = 64);
    let d = &e.d;
    let fifo = e.files.path().canonicalize().unwrap().join("prog.o");
    mkfifo(&fifo);
    let probe = Probe::start(d, true);
    let t0 = Instant::now();
    // Tenant A: 8 connections x 8 streams = 64 loads from the FIFO in parallel, in 6
    // rounds.
    let (sock, path) = (d.socket.clone(), fifo.display().to_string());
    let results = as_user(who(A), move || {
        runtime().block_on(async move {
            let mut chans = Vec::new();
            for _ in 0..8 {
                chans.push(channel(&sock).await);
            }
            let mut out = Vec::new();
            for _ in 0..6 {
                let mut tasks = Vec::new();
                for i in 0..64 {
                    let mut c = BpfmanClient::new(chans[i % 8].clone());
                    let req = file_load(&path, vec!["tc_count".into()], v1::BpfmanProgramType::Tcx);
                    tasks.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let r = c.load(req).await;
                        (t.elapsed(), r.map(|_| ()))
                    }));
                }
                for t in tasks {
                    out.push(t.await.expect("task"));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            out
        })
    });
    let all = t0.elapsed();
    let mut fifo_msgs = 0;
    let mut slowest = Duration::ZERO;
    for (dt, r) in &results {
        let st = r.as_ref().expect_err("a FIFO loaded");
        slowest = slowest.max(*dt);
        assert!(st.message().contains("FIFO"), "unexpected failure: {st:?}");
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
        fifo_msgs += 1;
    }
    let stats = probe.finish(d);
    eprintln!(
        "F10: 6 rounds of 64 parallel FIFO loads by one tenant: {fifo_msgs} refused as a FIFO; \
         slowest {slowest:?}, all done in {all:?}; root system info + list max {:?} over {} \
         calls",
        stats.max_latency, stats.calls
    );
    assert_eq!(fifo_msgs, 384);
    assert!(
        slowest < Duration::from_secs(2),
        "a FIFO load hung: {slowest:?}"
    );
    assert_served(&stats, "F10");
    // Afterwards: nothing is stuck; the next loads are all FIFO refusals again.
    for _ in 0..3 {
        let o = cli_as(
            d,
            A,
            &[
                "load",
                "file",
                "--path",
                fifo.to_str().unwrap(),
                "--programs",
                "tcx:tc_count",
            ],
        );
        assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
    }
    for args in [&["system", "info"][..], &["list", "programs"][..]] {
        let t = Instant::now();
        d.json(args);
        assert!(t.elapsed() < Duration::from_secs(1), "{args:?} after");
    }
}

// ---------------------------------------------------------------------------------------
// F11: FIFO as uprobe target, while a no-rule member floods Unload(999999)
// ---------------------------------------------------------------------------------------

#[test]
fn f11_fifo_uprobe_target_and_unload_flood_by_a_no_rule_member() {
    require_root!();
    let e = start(|_| {});
    let d = &e.d;
    let fifo = e.files.path().canonicalize().unwrap().join("target");
    mkfifo(&fifo);
    let prog = ok_as(
        d,
        A,
        &[
            "load",
            "file",
            "--path",
            &obj("tracing_test.bpf.o"),
            "--programs",
            "uprobe:uprobe_count",
        ],
    )[0]["id"]
        .as_u64()
        .unwrap()
        .to_string();
    let probe = Probe::start(d, true);
    // The flood: 4 connections of the no-rule member, 150 Unload(999999) each.
    let stop = Arc::new(AtomicBool::new(false));
    let max_us = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (sock, stop, max_us, refused, other, sent) = (
                d.socket.clone(),
                stop.clone(),
                max_us.clone(),
                refused.clone(),
                other.clone(),
                sent.clone(),
            );
            std::thread::spawn(move || {
                as_user(who(NR), move || {
                    runtime().block_on(async move {
                        let mut c = BpfmanClient::new(channel(&sock).await);
                        // Until the attaches are done (at most 3,000 calls each).
                        for _ in 0..3000 {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            sent.fetch_add(1, Ordering::SeqCst);
                            let t = Instant::now();
                            let r = c.unload(v1::UnloadRequest { id: 999999 }).await;
                            max_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::SeqCst);
                            match r {
                                Err(s)
                                    if s.code() == tonic::Code::PermissionDenied
                                        && s.message().contains("no policy rule names") =>
                                {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                }
                                other_r => other.lock().unwrap().push(format!("{other_r:?}")),
                            }
                        }
                    })
                })
            })
        })
        .collect();
    // Meanwhile tenant A attaches its uprobe to the FIFO, several times.
    let mut attach_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = cli_as(
            d,
            A,
            &[
                "attach",
                &prog,
                "uprobe",
                "-t",
                fifo.to_str().unwrap(),
                "-f",
                "main",
            ],
        );
        attach_times.push(t.elapsed());
        let err = stderr(&o);
        assert!(!o.status.success(), "a uprobe attached to a FIFO");
        assert!(err.contains("FIFO"), "expected a FIFO refusal: {err}");
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        f.join().unwrap();
    }
    let stats = probe.finish(d);
    let worst = Duration::from_micros(max_us.load(Ordering::SeqCst));
    eprintln!(
        "F11: FIFO uprobe attaches refused in {attach_times:?}; {} of {} Unload(999999) by \
         the no-rule member refused, slowest {worst:?}; root max {:?} over {} calls",
        refused.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst),
        stats.max_latency,
        stats.calls
    );
    assert!(
        other.lock().unwrap().is_empty(),
        "no-rule unloads not refused as such: {:?}",
        other.lock().unwrap().first()
    );
    assert!(sent.load(Ordering::SeqCst) >= 400, "the flood did not run");
    assert_eq!(refused.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(
        worst < Duration::from_millis(250),
        "a refusal took {worst:?}"
    );
    assert!(attach_times.iter().all(|t| *t < Duration::from_secs(3)));
    assert_served(&stats, "F11");
    // The program is intact and nothing got attached.
    let links = d.json(&["list", "links"]);
    assert_eq!(links.as_array().map(|a| a.len()), Some(0), "{links}");
    d.json(&["get", "program", &prog]);
}

// ---------------------------------------------------------------------------------------
// F13: a Load with 40k names, and near-limit requests
// ---------------------------------------------------------------------------------------

#[test]
fn f13_huge_loads_are_answered_fast_and_before_authorization() {
    require_root!();
    let e = start(|_| {});
    let d = &e.d;
    let sock = d.socket.clone();
    let path = obj("tc_test.bpf.o");
    let distinct: Vec<String> = (0..40_000).map(|i| format!("fn_{i:05}")).collect();
    let same: Vec<String> = vec!["tc_count".to_string(); 40_000];
    // Near max_request_bytes (1 MiB): ~ 1,000,000 bytes of names.
    let near: Vec<String> = (0..4000).map(|i| format!("{i:0>240}")).collect();
    let over: Vec<String> = (0..4400).map(|i| format!("{i:0>240}")).collect();
    let cases = vec![
        ("40k distinct", distinct, v1::BpfmanProgramType::Tcx),
        ("40k identical", same, v1::BpfmanProgramType::Tcx),
        ("near limit", near, v1::BpfmanProgramType::Tcx),
        ("over limit", over, v1::BpfmanProgramType::Tcx),
    ];
    let mut report = Vec::new();
    for (user, w) in [(NR, Some(who(NR))), (A, Some(who(A))), ("root", None)] {
        for (name, names, kind) in &cases {
            let req = file_load(&path, names.clone(), *kind);
            let s = sock.clone();
            let call = move || {
                runtime().block_on(async move {
                    let mut c = BpfmanClient::new(channel(&s).await);
                    let t = Instant::now();
                    let r = c.load(req).await;
                    (t.elapsed(), r.map(|_| ()))
                })
            };
            let (dt, r) = match w {
                Some(w) => as_user(w, call),
                None => std::thread::spawn(call).join().unwrap(),
            };
            let st = r.expect_err("a hostile load succeeded");
            report.push(format!("{user} {name}: {:?} in {dt:?}", st.code()));
            assert!(
                dt < Duration::from_millis(500),
                "{user} {name}: answered in {dt:?} ({})",
                st.message()
            );
            if user == NR && *name != "over limit" {
                assert_eq!(
                    st.code(),
                    tonic::Code::PermissionDenied,
                    "{user} {name}: {}",
                    st.message()
                );
                assert!(st.message().contains("no policy rule"), "{}", st.message());
            }
            if *name == "over limit" {
                assert!(
                    matches!(
                        st.code(),
                        tonic::Code::OutOfRange
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::PermissionDenied
                    ),
                    "{user}: {st:?}"
                );
            }
            if *name == "40k identical" && user != NR {
                assert!(st.message().contains("named twice"), "{}", st.message());
            }
        }
    }
    eprintln!("F13: {report:#?}");
    let (dt, ok, err) = root_info(d);
    assert!(ok && dt < Duration::from_secs(1), "{err}");
    assert_eq!(
        d.json(&["list", "programs"]).as_array().map(|a| a.len()),
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------
// F14: the daemon's own directories are root's
// ---------------------------------------------------------------------------------------

#[test]
fn f14_bpffs_and_runtime_dir_are_root_only() {
    require_root!();
    let mut e = start(|_| {});
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let check = |d: &Daemon, when: &str| {
        for p in [d.runtime.clone(), d.bpffs(), d.runtime.join("db")] {
            if p.exists() {
                assert_eq!(
                    mode(&p),
                    0o700,
                    "{when}: {} mode {:o}",
                    p.display(),
                    mode(&p)
                );
            }
        }
        // A local user cannot pre-create the next program's pin directory.
        let fs = d.bpffs();
        let r = as_user(who(A), move || {
            std::fs::create_dir(fs.join("prog_999999")).map_err(|e| e.kind())
        });
        assert_eq!(r, Err(std::io::ErrorKind::PermissionDenied), "{when}");
        let fs = d.bpffs();
        let listed = as_user(who(A), move || std::fs::read_dir(&fs).is_ok());
        assert!(!listed, "{when}: a local user can list the daemon's pins");
    };
    check(&e.d, "fresh");
    // Opened up behind its back, then a restart: made root's again.
    for p in [e.d.runtime.clone(), e.d.bpffs()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    e.d.stop();
    e.d.spawn();
    std::fs::set_permissions(e.d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    check(&e.d, "after restart");
    // And the tenants still work through the socket.
    let o = cli_as(&e.d, A, &["list", "programs"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// F16: metadata caps
// ---------------------------------------------------------------------------------------

fn load_with_metadata(
    sock: &Path,
    w: Who,
    metadata: HashMap<String, String>,
) -> (Duration, Result<u32, tonic::Status>) {
    let sock = sock.to_path_buf();
    let mut req = file_load(
        &obj("tc_test.bpf.o"),
        vec!["tc_count".into()],
        v1::BpfmanProgramType::Tcx,
    );
    req.metadata = metadata;
    as_user(w, move || {
        runtime().block_on(async move {
            let mut c = BpfmanClient::new(channel(&sock).await);
            let t = Instant::now();
            let r = c.load(req).await;
            (
                t.elapsed(),
                r.map(|r| {
                    r.into_inner().programs[0]
                        .kernel_info
                        .as_ref()
                        .map(|k| k.id)
                        .unwrap_or(0)
                }),
            )
        })
    })
}

#[test]
fn f16_a_tenant_cannot_store_megabytes_of_metadata() {
    require_root!();
    // Requests may be large here, so the metadata cap itself must refuse.
    let e = start(|c| c.max_request_bytes = 8 << 20);
    let d = &e.d;
    let a = who(A);
    let big: HashMap<String, String> = (0..4500)
        .map(|i| (format!("k{i:05}"), "v".repeat(1020)))
        .collect();
    let one_huge: HashMap<String, String> = [("k".to_string(), "v".repeat(4_600_000))]
        .into_iter()
        .collect();
    let wide: HashMap<String, String> = (0..64)
        .map(|i| (format!("k{i:02}"), "v".repeat(1024)))
        .collect();
    for (name, m, want) in [
        ("4.6 MB in 4500 entries", big, "entries"),
        ("4.6 MB in one value", one_huge, "bytes"),
        ("64 x 1 KiB", wide, "in all"),
    ] {
        let (dt, r) = load_with_metadata(&d.socket, a, m);
        let st = r.expect_err(name);
        eprintln!("F16: {name}: {:?} '{}' in {dt:?}", st.code(), st.message());
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{name}: {st:?}");
        assert!(st.message().contains(want), "{name}: {}", st.message());
        assert!(dt < Duration::from_secs(1), "{name}: {dt:?}");
    }
    // Exactly at the cap: accepted.
    let at_cap: HashMap<String, String> = (0..4)
        .map(|i| (format!("k{i}"), "v".repeat(1022)))
        .collect();
    let (_, r) = load_with_metadata(&d.socket, a, at_cap);
    let id = r.expect("4 KiB of metadata is allowed");
    // A link's metadata is capped the same way.
    let huge_link = format!("k={}", "v".repeat(1100));
    let o = cli_as(
        d,
        A,
        &[
            "attach",
            &id.to_string(),
            "tcx",
            "-i",
            &e.ns.host_if,
            "-d",
            "ingress",
            "-p",
            "200",
            "-m",
            &huge_link,
        ],
    );
    assert!(!o.status.success(), "a link took 1100 bytes of metadata");
    assert!(stderr(&o).contains("metadata"), "{}", stderr(&o));
    // Listing keeps working for everyone, fast.
    for user in ["root", A, B] {
        let t = Instant::now();
        let v = if user == "root" {
            d.json(&["list", "programs"])
        } else {
            ok_as(d, user, &["list", "programs"])
        };
        let dt = t.elapsed();
        assert_eq!(v.as_array().map(|a| a.len()), Some(1), "{user}: {v}");
        assert!(dt < Duration::from_secs(1), "{user}: list took {dt:?}");
    }
    // The store holds no megabytes.
    let db: u64 = std::fs::read_dir(d.runtime.join("db"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    eprintln!("F16: store is {db} bytes");
    assert!(db < 2 << 20, "the store grew to {db} bytes");
}

// ---------------------------------------------------------------------------------------
// F17: pulls: grants, a trickling registry, the per-uid cap
// ---------------------------------------------------------------------------------------

/// A "registry" on 127.0.0.1 that accepts connections and sends one byte a second, for
/// at most `max_secs`. Counts connections.
struct Trickle {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickle {
    fn start(max_secs: u64) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(max_secs);
            let mut workers = Vec::new();
            while !st.load(Ordering::SeqCst) && Instant::now() < end {
                match l.accept() {
                    Ok((mut s, _)) => {
                        acc.fetch_add(1, Ordering::SeqCst);
                        let st = st.clone();
                        workers.push(std::thread::spawn(move || {
                            let msg = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
                            for b in msg.iter().cycle().take(max_secs as usize) {
                                if st.load(Ordering::SeqCst)
                                    || Instant::now() > end
                                    || s.write_all(&[*b]).is_err()
                                {
                                    break;
                                }
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            st.store(true, Ordering::SeqCst);
            for w in workers {
                let _ = w.join();
            }
        });
        Trickle {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A PullImage stream as `w`: the first error, or Ok.
fn pull_as(sock: &Path, w: Who, url: &str) -> (Duration, Result<(), tonic::Status>) {
    let (sock, url) = (sock.to_path_buf(), url.to_string());
    as_user(w, move || {
        runtime().block_on(async move {
            let mut c = BpfmanExtClient::new(channel(&sock).await);
            let t = Instant::now();
            let r = async {
                let mut s = c
                    .pull_image(ext::PullImageRequest {
                        url,
                        image_pull_policy: 0,
                        username: None,
                        password: None,
                    })
                    .await?
                    .into_inner();
                while let Some(ev) = s.message().await? {
                    if matches!(ev.event, Some(ext::pull_image_event::Event::Image(_))) {
                        return Ok(());
                    }
                }
                Ok(())
            }
            .await;
            (t.elapsed(), r)
        })
    })
}

#[test]
fn f17_pulls_need_a_grant_time_out_and_are_capped_per_uid() {
    require_root!();
    let e = start(|c| {
        c.pull_timeout = 4;
        c.max_pulls = 2;
    });
    let d = &e.d;
    let tr = Trickle::start(60);
    let url = format!("127.0.0.1:{}/x/y:v1", tr.port);
    // A working registry with one image, when docker-registry is installed.
    let registry = common::Registry::available().then(common::Registry::start);
    let good = registry.as_ref().map(|r| {
        let tag = format!("{}/res/good:v1", r.addr);
        let layout = tempfile::tempdir().unwrap();
        for args in [
            &["image", "build", "-b", &obj("xdp_test.bpf.o"), "-t", &tag][..],
            &["image", "push", &tag][..],
        ] {
            let o = Command::new(BPFMAN)
                .args(args)
                .env("BPFMAN_IMAGE_DIR", layout.path())
                .env("HOME", layout.path())
                .output()
                .unwrap();
            assert!(o.status.success(), "bpfman {args:?}: {}", stderr(&o));
        }
        tag
    });
    if good.is_none() {
        eprintln!("F17: docker-registry not installed: skipping the working-registry pull");
    }

    // A rule without `images`: no pull, no load from an image, no connection made.
    let o = cli_as(d, B, &["image", "pull", &url]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("grants no images"), "{}", stderr(&o));
    let o = cli_as(
        d,
        B,
        &[
            "load",
            "image",
            "--image-url",
            &url,
            "--programs",
            "tcx:tc_count",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("grants no images"), "{}", stderr(&o));
    // Nor from any other registry.
    for other in ["quay.io/x/y:v1", "docker.io/library/z:1", "127.0.0.1:1/z:1"] {
        let o = cli_as(d, B, &["image", "pull", other]);
        assert!(
            stderr(&o).contains("grants no images"),
            "{other}: {}",
            stderr(&o)
        );
    }
    assert_eq!(
        tr.accepted.load(Ordering::SeqCst),
        0,
        "B's refusals reached the registry"
    );

    // Tenant A: two pulls trickle; the third is refused at once.
    let probe = Probe::start(d, true);
    let a = who(A);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (s, u) = (d.socket.clone(), url.clone());
            std::thread::spawn(move || pull_as(&s, a, &u))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while tr.accepted.load(Ordering::SeqCst) < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // (Pulls of one reference share one fetch: the second waits for the first's, and
    // holds its max_pulls_per_uid slot meanwhile.)
    std::thread::sleep(Duration::from_millis(300));
    if tr.accepted.load(Ordering::SeqCst) < 1 {
        let r: Vec<_> = pulls.into_iter().map(|p| p.join().unwrap()).collect();
        panic!("the pulls never reached the registry: {r:?}\n{}", d.log());
    }
    let (dt3, r3) = pull_as(&d.socket, a, &url);
    let st = r3.expect_err("a third concurrent pull");
    eprintln!(
        "F17: third pull: {:?} '{}' in {dt3:?}",
        st.code(),
        st.message()
    );
    assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
    assert!(
        st.message().contains("max_pulls_per_uid"),
        "{}",
        st.message()
    );
    assert!(dt3 < Duration::from_millis(500));
    // Meanwhile tenant B and root are served.
    let t = Instant::now();
    ok_as(d, B, &["list", "programs"]);
    let b_dt = t.elapsed();
    let t = Instant::now();
    d.json(&["image", "list"]);
    let root_dt = t.elapsed();
    assert!(b_dt < Duration::from_secs(1) && root_dt < Duration::from_secs(1));
    // A real pull by root from a working registry is not held up by A's stalled ones.
    let mut good_dt = None;
    if let Some(good) = &good {
        let t = Instant::now();
        let o = d.cli(&["image", "pull", good]);
        assert!(o.status.success(), "root's pull of {good}: {}", stderr(&o));
        good_dt = Some(t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "root's pull from a working registry took {:?} while A's pulls trickled",
            t.elapsed()
        );
    }
    // Root's own pull is not counted against A, and times out the same way.
    let (rdt, rr) = pull_as(&d.socket, Who { uid: 0, gid: 0 }, &url);
    for p in pulls {
        let (dt, r) = p.join().unwrap();
        let st = r.expect_err("a trickling pull succeeded");
        eprintln!(
            "F17: A's pull: {:?} '{}' after {dt:?}",
            st.code(),
            st.message()
        );
        assert!(
            st.message().contains("pull_timeout_secs"),
            "{}",
            st.message()
        );
        assert!(
            dt >= Duration::from_secs(3) && dt < Duration::from_secs(8),
            "pull_timeout_secs = 4; failed after {dt:?}"
        );
    }
    let st = rr.expect_err("root's trickling pull");
    assert!(
        st.message().contains("pull_timeout_secs"),
        "root: {}",
        st.message()
    );
    assert!(rdt < Duration::from_secs(8));
    let stats = probe.finish(d);
    eprintln!(
        "F17: registry connections {}; tenant B list {b_dt:?}, root image list {root_dt:?}, \
         root's pull from a working registry {good_dt:?} during the pulls; root system info \
         max {:?} over {} calls",
        tr.accepted.load(Ordering::SeqCst),
        stats.max_latency,
        stats.calls
    );
    assert_served(&stats, "F17");
    // The slots came back: A may pull again (and is again refused only by time).
    let (_, r) = pull_as(&d.socket, a, &url);
    let st = r.expect_err("pull");
    assert!(
        st.message().contains("pull_timeout_secs"),
        "{}",
        st.message()
    );
    // Nothing of the trickling registry was cached.
    let images = d.json(&["image", "list"]);
    assert!(
        images
            .as_array()
            .is_some_and(|a| a.iter().all(|i| !i.to_string().contains("/x/y"))),
        "{images}"
    );
}

// ---------------------------------------------------------------------------------------
// F20: a cancelled request does not run later
// ---------------------------------------------------------------------------------------

#[test]
fn f20_a_cancelled_attach_does_not_run_later() {
    require_root!();
    // Every attach stalls 3 s after recording its intent, holding its program's lock.
    let e = start_with_env(|_| {}, &[("BPFMAN_FAULT", "attach.intent@sleep3000")]);
    let d = &e.d;
    let prog = d.load_one(&[
        "--path",
        &obj("tc_test.bpf.o"),
        "--programs",
        "tcx:tc_count",
    ]);
    let p = prog.to_string();
    let ns2 = Netns::new();
    // Each attach on its own hook (a program attaches once per hook); all three take
    // the same program lock.
    let attach = |prio: &str| {
        let (iface, dir) = match prio {
            "100" => (e.ns.host_if.as_str(), "ingress"),
            "200" => (e.ns.host_if.as_str(), "egress"),
            _ => (ns2.host_if.as_str(), "ingress"),
        };
        Command::new(BPFMAN)
            .args([
                "-o", "json", "attach", &p, "tcx", "-i", iface, "-d", dir, "-p", prio,
            ])
            .env("BPFMAN_SOCKET", &d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stalls = || d.log().matches("stalling 3000 ms at attach.intent").count();
    // First attach: holds the lock for 3 s.
    let first = attach("100");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(stalls(), 1, "the first attach did not reach its stall");
    // Second attach: waits for the lock; its client is killed while it waits.
    let mut second = attach("200");
    std::thread::sleep(Duration::from_millis(500));
    second.kill().unwrap();
    let _ = second.wait();
    // Third attach (control): waits too, its client stays.
    let third = attach("300");
    let o1 = first.wait_with_output().unwrap();
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    let o3 = third.wait_with_output().unwrap();
    assert!(
        o3.status.success(),
        "{}",
        String::from_utf8_lossy(&o3.stderr)
    );
    // Long enough for the killed one to have run, had it started.
    std::thread::sleep(Duration::from_secs(4));
    let links = d.json(&["list", "links"]);
    let prios: Vec<i64> = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["priority"].as_i64())
        .collect();
    eprintln!(
        "F20: links after: priorities {prios:?}; stalls reached: {}",
        stalls()
    );
    assert!(
        !prios.contains(&200),
        "the attach whose client was killed ran later: {links}"
    );
    assert_eq!(prios.len(), 2, "{links}");
    assert_eq!(stalls(), 2, "the cancelled attach reached the kernel step");
    assert!(d.log().contains("cancelled"), "no cancellation in the log");
    // The kernel agrees with the store.
    snapshot(d);
}

// ---------------------------------------------------------------------------------------
// The issue's acceptance test: everything at once
// ---------------------------------------------------------------------------------------

#[test]
fn resources_under_combined_floods_root_is_served_and_nothing_changes() {
    require_root!();
    let e = start(|c| {
        c.max_connections_per_uid = 16;
        c.max_connections = 64;
        c.handshake = 20;
        c.idle = 30;
        c.pull_timeout = 5;
        c.reconcile = 2;
    });
    let d = &e.d;
    populate(&e);
    let before = snapshot(d);
    let pid = d.pid().unwrap();
    let rss0 = rss_mib(pid);
    let fds0 = fds(pid);
    let fifo = e.files.path().canonicalize().unwrap().join("prog.o");
    mkfifo(&fifo);
    let tr = Trickle::start(60);
    let url = format!("127.0.0.1:{}/x/y:v1", tr.port);
    let probe = Probe::start(d, true);
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();

    // Idle connections up to the cap (and beyond) from the no-rule member.
    let idle = raw_connections(&d.socket, who(NR), 300);
    // Half-sent messages: tenant B, 4 connections x 8 streams of ~1 MiB announced.
    let sent = AtomicUsize::new(0);
    let half = half_sent(
        &d.socket,
        who(B),
        4,
        8,
        (1 << 20) - 16,
        (1 << 20) - 80,
        &sent,
    );
    // A trickling registry: tenant A's two pulls (its cap).
    let a = who(A);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let (s, u) = (d.socket.clone(), url.clone());
            std::thread::spawn(move || pull_as(&s, a, &u))
        })
        .collect();
    // A FIFO load loop by tenant A.
    let mut fifo_refusals = 0;
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        let o = cli_as(
            d,
            A,
            &[
                "load",
                "file",
                "--path",
                fifo.to_str().unwrap(),
                "--programs",
                "tcx:tc_count",
            ],
        );
        assert!(!o.status.success());
        if stderr(&o).contains("FIFO") {
            fifo_refusals += 1;
        }
    }
    let held_fds = fds(pid);
    let held_idle = 300 - closed_count(&idle);
    for p in pulls {
        let (_, r) = p.join().unwrap();
        assert!(r.is_err(), "a trickling pull succeeded");
    }
    let cpu = cpu_secs(pid) - cpu0;
    let stats = probe.finish(d);
    let elapsed = t0.elapsed();
    drop(idle);
    drop(half);
    eprintln!(
        "RESOURCES: {elapsed:?} under load: {held_idle} idle connections held of 300, \
         {fifo_refusals} FIFO loads refused, 32 half-sent streams, 2 trickling pulls; root \
         system info + list max {:?} over {} calls; RSS {rss0:.1} -> peak {:.1} MiB; fds \
         {fds0} -> {held_fds} (max {}); daemon CPU {cpu:.2} s",
        stats.max_latency, stats.calls, stats.max_rss_mib, stats.max_fds
    );
    assert_eq!(
        held_idle, 16,
        "idle connections beyond the per-uid cap were kept"
    );
    assert!(fifo_refusals >= 3, "the FIFO loop did not run");
    assert_served(&stats, "combined floods");
    let bound = 200.0;
    assert!(
        stats.max_rss_mib < bound,
        "RSS peaked at {:.1} MiB (bound {bound} MiB)",
        stats.max_rss_mib
    );
    assert!(
        stats.max_fds < fds0 + 200,
        "fds peaked at {}",
        stats.max_fds
    );
    // Afterwards nothing loaded or attached has changed (after two more reconciles).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        snapshot(d),
        before,
        "the floods changed what is loaded or attached"
    );
    assert!(e.ns.ping(), "the veth stopped passing traffic");
}
