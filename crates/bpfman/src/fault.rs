//! Fault injection for crash tests: `BPFMAN_FAULT=<point>[,<point>...]` makes the daemon
//! abort (as abruptly as SIGKILL: no destructors, no flush) the first time it reaches a
//! named point; `<point>#<n>` the n-th time it reaches it (a later rebuild, say);
//! `<point>@sleep<ms>` makes it stall there instead, every time (for tests of what runs
//! concurrently with a half-done operation). Unset, each point costs one
//! load of a cached `Option`.
//!
//! Points, in the order an operation passes them:
//! - `load.pinned`: programs loaded and pinned, not yet in the store
//! - `attach.intent`: the link's row recorded, the kernel not yet touched
//! - `attach.pinned`: the link made and pinned, its row not yet completed
//! - `detach.unpinned`: the link removed from the kernel, its row still there
//! - `unload.unpinned`: the program unpinned, its row still there
//! - `rebuild.built`: a new dispatcher revision built, not yet swapped in
//! - `rebuild.swapped`: the new revision swapped onto the hook, not yet recorded
//! - `rebuild.recorded`: recorded, the old revision not yet removed

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Every fault point, for tests that walk them all.
pub const POINTS: &[&str] = &[
    "load.pinned",
    "attach.intent",
    "attach.pinned",
    "detach.unpinned",
    "unload.unpinned",
    "rebuild.built",
    "rebuild.swapped",
    "rebuild.recorded",
];

fn armed() -> &'static Option<Vec<String>> {
    static ARMED: OnceLock<Option<Vec<String>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("BPFMAN_FAULT")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
    })
}

/// How often each point has been reached (only counted when faults are armed).
fn reached(point: &str) -> usize {
    static SEEN: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut m = SEEN
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let n = m.entry(point.to_string()).or_default();
    *n += 1;
    *n
}

/// Aborts the process here if `point` is armed (or stalls, if armed with `@sleep<ms>`).
pub fn point(point: &str) {
    let Some(points) = armed() else { return };
    let n = reached(point);
    for p in points {
        if let Some((name, nth)) = p.split_once('#') {
            if name == point && nth.parse() == Ok(n) {
                eprintln!("bpfman: fault injection: aborting at {point} (time {n})");
                std::process::abort();
            }
            continue;
        }
        match p.split_once("@sleep") {
            Some((name, ms)) if name == point => {
                let ms = ms.parse().unwrap_or(1000);
                eprintln!("bpfman: fault injection: stalling {ms} ms at {point}");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            None if p == point => {
                eprintln!("bpfman: fault injection: aborting at {point}");
                std::process::abort();
            }
            _ => {}
        }
    }
}
