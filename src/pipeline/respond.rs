//! Response stage: finalises headers (`x-warden-request-id`, `x-warden-overhead-ms`) and wraps
//! the body so that it streams frame by frame as it arrives (never buffered whole), enforces
//! the provider's between-chunks and total timeouts, measures time to first byte, and hands
//! the request to [`Finish`] when the body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use super::finish::{Finish, Outcome};
use crate::http::body::{Body, BodyError};
use crate::http::headers::{sanitize_response, OVERHEAD_MS, REQUEST_ID};

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
    fin.status = Some(parts.status);
    if http_body::Body::is_end_stream(&body) {
        fin.outcome = Outcome::Complete;
    }
    let (idle, deadline) = match timeouts {
        Some(t) => (
            Some((t.between_chunks, Box::pin(tokio::time::sleep(t.between_chunks)))),
            Some(Box::pin(tokio::time::sleep_until(t.deadline.into()))),
        ),
        None => (None, None),
    };
    let body = Observed { inner: body, idle, deadline, fin };
    Response::from_parts(parts, body.boxed_unsync())
}

struct Observed {
    inner: Body,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    deadline: Option<Pin<Box<Sleep>>>,
    fin: Finish,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream stream timed out ({0})")]
struct StreamTimeout(&'static str);

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.fin.ttfb.is_none() {
                        this.fin.ttfb = Some(this.fin.cx.start.elapsed());
                    }
                    this.fin.bytes += data.len() as u64;
                }
                if let Some((every, sleep)) = &mut this.idle {
                    sleep.as_mut().reset(tokio::time::Instant::now() + *every);
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.fin.outcome = Outcome::Complete;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fin.outcome = Outcome::UpstreamError;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.fin.outcome = Outcome::Complete;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle_fired = this.idle.as_mut().is_some_and(|(_, s)| s.as_mut().poll(cx).is_ready());
                let total_fired = this.deadline.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
                if idle_fired || total_fired {
                    this.fin.outcome = Outcome::UpstreamTimeout;
                    let phase = if idle_fired { "between chunks" } else { "total" };
                    return Poll::Ready(Some(Err(BodyError::new(StreamTimeout(phase)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future as _;
