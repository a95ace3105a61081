//! Plain-http HTTP/1.1 upstream connections whose I/O is driven by the request that uses
//! them, with a small keep-alive pool.
//!
//! Why not hyper-util's pooled client here: it runs each connection on its own task and hands
//! body chunks over a one-slot channel, so every SSE event of a streamed response costs two
//! task wake-ups and its own write to the client. Local model servers (vLLM, Ollama, the mock)
//! speak HTTP/1.1 and send one chunk per event. Driving the connection from the response
//! body's own `poll_frame` turns a burst of buffered events into one wake-up and one client
//! write. https upstreams keep hyper-util's client (ALPN, usually HTTP/2, where h2's receive
//! buffer already avoids this).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::BodyError;

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One idle or busy upstream connection: the request handle and the connection's I/O state.
struct Link {
    sender: http1::SendRequest<Full<Bytes>>,
    conn: Conn,
    /// The idle list it returns to: that of the thread whose reactor its socket is on.
    home: usize,
}

/// Idle lists per upstream: one per API worker thread (modulo this many), so that a
/// connection is driven by the thread whose reactor watches its socket and no two workers
/// share a lock.
const SHARDS: usize = 16;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The idle lists in use: one more than the highest worker index named.
static IN_USE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Names the calling thread's API worker (see `server`): its connections go to its own
/// idle list.
pub fn set_worker(index: usize) {
    WORKER.set(index % SHARDS);
    IN_USE.fetch_max(index % SHARDS + 1, std::sync::atomic::Ordering::Relaxed);
}

impl Link {
    /// Drives the connection's I/O once; `true` when the connection has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.conn).poll(cx).is_ready()
    }
}

/// Connections to one `host:port`.
pub struct H1Pool {
    authority: String,
    host: HeaderValue,
    connect_timeout: Duration,
    /// Idle connections by worker. Each lock is held only to push or pop.
    idle: [Mutex<Vec<Link>>; SHARDS],
    max_idle: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("connect to {authority}: {source}")]
    Connect { authority: String, source: std::io::Error },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the connection closed before a response arrived")]
    Closed,
}

impl H1Error {
    /// What kind of failure this is, for the error the client gets and for retries.
    pub fn failure(&self) -> crate::error::UpstreamFailure {
        use crate::error::UpstreamFailure;
        match self {
            H1Error::ConnectTimeout(_) => UpstreamFailure::ConnectTimeout,
            H1Error::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
                UpstreamFailure::ConnectTimeout
            }
            H1Error::Connect { .. } => UpstreamFailure::Connect,
            // The request came back unsent: the upstream never saw it.
            H1Error::Closed => UpstreamFailure::ClosedBeforeSend,
            H1Error::Http(e) => UpstreamFailure::from_error(e),
        }
    }
}

impl H1Pool {
    pub fn new(authority: &str, connect_timeout: Duration) -> Option<H1Pool> {
        Some(H1Pool {
            authority: authority.to_string(),
            host: HeaderValue::from_str(authority).ok()?,
            connect_timeout,
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            max_idle: 256,
        })
    }

    /// Sends a request (origin-form URI) and returns the response, whose body keeps driving
    /// the connection and gives it back to the pool once read to the end.
    pub async fn send(self: &Arc<Self>, mut req: Request<Full<Bytes>>) -> Result<Response<DrivenBody>, H1Error> {
        req.headers_mut().insert(http::header::HOST, self.host.clone());
        // A pooled connection may have been closed by the upstream while idle; a request
        // that was never written is safe to send again on a fresh connection.
        let req = match self.checkout() {
            Some(link) => match self.exchange(link, req).await {
                Ok(resp) => return Ok(resp),
                Err(Retry::Again(req)) => *req,
                Err(Retry::Fail(e)) => return Err(e),
            },
            None => req,
        };
        let link = self.connect().await?;
        match self.exchange(link, req).await {
            Ok(resp) => Ok(resp),
            Err(Retry::Again(_)) => Err(H1Error::Closed),
            Err(Retry::Fail(e)) => Err(e),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut link: Link,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<DrivenBody>, Retry> {
        let mut fut = std::pin::pin!(link.sender.try_send_request(req));
        let mut conn_done = false;
        let result = std::future::poll_fn(|cx| {
            if !conn_done {
                conn_done = Pin::new(&mut link.conn).poll(cx).is_ready();
            }
            // When the connection ends, hyper fails the pending response, so this resolves.
            fut.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let link = (!conn_done).then_some(link);
                Ok(Response::from_parts(parts, DrivenBody { body, link, pool: self.clone(), done: false }))
            }
            Err(mut e) => match e.take_message() {
                Some(req) => Err(Retry::Again(Box::new(req))),
                None => Err(Retry::Fail(e.into_error().into())),
            },
        }
    }

    /// An idle connection: this worker's own, else another's (a connection reused from the
    /// other thread beats a new one; `try_lock`, so workers never wait on each other).
    fn checkout(&self) -> Option<Link> {
        let own = WORKER.get();
        let others = (0..IN_USE.load(std::sync::atomic::Ordering::Relaxed)).filter(|&i| i != own);
        if let Some(link) = self.idle[own].lock().ok().and_then(|mut idle| Self::usable(&mut idle)) {
            return Some(link);
        }
        others.filter_map(|i| self.idle[i].try_lock().ok()).find_map(|mut idle| Self::usable(&mut idle))
    }

    fn usable(idle: &mut Vec<Link>) -> Option<Link> {
        while let Some(mut link) = idle.pop() {
            // Let the connection notice an EOF that arrived while it sat idle.
            let ended = link.drive(&mut Context::from_waker(std::task::Waker::noop()));
            if !ended && link.sender.is_ready() {
                return Some(link);
            }
        }
        None
    }

    fn checkin(&self, link: Link) {
        if !link.sender.is_ready() {
            return;
        }
        if let Ok(mut idle) = self.idle[link.home].lock() {
            if idle.len() < self.max_idle {
                idle.push(link);
            }
        }
    }

    async fn connect(&self) -> Result<Link, H1Error> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| H1Error::ConnectTimeout(self.authority.clone()))?
            .map_err(|source| H1Error::Connect { authority: self.authority.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Link { sender, conn, home: WORKER.get() })
    }
}

enum Retry {
    Again(Box<Request<Full<Bytes>>>),
    Fail(H1Error),
}

/// A response body that drives its connection's I/O while it is read. Dropped before the
/// end, it closes the connection, which cancels the upstream request.
pub struct DrivenBody {
    body: Incoming,
    link: Option<Link>,
    pool: Arc<H1Pool>,
    done: bool,
}

impl http_body::Body for DrivenBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // I/O first, so that data already received is decoded into the body now.
        if this.link.as_mut().is_some_and(|l| l.drive(cx)) {
            this.link = None;
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                this.link = None;
                Poll::Ready(Some(Err(BodyError::new(e))))
            }
            Poll::Ready(None) => {
                this.done = true;
                if let Some(mut link) = this.link.take() {
                    // One more turn lets the connection settle into its idle state.
                    if !link.drive(cx) {
                        this.pool.checkin(link);
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // A body hyper never polled to its end (because `is_end_stream` said so) still leaves
        // a reusable connection.
        if !self.done && self.body.is_end_stream() {
            if let Some(mut link) = self.link.take() {
                if !link.drive(&mut Context::from_waker(std::task::Waker::noop())) {
                    self.pool.checkin(link);
                }
            }
        }
    }
}
