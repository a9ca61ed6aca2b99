//! Test infrastructure: a real Kubernetes control plane for tests, never shipped.
//!
//! [`ControlPlane::start`] runs etcd and kube-apiserver (RBAC on, certificates from a throwaway
//! CA made with `openssl`) and optionally kube-controller-manager (garbage collection, namespace
//! deletion, DaemonSet/Deployment controllers), all on free loopback ports, in a fresh directory
//! under the system temp dir. [`shared`] gives every test in one test binary the same plane.
//!
//! The binaries come from `scripts/k8s-bins.sh` (built once from the Go module proxy and cached
//! outside the clone) or `$BPFMAN_K8S_BIN`.
//!
//! Teardown holds even when a test panics or the test binary is killed: an owned plane stops on
//! drop; the shared one stops at process exit (an `atexit` hook); and every process is started
//! with `PR_SET_PDEATHSIG` from a thread that lives as long as the test binary, so the kernel
//! kills it when the binary dies however it dies. Directories left by a killed binary are
//! removed by the next start.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod node;

pub use node::{KubeNode, shared_node};

const PREFIX: &str = "bpfman-k8s-";

/// What to run besides etcd and the API server.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run kube-controller-manager too (owner garbage collection needs it; it discovers new
    /// CRDs on a resync of about 30 s).
    pub controller_manager: bool,
    /// Write the API server's audit log (every request, metadata only) so a test or benchmark
    /// can count the requests each user made ([`ControlPlane::requests_by`]).
    pub audit: bool,
}

/// A running control plane.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    children: Mutex<Vec<(String, Child)>>,
    users: Mutex<()>,
    audit: bool,
}

/// The control plane shared by every test in this test binary (with kube-controller-manager),
/// started on first use and stopped when the binary exits.
pub fn shared() -> &'static ControlPlane {
    static PLANE: OnceLock<&'static ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| {
        // Start from a thread that lives as long as the process: PR_SET_PDEATHSIG fires when
        // the *thread* that forked a child exits, and test threads exit after each test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("k8s-control-plane".into())
            .spawn(move || {
                let plane = ControlPlane::start(Options {
                    controller_manager: true,
                    ..Options::default()
                });
                let plane: Result<&'static ControlPlane> = plane.map(|p| &*Box::leak(Box::new(p)));
                let ok = plane.as_ref().ok().copied();
                let _ = tx.send(plane);
                if let Some(p) = ok {
                    register_exit_teardown(p);
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the control-plane thread");
        match rx.recv() {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => panic!("cannot start the test control plane: {e:#}"),
            Err(_) => panic!("the control-plane thread died before starting"),
        }
    })
}

/// [`shared`], with the project's CRDs (`deploy/kubernetes/crds`) applied server-side and
/// Established, once per test binary.
pub fn shared_with_crds() -> &'static ControlPlane {
    static READY: OnceLock<()> = OnceLock::new();
    let p = shared();
    READY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crds");
        if let Err(e) = p.apply_crds(&dir) {
            panic!("{e:#}");
        }
    });
    p
}

static EXIT_PLANE: OnceLock<&'static ControlPlane> = OnceLock::new();

fn register_exit_teardown(p: &'static ControlPlane) {
    if EXIT_PLANE.set(p).is_ok() {
        extern "C" fn at_exit() {
            if let Some(p) = EXIT_PLANE.get() {
                p.stop();
            }
        }
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(at_exit);
        }
    }
}

/// The directory the control-plane binaries are in.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("BPFMAN_K8S_BIN") {
        return Ok(PathBuf::from(d));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/k8s-bins.sh");
    let out = Command::new(&script)
        .arg("--print-dir")
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} --print-dir failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Removes directories of earlier planes whose test binary is gone (killed before its exit hook).
/// Every start does this; it is public for tests of the teardown itself.
pub fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id() as i32
            && !process_alive(pid)
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver (and kube-controller-manager when asked) and waits until
    /// the API server is ready.
    pub fn start(opts: Options) -> Result<ControlPlane> {
        // rustls needs one process-wide crypto provider when more than one is compiled in.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        remove_stale_dirs();
        let bin = bin_dir()?;
        for b in ["etcd", "kube-apiserver", "kubectl"].iter().chain(
            opts.controller_manager
                .then_some(&"kube-controller-manager"),
        ) {
            if !bin.join(b).is_file() {
                bail!(
                    "{} is missing: build the test control plane with scripts/k8s-bins.sh (about 14 minutes of CPU once)",
                    bin.join(b).display()
                );
            }
        }
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pki")).context("create the control-plane dir")?;
        let port = free_port()?;
        let plane = ControlPlane {
            dir,
            bin,
            port,
            children: Mutex::new(Vec::new()),
            users: Mutex::new(()),
            audit: opts.audit,
        };
        plane.make_pki()?;
        plane.start_etcd()?;
        plane.start_apiserver()?;
        plane.write_kubeconfig("admin", &["system:masters"])?;
        plane.wait_ready()?;
        if opts.controller_manager {
            plane.start_controller_manager()?;
        }
        Ok(plane)
    }

    fn pki(&self, f: &str) -> PathBuf {
        self.dir.join("pki").join(f)
    }

    fn make_pki(&self) -> Result<()> {
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3",
                "-subj",
                "/CN=bpfman-test-ca",
                "-keyout",
            ])
            .arg(self.pki("ca.key"))
            .arg("-out")
            .arg(self.pki("ca.crt")))?;
        std::fs::write(
            self.pki("server.ext"),
            "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n",
        )?;
        self.sign("apiserver", "/CN=kube-apiserver", Some("server.ext"))?;
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(self.pki("sa.key"))
            .arg("2048"))?;
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(self.pki("sa.key"))
            .arg("-out")
            .arg(self.pki("sa.pub")))?;
        Ok(())
    }

    /// Makes `<name>.key` and `<name>.crt` signed by the CA.
    fn sign(&self, name: &str, subject: &str, ext: Option<&str>) -> Result<()> {
        let key = self.pki(&format!("{name}.key"));
        let csr = self.pki(&format!("{name}.csr"));
        let crt = self.pki(&format!("{name}.crt"));
        run(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        let ext_path = match ext {
            Some(e) => self.pki(e),
            None => {
                let p = self.pki("client.ext");
                std::fs::write(&p, "extendedKeyUsage=clientAuth\n")?;
                p
            }
        };
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "3", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(self.pki("ca.crt"))
            .arg("-CAkey")
            .arg(self.pki("ca.key"))
            .arg("-extfile")
            .arg(&ext_path)
            .arg("-out")
            .arg(&crt))?;
        Ok(())
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        self.children
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .push((name.to_string(), child));
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn start_etcd(&self) -> Result<()> {
        let client = free_port()?;
        let peer = free_port()?;
        let data = self.dir.join("etcd");
        let args = vec![
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        self.spawn("etcd", &self.bin.join("etcd"), &args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", client)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if body.contains("\"health\":\"true\"") {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become healthy in 30 s:\n{}",
                    self.log_tail("etcd")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(
            self.dir.join("etcd.url"),
            format!("http://127.0.0.1:{client}"),
        )?;
        Ok(())
    }

    fn start_apiserver(&self) -> Result<()> {
        let etcd = std::fs::read_to_string(self.dir.join("etcd.url"))?;
        let p = |f: &str| self.pki(f).display().to_string();
        let args = vec![
            format!("--etcd-servers={etcd}"),
            format!("--secure-port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            // As on OpenShift: setting blockOwnerDeletion on an owner reference needs update
            // on the owner's finalizers, so the RBAC in deploy/ is proven with it on.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
            format!("--service-account-issuer=https://127.0.0.1:{}", self.port),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            "--v=0".into(),
        ];
        let mut args = args;
        if self.audit {
            let policy = self.dir.join("audit-policy.yaml");
            std::fs::write(
                &policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n",
            )?;
            args.push(format!("--audit-policy-file={}", policy.display()));
            args.push(format!(
                "--audit-log-path={}",
                self.dir.join("audit.log").display()
            ));
            args.push("--audit-log-mode=blocking".into());
        }
        self.spawn("kube-apiserver", &self.bin.join("kube-apiserver"), &args)
    }

    fn start_controller_manager(&self) -> Result<()> {
        let args = vec![
            format!("--kubeconfig={}", self.admin_kubeconfig().display()),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--authentication-skip-lookup".into(),
            format!(
                "--service-account-private-key-file={}",
                self.pki("sa.key").display()
            ),
            format!("--root-ca-file={}", self.pki("ca.crt").display()),
            "--use-service-account-credentials=false".into(),
            "--controllers=*,-node-ipam-controller,-node-lifecycle-controller".into(),
            "--v=0".into(),
        ];
        self.spawn(
            "kube-controller-manager",
            &self.bin.join("kube-controller-manager"),
            &args,
        )
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if let Ok(o) = &out
                && o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == "ok"
            {
                return Ok(());
            }
            if let Ok(mut children) = self.children.lock() {
                for (name, c) in children.iter_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        bail!("{name} exited ({status}):\n{}", self.log_tail(name));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready in 90 s:\n{}",
                    self.log_tail("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the API server (SIGKILL, as a crash would) and starts it again on the same port
    /// and storage, waiting until it is ready. The new process dies with the calling thread
    /// (PR_SET_PDEATHSIG): restart only a plane the calling test owns.
    pub fn restart_apiserver(&self, down: Duration) -> Result<()> {
        {
            let mut children = self.children.lock().map_err(|_| anyhow!("poisoned"))?;
            for (name, c) in children.iter_mut() {
                if name == "kube-apiserver" {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            children.retain(|(name, _)| name != "kube-apiserver");
        }
        std::thread::sleep(down);
        self.start_apiserver()?;
        self.wait_ready()
    }

    /// The requests `user` made so far (audit events at ResponseComplete; watches count once,
    /// when they end, and are counted apart): (requests, of which writes, watches). Needs
    /// [`Options::audit`].
    pub fn requests_by(&self, user: &str) -> Result<(u64, u64, u64)> {
        let text = std::fs::read_to_string(self.dir.join("audit.log"))
            .context("read the audit log (start the plane with Options { audit: true })")?;
        let (mut all, mut writes, mut watches) = (0, 0, 0);
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["user"]["username"] != user {
                continue;
            }
            let stage = v["stage"].as_str().unwrap_or_default();
            if stage != "ResponseComplete" && stage != "ResponseStarted" {
                continue;
            }
            let verb = v["verb"].as_str().unwrap_or_default();
            if verb == "watch" {
                if stage == "ResponseStarted" {
                    watches += 1;
                }
                continue;
            }
            if stage != "ResponseComplete" {
                continue;
            }
            all += 1;
            if matches!(verb, "create" | "update" | "patch" | "delete") {
                writes += 1;
            }
        }
        Ok((all, writes, watches))
    }

    /// The process ids of etcd, the API server and (when running) the controller manager.
    pub fn pids(&self) -> Vec<u32> {
        self.children
            .lock()
            .map(|c| c.iter().map(|(_, c)| c.id()).collect())
            .unwrap_or_default()
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The directory holding this plane's data, logs and certificates.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA that signs the API server's and the clients' certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.pki("ca.crt")
    }

    /// A kubeconfig for `system:masters`.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    fn kubeconfig_yaml(&self, user: &str, auth: serde_json::Value) -> Result<String> {
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server(),
                "certificate-authority": self.pki("ca.crt").display().to_string(),
            }}],
            "users": [{"name": user, "user": auth}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        });
        Ok(serde_yaml::to_string(&doc)?)
    }

    fn write_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let file = sanitize(user);
        let path = if user == "admin" {
            self.admin_kubeconfig()
        } else {
            self.dir.join(format!(
                "user-{file}-{}.kubeconfig",
                groups
                    .iter()
                    .map(|g| sanitize(g))
                    .collect::<Vec<_>>()
                    .join("+")
            ))
        };
        let _guard = self.users.lock().map_err(|_| anyhow!("poisoned"))?;
        if path.exists() {
            return Ok(path);
        }
        let mut subject = format!("/CN={user}");
        for g in groups {
            subject.push_str(&format!("/O={g}"));
        }
        let cert = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        self.sign(&cert, &subject, None)?;
        let yaml = self.kubeconfig_yaml(
            user,
            serde_json::json!({
                "client-certificate": self.pki(&format!("{cert}.crt")).display().to_string(),
                "client-key": self.pki(&format!("{cert}.key")).display().to_string(),
            }),
        )?;
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// A kubeconfig authenticating as `user` in `groups` (a client certificate).
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        self.write_kubeconfig(user, groups)
    }

    /// A client for `system:masters`. Create clients inside the async runtime that uses them.
    pub async fn admin(&self) -> Result<Client> {
        client_from(&self.admin_kubeconfig()).await
    }

    /// A client authenticating as `user` in `groups`.
    pub async fn user(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let path = self.user_kubeconfig(user, groups)?;
        client_from(&path).await
    }

    /// A kubeconfig for service account `namespace/name`, holding a token from the TokenRequest
    /// API (the namespace and account are created when missing).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
        use kube::api::{Api, PostParams};
        let admin = self.admin().await?;
        let ns: Api<Namespace> = Api::all(admin.clone());
        let mut n = Namespace::default();
        n.metadata.name = Some(namespace.to_string());
        match ns.create(&PostParams::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("create the namespace"),
        }
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.to_string());
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("create the service account"),
        }
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![format!("https://127.0.0.1:{}", self.port)]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .context("TokenRequest")?
            .status
            .map(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest returned no token"))?;
        let path = self.dir.join(format!(
            "sa-{}-{}.kubeconfig",
            sanitize(namespace),
            sanitize(name)
        ));
        let yaml = self.kubeconfig_yaml(
            &format!("system:serviceaccount:{namespace}:{name}"),
            serde_json::json!({ "token": token }),
        )?;
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// Applies `files` with server-side apply (a deployment's namespace, service accounts and
    /// roles) and returns a kubeconfig for service account `namespace/name` holding a
    /// TokenRequest token: exactly what a component deployed with those files may do. Call it
    /// outside an async runtime.
    pub fn deployed_account(
        &self,
        files: &[PathBuf],
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf> {
        for f in files {
            let out = self.kubectl(&["apply", "--server-side", "-f", &f.display().to_string()])?;
            if !out.status.success() {
                bail!(
                    "kubectl apply --server-side -f {}: {}",
                    f.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(self.service_account_kubeconfig(namespace, name))
    }

    /// A client for service account `namespace/name`.
    pub async fn service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        let path = self.service_account_kubeconfig(namespace, name).await?;
        client_from(&path).await
    }

    /// Applies every CRD in `dir` with server-side apply and waits until each is Established.
    pub fn apply_crds(&self, dir: &Path) -> Result<()> {
        let out = self.kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()])?;
        if !out.status.success() {
            bail!(
                "kubectl apply --server-side -f {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "customresourcedefinition.apiextensions.k8s.io/NAME serverside-applied"
            let Some(name) = line
                .split_whitespace()
                .next()
                .and_then(|n| n.rsplit('/').next())
            else {
                continue;
            };
            let out = self.kubectl(&[
                "wait",
                "--for",
                "condition=Established",
                "--timeout=60s",
                &format!("crd/{name}"),
            ])?;
            if !out.status.success() {
                bail!(
                    "{name} not Established: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// Runs kubectl as the admin, feeding `stdin`; panics (with kubectl's stderr) unless it
    /// succeeds, and returns its stdout. For tests.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = match self.kubectl_with(&self.admin_kubeconfig(), args, stdin) {
            Ok(o) => o,
            Err(e) => panic!("kubectl {args:?}: {e:#}"),
        };
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_with(&self.admin_kubeconfig(), args, None)
    }

    /// Runs kubectl with a kubeconfig, optionally feeding `stdin`.
    pub fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("run kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Stops every process and removes the directory. Idempotent.
    pub fn stop(&self) {
        let Ok(mut children) = self.children.lock() else {
            return;
        };
        // Reverse start order: controller-manager, API server, etcd.
        for (_, c) in children.iter_mut().rev() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, c) in children.iter_mut().rev() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        children.clear();
        if std::env::var_os("BPFMAN_K8S_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kc = Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    Client::try_from(config).context("build the kube client")
}
