//! Agent sessions: requests, tokens and wall-clock time per session, for the `sessions`
//! section of a policy. Runtime state outside the snapshot, keyed by policy, the caller's
//! key scope and the session id, so one tenant's session id can never touch another's.
//!
//! A session starts with its first request. Once `max_duration` has passed since then, its
//! requests are refused; its state is forgotten when it has been idle for a whole
//! `max_duration` (a day without one), after which the same id starts a new session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::compile::Sessions as Caps;
use crate::shard::{lock, ShardedMap};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub policy: Arc<str>,
    /// `key:<name>`: sessions are per caller.
    pub scope: Arc<str>,
    pub id: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    started: Option<Instant>,
    last: Option<Instant>,
    pub requests: u64,
    pub tokens: u64,
}

/// Which cap stopped a request, and where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub limit: &'static str,
    pub detail: String,
}

/// Idle sessions without a `max_duration` are forgotten after this.
const DEFAULT_IDLE: Duration = Duration::from_secs(86_400);

/// How many admissions between sweeps of forgotten sessions.
const SWEEP_EVERY: u64 = 4096;

#[derive(Default)]
pub struct Sessions {
    map: ShardedMap<SessionKey, Session>,
    admitted: AtomicU64,
}

fn idle_limit(caps: &Caps) -> Duration {
    caps.max_duration.unwrap_or(DEFAULT_IDLE)
}

impl Sessions {
    /// Counts the request in its session, or says which cap stops it.
    pub fn admit(&self, key: &SessionKey, caps: &Caps, now: Instant) -> Result<(), Stopped> {
        if self.admitted.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // The longest idle limit any policy may set is a week (durations are capped).
            self.map.retain(|_, s| s.last.is_some_and(|l| now.duration_since(l) < Duration::from_secs(7 * 86_400)));
        }
        let entry = self.map.entry(key);
        let mut s = lock(&entry);
        if s.last.is_some_and(|l| now.duration_since(l) >= idle_limit(caps)) {
            *s = Session::default();
        }
        let started = *s.started.get_or_insert(now);
        if let Some(max) = caps.max_duration {
            let age = now.duration_since(started);
            if age >= max {
                return Err(Stopped {
                    limit: "max_duration",
                    detail: format!("{} of at most {}", human(age), human(max)),
                });
            }
        }
        if let Some(max) = caps.max_requests {
            if s.requests >= max {
                return Err(Stopped {
                    limit: "max_requests",
                    detail: format!("{} requests of at most {max}", s.requests),
                });
            }
        }
        if let Some(max) = caps.max_tokens {
            if s.tokens >= max {
                return Err(Stopped { limit: "max_tokens", detail: format!("{} tokens of at most {max}", s.tokens) });
            }
        }
        s.requests += 1;
        s.last = Some(now);
        Ok(())
    }

    /// Adds the tokens an exchange of the session used.
    pub fn add_tokens(&self, key: &SessionKey, tokens: u64) {
        let entry = self.map.entry(key);
        let mut s = lock(&entry);
        s.tokens = s.tokens.saturating_add(tokens);
    }

    pub fn get(&self, key: &SessionKey) -> Session {
        self.map.get(key)
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SessionId;

    fn key() -> SessionKey {
        SessionKey { policy: "agents".into(), scope: "key:k".into(), id: "s1".into() }
    }

    #[test]
    fn stops_at_requests_tokens_and_duration_then_forgets() {
        let caps = Caps {
            id: SessionId::Header,
            max_requests: Some(2),
            max_tokens: Some(100),
            max_duration: Some(Duration::from_secs(60)),
        };
        let (s, t0) = (Sessions::default(), Instant::now());
        assert!(s.admit(&key(), &caps, t0).is_ok());
        assert!(s.admit(&key(), &caps, t0).is_ok());
        assert_eq!(s.admit(&key(), &caps, t0).unwrap_err().limit, "max_requests");
        let other = SessionKey { id: "s2".into(), ..key() };
        assert!(s.admit(&other, &caps, t0).is_ok());
        s.add_tokens(&other, 100);
        assert_eq!(s.admit(&other, &caps, t0).unwrap_err().limit, "max_tokens");
        let third = SessionKey { id: "s3".into(), ..key() };
        assert!(s.admit(&third, &caps, t0).is_ok());
        let third_caps = Caps { max_requests: None, ..caps };
        assert!(s.admit(&third, &third_caps, t0 + Duration::from_secs(50)).is_ok());
        let late = t0 + Duration::from_secs(61);
        let stopped = s.admit(&third, &third_caps, late).unwrap_err();
        assert_eq!((stopped.limit, stopped.detail.as_str()), ("max_duration", "1m1s of at most 1m0s"));
        // Idle for a whole duration since its last request: a new session.
        assert!(s.admit(&third, &third_caps, t0 + Duration::from_secs(111)).is_ok());
    }
}
