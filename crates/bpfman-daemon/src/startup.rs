//! Start-up of `bpfman daemon`: mounts bpffs, opens the manager (store + kernel, reconciled), and
//! serves the API on a unix socket until SIGTERM or SIGINT. Programs stay pinned and
//! keep running after it exits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bpfman::config::Config;
use bpfman::manager::{Manager, Paths};
use bpfman_api::ext::bpfman_ext_server::BpfmanExtServer;
use bpfman_api::v1::bpfman_server::BpfmanServer;
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::admission;
use crate::server::Service;
use crate::{DEFAULT_CONFIG, Options};

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Makes `path` a directory only root can enter (the runtime dir, its store, bpffs).
fn root_only(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", path.display()))
}

fn ensure_bpffs(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    if !is_bpffs(path) {
        nix::mount::mount(
            Some("bpf"),
            path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting bpffs at {} (needs CAP_SYS_ADMIN)", path.display()))?;
        info!("mounted bpffs at {}", path.display());
    }
    // A fresh bpffs root is mode 1777: anyone could pre-create the daemon's pins.
    root_only(path)
}

/// Raises the soft open-file limit to the hard one: every connection and open pin costs
/// an fd, and systemd's default soft limit is 1024.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                warn!(
                    "cannot raise RLIMIT_NOFILE: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Tracepoints resolve through tracefs; mount it where the kernel expects it if nobody did.
fn ensure_tracefs() {
    let t = Path::new("/sys/kernel/tracing");
    if t.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return;
    }
    match nix::mount::mount(
        Some("tracefs"),
        t,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) => info!("mounted tracefs at {}", t.display()),
        Err(e) => warn!(
            "tracefs is not mounted and mounting it failed ({e}): tracepoints will not attach"
        ),
    }
}

fn bind_socket(path: &Path, gid: Option<nix::unistd::Gid>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // A live daemon answers on it; a stale socket file from a killed one does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another daemon is serving on {}; stop it or give --socket",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("chown :{gid} {}", path.display()))?;
    }
    Ok(listener)
}

/// The group the API socket (and the metrics socket) get: `[api] socket_group`, or
/// `bpfman` when that exists.
fn socket_gid(group: Option<&str>) -> anyhow::Result<Option<nix::unistd::Gid>> {
    // The default group may be absent: then only root can connect. A group the config
    // names must exist.
    let (g, explicit) = match group {
        Some(g) => (g, true),
        None => ("bpfman", false),
    };
    let gid = match g.parse::<u32>() {
        Ok(n) => Some(nix::unistd::Gid::from_raw(n)),
        Err(_) => match nix::unistd::Group::from_name(g)
            .with_context(|| format!("looking up group {g}"))?
        {
            Some(gr) => Some(gr.gid),
            None if explicit => {
                bail!(
                    "socket_group '{g}' does not exist (groupadd {g}, or change [api] socket_group)"
                )
            }
            None => {
                info!("group 'bpfman' does not exist: only root can use the socket");
                None
            }
        },
    };
    Ok(gid)
}

/// Names, sizes and modification times of a directory's `*.toml` files: changes when
/// any file is added, removed or edited.
fn dir_signature(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                .map(|e| {
                    let md = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        md.as_ref().map(|m| m.len()).unwrap_or(0),
                        md.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn run(args: Options) -> anyhow::Result<()> {
    let socket = args.socket.clone();
    // Few malloc arenas: the daemon's threads are mostly idle, and per-thread arenas
    // would keep every burst's peak resident.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BPFMAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let required = args.config != Path::new(DEFAULT_CONFIG);
    let config = Config::load(&args.config, required).map_err(|e| anyhow::anyhow!("{e}"))?;
    raise_nofile();
    // The metrics endpoints first: a bad address stops the daemon before it touches the
    // host (no bpffs mounted, no store opened).
    if config.metrics.socket.as_deref() == Some(socket.as_path()) {
        bail!(
            "[metrics] socket = '{}' is the API socket (--socket); give the metrics their own path",
            socket.display()
        );
    }
    let endpoints = crate::metrics::bind(
        &config,
        socket_gid(config.api.socket_group.as_deref())?.map(|g| g.as_raw()),
    )?;
    let paths = Paths::new(&args.runtime_dir, &socket);
    root_only(&paths.runtime_dir)?;
    if let Some(db) = paths.database.parent() {
        root_only(db)?;
    }
    ensure_bpffs(&paths.bpffs)?;
    ensure_tracefs();
    let (manager, report) =
        Manager::open(paths.clone(), config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(
        "reconciled store with bpffs: {} difference(s) repaired",
        report.len()
    );
    for f in &manager.features().list {
        info!(
            feature = %f.name,
            supported = f.supported,
            "{}", f.detail
        );
    }
    // Start-up probing parsed kernel BTF; give that memory back.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let manager = Arc::new(manager);
    // Kernel run statistics stay on while this guard lives (the whole run).
    let run_stats = if config.metrics.program_stats {
        match manager.enable_run_stats() {
            Ok(g) => {
                info!("kernel run statistics are on ([metrics] program_stats)");
                Some(g)
            }
            Err(e) => {
                warn!("[metrics] program_stats: cannot turn kernel run statistics on: {e}");
                None
            }
        }
    } else {
        None
    };
    let request_metrics = crate::metrics::RequestMetrics::default();
    let limits = admission::Limits::from_config(&config.api);
    let admit = admission::AdmissionLayer {
        manager: manager.clone(),
        limits,
        requests: Arc::new(admission::Counter::default()),
        metrics: request_metrics.clone(),
    };
    let service = Service {
        manager,
        version: env!("CARGO_PKG_VERSION"),
        config_path: args.config.clone(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let group = config.api.socket_group.clone();
        let gid = socket_gid(group.as_deref())?;
        let listener = bind_socket(&socket, gid)?;
        if !endpoints.is_empty() {
            let registry = crate::metrics::registry(
                &service.manager,
                &config,
                &request_metrics,
                run_stats.is_some(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let registry = Arc::new(registry);
            for e in endpoints {
                let where_ = match &e {
                    bpfman_metrics::Bound::Tcp(l) => l
                        .local_addr()
                        .map(|a| format!("http://{a}/metrics"))
                        .unwrap_or_default(),
                    bpfman_metrics::Bound::Unix(_, p) => format!("unix:{} /metrics", p.display()),
                };
                info!("metrics on {where_}");
                tokio::spawn(bpfman_metrics::serve(registry.clone(), e));
            }
        }
        watch_sighup(service.manager.clone(), service.config_path.clone());
        let max_request = config.daemon.max_request_bytes;
        let programs_dir = config.daemon.programs_dir.clone();
        watch_programs_dir(service.manager.clone(), programs_dir.clone());
        background_reconcile(
            service.manager.clone(),
            config.daemon.reconcile_interval_secs,
            programs_dir,
        );
        info!("serving on {}", socket.display());
        let shutdown = shutdown_signal();
        let incoming = admission::incoming(
            listener,
            limits,
            Arc::new(admission::Counter::default()),
            request_metrics.open_connections.clone(),
        );
        tonic::transport::Server::builder()
            .max_concurrent_streams(config.api.max_streams_per_connection)
            .http2_max_pending_accept_reset_streams(Some(32))
            .http2_max_header_list_size(64 << 10)
            .layer(admit)
            .add_service(BpfmanServer::new(service.clone()).max_decoding_message_size(max_request))
            .add_service(BpfmanExtServer::new(service).max_decoding_message_size(max_request))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .context("serving the API")?;
        let _ = std::fs::remove_file(&socket);
        if let Some(p) = &config.metrics.socket {
            let _ = std::fs::remove_file(p);
        }
        drop(run_stats);
        Ok(())
    })
}

/// SIGHUP: re-read the config and apply its policy; a bad file keeps the old one.
fn watch_sighup(m: Arc<Manager>, config_path: PathBuf) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            warn!("cannot watch SIGHUP: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (m, path) = (m.clone(), config_path.clone());
            let r = tokio::task::spawn_blocking(move || {
                m.reload_file(bpfman::model::Caller::daemon(), &path)
            })
            .await;
            match r {
                Ok(Ok(n)) => info!("SIGHUP: policy reloaded ({n} rules)"),
                Ok(Err(e)) => warn!("SIGHUP: policy not reloaded, the old one stays: {e}"),
                Err(e) => warn!("SIGHUP: reload failed: {e}"),
            }
        }
    });
}

/// Static programs: applied now, then whenever the directory changes (polled every
/// 2 s); `background_reconcile` retries them too.
fn watch_programs_dir(m: Arc<Manager>, dir: PathBuf) {
    tokio::spawn(async move {
        let mut seen = None;
        loop {
            let sig = dir_signature(&dir);
            if seen.as_ref() != Some(&sig) {
                seen = Some(sig);
                let (m, d) = (m.clone(), dir.clone());
                if let Ok(report) =
                    tokio::task::spawn_blocking(move || bpfman::statics::apply(&m, &d)).await
                {
                    for r in report {
                        info!("programs.d: {r}");
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
}

/// Background reconciliation every `every` seconds (0: never): notices what changed
/// behind the daemon's back, and retries the static programs.
fn background_reconcile(m: Arc<Manager>, every: u64, programs_dir: PathBuf) {
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
        tick.tick().await;
        loop {
            tick.tick().await;
            let m = m.clone();
            let dir = programs_dir.clone();
            let r = tokio::task::spawn_blocking(move || {
                let r = m.reconcile(bpfman::model::Caller::daemon());
                for e in bpfman::statics::apply(&m, &dir) {
                    // Only what changed: a retry that fails again is said once, at start.
                    if matches!(
                        e.kind,
                        bpfman::statics::EventKind::Loaded | bpfman::statics::EventKind::Attached
                    ) {
                        info!("programs.d: {e}");
                    }
                }
                r
            })
            .await;
            match r {
                Ok(Ok(r)) if !r.is_empty() => {
                    warn!("background reconcile repaired {} difference(s)", r.len())
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!("background reconcile failed: {e}"),
                Err(e) => warn!("background reconcile panicked: {e}"),
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    info!("shutting down; programs stay pinned and attached");
}
