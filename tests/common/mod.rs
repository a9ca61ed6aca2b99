//! Test harness: a real daemon per test (own runtime dir, bpffs mount and socket), the
//! real CLI, network namespaces with veth pairs, and map reads through the bpf syscall.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod agent;
pub mod prometheus;

pub const BPFMAN: &str = env!("CARGO_BIN_EXE_bpfman");

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds bpf/ once (clang) and returns the path of an object, in a world-readable
/// copy of target/bpf: the daemon opens bytecode as the caller, and unprivileged test
/// users must be able to reach it wherever the checkout lies.
pub fn obj(name: &str) -> String {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let st = Command::new("make")
            .arg("-C")
            .arg(repo().join("bpf"))
            .stdout(Stdio::null())
            .status()
            .expect("running make -C bpf (needs make and clang)");
        assert!(st.success(), "make -C bpf failed");
        use std::os::unix::fs::PermissionsExt;
        let dir = objs_dir();
        std::fs::create_dir_all(&dir).expect("creating the objects dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(repo().join("target/bpf")).expect("target/bpf") {
            let e = e.unwrap();
            let to = dir.join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    });
    objs_dir().join(name).display().to_string()
}

/// Where `obj` keeps its copies (one per test process).
pub fn objs_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/bpfman-test-objs-{}", std::process::id()))
}

/// Whether this process may do what the suites need (root with CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Skips (with the reason printed) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!(
                "SKIP {}: needs root (run the suite with sudo)",
                module_path!()
            );
            return;
        }
    };
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn unique() -> u32 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub runtime: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a daemon whose config file holds `config` (TOML).
    pub fn start_with_config(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// Starts a daemon with `config` and extra environment variables.
    pub fn start_with(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bpfman-test-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("bpfman.sock");
        let runtime = dir.path().join("run");
        // Each daemon gets its own image cache; `@DIR@` in a config is the test's dir.
        let mut config = config.replace("@DIR@", &dir.path().display().to_string());
        // And its own programs.d (never the machine's /etc/bpfman/programs.d).
        let programs_dir = format!("programs_dir = \"{}/programs.d\"\n", dir.path().display());
        if config.contains("[daemon]") {
            if !config.contains("programs_dir") {
                config = config.replacen("[daemon]\n", &format!("[daemon]\n{programs_dir}"), 1);
            }
        } else {
            config = format!("{config}\n[daemon]\n{programs_dir}");
        }
        if !config.contains("[images]") {
            config = format!(
                "{config}\n[images]\ncache_dir = \"{}/images\"\n",
                dir.path().display()
            );
        }
        std::fs::write(dir.path().join("bpfman.toml"), config).expect("writing config");
        let mut d = Daemon {
            dir,
            socket,
            runtime,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    /// Starts (again) a daemon on this runtime dir and waits until it answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let child = Command::new(BPFMAN)
            .args(["daemon", "--runtime-dir"])
            .arg(&self.runtime)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(self.config())
            .env("BPFMAN_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning the daemon");
        self.child = Some(child);
        // Generous: under software emulation (the VM suite) start-up takes seconds.
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("daemon exited with {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not start: {}", self.log());
    }

    /// Replaces the extra environment of the next `spawn`.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Whether the daemon process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// SIGKILL if running; no-op if it already died.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's config file (empty unless a test writes one).
    pub fn config(&self) -> PathBuf {
        let p = self.dir.path().join("bpfman.toml");
        if !p.exists() {
            std::fs::write(&p, "").expect("writing config");
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    pub fn bpffs(&self) -> PathBuf {
        self.runtime.join("fs")
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BPFMAN)
            .args(args)
            .env("BPFMAN_SOCKET", &self.socket)
            .output()
            .expect("running bpfman")
    }

    /// Runs the CLI against this daemon as `user` (a real unprivileged user, through
    /// runuser).
    pub fn cli_as(&self, user: &str, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", user, "--", "env"])
            .arg(format!("BPFMAN_SOCKET={}", self.socket.display()))
            .arg(BPFMAN)
            .args(args)
            .output()
            .expect("running runuser")
    }

    /// Like [`Daemon::json`], as `user`.
    pub fn json_as(&self, user: &str, args: &[&str]) -> Value {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        let o = self.cli_as(user, &a);
        assert!(
            o.status.success(),
            "{user}: bpfman {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{user}: bpfman {} printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    /// Runs the CLI with `-o json`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        let out = self.cli(&a);
        assert!(
            out.status.success(),
            "bpfman {} failed: {}\n--- daemon log ---\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bpfman {} printed no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs the CLI, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "bpfman {} should have failed; stdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !err.trim().is_empty(),
            "bpfman {} failed silently",
            args.join(" ")
        );
        err
    }

    /// Loads and returns the programs (JSON objects).
    pub fn load(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["load", "file"];
        a.extend_from_slice(args);
        match self.json(&a) {
            Value::Array(v) => v,
            other => panic!("load printed {other}"),
        }
    }

    pub fn load_one(&self, args: &[&str]) -> u32 {
        let progs = self.load(args);
        assert_eq!(progs.len(), 1, "{progs:?}");
        progs[0]["id"].as_u64().expect("id") as u32
    }

    pub fn attach(&self, args: &[&str]) -> u32 {
        let mut a = vec!["attach"];
        a.extend_from_slice(args);
        self.json(&a)["link_id"].as_u64().expect("link_id") as u32
    }

    /// A map of a program, read through its pin.
    pub fn map_u64(&self, program: u32, map: &str) -> u64 {
        let p = self.json(&["get", "program", &program.to_string()]);
        let dir = p["map_pin_path"]
            .as_str()
            .expect("map_pin_path")
            .to_string();
        read_counter(&Path::new(&dir).join(map))
    }

    /// Every pin under bpffs (programs, links, maps), sorted.
    pub fn pins(&self) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let name = p.strip_prefix(base).unwrap_or(&p).display().to_string();
                    if name.ends_with(".debug") {
                        continue;
                    }
                    if p.is_dir() {
                        walk(&p, base, out);
                    } else {
                        out.push(name);
                    }
                }
            }
        }
        walk(&self.bpffs(), &self.bpffs(), &mut out);
        out.sort();
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // Unpinning everything frees the programs and detaches their links.
        let fs = self.bpffs();
        if let Ok(rd) = std::fs::read_dir(&fs) {
            for e in rd.flatten() {
                let p = e.path();
                if p.to_string_lossy().ends_with(".debug") {
                    continue;
                }
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        let _ = Command::new("umount").arg(&fs).status();
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// A network namespace with a veth pair: `host_if` (10.x.y.1) stays in the test's
/// namespace, `peer_if` (10.x.y.2) is inside `name`. Deleted on drop.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub peer_if: String,
    pub host_ip: String,
    pub peer_ip: String,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn new() -> Self {
        let n = unique();
        let pid = std::process::id() % 10000;
        let name = format!("bpfman-t{pid}-{n}");
        let host_if = format!("bh{pid}x{n}");
        let peer_if = format!("bp{pid}x{n}");
        let net = format!("10.{}.{}", 200 + (pid % 50), n % 250);
        let host_ip = format!("{net}.1");
        let peer_ip = format!("{net}.2");
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            peer_if: peer_if.clone(),
            host_ip: host_ip.clone(),
            peer_ip: peer_ip.clone(),
        };
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        sh(&["ip", "link", "set", &peer_if, "netns", &name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            &peer_if,
        ]);
        sh(&["ip", "-n", &name, "link", "set", &peer_if, "up"]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        // Wait for the link to come up (first ping may race carrier).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns.ping() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        ns
    }

    /// Whether the host end answers an echo: two tries 0.2 s apart (one lost packet on
    /// a loaded machine is not a drop), each waited for up to 1 s.
    pub fn ping(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                &self.host_ip,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// `count` echoes at `interval` seconds; returns how many were answered.
    pub fn ping_many(&self, count: u32, interval: &str) -> u32 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "1",
                &self.host_ip,
            ])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" packets transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// Pings `count` times every `interval` seconds from a thread; join for the output.
    pub fn ping_in_background(
        &self,
        count: u32,
        interval: &str,
    ) -> std::thread::JoinHandle<String> {
        let (name, ip, interval) = (
            self.name.clone(),
            self.host_ip.clone(),
            interval.to_string(),
        );
        std::thread::spawn(move || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &name,
                    "ping",
                    "-c",
                    &count.to_string(),
                    "-i",
                    &interval,
                    "-W",
                    "1",
                    &ip,
                ])
                .output()
                .expect("ping");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Usually gone with the namespace already.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// Reads key 0 of a pinned one-slot u64 array map through the bpf syscall.
pub fn read_counter(pin: &Path) -> u64 {
    use std::ffi::CString;
    let path = CString::new(pin.as_os_str().as_encoded_bytes()).expect("path");
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u8; 128];
    attr[..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_mut_ptr(), attr.len()) };
    assert!(
        fd >= 0,
        "BPF_OBJ_GET {}: {}",
        pin.display(),
        std::io::Error::last_os_error()
    );
    let key: u32 = 0;
    let mut value: u64 = 0;
    // BPF_MAP_LOOKUP_ELEM: map_fd (u32), pad, key (u64 ptr), value (u64 ptr).
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(&key as *const u32 as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(&mut value as *mut u64 as u64).to_ne_bytes());
    let r = unsafe { libc::syscall(libc::SYS_bpf, 1, attr.as_mut_ptr(), attr.len()) };
    let err = std::io::Error::last_os_error();
    unsafe {
        libc::close(fd as i32);
    }
    assert!(r == 0, "BPF_MAP_LOOKUP_ELEM {}: {err}", pin.display());
    value
}

/// Makes the group `g` if it is not there.
pub fn ensure_group(g: &str) {
    let _ = Command::new("groupadd").args(["-f", g]).output();
}

/// Makes the user `u` if it is not there (no home, /bin/sh), with `primary` as its group
/// (else its own) and `extra` groups, and checks it exists.
pub fn ensure_user(u: &str, primary: Option<&str>, extra: &[&str]) {
    let mut c = Command::new("useradd");
    c.args(["-M", "-N", "-s", "/bin/sh"]);
    if let Some(g) = primary {
        c.args(["-g", g]);
    }
    if !extra.is_empty() {
        c.args(["-G", &extra.join(",")]);
    }
    let _ = c.arg(u).output();
    let ok = Command::new("id")
        .arg(u)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "could not create test user {u} (useradd)");
}

/// The features the daemon probed. Where `BPFMAN_REQUIRE_FEATURES` names the feature
/// (the VM run sets it), a missing feature fails the test instead of skipping it.
pub fn has_feature(d: &Daemon, name: &str) -> bool {
    let info = d.json(&["system", "info"]);
    let has = info["features"][name]["supported"] == Value::Bool(true);
    let required = std::env::var("BPFMAN_REQUIRE_FEATURES")
        .map(|v| v.split(',').any(|f| f == name))
        .unwrap_or(false);
    assert!(
        has || !required,
        "feature '{name}' is required here but missing: {}",
        info["features"][name]
    );
    has
}

/// Little-endian hex of a u32, for --global.
pub fn le_hex(v: u32) -> String {
    v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A real registry (Debian's docker-registry) on 127.0.0.1, optionally behind htpasswd
/// basic auth. Stopped on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub addr: String,
    child: Option<Child>,
    pub auth: Option<(String, String)>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

impl Registry {
    /// Whether the registry binary is installed (scripts/setup.sh installs it).
    pub fn available() -> bool {
        Command::new("docker-registry")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// With basic auth for `user`:`password` (bcrypt htpasswd, as the registry needs).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bpfman-registry-")
            .tempdir()
            .expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut auth_yaml = String::new();
        if let Some((u, p)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("running htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("writing htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: bpfman-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{auth_yaml}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("writing registry config");
        let mut r = Registry {
            dir,
            addr,
            child: None,
            auth,
        };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry did not start: {}", self.log());
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The base64 user:password for --registry-auth.
    pub fn auth_b64(&self) -> String {
        let (u, p) = self.auth.clone().expect("registry has no auth");
        b64(format!("{u}:{p}").as_bytes())
    }

    /// The path of a blob in the registry's storage (to damage it).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The link with this id in the output of `bpfman list links` (Null when absent).
pub fn link_in(links: &Value, id: u64) -> Value {
    links
        .as_array()
        .and_then(|a| a.iter().find(|x| x["link_id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}
