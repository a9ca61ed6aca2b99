//! What the benchmarks share: the eBPF objects and a daemon of their own that cleans up
//! (daemon, veth, bpffs mount) even when a phase panics.
#![allow(dead_code)] // each bench uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BPFMAN: &str = env!("CARGO_BIN_EXE_bpfman");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds bpf/ (make) and returns the absolute path of one of its objects.
pub fn object(name: &str) -> String {
    let st = Command::new("make")
        .arg("-C")
        .arg(repo().join("bpf"))
        .stdout(Stdio::null())
        .status()
        .expect("make");
    assert!(st.success(), "make -C bpf failed");
    repo()
        .join("target/bpf")
        .join(name)
        .canonicalize()
        .expect("object")
        .display()
        .to_string()
}

pub struct BenchDaemon {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    child: Child,
    /// A veth the bench creates; deleted on drop.
    veth: &'static str,
}

impl BenchDaemon {
    /// Starts the daemon on a private runtime dir and waits until it answers.
    pub fn start(veth: &'static str) -> Self {
        Self::start_with_config(veth, "")
    }

    /// Like `start`, with a config file; `@DIR@` in it is the daemon's private dir.
    pub fn start_with_config(veth: &'static str, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("bpfman.sock");
        let cfg = dir.path().join("bpfman.toml");
        let config = config.replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&cfg, config).expect("config");
        let child = Command::new(BPFMAN)
            .arg("daemon")
            .arg("--runtime-dir")
            .arg(dir.path().join("run"))
            .arg("--socket")
            .arg(&sock)
            .arg("--config")
            .arg(&cfg)
            .env("BPFMAN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("daemon");
        let d = Self {
            dir,
            sock,
            child,
            veth,
        };
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&d.sock).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn bpffs(&self) -> PathBuf {
        self.dir.path().join("run/fs")
    }

    /// A veth pair `veth`/`peer`, both up (any left from an earlier run replaced).
    pub fn veth_pair(&self, peer: &str) {
        let _ = Command::new("ip")
            .args(["link", "del", self.veth])
            .stderr(Stdio::null())
            .status();
        for args in [
            vec![
                "link", "add", self.veth, "type", "veth", "peer", "name", peer,
            ],
            vec!["link", "set", self.veth, "up"],
            vec!["link", "set", peer, "up"],
        ] {
            let st = Command::new("ip").args(&args).status().expect("ip");
            assert!(st.success(), "ip {}", args.join(" "));
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", self.veth])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fs = self.bpffs();
        let _ = std::fs::remove_dir_all(fs.join("dispatchers"));
        let _ = Command::new("umount").arg(&fs).status();
    }
}
