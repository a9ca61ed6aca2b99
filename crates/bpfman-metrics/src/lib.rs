//! The Prometheus endpoint: OpenMetrics text encoded from a `prometheus-client` registry at
//! scrape time, served on `GET /metrics` over TCP or a unix socket.
//!
//! Shared by every bpfman process that exports metrics (the daemon now, the Kubernetes agent
//! and operator later), so each says only what it measures. Binding is separate from serving
//! so a bad address fails at start, with the setting named, not in a background task.
//!
//! The endpoint is read-only and holds no secrets, but a scrape costs work (the daemon's
//! collector reads the kernel) and anyone who can connect is served, so it is bounded:
//! one request per connection (no keep-alive, no pipelining), a deadline for the request head
//! and one for the whole connection, a few encodes at a time and at most one every 250 ms
//! (scrapes in between get the last one), and when every connection slot is taken a new
//! connection evicts the oldest one still waiting for its request head, so slow or idle
//! connections cannot lock scrapers out. Any path but `/metrics` is 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

pub use prometheus_client;
use prometheus_client::registry::Registry;

/// The content type of OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes encoded at once; more wait their turn.
const MAX_CONCURRENT_SCRAPES: usize = 4;
/// Connections held open at once; past it new ones are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may live in all (head, encode, writing the answer).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Scrapes closer together than this share one encode.
const MIN_ENCODE_INTERVAL: Duration = Duration::from_millis(250);

/// Where the endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address, e.g. `127.0.0.1:9464`.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "http://{a}/metrics"),
            Listen::Unix(p) => write!(f, "unix:{} /metrics", p.display()),
        }
    }
}

/// A bound listener, ready to serve (bound without a runtime, so a process can check its
/// addresses before it starts anything else).
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// Why the endpoint could not be set up.
#[derive(Debug)]
pub struct BindError {
    /// The setting that names the address (for the message).
    pub setting: String,
    pub listen: Listen,
    pub source: std::io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hint = match self.source.kind() {
            std::io::ErrorKind::AddrInUse => "; another process listens there: pick a free port",
            std::io::ErrorKind::PermissionDenied => {
                "; the directory is not writable by the daemon, or the port is privileged"
            }
            std::io::ErrorKind::NotFound => "; the directory does not exist",
            _ => "",
        };
        write!(
            f,
            "{}: cannot listen on {}: {}{hint}",
            self.setting, self.listen, self.source
        )
    }
}

impl std::error::Error for BindError {}

/// Binds `listen`. A unix socket replaces a stale socket
/// file (never another kind of file), and gets `mode` and, when given, `gid`.
pub fn bind(
    setting: &str,
    listen: &Listen,
    mode: u32,
    gid: Option<u32>,
) -> Result<Bound, BindError> {
    let err = |source: std::io::Error| BindError {
        setting: setting.to_string(),
        listen: listen.clone(),
        source,
    };
    match listen {
        Listen::Tcp(addr) => {
            let std = std::net::TcpListener::bind(addr).map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            Ok(Bound::Tcp(std))
        }
        Listen::Unix(path) => {
            remove_stale_socket(path).map_err(err)?;
            let std = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            // What was bound must still be our socket (not a symlink swapped in) before it is
            // chowned (without following links) and chmodded.
            use std::os::unix::fs::FileTypeExt as _;
            let m = std::fs::symlink_metadata(path).map_err(err)?;
            if !m.file_type().is_socket() {
                return Err(err(std::io::Error::other(format!(
                    "{} changed while it was bound",
                    path.display()
                ))));
            }
            if let Some(gid) = gid {
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    path,
                    None,
                    Some(nix::unistd::Gid::from_raw(gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| err(std::io::Error::from(e)))?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
            Ok(Bound::Unix(std, path.clone()))
        }
    }
}

fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A socket something still answers on is another server's, not a stale one.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "a server is listening on {}; refusing to replace it",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The content type of the Prometheus text format (0.0.4).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the Prometheus text format, for clients that do not ask for
/// OpenMetrics (curl, `promtool check metrics`): counter families are named with their
/// `_total` suffix, and the `# UNIT` and `# EOF` lines go.
pub fn to_text_format(openmetrics: &str) -> String {
    use std::collections::HashSet;
    let mut counters: HashSet<&str> = HashSet::new();
    for l in openmetrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for l in openmetrics.lines() {
        if l.starts_with("# UNIT ") || l == "# EOF" {
            continue;
        }
        let meta = l
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| l.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{kind}{name}_total {tail}"));
                } else {
                    out.push_str(l);
                }
            }
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}

/// Encodes `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        warn!("encoding metrics failed: {e}");
    }
    out
}

struct Shared {
    registry: Arc<Registry>,
    scrapes: Semaphore,
    /// The last encode and when it was made.
    last: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
    conns: std::sync::Mutex<Conns>,
}

/// Open connections, oldest first: whether each has sent its request head, and how to stop it.
#[derive(Default)]
struct Conns {
    next: u64,
    open: std::collections::VecDeque<(u64, Arc<AtomicBool>, tokio::task::AbortHandle)>,
}

impl Shared {
    async fn encoded(&self) -> Arc<String> {
        let mut last = self.last.lock().await;
        if let Some((at, text)) = last.as_ref()
            && at.elapsed() < MIN_ENCODE_INTERVAL
        {
            return text.clone();
        }
        let registry = self.registry.clone();
        // The collectors read the kernel: off the async workers.
        let text = Arc::new(
            tokio::task::spawn_blocking(move || encode(&registry))
                .await
                .unwrap_or_default(),
        );
        *last = Some((Instant::now(), text.clone()));
        text
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    head: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    head.store(true, Ordering::SeqCst);
    let reply = |code: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n"));
    }
    let Ok(_permit) = shared.scrapes.acquire().await else {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
    };
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|s| s.contains("application/openmetrics-text"))
        });
    let text = shared.encoded().await;
    let (text, content_type) = if openmetrics {
        (text.as_str().to_string(), CONTENT_TYPE)
    } else {
        (to_text_format(&text), TEXT_CONTENT_TYPE)
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

fn spawn_connection<S>(shared: Arc<Shared>, io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut conns = match shared.conns.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    conns.open.retain(|(_, _, h)| !h.is_finished());
    if conns.open.len() >= MAX_CONNECTIONS {
        // Full: make room by closing the oldest connection still waiting for its head; a
        // connection being answered finishes within its deadline.
        match conns
            .open
            .iter()
            .position(|(_, head, _)| !head.load(Ordering::SeqCst))
        {
            Some(i) => {
                if let Some((_, _, h)) = conns.open.remove(i) {
                    h.abort();
                }
                debug!("metrics: all connections taken; closed the oldest idle one");
            }
            None => {
                debug!("metrics: all connections are being answered; closing a new one");
                return;
            }
        }
    }
    let id = conns.next;
    conns.next += 1;
    let head = Arc::new(AtomicBool::new(false));
    let (h2, s2) = (head.clone(), shared.clone());
    let task = tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| handle(s2.clone(), req, h2.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(false)
            .max_buf_size(16 << 10)
            .serve_connection(TokioIo::new(io), service);
        match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
            Ok(Err(e)) => debug!("metrics connection: {e}"),
            Err(_) => debug!("metrics connection: past its deadline; closed"),
            Ok(Ok(())) => {}
        }
    });
    conns.open.push_back((id, head, task.abort_handle()));
}

/// Serves `registry` on `bound` until the task is dropped (inside a tokio runtime).
pub async fn serve(registry: Arc<Registry>, bound: Bound) {
    let shared = Arc::new(Shared {
        registry,
        scrapes: Semaphore::new(MAX_CONCURRENT_SCRAPES),
        last: tokio::sync::Mutex::new(None),
        conns: std::sync::Mutex::new(Conns::default()),
    });
    let bound = match bound {
        Bound::Tcp(l) => TcpListener::from_std(l).map(Live::Tcp),
        Bound::Unix(l, _) => UnixListener::from_std(l).map(Live::Unix),
    };
    let bound = match bound {
        Ok(b) => b,
        Err(e) => {
            warn!("metrics: cannot serve: {e}");
            return;
        }
    };
    match bound {
        Live::Tcp(l) => loop {
            match l.accept().await {
                Ok((s, _)) => spawn_connection(shared.clone(), s),
                Err(e) => accept_error(e).await,
            }
        },
        Live::Unix(l) => loop {
            match l.accept().await {
                Ok((s, _)) => spawn_connection(shared.clone(), s),
                Err(e) => accept_error(e).await,
            }
        },
    }
}

enum Live {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn accept_error(e: std::io::Error) {
    // Out of fds and the like: say so, back off, keep serving.
    warn!("metrics: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        get_with(addr, path, "application/openmetrics-text; version=1.0.0").await
    }

    async fn get_with(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_openmetrics_on_metrics_only() {
        let mut r = Registry::with_prefix("t");
        let c = Counter::<u64>::default();
        c.inc_by(3);
        r.register("things", "Things seen", c);
        let bound = bind(
            "[metrics] listen",
            &Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            0o660,
            None,
        )
        .expect("bind");
        let Bound::Tcp(l) = &bound else {
            unreachable!()
        };
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(Arc::new(r), bound));
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("t_things_total 3"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.trim_end().ends_with("# EOF"), "{ok}");
        let nf = get(addr, "/other").await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        // Without OpenMetrics in Accept: the Prometheus text format.
        let text = get_with(addr, "/metrics", "*/*").await;
        assert!(text.contains(TEXT_CONTENT_TYPE), "{text}");
        assert!(text.contains("# TYPE t_things_total counter"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[tokio::test]
    async fn bind_errors_name_the_setting_and_say_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = bind("[metrics] listen", &Listen::Tcp(addr), 0o660, None)
            .err()
            .expect("in use");
        let m = e.to_string();
        assert!(m.starts_with("[metrics] listen: cannot listen on"), "{m}");
        assert!(m.contains("pick a free port"), "{m}");
        let e = bind(
            "[metrics] socket",
            &Listen::Unix("/nonexistent/dir/m.sock".into()),
            0o660,
            None,
        )
        .err()
        .expect("no dir");
        assert!(
            e.to_string().contains("[metrics] socket") && e.to_string().contains("does not exist"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("file");
        std::fs::write(&f, "x").expect("write");
        let e = bind("[metrics] socket", &Listen::Unix(f.clone()), 0o660, None)
            .err()
            .expect("a file");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&f).expect("kept"),
            "x",
            "a file is never replaced"
        );
    }
}
