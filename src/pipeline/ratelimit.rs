//! Rate-limit stage: admits the request against every `rate_limits` entry of the matching
//! policies (requests and tokens per minute, requests in flight), before its budget is
//! reserved and before anything is sent; leaves the correction to the real token count, and
//! the end of its in-flight slot, in the exchange guard. The tightest quotas become the
//! response's `x-ratelimit-*` headers, on refusals and streams too.

use crate::error::{ProxyError, RateRefusal};
use crate::pipeline::budget::Subject;
use crate::pipeline::exchange::{End, Guard, Settle, SettleFuture};
use crate::policy::compile::Policy;
use crate::policy::Mode;
use crate::ratelimit::{Admitted, Check, Headers, LimitKey};
use crate::state::AppState;

/// Admits the request or refuses it (429 with `retry-after`). `tokens`: its worst case.
pub fn admit(
    app: &AppState,
    policies: &[&Policy],
    subject: &Subject<'_, '_>,
    tokens: u64,
    guard: &mut Guard,
    headers: &mut Option<Headers>,
) -> Result<(), ProxyError> {
    let checks: crate::budget::Few<Check> = policies
        .iter()
        // A monitored policy's limits do not refuse; rate limits have no "would" state to keep.
        .filter(|p| p.mode == Mode::Enforce)
        .flat_map(|p| {
            p.rate_limits.iter().enumerate().map(move |(index, l)| Check {
                key: LimitKey { policy: p.name.clone(), index, scope: subject.scopes.get(l.per) },
                limit: *l,
            })
        })
        .collect();
    if checks.is_empty() {
        return Ok(());
    }
    match app.limiters.admit(&checks, tokens) {
        Ok(a) => {
            *headers = Some(a.headers);
            guard.push(Box::new(Slot(Some(a))));
            Ok(())
        }
        Err(r) => {
            *headers = Some(r.headers);
            let c = &checks[r.check];
            app.metrics.ratelimit_rejections.with_label_values(&[&*c.key.policy, r.limit]).inc();
            Err(ProxyError::RateLimited(Box::new(RateRefusal {
                policy: c.key.policy.to_string(),
                limit: r.limit,
                scope: crate::pipeline::budget::describe(&c.key.scope),
                retry_after_secs: r.retry_after_secs.ceil().max(1.0) as u64,
            })))
        }
    }
}

/// Gives the in-flight slot back and corrects the token estimate when the exchange ends.
struct Slot(Option<Admitted>);

impl Settle for Slot {
    fn settle(mut self: Box<Self>, end: End) -> SettleFuture {
        if let Some(a) = self.0.take() {
            a.settle(end.usage.map_or(0, |u| u.total()));
        }
        Box::pin(async {})
    }
}

/// OpenAI's `x-ratelimit-*` headers, from warden's own limits (they replace the upstream's:
/// the client is limited by warden first). Static names: parsing them per response cost more
/// than the limits themselves.
pub fn write_headers(headers: &mut http::HeaderMap, h: &Headers) {
    use crate::ratelimit::format_reset;
    use http::header::HeaderName;
    const NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    // The six values are written into one buffer and each header holds a slice of it: one
    // allocation, not one per value (`HeaderValue::from(u64)` also formats through `fmt`).
    let mut all = bytes::BytesMut::with_capacity(128);
    let mut spans: smallvec::SmallVec<[(HeaderName, std::ops::Range<usize>); 6]> = smallvec::SmallVec::new();
    for ([limit, remaining, reset], quota) in NAMES.into_iter().zip([h.requests, h.tokens]) {
        let Some(q) = quota else { continue };
        let mut buf = [0; 48];
        let texts = [
            append(&mut all, itoa::Buffer::new().format(q.limit)),
            append(&mut all, itoa::Buffer::new().format(q.remaining)),
            append(&mut all, format_reset(q.reset_secs, &mut buf)),
        ];
        spans.extend([limit, remaining, reset].into_iter().zip(texts));
    }
    let all = all.freeze();
    headers.reserve(spans.len());
    for (name, span) in spans {
        if let Ok(v) = http::HeaderValue::from_maybe_shared(all.slice(span)) {
            headers.insert(name, v);
        }
    }
}

/// Appends a text to a buffer, returning where it sits.
fn append(buf: &mut bytes::BytesMut, text: &str) -> std::ops::Range<usize> {
    let start = buf.len();
    buf.extend_from_slice(text.as_bytes());
    start..buf.len()
}
