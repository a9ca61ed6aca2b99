//! Network namespaces: run kernel work inside one, and name one stably.

use std::os::unix::fs::MetadataExt;

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// A network namespace's identity: the inode of its nsfs file.
pub type NetnsId = u64;

/// The id of the namespace at `path`, or of the daemon's own when `None`.
pub fn netns_id(path: Option<&str>) -> Result<NetnsId> {
    let p = path.unwrap_or("/proc/self/ns/net");
    std::fs::metadata(p)
        .map(|m| m.ino())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::not_found(format!("network namespace '{p}' does not exist"))
            }
            _ => Error::kernel(format!("network namespace '{p}': {e}")),
        })
}

/// Runs `f` in the network namespace at `path` (in a thread of its own, so the daemon's
/// other threads never change namespace), or in place when `path` is `None`.
pub fn within<T: Send>(path: Option<&str>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(path) = path else {
        return f();
    };
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!(
            "network namespace '{path}' does not exist (give a path such as /var/run/netns/NAME)"
        )),
        _ => Error::kernel(format!("network namespace '{path}' cannot be opened: {e}")),
    })?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("bpfman-netns".into())
            .spawn_scoped(s, move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    Error::invalid(format!(
                        "entering network namespace '{path}': {e}; is it a netns file?"
                    ))
                })?;
                f()
            })
            .map_err(|e| Error::kernel(format!("starting a thread to enter '{path}': {e}")))?
            .join()
            .map_err(|_| Error::internal("netns worker thread panicked"))?
    })
}
