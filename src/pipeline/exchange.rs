//! The exchange: what [`super::run`] hands to the response phase when a request went to a
//! provider. It carries the response, the outgoing request (cheap to send again: the body is
//! shared bytes), the provider and credential, the body timeouts, and a [`Guard`].
//!
//! The guard is how later stages finish what they started before the request began (a budget
//! reservation, a rate-limit slot): each pushes a [`Settle`]. When the response body ends,
//! the guard's settlement runs and the last bytes are released only once its future is done
//! (or [`SETTLE_WAIT`] has passed), so a client that saw its answer end can rely on the spend
//! being recorded. When the body is dropped early (client gone) or the exchange fails, the
//! settlement still runs, with whatever usage was seen; its future is then dropped, as no
//! bytes are left to hold. It runs exactly once. A settlement's state changes happen in
//! [`Settle::settle`] itself; the future only says when they are durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Response;

use super::finish::Outcome;
use super::respond::BodyTimeouts;
use super::upstream::{Credential, Outgoing};
use crate::config::Provider;
use crate::http::body::Body;
use crate::provider::usage::Usage;

/// What `run` produced.
#[expect(clippy::large_enum_variant, reason = "moved once per request; a box would add an allocation to each")]
pub enum Reply {
    /// Answered by warden itself (the model list): nothing to settle.
    Local(Response<Body>),
    /// Sent to a provider.
    Exchange(Exchange),
    /// A cache hit charged against budgets: its guard settles at the stored usage.
    Cached(Response<Body>, Guard),
}

pub struct Exchange {
    pub response: Response<Body>,
    /// The request as sent, to send again (retries, fallbacks).
    pub request: Outgoing,
    pub provider: Arc<Provider>,
    pub credential: Credential,
    pub timeouts: BodyTimeouts,
    pub guard: Guard,
}

/// How the exchange ended, for the settlers.
#[derive(Debug, Clone, Copy)]
pub struct End {
    pub outcome: Outcome,
    /// The usage the response reported, or the estimate; `None` when no response body was
    /// read (the request failed before or at the upstream).
    pub usage: Option<Usage>,
}

pub type SettleFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Work a stage leaves for the end of the exchange.
pub trait Settle: Send {
    /// Called once, with how the exchange ended: make every change here. The future resolves
    /// when the changes are durable; the client's last bytes wait for it (at most
    /// [`SETTLE_WAIT`]), and it may be dropped unawaited when there are no bytes left to hold.
    fn settle(self: Box<Self>, end: End) -> SettleFuture;

    /// A fallback with another model answered: settle at its price.
    fn answered_by(&mut self, _snap: &crate::config::Snapshot, _model: &str) {}
}

/// How long the last bytes of a response wait for the settlement before they go anyway (the
/// settlement itself keeps running).
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// The settlers of one exchange. Empty (and free) unless a stage pushed one.
#[derive(Default)]
pub struct Guard {
    /// Inline: a request has at most a few (its rate limits, its budgets).
    settlers: smallvec::SmallVec<[Box<dyn Settle>; 2]>,
}

impl Guard {
    pub fn push(&mut self, s: Box<dyn Settle>) {
        self.settlers.push(s);
    }

    /// Tells every settler which model answered (a fallback's).
    pub fn answered_by(&mut self, snap: &crate::config::Snapshot, model: &str) {
        for s in &mut self.settlers {
            s.answered_by(snap, model);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.settlers.is_empty()
    }

    /// Runs every settlement. `None` when there is nothing to wait for (nothing to settle,
    /// or every future was ready at once, as they are without a ledger): no task, no timer.
    pub fn complete(&mut self, end: End) -> Option<SettleFuture> {
        if self.settlers.is_empty() {
            return None;
        }
        // Each future is polled once here; only those still pending are kept (and allocated
        // for). Polling again later with a real waker is what futures expect.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut pending = Vec::new();
        for s in self.settlers.drain(..) {
            let mut f = s.settle(end);
            if f.as_mut().poll(&mut cx).is_pending() {
                pending.push(f);
            }
        }
        if pending.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            for f in pending {
                f.await;
            }
        }))
    }
}

impl Drop for Guard {
    /// An exchange dropped before its body ended still settles: nothing was read.
    fn drop(&mut self) {
        drop(self.complete(End { outcome: Outcome::ClientClosed, usage: None }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(Outcome, Option<u64>)>>>;

    struct Record(Seen);

    impl Settle for Record {
        fn settle(self: Box<Self>, end: End) -> SettleFuture {
            self.0.lock().unwrap().push((end.outcome, end.usage.map(|u| u.output)));
            Box::pin(async move { tokio::task::yield_now().await })
        }
    }

    #[tokio::test]
    async fn settles_once_when_completed_and_once_when_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut g = Guard::default();
        g.push(Box::new(Record(seen.clone())));
        let usage = Usage { output: 7, ..Usage::default() };
        // The future yields once: it is handed back to be awaited.
        g.complete(End { outcome: Outcome::Complete, usage: Some(usage) }).unwrap().await;
        drop(g);
        let mut dropped = Guard::default();
        dropped.push(Box::new(Record(seen.clone())));
        drop(dropped);
        assert_eq!(*seen.lock().unwrap(), vec![(Outcome::Complete, Some(7)), (Outcome::ClientClosed, None)]);
        assert!(Guard::default().complete(End { outcome: Outcome::Complete, usage: None }).is_none());
    }
}
