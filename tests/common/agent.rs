//! The Kubernetes agent suites' harness: the real `bpfman-agent` binary per node and daemon,
//! Node objects, applications applied with kubectl, State lookups, pods on the real node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use serde_json::Value;

use super::{BPFMAN, Daemon, obj, repo, unique};

/// The agent binary, built by `cargo build --workspace --bins` in scripts/test.sh (this suite
/// belongs to the CLI's package, so cargo does not build another package's binary for it):
/// refused when missing or older than its sources.
pub fn agent_bin() -> PathBuf {
    let p = Path::new(BPFMAN).with_file_name("bpfman-agent");
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build it with `cargo build -p bpfman-agent` (scripts/test.sh does)",
                p.display()
            )
        });
    fn newest(dir: &Path) -> std::time::SystemTime {
        let mut t = std::time::SystemTime::UNIX_EPOCH;
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let m = if e.path().is_dir() {
                newest(&e.path())
            } else {
                e.metadata().and_then(|m| m.modified()).unwrap_or(t)
            };
            t = t.max(m);
        }
        t
    }
    for c in [
        "bpfman-agent",
        "bpfman-client",
        "bpfman-k8s",
        "bpfman-types",
    ] {
        let src = repo().join("crates").join(c).join("src");
        assert!(
            newest(&src) <= built,
            "{} is older than {}: rebuild it with `cargo build -p bpfman-agent` (scripts/test.sh does)",
            p.display(),
            src.display()
        );
    }
    p
}

pub fn plane() -> &'static ControlPlane {
    bpfman_k8s_testenv::shared_with_crds()
}

pub fn node_name(tag: &str) -> String {
    format!("agent-{tag}-{}-{}", std::process::id(), unique())
}

/// A running agent for one node and daemon.
pub struct Agent {
    pub child: Option<Child>,
    pub node: String,
    socket: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
    cri: PathBuf,
}

impl Agent {
    pub fn start(plane: &ControlPlane, node: &str, daemon: &Daemon) -> Self {
        let mut a = Agent {
            child: None,
            node: node.to_string(),
            socket: daemon.socket.clone(),
            kubeconfig: plane.admin_kubeconfig(),
            log: daemon.dir.path().join(format!("agent-{node}.log")),
            cri: PathBuf::from("/nonexistent/cri.sock"),
        };
        a.spawn();
        a
    }

    /// An agent whose cluster access is `kubeconfig` (its own user, to count its requests).
    pub fn with_kubeconfig(node: &str, daemon: &Daemon, kubeconfig: PathBuf) -> Self {
        let mut a = Agent {
            child: None,
            node: node.to_string(),
            socket: daemon.socket.clone(),
            kubeconfig,
            log: daemon.dir.path().join(format!("agent-{node}.log")),
            cri: PathBuf::from("/nonexistent/cri.sock"),
        };
        a.spawn();
        a
    }

    /// An agent for a real node, finding pods through its CRI socket.
    pub fn on_node(
        plane: &ControlPlane,
        node: &bpfman_k8s_testenv::KubeNode,
        daemon: &Daemon,
    ) -> Self {
        let mut a = Agent {
            child: None,
            node: node.name.clone(),
            socket: daemon.socket.clone(),
            kubeconfig: plane.admin_kubeconfig(),
            log: daemon.dir.path().join(format!("agent-{}.log", node.name)),
            cri: node.cri_socket(),
        };
        a.spawn();
        a
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(agent_bin())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBE_NODE_NAME", &self.node)
            .env("BPFMAN_SOCKET", &self.socket)
            .env(
                "BPFMAN_LOG",
                std::env::var("BPFMAN_AGENT_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .env("CONTAINER_RUNTIME_ENDPOINT", &self.cri)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning bpfman-agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- agent {} log ---\n{}", self.node, self.log());
        }
    }
}

pub fn make_node(plane: &ControlPlane, name: &str, labels: &[(&str, &str)], ip: &str) {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    plane.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n{labels}"
        )),
    );
    plane.kubectl_ok(
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"{ip}"}}]}}}}"#),
        ],
        None,
    );
}

pub fn label_node(plane: &ControlPlane, name: &str, label: &str) {
    plane.kubectl_ok(&["label", "node", name, label, "--overwrite"], None);
}

pub fn apply(plane: &ControlPlane, yaml: &str) {
    plane.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(yaml));
}

pub fn delete_app(plane: &ControlPlane, name: &str) {
    plane.kubectl_ok(
        &["delete", "clusterbpfapplication", name, "--wait=false"],
        None,
    );
}

/// This node's State of `app`, if any.
pub fn state(plane: &ControlPlane, app: &str, node: &str) -> Option<Value> {
    let out = plane.kubectl_ok(
        &[
            "get",
            "clusterbpfapplicationstates",
            "-l",
            &format!("bpfman.io/ownedByProgram={app},kubernetes.io/hostname={node}"),
            "-o",
            "json",
        ],
        None,
    );
    let v: Value = serde_json::from_str(&out).expect("kubectl json");
    v["items"].as_array().and_then(|a| a.first().cloned())
}

pub fn cond(s: &Value) -> (String, String, String) {
    let c = &s["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    wait_until(what, secs, || f().ok_or(String::new()))
}

/// [`wait_for`] whose condition says what it saw instead, said when it times out.
pub fn wait_until<T, E: std::fmt::Display>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}; last seen: {seen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the State's condition is `type_` (with the generation seen), returns it.
pub fn wait_cond(plane: &ControlPlane, app: &str, node: &str, type_: &str, secs: u64) -> Value {
    let mut last = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            &format!("State of {app} on {node} to be {type_}"),
            secs,
            || {
                let s = state(plane, app, node)?;
                last = Some(s.clone());
                (cond(&s).0 == type_).then_some(s)
            },
        )
    }));
    match r {
        Ok(s) => s,
        Err(_) => panic!(
            "State of {app} on {node} never became {type_}; last: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        ),
    }
}

pub fn xdp_app(name: &str, node: &str, iface: &str, priority: i32, extra: &str) -> String {
    format!(
        r#"apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: {node}
  byteCode:
    path: {path}
{extra}  programs:
    - name: xdp_drop_proto
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfaces: [{iface}]
            priority: {priority}
"#,
        path = obj("xdp_test.bpf.o"),
    )
}

/// The programs the daemon holds for a State (by its `bpfman.io/uuid`).
pub fn programs_of(d: &Daemon, state_uid: &str) -> Vec<Value> {
    d.json(&[
        "list",
        "programs",
        "--metadata-selector",
        &format!("bpfman.io/uuid={state_uid}"),
    ])
    .as_array()
    .cloned()
    .unwrap_or_default()
}

pub fn links(d: &Daemon) -> Vec<Value> {
    d.json(&["list", "links"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn program_id(s: &Value, i: usize) -> u64 {
    s["status"]["programs"][i]["programId"]
        .as_u64()
        .unwrap_or_else(|| panic!("no programId in {s}"))
}

pub fn xdp_link(s: &Value, i: usize) -> Value {
    s["status"]["programs"][0]["xdp"]["links"][i].clone()
}

/// The real node, or why this machine cannot run one (then the test says so and skips).
pub fn real_node() -> Option<&'static bpfman_k8s_testenv::KubeNode> {
    if let Err(e) = bpfman_k8s_testenv::node::available() {
        eprintln!("SKIP (no real node on this machine): {e}");
        return None;
    }
    match bpfman_k8s_testenv::shared_node() {
        Ok(n) => Some(n),
        Err(e) => panic!("the node did not start: {e}"),
    }
}

pub fn pod(p: &ControlPlane, node: &str, ns: &str, name: &str, app: &str) {
    pod_running(
        p,
        node,
        ns,
        name,
        app,
        r#"["/bin/busybox", "sleep", "3600"]"#,
    );
}

/// A pod on `node` labelled `app: APP` whose one container runs `command` (a JSON list).
pub fn pod_running(p: &ControlPlane, node: &str, ns: &str, name: &str, app: &str, command: &str) {
    p.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {app}
spec:
  nodeName: {node}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {img}
      imagePullPolicy: Never
      command: {command}
"#,
            img = bpfman_k8s_testenv::node::IMAGE
        )),
    );
}

/// Waits until the pod runs; returns its IP.
pub fn pod_ip(p: &ControlPlane, ns: &str, name: &str) -> String {
    wait_for(&format!("pod {ns}/{name} Running"), 90, || {
        let out = p
            .kubectl(&[
                "get",
                "pod",
                "-n",
                ns,
                name,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
            ])
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let mut it = s.split_whitespace();
        (it.next() == Some("Running"))
            .then(|| it.next().map(str::to_string))
            .flatten()
    })
}

pub fn pings(ip: &str) -> bool {
    (0..2).any(|_| {
        Command::new("ping")
            .args(["-c", "1", "-W", "1", ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

pub fn namespace(p: &ControlPlane, ns: &str) {
    p.kubectl_ok(&["create", "namespace", ns], None);
}

pub fn pod_xdp_app(
    kind: &str,
    name: &str,
    ns: Option<&str>,
    node: &str,
    pods: &str,
    prio: i32,
) -> String {
    let meta_ns = ns
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    let sel_ns = match (kind, ns) {
        ("ClusterBpfApplication", Some(n)) => format!("              namespace: {n}\n"),
        _ => String::new(),
    };
    format!(
        r#"apiVersion: bpfman.io/v1alpha1
kind: {kind}
metadata:
  name: {name}
{meta_ns}spec:
  nodeSelector:
    matchLabels:
      kubernetes.io/hostname: {node}
  byteCode:
    path: {path}
  programs:
    - name: xdp_drop_proto
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfaces: [eth0]
            networkNamespaces:
{sel_ns}              pods:
                matchLabels:
                  app: {pods}
            priority: {prio}
"#,
        path = obj("xdp_test.bpf.o"),
    )
}

pub fn ns_state(p: &ControlPlane, ns: &str, app: &str, node: &str) -> Option<Value> {
    let out = p.kubectl_ok(
        &[
            "get",
            "bpfapplicationstates",
            "-n",
            ns,
            "-l",
            &format!("bpfman.io/ownedByProgram={app},kubernetes.io/hostname={node}"),
            "-o",
            "json",
        ],
        None,
    );
    let v: Value = serde_json::from_str(&out).ok()?;
    v["items"].as_array().and_then(|a| a.first().cloned())
}

/// Program and link ids the State records.
pub fn recorded_ids(s: &Value) -> (Vec<u64>, Vec<u64>) {
    let mut progs = Vec::new();
    let mut links = Vec::new();
    for p in s["status"]["programs"].as_array().into_iter().flatten() {
        if let Some(id) = p["programId"].as_u64() {
            progs.push(id);
        }
        for m in [
            "xdp",
            "tc",
            "tcx",
            "tracepoint",
            "kprobe",
            "kretprobe",
            "uprobe",
            "uretprobe",
            "fentry",
            "fexit",
        ] {
            for l in p[m]["links"].as_array().into_iter().flatten() {
                if let Some(id) = l["linkId"].as_u64() {
                    links.push(id);
                }
            }
        }
    }
    (progs, links)
}

// For the benchmarks.

/// A distinct syscall tracepoint per application: the kernel runs at most 64 BPF programs on
/// one tracepoint, and four daemons loading 50 applications would put 200 on one.
pub fn tracepoint(i: usize) -> String {
    let mut tps: Vec<String> = std::fs::read_dir("/sys/kernel/tracing/events/syscalls")
        .expect("tracefs (mount -t tracefs tracefs /sys/kernel/tracing)")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("sys_enter_"))
        .collect();
    tps.sort();
    format!("syscalls/{}", tps[i % tps.len()])
}

pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
