//! The control plane goes away however a test ends: an owned plane when the test panics, the
//! shared plane's processes when the test binary is killed outright (PR_SET_PDEATHSIG), and the
//! killed binary's directory at the next start.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_k8s_testenv::{ControlPlane, Options, remove_stale_dirs, shared};

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at /proc state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

fn record(plane: &ControlPlane) {
    let out = std::env::var("TEARDOWN_RECORD").expect("TEARDOWN_RECORD");
    let pids: Vec<String> = plane.pids().iter().map(u32::to_string).collect();
    std::fs::write(
        &out,
        format!("{}\n{}\n", plane.dir().display(), pids.join(" ")),
    )
    .expect("record");
}

fn read_record(path: &PathBuf) -> Option<(PathBuf, Vec<u32>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next()?);
    let pids = lines
        .next()?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    Some((dir, pids))
}

fn helper(name: &str, record: &PathBuf) -> std::process::Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env("TEARDOWN_RECORD", record)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper")
}

#[test]
#[ignore = "helper: run by owned_plane_is_torn_down_when_its_test_panics"]
fn helper_panics_holding_an_owned_plane() {
    let plane = ControlPlane::start(Options::default()).expect("start");
    record(&plane);
    panic!("a failing test");
}

#[test]
#[ignore = "helper: run by shared_plane_dies_with_a_killed_test_binary"]
fn helper_holds_the_shared_plane_until_killed() {
    record(shared());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn owned_plane_is_torn_down_when_its_test_panics() {
    let rec = std::env::temp_dir().join(format!("teardown-owned-{}", std::process::id()));
    let status = helper("helper_panics_holding_an_owned_plane", &rec)
        .wait()
        .expect("wait");
    assert!(!status.success(), "the helper test failed, as it should");
    let (dir, pids) = read_record(&rec).expect("the helper recorded its plane");
    let _ = std::fs::remove_file(&rec);
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the panicking test");
    }
    assert!(
        !dir.exists(),
        "{} outlived the panicking test",
        dir.display()
    );
}

#[test]
fn shared_plane_dies_with_a_killed_test_binary() {
    let rec = std::env::temp_dir().join(format!("teardown-shared-{}", std::process::id()));
    let mut child = helper("helper_holds_the_shared_plane_until_killed", &rec);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (dir, pids) = loop {
        if let Some(r) = read_record(&rec) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the helper never started its plane"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = std::fs::remove_file(&rec);
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );
    child.kill().expect("SIGKILL the test binary");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "plane processes outlived the killed binary: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dir.exists(), "no exit hook ran, so the directory is left");
    remove_stale_dirs();
    assert!(
        !dir.exists(),
        "the next start removes a dead binary's directory"
    );
}
