//! Response stage: finalises headers (`x-warden-request-id`, `x-warden-overhead-ms`) and wraps
//! the body so that it streams frame by frame as it arrives (never buffered whole), enforces
//! the provider's between-chunks and total timeouts, measures time to first byte, and hands
//! the request to [`Finish`] when the body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use super::finish::{Finish, Outcome};
use crate::http::body::{Body, BodyError};
use crate::http::headers::{sanitize_response, OVERHEAD_MS, POLICY, POLICY_VERSION, REQUEST_ID, WOULD_BLOCK};

/// Timeouts that apply while the body streams.
pub struct BodyTimeouts {
    pub between_chunks: Duration,
    pub deadline: Instant,
}

pub fn wrap(mut fin: Finish, resp: Response<Body>, timeouts: Option<BodyTimeouts>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    sanitize_response(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(&fin.cx.id) {
        parts.headers.insert(REQUEST_ID, v);
    }
    let overhead = fin.overhead();
    fin.app.metrics.overhead.observe(overhead.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        parts.headers.insert(OVERHEAD_MS, v);
    }
    for (name, value) in [(POLICY, &fin.cx.policies), (WOULD_BLOCK, &fin.cx.would_block)] {
        if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            parts.headers.insert(name, v);
        }
    }
    parts.headers.insert(POLICY_VERSION, HeaderValue::from(fin.cx.snapshot.policies.version));
    fin.status = Some(parts.status);
    if http_body::Body::is_end_stream(&body) {
        fin.outcome = Outcome::Complete;
    }
    let (idle, deadline) = match timeouts {
        Some(t) => (
            Some(IdleTimer {
                every: t.between_chunks,
                last_frame: tokio::time::Instant::now(),
                sleep: Box::pin(tokio::time::sleep(t.between_chunks)),
            }),
            Some(Box::pin(tokio::time::sleep_until(t.deadline.into()))),
        ),
        None => (None, None),
    };
    let body = Observed { inner: body, idle, deadline, fin, held: None, ended: false, flushed: false };
    Response::from_parts(parts, body.boxed_unsync())
}

/// The between-chunks timeout. Re-arming a timer on every frame costs a timer-wheel update
/// per SSE event; instead each frame only notes its time, and when the timer fires it is
/// pushed out to `last_frame + every` unless that moment has really passed.
struct IdleTimer {
    every: Duration,
    last_frame: tokio::time::Instant,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            let due = self.last_frame + self.every;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
        false
    }
}

struct Observed {
    inner: Body,
    idle: Option<IdleTimer>,
    deadline: Option<Pin<Box<Sleep>>>,
    fin: Finish,
    /// A frame or error read while coalescing, returned on the next poll.
    held: Option<Result<Frame<Bytes>, BodyError>>,
    /// The inner body ended while coalescing.
    ended: bool,
    /// An error is held back for one poll so that hyper writes out the data before it: on an
    /// error hyper drops the connection, and frames it had not flushed yet would be lost.
    flushed: bool,
}

/// Frames already waiting upstream are sent to the client in one write: streams still flow
/// as they arrive (nothing waits for more data), but a burst of SSE events costs one write
/// and one wake-up instead of one each.
const COALESCE_LIMIT: usize = 64 * 1024;

impl Observed {
    fn coalesce(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let mut batch: Option<bytes::BytesMut> = None;
        let mut len = first.len();
        while len < COALESCE_LIMIT {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(more) => {
                        len += more.len();
                        batch.get_or_insert_with(|| bytes::BytesMut::from(&first[..])).extend_from_slice(&more);
                    }
                    Err(trailers) => {
                        self.held = Some(Ok(trailers));
                        break;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.fin.outcome = Outcome::UpstreamError;
                    self.held = Some(Err(e));
                    break;
                }
                Poll::Ready(None) => {
                    self.fin.outcome = Outcome::Complete;
                    self.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if self.fin.ttfb.is_none() {
            self.fin.ttfb = Some(self.fin.cx.start.elapsed());
        }
        self.fin.bytes += len as u64;
        if let Some(idle) = &mut self.idle {
            idle.last_frame = tokio::time::Instant::now();
        }
        // hyper stops polling once the body says it has ended.
        if self.inner.is_end_stream() {
            self.fin.outcome = Outcome::Complete;
        }
        batch.map_or(first, bytes::BytesMut::freeze)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream stream timed out ({0})")]
struct StreamTimeout(&'static str);

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if matches!(this.held, Some(Err(_))) && !this.flushed && this.fin.bytes > 0 {
            this.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(held) = this.held.take() {
            return Poll::Ready(Some(held));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(this.coalesce(data, cx))))),
                Err(trailers) => Poll::Ready(Some(Ok(trailers))),
            },
            Poll::Ready(Some(Err(e))) => {
                this.fin.outcome = Outcome::UpstreamError;
                this.held = Some(Err(e));
                this.flushed = false;
                Pin::new(this).poll_frame(cx)
            }
            Poll::Ready(None) => {
                this.fin.outcome = Outcome::Complete;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle_fired = this.idle.as_mut().is_some_and(|t| t.expired(cx));
                let total_fired = this.deadline.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
                if idle_fired || total_fired {
                    this.fin.outcome = Outcome::UpstreamTimeout;
                    let phase = if idle_fired { "between chunks" } else { "total" };
                    this.held = Some(Err(BodyError::new(StreamTimeout(phase))));
                    this.flushed = false;
                    return Pin::new(this).poll_frame(cx);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.held.is_some() || self.ended {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

use std::future::Future as _;
