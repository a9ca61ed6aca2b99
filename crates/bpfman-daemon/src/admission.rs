//! Who gets the daemon's attention, and how much of it: connections and requests are
//! bounded per uid and in total before any request is read, so no caller can wedge or
//! exhaust the daemon for the others. Root is never counted and always served.
//!
//! * The listener accepts on the unix socket, reads the peer's credentials
//!   (SO_PEERCRED) and refuses a connection over `[api] max_connections_per_uid` or
//!   `max_connections`. Accept errors (EMFILE, ...) back off instead of spinning.
//! * Each connection closes itself when no request has started within
//!   `handshake_timeout_secs`, or when it has had no request in progress and no
//!   traffic for `idle_timeout_secs` (clients reconnect on their next call).
//! * The admission layer runs before a request's body is read: a caller no policy rule
//!   names is refused at once, and a caller over `max_requests_per_uid` (or all callers
//!   over `max_requests`) gets RESOURCE_EXHAUSTED instead of a queue position.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bpfman::manager::Manager;
use bpfman::model::Caller;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::codegen::http;
use tonic::transport::server::{Connected, UdsConnectInfo};
use tracing::warn;

/// The limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub max_requests: usize,
    pub max_requests_per_uid: usize,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Limits {
    pub fn from_config(c: &bpfman::config::ApiConfig) -> Self {
        Self {
            max_connections: c.max_connections,
            max_connections_per_uid: c.max_connections_per_uid,
            max_requests: c.max_requests,
            max_requests_per_uid: c.max_requests_per_uid,
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
        }
    }
}

/// Counts per uid and in total, for one kind of thing (connections or requests).
#[derive(Default)]
pub struct Counter {
    per_uid: Mutex<HashMap<u32, usize>>,
    total: AtomicUsize,
}

impl Counter {
    /// Takes one for `uid` unless that would pass a limit; root always gets one and is
    /// not counted.
    fn take(self: &Arc<Self>, uid: u32, per_uid: usize, total: usize) -> Option<Slot> {
        if uid == 0 {
            return Some(Slot { c: None, uid });
        }
        let mut m = match self.per_uid.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let n = m.get(&uid).copied().unwrap_or(0);
        if n >= per_uid || self.total.load(Ordering::SeqCst) >= total {
            return None;
        }
        m.insert(uid, n + 1);
        self.total.fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            c: Some(self.clone()),
            uid,
        })
    }

    /// (uids with at least one, total) — the table never keeps zero entries.
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize) {
        let uids = self.per_uid.lock().map(|m| m.len()).unwrap_or(0);
        (uids, self.total.load(Ordering::SeqCst))
    }
}

/// One held count; given back on drop.
pub struct Slot {
    c: Option<Arc<Counter>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.c {
            let mut m = match c.per_uid.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            if let Some(n) = m.get_mut(&self.uid) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.uid);
                }
            }
            c.total.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What a connection's requests share: who is on the other end and whether it is busy.
pub struct ConnState {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last_io: AtomicU64,
    started: AtomicBool,
    in_flight: AtomicUsize,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// The connection info every request carries (tonic puts it in the extensions).
#[derive(Clone)]
pub struct PeerInfo {
    pub uds: UdsConnectInfo,
    pub state: Arc<ConnState>,
}

impl PeerInfo {
    pub fn caller(&self) -> Option<Caller> {
        self.uds.peer_cred.map(|c| Caller {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
        })
    }
}

/// A client connection that closes itself when it idles.
pub struct Conn {
    inner: UnixStream,
    info: PeerInfo,
    limits: Limits,
    timer: Pin<Box<tokio::time::Sleep>>,
    _slot: Slot,
    _open: OpenConn,
}

/// Counts a connection in `bpfman_open_connections` while it lives.
struct OpenConn(bpfman_metrics::prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl Conn {
    /// Err (closing the connection) when it has idled past its limit.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let st = &self.info.state;
            let now = st.now_ms();
            let deadline_ms = if !st.started.load(Ordering::SeqCst) {
                self.limits.handshake_timeout.as_millis() as u64
            } else if st.in_flight.load(Ordering::SeqCst) > 0 {
                now + self.limits.idle_timeout.as_millis() as u64
            } else {
                st.last_io.load(Ordering::Relaxed) + self.limits.idle_timeout.as_millis() as u64
            };
            if deadline_ms <= now {
                return Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle too long",
                ));
            }
            let at = tokio::time::Instant::from_std(st.epoch + Duration::from_millis(deadline_ms));
            self.timer.as_mut().reset(at);
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.info.state.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.info.state.touch();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Logs at most one line per `every` for a recurring condition.
struct RateLog {
    last: Mutex<Option<Instant>>,
    every: Duration,
}

impl RateLog {
    fn new(every: Duration) -> Self {
        Self {
            last: Mutex::new(None),
            every,
        }
    }
    fn log(&self, msg: impl FnOnce() -> String) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= self.every) {
            *last = Some(Instant::now());
            warn!("{}", msg());
        }
    }
}

/// Accepts connections within the limits and hands them to the server.
pub fn incoming(
    listener: UnixListener,
    limits: Limits,
    connections: Arc<Counter>,
    open: bpfman_metrics::prometheus_client::metrics::gauge::Gauge,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let refused = RateLog::new(Duration::from_secs(10));
        let failed = RateLog::new(Duration::from_secs(10));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of fds or memory: wait for some to come back, do not spin.
                    failed.log(|| format!("accepting a connection: {e}; retrying"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let uds = stream.connect_info();
            let Some(cred) = uds.peer_cred else {
                continue;
            };
            let uid = cred.uid();
            let Some(slot) =
                connections.take(uid, limits.max_connections_per_uid, limits.max_connections)
            else {
                refused.log(|| {
                    format!(
                        "refused a connection from uid {uid}: over [api] \
                         max_connections_per_uid ({}) or max_connections ({})",
                        limits.max_connections_per_uid, limits.max_connections
                    )
                });
                continue;
            };
            let state = Arc::new(ConnState {
                epoch: Instant::now(),
                last_io: AtomicU64::new(0),
                started: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
            });
            // The first check comes at whichever limit is shorter: an idle limit shorter than the
            // handshake's applies from the first request on, not only after the handshake's.
            let timer = Box::pin(tokio::time::sleep(
                limits.handshake_timeout.min(limits.idle_timeout),
            ));
            let conn = Conn {
                inner: stream,
                info: PeerInfo { uds, state },
                limits,
                timer,
                _slot: slot,
                _open: {
                    open.inc();
                    OpenConn(open.clone())
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The admission layer (see the module docs).
#[derive(Clone)]
pub struct AdmissionLayer {
    pub manager: Arc<Manager>,
    pub limits: Limits,
    pub requests: Arc<Counter>,
    pub metrics: crate::metrics::RequestMetrics,
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

/// Marks a request in progress on its connection for as long as it lives.
struct InFlight {
    state: Arc<ConnState>,
    _slot: Slot,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.state.touch();
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn method_of<B>(req: &http::Request<B>) -> &str {
    req.uri().path().rsplit('/').next().unwrap_or("")
}

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = std::time::Instant::now();
        let method = crate::metrics::RequestMetrics::method(req.uri().path());
        let metrics = self.layer.metrics.clone();
        let reject = |s: tonic::Status| -> Self::Future {
            metrics.observe(method, Some(s.code() as i32), started);
            let r = s.into_http::<tonic::body::Body>();
            Box::pin(async move { Ok(r) })
        };
        let Some(info) = req.extensions().get::<PeerInfo>().cloned() else {
            return reject(tonic::Status::unauthenticated(
                "no peer credentials on this connection",
            ));
        };
        let Some(caller) = info.caller() else {
            return reject(tonic::Status::unauthenticated(
                "no peer credentials on this connection",
            ));
        };
        info.state.started.store(true, Ordering::SeqCst);
        let l = &self.layer;
        if !l.manager.knows(caller) {
            l.manager
                .events()
                .denied(crate::metrics::RequestMetrics::action(method), None);
            let who = bpfman::policy::Subject::resolve(caller.uid, caller.gid);
            return reject(tonic::Status::permission_denied(format!(
                "'{}' denied: no policy rule names {}",
                method_of(&req),
                who.describe()
            )));
        }
        let Some(slot) = l.requests.take(
            caller.uid,
            l.limits.max_requests_per_uid,
            l.limits.max_requests,
        ) else {
            return reject(tonic::Status::resource_exhausted(format!(
                "uid {} has {} requests in progress, or all callers together {} ([api] \
                 max_requests_per_uid, max_requests); wait for them to finish",
                caller.uid, l.limits.max_requests_per_uid, l.limits.max_requests
            )));
        };
        info.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            state: info.state.clone(),
            _slot: slot,
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            let _guard = guard;
            let r = fut.await;
            if let Ok(resp) = &r {
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok());
                metrics.observe(method, code, started);
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_cap_per_uid_and_total_and_forget_zeroes() {
        let c = Arc::new(Counter::default());
        let a: Vec<Slot> = (0..2).filter_map(|_| c.take(1000, 2, 3)).collect();
        assert_eq!(a.len(), 2);
        assert!(c.take(1000, 2, 3).is_none(), "per-uid cap");
        let b = c.take(1001, 2, 3);
        assert!(b.is_some());
        assert!(c.take(1002, 2, 3).is_none(), "total cap");
        // Root is never refused and never counted.
        let roots: Vec<Slot> = (0..10).filter_map(|_| c.take(0, 2, 3)).collect();
        assert_eq!(roots.len(), 10);
        assert_eq!(c.sizes(), (2, 3));
        drop(a);
        drop(b);
        drop(roots);
        assert_eq!(c.sizes(), (0, 0));
    }
}
