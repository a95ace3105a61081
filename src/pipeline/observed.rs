//! The response body wrapper: streams frame by frame as the upstream sends (never buffered
//! whole), coalescing frames that are already waiting into one write; enforces the
//! between-chunks and total timeouts; holds SSE to the stream failure contract
//! ([`super::stream`]); records a streamed cache miss for the cache; measures time to first
//! byte; and settles the exchange's guard before the last bytes go out.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;

use super::batch::Batch;
use super::exchange::{End, Guard, SETTLE_WAIT};
use super::finish::{Finish, Outcome};
use super::respond::{BodyTimeouts, IdleTimer};
use super::stream::SseWatch;
use crate::error::ErrorClass;
use crate::http::body::{Body, BodyError};
use crate::provider::usage::Usage;

pub(super) struct Observed {
    inner: Body,
    idle: Option<IdleTimer>,
    deadline: Option<Pin<Box<Sleep>>>,
    fin: Finish,
    /// Set for SSE responses: the stream failure contract (see [`super::stream`]).
    sse: Option<Box<SseWatch>>,
    /// A frame or error read while coalescing, returned on the next poll.
    held: Option<Result<Frame<Bytes>, BodyError>>,
    /// Nothing more will be read from the inner body.
    ended: bool,
    /// An error is held back for one poll so that hyper writes out the data before it: on an
    /// error hyper drops the connection, and frames it had not flushed yet would be lost.
    flushed: bool,
    /// The exchange's settlers, completed when the body ends or is dropped.
    guard: Guard,
    /// The settlement running at the end of the body, and the last bytes waiting for it.
    settling: Option<Settling>,
    /// A streamed cache miss, as the upstream sent it (`None` once it outgrew an entry).
    tape: Option<BytesMut>,
}

struct Settling {
    fut: crate::pipeline::exchange::SettleFuture,
    wait: Pin<Box<Sleep>>,
    last: Option<Bytes>,
}

/// Frames already waiting upstream are sent to the client in one write: streams still flow
/// as they arrive (nothing waits for more data), but a burst of SSE events costs one write
/// and one wake-up instead of one each.
const COALESCE_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("upstream stream timed out ({0})")]
struct StreamTimeout(&'static str);

impl Observed {
    /// Wraps a response body. `upstream`: the body timeouts and the exchange's guard, for a
    /// response from a provider (or a charged cache hit); `sse`: a successful event stream.
    pub(super) fn new(fin: Finish, inner: Body, upstream: Option<(BodyTimeouts, Guard)>, sse: bool) -> Observed {
        let (idle, deadline, guard) = match upstream {
            Some((t, guard)) => (
                Some(IdleTimer {
                    every: t.between_chunks,
                    last_frame: tokio::time::Instant::now(),
                    sleep: Box::pin(tokio::time::sleep(t.between_chunks)),
                }),
                Some(Box::pin(tokio::time::sleep_until(t.deadline.into()))),
                guard,
            ),
            None => (None, None, Guard::default()),
        };
        let sse = sse.then(|| {
            let mut w = SseWatch::new(fin.cx.family.dialect(), fin.cx.strip_usage, fin.cx.collect_output);
            w.hold_terminal = fin.cx.verify_stream.is_some();
            Box::new(w)
        });
        // A streamed miss is recorded as the upstream sent it, for the cache.
        let tape = (sse.is_some() && fin.cx.cache_lead.is_some()).then(BytesMut::new);
        Observed {
            inner,
            idle,
            deadline,
            fin,
            sse,
            held: None,
            ended: false,
            flushed: false,
            guard,
            settling: None,
            tape,
        }
    }
    /// The usage seen so far: what the stream reported (or its estimate), or what the
    /// non-streamed body said.
    /// Attempts before the answering one (schema retries) are added.
    fn usage(&self) -> Option<Usage> {
        let seen = match &self.sse {
            Some(w) => Some(w.usage(self.fin.cx.request_bytes)),
            None => self.fin.cx.usage,
        };
        Usage::sum(seen, self.fin.cx.prior_usage)
    }

    /// The canary check of the stream so far; a refusal ends it (see [`super::canary`]).
    fn canary_refusal(&mut self) -> Option<Bytes> {
        let refused = super::canary::check_stream(&self.fin.app, &mut self.fin.cx, self.sse.as_deref()?)?;
        self.fin.outcome = Outcome::UpstreamInvalid;
        self.ended = true;
        Some(refused)
    }

    /// A passthrough stream's output is judged when its final event arrives: the event goes
    /// out if the output passes, the API's error event instead if it is refused.
    fn verdict(&mut self, plan: &super::schema::OutputPlan) -> Bytes {
        let Some(w) = self.sse.as_deref_mut() else { return Bytes::new() };
        match super::schema::judge_stream(&self.fin.app, &mut self.fin.cx, plan, w) {
            Ok(held) => held,
            Err(event) => {
                self.fin.outcome = Outcome::UpstreamInvalid;
                self.ended = true;
                event
            }
        }
    }

    /// Ends an SSE stream that broke the contract with the API's error event.
    fn fail(&mut self, outcome: Outcome, class: ErrorClass, why: &'static str) -> Bytes {
        self.fin.outcome = outcome;
        self.ended = true;
        match &self.sse {
            Some(w) => w.error_event(class, self.fin.cx.provider_name(), why),
            None => Bytes::new(),
        }
    }

    /// Reads what the upstream has ready, up to [`COALESCE_LIMIT`], into one batch.
    fn gather(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        while batch.len < COALESCE_LIMIT {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Some(idle) = &mut self.idle {
                            idle.last_frame = tokio::time::Instant::now();
                        }
                        let Some(w) = &mut self.sse else {
                            batch.push(data);
                            continue;
                        };
                        if let Some(t) = &mut self.tape {
                            if t.len() + data.len() > self.fin.app.cache.max_entry_bytes() {
                                self.tape = None;
                            } else {
                                t.extend_from_slice(&data);
                            }
                        }
                        let accepted = w.accept(data);
                        let terminal = w.terminal;
                        if let Some(refused) = self.canary_refusal() {
                            // The events that completed the marker are not sent.
                            batch.push(refused);
                            return;
                        }
                        batch.push(accepted.forward);
                        if let Some(why) = accepted.failure {
                            let end = self.fail(Outcome::UpstreamInvalid, ErrorClass::Upstream, why);
                            batch.push(end);
                            return;
                        }
                        if let Some(plan) = terminal.then(|| self.fin.cx.verify_stream.take()).flatten() {
                            let tail = self.verdict(&plan);
                            batch.push(tail);
                            if self.ended {
                                return;
                            }
                        }
                    }
                    Err(trailers) => {
                        self.held = Some(Ok(trailers));
                        return;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    match &mut self.sse {
                        Some(w) if !w.terminal => {
                            let end = self.fail(Outcome::UpstreamError, ErrorClass::Upstream, "broke off the stream");
                            batch.push(end);
                        }
                        // After the final event a broken connection loses nothing.
                        Some(w) => {
                            batch.push(w.rest());
                            self.fin.outcome = Outcome::Complete;
                            self.ended = true;
                        }
                        None => {
                            self.fin.outcome = Outcome::UpstreamError;
                            self.held = Some(Err(e));
                            self.flushed = false;
                        }
                    }
                    return;
                }
                Poll::Ready(None) => {
                    match &mut self.sse {
                        Some(w) if !w.terminal => {
                            let end = self.fail(
                                Outcome::UpstreamError,
                                ErrorClass::Upstream,
                                "ended the stream before its final event",
                            );
                            batch.push(end);
                        }
                        Some(w) => {
                            batch.push(w.rest());
                            self.fin.outcome = Outcome::Complete;
                        }
                        None => self.fin.outcome = Outcome::Complete,
                    }
                    self.ended = true;
                    return;
                }
                Poll::Pending => {
                    if batch.len == 0 {
                        self.check_timers(cx, batch);
                    }
                    return;
                }
            }
        }
    }

    /// A streamed miss that reached its final event goes into the cache; any other end
    /// stores nothing, and the flight's waiters ask for themselves.
    fn store_stream(&mut self) {
        let Some(lead) = self.fin.cx.cache_lead.take() else { return };
        let whole = self.fin.outcome == Outcome::Complete
            && self.sse.as_ref().is_some_and(|w| w.terminal)
            && !self.fin.cx.answer_tainted();
        match self.tape.take().filter(|_| whole) {
            Some(tape) => {
                let usage = self.usage().unwrap_or_default();
                lead.store(&self.fin.app, crate::cache::Format::Sse, tape.freeze(), usage);
            }
            None => lead.not_stored(),
        }
    }

    fn check_timers(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let idle_fired = self.idle.as_mut().is_some_and(|t| t.expired(cx));
        let total_fired = self.deadline.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready());
        if !(idle_fired || total_fired) {
            return;
        }
        let phase = if idle_fired { "between chunks" } else { "total" };
        match &self.sse {
            Some(w) if w.terminal => {
                self.fin.outcome = Outcome::Complete;
                self.ended = true;
            }
            Some(_) => {
                let why = if idle_fired {
                    "stalled: no data within the between-chunks timeout"
                } else {
                    "did not finish within the total timeout"
                };
                let end = self.fail(Outcome::UpstreamTimeout, ErrorClass::Timeout, why);
                batch.push(end);
            }
            None => {
                self.fin.outcome = Outcome::UpstreamTimeout;
                self.held = Some(Err(BodyError::new(StreamTimeout(phase))));
                self.flushed = false;
            }
        }
    }
}

impl Drop for Observed {
    /// Hands what the stream reported to the always-run tail before it runs, and settles the
    /// exchange if its end was never reached (the client went away), with the usage seen so
    /// far.
    fn drop(&mut self) {
        if let Some(w) = &mut self.sse {
            self.fin.cx.usage = Some(w.usage(self.fin.cx.request_bytes));
            self.fin.cx.output = w.output.take();
        }
        self.fin.cx.usage = Usage::sum(self.fin.cx.usage, self.fin.cx.prior_usage.take());
        let outcome = match self.fin.outcome {
            Outcome::Pending => Outcome::ClientClosed,
            o => o,
        };
        drop(self.guard.complete(End { outcome, usage: self.fin.cx.usage }));
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(s) = &mut this.settling {
            let settled = s.fut.as_mut().poll(cx).is_ready() || s.wait.as_mut().poll(cx).is_ready();
            if !settled {
                return Poll::Pending;
            }
            let last = s.last.take();
            this.settling = None;
            if let Some(data) = last {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
        }
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
        let mut batch = Batch::default();
        this.gather(cx, &mut batch);
        if this.ended && this.fin.cx.cache_lead.is_some() {
            this.store_stream();
        }
        let data = batch.take();
        if let Some(data) = &data {
            if this.fin.ttfb.is_none() {
                this.fin.ttfb = Some(this.fin.cx.start.elapsed());
            }
            this.fin.bytes += data.len() as u64;
        }
        // The body has ended: its last bytes wait for the exchange to settle.
        if this.ended && !this.guard.is_empty() {
            let end = End { outcome: this.fin.outcome, usage: this.usage() };
            if let Some(fut) = this.guard.complete(end) {
                let wait = Box::pin(tokio::time::sleep(SETTLE_WAIT));
                this.settling = Some(Settling { fut, wait, last: data });
                return Pin::new(this).poll_frame(cx);
            }
        }
        if let Some(data) = data {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.held.is_some() || this.ended {
            return Pin::new(this).poll_frame(cx);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        // hyper stops polling once the body says it has ended, so an SSE stream that has
        // not seen its final event is never at its end: its error event is still to come.
        // Nor is a body whose exchange has yet to settle.
        self.held.is_none()
            && self.settling.is_none()
            && self.guard.is_empty()
            && (self.ended || (self.inner.is_end_stream() && self.sse.as_ref().is_none_or(|w| w.terminal)))
    }

    fn size_hint(&self) -> SizeHint {
        if self.held.is_some() || self.ended || self.sse.is_some() {
            return SizeHint::default();
        }
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ctx::{ConnInfo, RequestCtx};
    use crate::pipeline::exchange::{Settle, SettleFuture};
    use crate::pipeline::respond::wrap;
    use crate::provider::ApiFamily;
    use http::Response;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use std::time::Instant;

    /// A body fed by the test, frame by frame.
    struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// Settles when the test says so, recording what it was told.
    struct Gate(Option<tokio::sync::oneshot::Receiver<()>>, Arc<Mutex<Option<End>>>);

    impl Settle for Gate {
        fn settle(mut self: Box<Self>, end: End) -> SettleFuture {
            *self.1.lock().unwrap() = Some(end);
            let rx = self.0.take();
            Box::pin(async move {
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
            })
        }
    }

    fn finish() -> Finish {
        let yaml = "providers:\n  - { name: up, kind: mock }\n";
        let snap = crate::config::load_str("t.yaml", yaml, std::path::Path::new("."), &|_: &str| None)
            .map_err(|d| d[0].to_string())
            .unwrap();
        let app = crate::state::AppState::new(snap);
        let conn = ConnInfo { peer: "127.0.0.1:1".parse().unwrap() };
        let cx = RequestCtx::begin(app.snapshot.load_full(), conn, http::Method::POST, ApiFamily::OpenAi);
        Finish::new(app, cx)
    }

    fn poll(body: &mut Body) -> Poll<Option<Bytes>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(body).poll_frame(&mut cx).map(|f| f.map(|f| f.unwrap().into_data().unwrap()))
    }

    async fn settle_a_little() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_last_bytes_wait_for_the_exchange_to_settle() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (open, gate) = tokio::sync::oneshot::channel();
        let told = Arc::new(Mutex::new(None));
        let mut guard = Guard::default();
        guard.push(Box::new(Gate(Some(gate), told.clone())));
        let t = BodyTimeouts {
            between_chunks: Duration::from_secs(60),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        let resp = Response::new(Fed(rx).boxed_unsync());
        let mut fin = finish();
        fin.cx.usage = Some(Usage { output: 3, ..Usage::default() });
        let mut body = wrap(fin, resp, Some((t, guard))).into_body();
        tx.send(Bytes::from_static(b"first")).unwrap();
        assert_eq!(poll(&mut body), Poll::Ready(Some(Bytes::from_static(b"first"))));
        tx.send(Bytes::from_static(b"last")).unwrap();
        drop(tx);
        assert_eq!(poll(&mut body), Poll::Pending, "the last bytes went out before the settlement");
        settle_a_little().await;
        assert_eq!(poll(&mut body), Poll::Pending);
        let end = told.lock().unwrap().unwrap();
        assert_eq!((end.outcome, end.usage.map(|u| u.output)), (Outcome::Complete, Some(3)));
        open.send(()).unwrap();
        settle_a_little().await;
        assert_eq!(poll(&mut body), Poll::Ready(Some(Bytes::from_static(b"last"))));
        assert_eq!(poll(&mut body), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_body_dropped_early_still_settles_with_what_was_seen() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let told = Arc::new(Mutex::new(None));
        let mut guard = Guard::default();
        guard.push(Box::new(Gate(None, told.clone())));
        let t = BodyTimeouts {
            between_chunks: Duration::from_secs(60),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        let mut body = wrap(finish(), Response::new(Fed(rx).boxed_unsync()), Some((t, guard))).into_body();
        tx.send(Bytes::from_static(b"part")).unwrap();
        assert!(poll(&mut body).is_ready());
        drop(body);
        settle_a_little().await;
        let end = told.lock().unwrap().unwrap();
        assert_eq!(end.outcome, Outcome::ClientClosed);
    }
}
