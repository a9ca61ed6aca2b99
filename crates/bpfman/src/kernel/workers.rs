//! Threads the kernel module runs work on.
//!
//! * **Loaders.** aya's `EbpfLoader::new()` parses the whole kernel BTF
//!   (`/sys/kernel/btf/vmlinux`, ~5 MiB) on every call: ~17 ms of CPU and tens of MiB
//!   of transient allocation per load, even for objects that need no CO-RE
//!   relocation. Loads therefore run on dedicated threads that live in a private mount
//!   namespace where `/sys/kernel/btf` is covered by an empty tmpfs, so that parse fails
//!   at once; the kernel module hands the loader the kernel BTF itself, parsed only
//!   when the object has CO-RE relocations or needs a BTF target (fentry/fexit).
//!   Mounts are private to those threads and never propagate to the host.
//! * **Reaper.** Closing the last fd of a perf-event link (tracepoint, kprobe, uprobe)
//!   unregisters the probe at once and then waits for RCU grace periods inside
//!   `close()` (~70 ms here). Detach removes the pin and the record, then hands the
//!   fd to a short-lived reaper thread (one per link, so the grace periods overlap
//!   instead of queueing), so callers do not wait for them.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

type Job = Box<dyn FnOnce() + Send>;

pub struct Workers {
    loaders: Mutex<Sender<Job>>,
}

fn hide_kernel_btf() -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    if std::path::Path::new("/sys/kernel/btf").is_dir() {
        mount(
            Some("tmpfs"),
            "/sys/kernel/btf",
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=4k"),
        )
        .map_err(|e| format!("covering /sys/kernel/btf: {e}"))?;
    }
    Ok(())
}

impl Workers {
    pub fn start(loaders: usize) -> Arc<Self> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = channel::<bool>();
        for i in 0..loaders.max(1) {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("bpf-loader-{i}"))
                .spawn(move || {
                    let ok = match hide_kernel_btf() {
                        Ok(()) => true,
                        Err(e) => {
                            warn!("loader thread keeps the host mount view ({e}); loads parse kernel BTF each time");
                            false
                        }
                    };
                    let _ = ready.send(ok);
                    drop(ready);
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                warn!("cannot start loader thread: {e}");
            }
        }
        drop(ready_tx);
        let fast_loader = ready_rx.iter().all(|ok| ok);
        if fast_loader {
            info!("loader threads run with kernel BTF hidden from aya's default loader");
        }
        Arc::new(Self {
            loaders: Mutex::new(tx),
        })
    }

    /// Runs `f` on a loader thread and waits for its result.
    pub fn load<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = channel();
        let job: Job = Box::new(move || {
            // A panic inside aya (a malformed object can cause one) must not take the
            // loader thread down: it is reported and the caller gets an error.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(v) => {
                    let _ = tx.send(v);
                }
                Err(p) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    warn!("a loader job panicked (malformed input?): {msg}");
                }
            }
        });
        self.loaders.lock().ok()?.send(job).ok()?;
        rx.recv().ok()
    }

    /// Drops `obj` (closing its fds) on a reaper thread, or here if none can start.
    pub fn reap(&self, obj: Box<dyn Send>) {
        let slot = Arc::new(Mutex::new(Some(obj)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("bpf-reaper".into())
            .spawn(move || {
                if let Ok(mut g) = theirs.lock() {
                    g.take();
                }
            });
        if spawned.is_err()
            && let Ok(mut g) = slot.lock()
        {
            g.take();
        }
    }
}
