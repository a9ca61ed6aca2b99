//! A real Kubernetes node for tests: Debian's containerd (with runc and the bridge CNI plugin)
//! and the kubelet (v1.37, built from the same Go module as the API server), joined to a
//! [`ControlPlane`], so tests create real pods with kubectl and the agent finds them through
//! the node's CRI socket exactly as on any node.
//!
//! containerd and the kubelet run inside a private mount namespace whose `/` is `rshared` (a
//! holder process keeps it), so the host's own mounts are untouched and pods with
//! bidirectional propagation work. The node's address is a private /32 of its own on `lo`
//! (the kernel here has no dummy interfaces and the kubelet refuses 127.x); pods sit on a
//! bridge of their own with a private /24 whose gateway address is on the bridge, so the host
//! reaches pods and nothing leaves the machine. The only image is built locally (buildah, from
//! scratch, with busybox) and imported into containerd: there is no registry.
//!
//! Teardown (drop, or process exit for [`shared_node`]) deletes the pods through the API
//! (the kubelet tears their sandboxes and networks down), stops the kubelet and containerd,
//! kills whatever containers are left, removes the bridge and the address, and puts back the
//! sysctls the kubelet rewrites. Every process is started with PR_SET_PDEATHSIG.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::ControlPlane;

/// The image every pod (and the sandbox) uses: busybox from scratch, and
/// `/bin/uprobe-target` (tests/k8s/uprobe-target.c, static), a process calling
/// `bpfman_container_target` ten times a second.
pub const IMAGE: &str = "localhost/bpfman-test-busybox:2";

/// The sysctls the kubelet rewrites at start.
const SYSCTLS: [&str; 3] = [
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/kernel/panic",
    "/proc/sys/kernel/panic_on_oops",
];

/// A running node.
pub struct KubeNode {
    pub name: String,
    /// The node's InternalIP (a /32 on `lo`).
    pub ip: String,
    /// The pod bridge's gateway address (on the host).
    pub gateway: String,
    pub bridge: String,
    dir: PathBuf,
    plane_kubeconfig: PathBuf,
    kubectl: PathBuf,
    holder: Mutex<Option<Child>>,
    children: Mutex<Vec<(String, Child)>>,
    sysctls: Vec<(String, String)>,
    stopped: Mutex<bool>,
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    let f = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("start {cmd:?}"))
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the busybox image once per machine (cached as an OCI archive beside the
/// Kubernetes binaries) and returns the archive.
fn image_archive() -> Result<PathBuf> {
    let cache =
        std::env::var("BPFMAN_TEST_CACHE").unwrap_or_else(|_| "/var/cache/bpfman-test".into());
    let dir = Path::new(&cache).join("images");
    std::fs::create_dir_all(&dir)?;
    let tar = dir.join("bpfman-test-busybox-2.tar");
    if tar.is_file() {
        return Ok(tar);
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox-static is not installed (scripts/setup.sh installs it)")?;
    let work = tempdir("bpfman-test-buildah")?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/k8s/uprobe-target.c");
    let target = work.join("uprobe-target");
    sh(Command::new("clang")
        .args(["-static", "-O1", "-o"])
        .arg(&target)
        .arg(&src))
    .context("building the uprobe target (clang and libc6-dev)")?;
    let bh = |args: &[&str]| -> Result<String> {
        sh(Command::new("buildah")
            .arg("--root")
            .arg(work.join("root"))
            .arg("--runroot")
            .arg(work.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args))
        .map(|s| s.trim().to_string())
    };
    let c = bh(&["from", "scratch"])?;
    bh(&["copy", &c, busybox, "/bin/busybox"])?;
    bh(&[
        "copy",
        &c,
        &target.display().to_string(),
        "/bin/uprobe-target",
    ])?;
    bh(&[
        "config",
        "--entrypoint",
        r#"["/bin/busybox","sleep","2147483647"]"#,
        &c,
    ])?;
    bh(&["commit", &c, IMAGE])?;
    let tmp = dir.join(".bpfman-test-busybox-2.tar.tmp");
    let _ = std::fs::remove_file(&tmp);
    bh(&[
        "push",
        IMAGE,
        &format!("oci-archive:{}:{IMAGE}", tmp.display()),
    ])?;
    std::fs::rename(&tmp, &tar)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(tar)
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), seq()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn seq() -> u32 {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// Whether this machine can run a node: root, containerd, runc, the CNI plugins, buildah and
/// busybox, and the kubelet built. `Err` says what is missing.
pub fn available() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root");
    }
    for (p, what) in [
        ("/usr/bin/containerd", "containerd (apt install containerd)"),
        ("/usr/sbin/runc", "runc (apt install runc)"),
        (
            "/usr/lib/cni/bridge",
            "the CNI plugins (apt install containernetworking-plugins)",
        ),
        ("/usr/bin/buildah", "buildah (apt install buildah)"),
    ] {
        if !Path::new(p).exists() {
            bail!("{what} is not installed: scripts/setup.sh installs it");
        }
    }
    let bin = crate::bin_dir()?;
    if !bin.join("kubelet").is_file() {
        bail!(
            "{} is missing: scripts/k8s-bins.sh kubelet builds it",
            bin.join("kubelet").display()
        );
    }
    Ok(())
}

impl KubeNode {
    /// Starts a node named `name` joined to `plane` and waits until it is Ready.
    pub fn start(plane: &ControlPlane, name: &str) -> Result<KubeNode> {
        available()?;
        let n = (std::process::id() % 200 + seq()) % 250 + 1;
        let dir = plane.dir().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir)?;
        let ip = format!("10.254.{n}.1");
        let gateway = format!("10.253.{n}.1");
        let bridge = format!("bpfmtbr{n}");
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .map(|v| (p.to_string(), v.trim().to_string()))
            })
            .collect();
        let node = KubeNode {
            name: name.to_string(),
            ip: ip.clone(),
            gateway: gateway.clone(),
            bridge: bridge.clone(),
            dir: dir.clone(),
            plane_kubeconfig: plane.admin_kubeconfig(),
            kubectl: crate::bin_dir()?.join("kubectl"),
            holder: Mutex::new(None),
            children: Mutex::new(Vec::new()),
            sysctls,
            stopped: Mutex::new(false),
        };
        let _ = sh(Command::new("ip").args(["addr", "del", &format!("{ip}/32"), "dev", "lo"]));
        sh(Command::new("ip").args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]))?;
        // The mount namespace: private to the host, `/` rshared inside.
        let holder = spawn_logged(
            Command::new("unshare").args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount --make-rshared / && exec sleep 2147483647",
            ]),
            &dir.join("holder.log"),
        )?;
        let hpid = holder.id();
        *node
            .holder
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))? = Some(holder);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mi = std::fs::read_to_string(format!("/proc/{hpid}/mountinfo")).unwrap_or_default();
            if mi.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.get(4) == Some(&"/") && l.contains("shared:")
            }) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the node's mount namespace did not become rshared");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        node.start_containerd(hpid)?;
        node.import_image()?;
        node.start_kubelet(plane, hpid)?;
        node.wait_ready()?;
        Ok(node)
    }

    /// containerd's CRI socket (what the agent's CONTAINER_RUNTIME_ENDPOINT names).
    pub fn cri_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The PID of the holder of the node's mount namespace (`nsenter -t PID -m` to look at
    /// the mounts pods made).
    pub fn mount_ns_pid(&self) -> Option<u32> {
        self.holder.lock().ok()?.as_ref().map(|c| c.id())
    }

    fn nsenter(&self, hpid: u32) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &hpid.to_string(), "-m", "--"]);
        c
    }

    fn start_containerd(&self, hpid: u32) -> Result<()> {
        let d = &self.dir;
        let cni = d.join("cni");
        std::fs::create_dir_all(&cni)?;
        let subnet = self.gateway.trim_end_matches(".1").to_string() + ".0/24";
        std::fs::write(
            cni.join("10-bpfman-test.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": format!("bpfman-test-{}", self.bridge),
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": self.bridge,
                        "isGateway": true,
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": subnet, "gateway": self.gateway}]],
                            "dataDir": d.join("cni-ipam").display().to_string(),
                        },
                    },
                    {"type": "loopback"},
                ],
            })
            .to_string(),
        )?;
        let cfg = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            root = d.join("containerd/root").display(),
            state = d.join("containerd/state").display(),
            sock = self.cri_socket().display(),
            cni = cni.display(),
        );
        std::fs::write(d.join("containerd.toml"), cfg)?;
        let child = spawn_logged(
            self.nsenter(hpid)
                .arg("containerd")
                .arg("--config")
                .arg(d.join("containerd.toml")),
            &d.join("containerd.log"),
        )?;
        self.children
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(("containerd".into(), child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.cri_socket()).is_err() {
            if Instant::now() > deadline {
                bail!("containerd did not start:\n{}", self.log_tail("containerd"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        sh(Command::new("ctr")
            .arg("--address")
            .arg(self.cri_socket())
            .args(["-n", "k8s.io"])
            .args(args))
    }

    fn import_image(&self) -> Result<()> {
        let tar = image_archive()?;
        self.ctr(&["images", "import", &tar.display().to_string()])?;
        Ok(())
    }

    fn start_kubelet(&self, plane: &ControlPlane, hpid: u32) -> Result<()> {
        let d = &self.dir;
        let kubeconfig =
            plane.user_kubeconfig(&format!("system:node:{}", self.name), &["system:nodes"])?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let cfg = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
address: {ip}
port: {port}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
podLogsDir: {logs}
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"#,
            sock = self.cri_socket().display(),
            ip = self.ip,
            ca = plane.ca_file().display(),
            logs = d.join("pod-logs").display(),
        );
        std::fs::write(d.join("kubelet.yaml"), cfg)?;
        let child = spawn_logged(
            self.nsenter(hpid)
                .arg(crate::bin_dir()?.join("kubelet"))
                .arg(format!("--config={}", d.join("kubelet.yaml").display()))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--hostname-override={}", self.name))
                .arg(format!("--node-ip={}", self.ip))
                .arg(format!("--root-dir={}", d.join("kubelet").display()))
                .arg(format!("--cert-dir={}", d.join("kubelet-pki").display()))
                .arg("--v=1"),
            &d.join("kubelet.log"),
        )?;
        self.children
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(("kubelet".into(), child));
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        sh(Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.plane_kubeconfig)
            .args(args))
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(out) = self.kubectl(&[
                "get",
                "node",
                &self.name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]) && out.trim() == "True"
            {
                return Ok(());
            }
            if let Ok(mut c) = self.children.lock() {
                for (name, ch) in c.iter_mut() {
                    if let Ok(Some(st)) = ch.try_wait() {
                        bail!("{name} exited ({st}):\n{}", self.log_tail(name));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not Ready in 90 s:\n{}",
                    self.name,
                    self.log_tail("kubelet")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Mounts inside the node's mount namespace whose mount point contains `needle`.
    pub fn mounts_matching(&self, needle: &str) -> usize {
        let Some(pid) = self.mount_ns_pid() else {
            return 0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.contains(needle)))
            .count()
    }

    /// Tears the node down (idempotent).
    pub fn stop(&self) {
        let Ok(mut stopped) = self.stopped.lock() else {
            return;
        };
        if *stopped {
            return;
        }
        *stopped = true;
        // Pods first, through the API: the kubelet stops their sandboxes and networks.
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all-namespaces",
            "--field-selector",
            &format!("spec.nodeName={}", self.name),
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match self.ctr(&["tasks", "ls", "-q"]) {
                Ok(s) if s.trim().is_empty() => break,
                Err(_) => break,
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let _ = self.kubectl(&["delete", "node", &self.name, "--wait=false"]);
        if let Ok(mut c) = self.children.lock() {
            // The kubelet first, then kill what containers are left, then containerd.
            for (name, ch) in c.iter_mut() {
                if name == "kubelet" {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
            }
            if let Ok(tasks) = self.ctr(&["tasks", "ls", "-q"]) {
                for t in tasks.lines().filter(|t| !t.is_empty()) {
                    let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", t]);
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            for (_, ch) in c.iter_mut() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
            c.clear();
        }
        // Shims outlive containerd; they name its socket on their command line.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.cri_socket().display().to_string()])
            .status();
        if let Ok(mut h) = self.holder.lock()
            && let Some(mut ch) = h.take()
        {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.ip), "dev", "lo"])
            .status();
        for (p, v) in &self.sysctls {
            let _ = std::fs::write(p, v);
        }
        let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node for every test in this test binary, joined to [`crate::shared_with_crds`],
/// started on first use (from a thread that lives as long as the process, so PDEATHSIG
/// does not fire when a test thread ends) and torn down at process exit.
pub fn shared_node() -> Result<&'static KubeNode, String> {
    static NODE: OnceLock<Result<&'static KubeNode, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let plane = crate::shared_with_crds();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("k8s-node".into())
            .spawn(move || {
                let name = format!("bpfman-node-{}", std::process::id());
                let r = KubeNode::start(plane, &name).map_err(|e| format!("{e:#}"));
                match r {
                    Ok(n) => {
                        let n: &'static KubeNode = Box::leak(Box::new(n));
                        register_exit(n);
                        let _ = tx.send(Ok(n));
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        rx.recv().map_err(|e| e.to_string())?
    })
    .clone()
}

static EXIT_NODE: OnceLock<&'static KubeNode> = OnceLock::new();

fn register_exit(n: &'static KubeNode) {
    if EXIT_NODE.set(n).is_ok() {
        extern "C" fn at_exit() {
            if let Some(n) = EXIT_NODE.get() {
                n.stop();
            }
        }
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(at_exit);
        }
    }
}
