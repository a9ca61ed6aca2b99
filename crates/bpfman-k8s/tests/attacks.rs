use std::path::Path;
use bpfman_k8s_testenv::shared;

#[test]
#[ignore]
fn scratch() {
    let p = shared();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crds");
    let out = p.kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()]).unwrap();
    assert!(out.status.success());
    std::fs::write("/tmp/atk/kubeconfig", p.admin_kubeconfig().display().to_string()).unwrap();
    while Path::new("/tmp/atk/keep").exists() {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}
