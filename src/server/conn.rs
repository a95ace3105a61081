//! One connection's lifecycle: TLS handshake, HTTP/1.1 or HTTP/2, and every way it ends.
//! A silent client is cut off before its first request, an idle connection is closed (an
//! HTTP/2 client that keeps a connection open after one request would otherwise hold it
//! forever), a draining listener closes its connections gracefully and, past the drain
//! deadline, at once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ConnLimits;
use crate::http::body::{Body, BodyError};
use crate::pipeline::ctx::ConnInfo;

/// The live connections of one listener: how many, and the signals that ask them to close
/// gracefully (`stop`) or at once (`kill`, after the drain deadline).
#[derive(Clone)]
pub struct Conns {
    live: Arc<(AtomicUsize, Notify)>,
    pub stop: watch::Receiver<bool>,
    kill: Arc<watch::Sender<bool>>,
}

/// Counts a connection as live until dropped.
struct LiveGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .1.notify_waiters();
        }
    }
}

impl Conns {
    pub fn new(stop: watch::Receiver<bool>) -> Conns {
        Conns { live: Arc::default(), stop, kill: Arc::new(watch::channel(false).0) }
    }

    fn enter(&self) -> LiveGuard {
        self.live.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(self.live.clone())
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.live.0.load(Ordering::Relaxed)
    }

    /// A connection closed for being one too many: logged at most once a minute.
    pub fn refused(&self) {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if LAST.swap(now, Ordering::Relaxed) / 60 != now / 60 {
            tracing::warn!(target: "warden", open = self.live(), "connection limit reached (limits.max_connections): new connections are closed");
        }
    }

    /// Resolves once no connection is live.
    pub async fn closed(&self) {
        loop {
            let notified = self.live.1.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the count is read: the last close cannot slip in between.
            notified.as_mut().enable();
            if self.live.0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Waits for every connection to finish, up to `deadline`; then closes the rest.
    pub async fn drain(&self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.closed()).await.is_err() {
            tracing::warn!(target: "warden", "drain deadline of {deadline:?} passed; closing remaining connections");
            let _ = self.kill.send(true);
        }
    }
}

pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A closed channel (sender dropped) also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// What a connection is doing, for the idle timeout: responses still being sent, and when
/// the last one ended.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds after the connection opened at which the last response ended.
    last_ms: AtomicU64,
    ever: AtomicBool,
}

impl Activity {
    /// When the connection may be closed if nothing happens before then.
    fn deadline(&self, opened: Instant, limits: ConnLimits) -> Instant {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: look again later (a response ending moves the deadline forward anyway).
            Instant::now() + limits.idle_timeout
        } else if self.ever.load(Ordering::Relaxed) {
            opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limits.idle_timeout
        } else {
            opened + limits.header_read_timeout
        }
    }
}

/// A response body that counts as in flight until it ends or is dropped.
pub struct Tracked {
    inner: Body,
    activity: Arc<Activity>,
    opened: Instant,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last_ms.store(ms, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection: TLS handshake (bounded by the header timeout), then
/// HTTP/1.1 or HTTP/2 until the client closes, the connection idles, or the listener drains.
pub async fn serve_conn<F, Fut>(
    stream: tokio::net::TcpStream,
    conn: ConnInfo,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    conns: Conns,
    limits: ConnLimits,
    handler: F,
) where
    F: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let _live = conns.enter();
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        seen.ever.store(true, Ordering::Relaxed);
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        let fut = handler(conn, req);
        let activity = seen.clone();
        async move { Ok::<_, Infallible>(fut.await.map(|inner| Tracked { inner, activity, opened })) }
    });
    match tls {
        Some(acceptor) => {
            let timeout = limits.header_read_timeout;
            let Ok(Ok(tls_stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await else { return };
            let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
            supervise(conn, &activity, opened, &conns, limits).await;
        }
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            supervise(conn, &activity, opened, &conns, limits).await;
        }
    }
}

/// Drives a connection and ends it when it should end: a silent client before its first
/// request after `header_read_timeout` (hyper's own timer only starts once HTTP/1 has been
/// chosen), an idle one after `idle_timeout` (gracefully: HTTP/2 gets a GOAWAY), every one
/// gracefully on drain, and at once when the drain deadline passes.
async fn supervise<C: GracefulConnection>(
    conn: C,
    activity: &Activity,
    opened: Instant,
    conns: &Conns,
    limits: ConnLimits,
) {
    tokio::pin!(conn);
    let mut stop = conns.stop.clone();
    let mut kill = conns.kill.subscribe();
    let mut closing = false;
    loop {
        let deadline = activity.deadline(opened, limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stopped(&mut stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = stopped(&mut kill) => return,
            () = tokio::time::sleep_until(deadline), if !closing => {
                if !activity.ever.load(Ordering::Relaxed) {
                    return;
                }
                // A response that ended meanwhile moved the deadline: look again.
                if activity.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= activity.deadline(opened, limits) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
