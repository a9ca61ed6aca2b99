//! What the operator suites share: the shared control plane with deploy/'s namespace and
//! operator RBAC applied and the operator service account's kubeconfig, a lock the suites take
//! (the operator acts on the whole cluster), kubectl helpers, and the objects they read back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::ControlPlane;
use serde_json::Value;

/// Upstream's leader-election Lease.
pub const LEASE: &str = "8730d955.bpfman.io";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared plane with the CRDs, deploy/'s namespace and operator RBAC, and the operator
/// service account's kubeconfig.
pub fn plane() -> (&'static ControlPlane, PathBuf) {
    static SA: OnceLock<PathBuf> = OnceLock::new();
    let p = bpfman_k8s_testenv::shared_with_crds();
    let kc = SA.get_or_init(|| {
        let d = repo().join("deploy/kubernetes");
        p.deployed_account(
            &[d.join("namespace.yaml"), d.join("rbac/operator.yaml")],
            "bpfman",
            "bpfman-operator",
        )
        .expect("the operator's service-account kubeconfig")
    });
    (p, kc.clone())
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn kube_json(p: &ControlPlane, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = p.kubectl(&a).ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

pub fn apply(p: &ControlPlane, v: &Value) {
    p.kubectl_ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&v.to_string()),
    );
}

pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match f() {
            Ok(t) => return t,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn unique() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

pub fn cond_of(v: &Value) -> (String, String, Option<i64>) {
    let c = &v["status"]["conditions"][0];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
        c["observedGeneration"].as_i64(),
    )
}

pub fn events_for(p: &ControlPlane, name: &str) -> Vec<(String, String)> {
    let v = kube_json(
        p,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ],
    )
    .unwrap_or(Value::Null);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Deletes the Config named `name` (its finalizer too) and waits until it is gone.
pub fn remove_config_named(p: &ControlPlane, name: &str) {
    let _ = p.kubectl(&[
        "patch",
        "config",
        name,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let _ = p.kubectl(&[
        "delete",
        "config",
        name,
        "--wait=false",
        "--ignore-not-found",
    ]);
    wait_for("the Config gone", 30, || {
        kube_json(p, &["get", "config", name]).map_or(Ok(()), |_| Err("still there".into()))
    });
}

pub fn remove_config(p: &ControlPlane) {
    remove_config_named(p, "bpfman-config");
    let _ = p.kubectl(&["delete", "csidriver", "csi.bpfman.io", "--wait=false"]);
}

pub fn ds_annotation(p: &ControlPlane, ns: &str) -> Option<String> {
    kube_json(p, &["get", "daemonset", "-n", ns, "bpfman-daemon"]).and_then(|d| {
        d["spec"]["template"]["metadata"]["annotations"]["bpfman.io.bpfman.toml"]
            .as_str()
            .map(str::to_string)
    })
}

pub fn lease_holder(p: &ControlPlane) -> String {
    kube_json(p, &["get", "lease", "-n", "bpfman", LEASE])
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap_or_default()
}
