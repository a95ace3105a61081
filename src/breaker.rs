//! Circuit breakers, one per provider: runtime state outside the snapshot (keyed by the
//! provider's name, so a reload keeps it).
//!
//! A circuit opens after `failures` consecutive failures, or when the share of failures in
//! the current `window` reaches `failure_rate` once `min_requests` were seen. While open,
//! requests go to the route's fallbacks (or get a 503). After `cool_down` one request is let
//! through as a probe (half-open): its success closes the circuit, its failure opens it
//! again. A probe that never reports (its request was dropped) is replaced after another
//! cool-down, so a circuit cannot stay half-open for ever.
//!
//! What fails: 500, 502, 503, 504, 529 and connection-level errors. A 429 is the provider
//! saying "slower", not "down": it neither fails nor heals a circuit.

use std::time::{Duration, Instant};

use crate::config::BreakerSettings;
use crate::shard::{lock, ShardedMap};

/// What `warden_circuit_state` reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum State {
    #[default]
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Circuit {
    state: State,
    consecutive: u32,
    /// When it opened, or when the current probe was let through.
    since: Option<Instant>,
    window_start: Option<Instant>,
    window_total: u32,
    window_failures: u32,
}

/// Whether a request may go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The half-open probe: its outcome decides the circuit.
    Probe,
    /// Open: come back in this long.
    Rejected(Duration),
}

/// How an attempt went, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
    /// Neither (a 429).
    Neutral,
}

/// A state change, for the log and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: State,
    pub to: State,
}

#[derive(Default)]
pub struct Breakers {
    map: ShardedMap<String, Circuit>,
}

impl Breakers {
    pub fn admit(&self, provider: &String, s: &BreakerSettings, now: Instant) -> (Admission, Option<Change>) {
        let c = self.map.entry(provider);
        let mut c = lock(&c);
        let since = c.since.unwrap_or(now);
        match c.state {
            State::Closed => (Admission::Allowed, None),
            State::Open if now.duration_since(since) >= s.cool_down => {
                c.state = State::HalfOpen;
                c.since = Some(now);
                (Admission::Probe, Some(Change { from: State::Open, to: State::HalfOpen }))
            }
            State::Open => (Admission::Rejected(s.cool_down.saturating_sub(now.duration_since(since))), None),
            // A probe is out; another only once it has had a cool-down's time to report.
            State::HalfOpen if now.duration_since(since) >= s.cool_down => {
                c.since = Some(now);
                (Admission::Probe, None)
            }
            State::HalfOpen => (Admission::Rejected(s.cool_down.saturating_sub(now.duration_since(since))), None),
        }
    }

    /// Records an attempt's outcome; `probe`: it was the half-open probe.
    pub fn record(
        &self,
        provider: &String,
        s: &BreakerSettings,
        health: Health,
        probe: bool,
        now: Instant,
    ) -> Option<Change> {
        let c = self.map.entry(provider);
        let mut c = lock(&c);
        let from = c.state;
        if health == Health::Neutral {
            return None;
        }
        let down = health == Health::Down;
        if probe || c.state == State::HalfOpen {
            if !probe {
                // A request admitted before the circuit opened, reporting late: ignored.
                return None;
            }
            *c = if down {
                Circuit { state: State::Open, since: Some(now), ..Circuit::default() }
            } else {
                Circuit::default()
            };
            return (c.state != from).then_some(Change { from, to: c.state });
        }
        if c.state == State::Open {
            return None;
        }
        if c.window_start.is_none_or(|t| now.duration_since(t) >= s.window) {
            (c.window_start, c.window_total, c.window_failures) = (Some(now), 0, 0);
        }
        c.window_total += 1;
        if down {
            c.consecutive += 1;
            c.window_failures += 1;
        } else {
            c.consecutive = 0;
        }
        let rate_trips = s.failure_rate.is_some_and(|rate| {
            c.window_total >= s.min_requests && f64::from(c.window_failures) >= rate * f64::from(c.window_total)
        });
        if down && (c.consecutive >= s.failures || rate_trips) {
            *c = Circuit { state: State::Open, since: Some(now), ..Circuit::default() };
            return Some(Change { from, to: State::Open });
        }
        None
    }

    /// The state of one provider's circuit (closed if never used).
    pub fn state(&self, provider: &String) -> State {
        self.map.get(provider).state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 2,
            cool_down: Duration::from_secs(10),
            failure_rate: None,
            window: Duration::from_secs(30),
            min_requests: 20,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_probes_and_closes() {
        let b = Breakers::default();
        let (p, s, t0) = ("p".to_string(), settings(), Instant::now());
        assert_eq!(b.record(&p, &s, Health::Down, false, t0), None);
        assert_eq!(b.record(&p, &s, Health::Neutral, false, t0), None);
        assert_eq!(b.record(&p, &s, Health::Down, false, t0), Some(Change { from: State::Closed, to: State::Open }));
        assert!(
            matches!(b.admit(&p, &s, t0 + Duration::from_secs(3)).0, Admission::Rejected(d) if d == Duration::from_secs(7))
        );
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(&p, &s, t1), (Admission::Probe, Some(Change { from: State::Open, to: State::HalfOpen })));
        // Only one probe at a time.
        assert!(matches!(b.admit(&p, &s, t1).0, Admission::Rejected(_)));
        assert_eq!(b.record(&p, &s, Health::Up, true, t1), Some(Change { from: State::HalfOpen, to: State::Closed }));
        assert_eq!(b.admit(&p, &s, t1).0, Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_and_a_lost_probe_is_replaced() {
        let b = Breakers::default();
        let (p, s, t0) = ("p".to_string(), settings(), Instant::now());
        b.record(&p, &s, Health::Down, false, t0);
        b.record(&p, &s, Health::Down, false, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(&p, &s, t1).0, Admission::Probe);
        assert_eq!(b.record(&p, &s, Health::Down, true, t1), Some(Change { from: State::HalfOpen, to: State::Open }));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(&p, &s, t2).0, Admission::Probe);
        // That probe never reports; after another cool-down a new one goes.
        assert_eq!(b.admit(&p, &s, t2 + Duration::from_secs(10)).0, Admission::Probe);
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_too() {
        let b = Breakers::default();
        let s = BreakerSettings { failures: 100, failure_rate: Some(0.5), min_requests: 4, ..settings() };
        let (p, t0) = ("p".to_string(), Instant::now());
        for health in [Health::Down, Health::Up, Health::Down] {
            assert_eq!(b.record(&p, &s, health, false, t0), None);
        }
        assert_eq!(b.record(&p, &s, Health::Down, false, t0).map(|c| c.to), Some(State::Open));
    }
}
