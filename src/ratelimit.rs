//! Rate limits: runtime state outside the snapshot, keyed by policy, limit and scope.
//!
//! Requests and tokens per minute are token buckets that hold one minute's allowance and
//! refill continuously (so a burst of a full minute's allowance is allowed, then the steady
//! rate). Written out rather than taken from `governor`: tokens are charged at admission
//! (the prompt's estimate plus the output limit) and refunded down to the reported usage when
//! the exchange ends, and the response headers need the bucket's exact remaining and reset,
//! which GCRA's state does not give back cheaply. `max_concurrent` counts requests in flight.
//! All limits of a request are checked under their locks, taken in one order, before any is
//! charged: a refusal by one never consumes another.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::policy::compile::RateLimit;
use crate::shard::{lock, Few, ShardedMap};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitKey {
    pub policy: Arc<str>,
    /// The limit's position in the policy's `rate_limits`.
    pub index: usize,
    pub scope: Arc<str>,
}

/// A bucket: how much of the minute's allowance is used, as of `at` (seconds on warden's clock).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Bucket {
    used: f64,
    at: f64,
}

impl Bucket {
    /// Drains what the time since the last look refilled.
    fn refill(&mut self, cap: f64, now: f64) {
        self.used = (self.used - (now - self.at) * cap / 60.0).max(0.0);
        self.at = now;
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct State {
    requests: Bucket,
    tokens: Bucket,
    in_flight: u64,
}

/// One limit a request must pass.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: LimitKey,
    pub limit: RateLimit,
}

/// `x-ratelimit-*` values: limit, remaining, seconds until the bucket is full again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: f64,
}

/// The tightest requests and tokens quotas of a request's limits, for its response headers.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Headers {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

/// Which limit refused, and when to come back.
#[derive(Debug, Clone)]
pub struct Refused {
    pub check: usize,
    pub limit: &'static str,
    pub retry_after_secs: f64,
    pub headers: Headers,
}

/// An admitted request's hold on its limits: settle it with the tokens really used, or drop
/// it (nothing used).
#[derive(Debug)]
pub struct Admitted {
    held: Few<(Arc<Mutex<State>>, RateLimit)>,
    tokens: u64,
    done: bool,
    pub headers: Headers,
}

#[derive(Default)]
pub struct Limiters {
    map: ShardedMap<LimitKey, State>,
}

fn now() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn tighter(a: Option<Quota>, b: Quota) -> Option<Quota> {
    Some(match a {
        Some(a) if a.remaining <= b.remaining => a,
        _ => b,
    })
}

fn quota(cap: u64, b: &Bucket) -> Quota {
    let capf = cap as f64;
    Quota { limit: cap, remaining: (capf - b.used).max(0.0) as u64, reset_secs: b.used * 60.0 / capf }
}

impl Limiters {
    /// Admits a request of `tokens` (estimated) against every check, or refuses it.
    pub fn admit(&self, checks: &[Check], tokens: u64) -> Result<Admitted, Refused> {
        let mut order: Few<usize> = (0..checks.len()).collect();
        order.sort_by(|&a, &b| checks[a].key.cmp(&checks[b].key));
        order.dedup_by(|a, b| checks[*a].key == checks[*b].key);
        let handles: Few<Arc<Mutex<State>>> = order.iter().map(|&i| self.map.entry(&checks[i].key)).collect();
        let mut guards: Few<MutexGuard<State>> = handles.iter().map(|h| lock(h)).collect();
        let t = now();
        let cost = tokens as f64;
        let mut headers = Headers::default();
        let mut refusal: Option<Refused> = None;
        for (slot, &i) in order.iter().enumerate() {
            let l = checks[i].limit;
            let s = &mut *guards[slot];
            let mut refuse = |limit: &'static str, wait: f64| {
                if refusal.is_none() {
                    refusal = Some(Refused { check: i, limit, retry_after_secs: wait, headers: Headers::default() });
                }
            };
            if let Some(cap) = l.requests_per_minute {
                s.requests.refill(cap as f64, t);
                if s.requests.used + 1.0 > cap as f64 {
                    refuse("requests_per_minute", (s.requests.used + 1.0 - cap as f64) * 60.0 / cap as f64);
                }
                headers.requests = tighter(headers.requests, quota(cap, &s.requests));
            }
            if let Some(cap) = l.tokens_per_minute {
                s.tokens.refill(cap as f64, t);
                // A request larger than the whole allowance passes on an empty bucket (it could
                // never pass otherwise), and then owes the difference.
                let need = cost.min(cap as f64);
                if s.tokens.used + need > cap as f64 {
                    refuse("tokens_per_minute", (s.tokens.used + need - cap as f64) * 60.0 / cap as f64);
                }
                headers.tokens = tighter(headers.tokens, quota(cap, &s.tokens));
            }
            if let Some(cap) = l.max_concurrent {
                if s.in_flight >= cap {
                    // No schedule to wait for: try again shortly.
                    refuse("max_concurrent", 1.0);
                }
            }
        }
        if let Some(mut r) = refusal {
            r.headers = headers;
            return Err(r);
        }
        let mut headers = Headers::default();
        for (slot, &i) in order.iter().enumerate() {
            let l = checks[i].limit;
            let s = &mut *guards[slot];
            if let Some(cap) = l.requests_per_minute {
                s.requests.used += 1.0;
                headers.requests = tighter(headers.requests, quota(cap, &s.requests));
            }
            if let Some(cap) = l.tokens_per_minute {
                s.tokens.used += cost;
                headers.tokens = tighter(headers.tokens, quota(cap, &s.tokens));
            }
            s.in_flight += 1;
        }
        drop(guards);
        let held = handles.into_iter().zip(order.iter().map(|&i| checks[i].limit)).collect();
        Ok(Admitted { held, tokens, done: false, headers })
    }

    pub fn get(&self, key: &LimitKey) -> (u64, f64, f64) {
        let s = self.map.get(key);
        (s.in_flight, s.requests.used, s.tokens.used)
    }
}

impl Admitted {
    /// The exchange ended having used `tokens`: the estimate is corrected and the request
    /// leaves the in-flight count.
    pub fn settle(mut self, tokens: u64) {
        self.release(tokens);
    }

    fn release(&mut self, used: u64) {
        if self.done {
            return;
        }
        self.done = true;
        let correction = used as f64 - self.tokens as f64;
        for (h, l) in &self.held {
            let mut s = lock(h);
            if l.tokens_per_minute.is_some() {
                s.tokens.used = (s.tokens.used + correction).max(0.0);
            }
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.release(0);
    }
}

/// OpenAI's duration style for `x-ratelimit-reset-*`: `20ms`, `1s`, `6m0s`. Written into
/// `out` (no allocation: this runs on every rate-limited response); returns the text.
pub fn format_reset(secs: f64, out: &mut [u8; 48]) -> &str {
    let mut a = itoa::Buffer::new();
    let mut b = itoa::Buffer::new();
    let pieces: [&str; 4] = if secs < 1.0 {
        [a.format((secs * 1000.0).ceil() as u64), "ms", "", ""]
    } else {
        let s = secs.ceil() as u64;
        if s < 60 {
            [a.format(s), "s", "", ""]
        } else {
            [a.format(s / 60), "m", b.format(s % 60), "s"]
        }
    };
    let mut n = 0;
    for p in pieces {
        // At most 20 + 1 + 20 + 1 bytes: always fits.
        out[n..n + p.len()].copy_from_slice(p.as_bytes());
        n += p.len();
    }
    std::str::from_utf8(&out[..n]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> Check {
        Check {
            key: LimitKey { policy: "p".into(), index: 0, scope: "key:a".into() },
            limit: RateLimit {
                per: crate::policy::Per::Key,
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent: conc,
            },
        }
    }

    #[test]
    fn a_minutes_allowance_then_refusal_with_a_wait() {
        let l = Limiters::default();
        let c = [check(Some(3), None, None)];
        let held: Vec<_> = (0..3).map(|_| l.admit(&c, 0).unwrap()).collect();
        assert_eq!(held[2].headers.requests.unwrap().remaining, 0);
        let r = l.admit(&c, 0).unwrap_err();
        assert_eq!(r.limit, "requests_per_minute");
        assert!(r.retry_after_secs > 19.0 && r.retry_after_secs <= 20.0, "{}", r.retry_after_secs);
    }

    #[test]
    fn tokens_are_refunded_to_the_reported_usage_and_concurrency_is_released() {
        let l = Limiters::default();
        let c = [check(None, Some(1000), Some(2))];
        let a = l.admit(&c, 600).unwrap();
        assert_eq!(l.admit(&c, 600).unwrap_err().limit, "tokens_per_minute");
        a.settle(100);
        let b = l.admit(&c, 600).unwrap();
        let d = l.admit(&c, 100).unwrap();
        assert_eq!(l.admit(&c, 1).unwrap_err().limit, "max_concurrent");
        drop(b);
        drop(d);
        assert_eq!(l.get(&c[0].key).0, 0);
    }

    #[test]
    fn reset_in_openai_style() {
        let mut buf = [0; 48];
        assert_eq!(format_reset(0.02, &mut buf), "20ms");
        assert_eq!(format_reset(1.0, &mut buf), "1s");
        assert_eq!(format_reset(360.0, &mut buf), "6m0s");
        assert_eq!(format_reset(1e30, &mut buf), "307445734561825860m15s");
    }
}
