//! The mock's event streams: prepared events, optionally delayed, cut or never finished.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::MockStats;
use crate::http::body::BodyError;

/// A server-sent event stream that yields prepared events, optionally with a delay between
/// them and a simulated connection cut. Dropping it early counts as a cancelled stream.
pub(super) struct MockStream {
    pub(super) events: Vec<Bytes>,
    pub(super) next: usize,
    pub(super) delay: Option<Duration>,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) cut_after: Option<usize>,
    pub(super) stats: Arc<MockStats>,
    pub(super) done: bool,
    /// The cut waits one poll after the last event, so the server writes that event out
    /// first (a server drops unflushed data when a body fails).
    pub(super) cut_armed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("mock provider: stream cut by directive")]
struct StreamCut;

impl http_body::Body for MockStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.next >= this.events.len() {
            if !this.done {
                this.done = true;
                this.stats.streams_completed.fetch_add(1, Ordering::SeqCst);
            }
            return Poll::Ready(None);
        }
        if this.cut_after.is_some_and(|n| this.next >= n) {
            if !this.cut_armed && this.next > 0 {
                this.cut_armed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.done = true;
            this.stats.streams_cancelled.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(Some(Err(BodyError::new(StreamCut))));
        }
        if let (Some(delay), true) = (this.delay, this.next > 0) {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let ev = std::mem::take(&mut this.events[this.next]);
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(ev))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.events.len() && self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for MockStream {
    fn drop(&mut self) {
        if !self.done && self.next < self.events.len() {
            self.stats.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}
