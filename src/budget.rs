//! Budget accounts: runtime state outside the config snapshot, keyed by stable names
//! (policy, budget, scope, window start), so reloads change limits and never spend.
//!
//! A request reserves its worst case (estimated input plus its full output limit) on every
//! budget that applies, atomically: the accounts are locked in one global order, checked
//! together and charged together, so concurrent requests can never spend the same remaining
//! dollars. The exchange guard later replaces the reservation by the real cost
//! ([`Reservation::settle`]); a request that never reaches its end releases it.

use std::cell::OnceCell;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::policy::{OnExhausted, Per, Window};
pub use crate::shard::Few;
use crate::shard::{lock, ShardedMap};

/// Which account: a budget of a policy, for one scope, in one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    /// Shared with the compiled policy: a key costs no copy of its names.
    pub policy: Arc<str>,
    pub budget: Arc<str>,
    /// `key:demo`, `team:demo`, `model:gpt-4o`, `global` (see [`Scopes`]).
    pub scope: Arc<str>,
    /// Unix seconds at which the window opened.
    pub window_start: i64,
}

/// Spend and reservations of one account, in picodollars and tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub spent: u64,
    pub spent_tokens: u64,
    pub reserved: u64,
    pub reserved_tokens: u64,
}

/// Every account.
#[derive(Default)]
pub struct Accounts {
    map: ShardedMap<AccountKey, Account>,
}

/// One budget a request must fit into.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: AccountKey,
    pub usd: Option<u64>,
    pub tokens: Option<u64>,
    pub on_exhausted: OnExhausted,
    /// `false` in monitor mode: the request is charged but never refused.
    pub enforce: bool,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub input_tokens: u64,
    /// Picodollars the input is estimated to cost.
    pub input_cost: u64,
    /// The request's output limit.
    pub max_output: u64,
    /// Picodollars per output token.
    pub output_price: u64,
    /// Candidates generated (`n`): each may use the whole output limit.
    pub choices: u64,
}

impl Ask {
    fn cost(&self, out: u64) -> u64 {
        self.input_cost.saturating_add(out.saturating_mul(self.choices).saturating_mul(self.output_price))
    }

    fn tokens(&self, out: u64) -> u64 {
        self.input_tokens.saturating_add(out.saturating_mul(self.choices))
    }
}

/// The reservation was refused by this claim (index into the claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub claim: usize,
    pub account: Account,
}

/// What was granted.
#[derive(Debug)]
pub struct Granted {
    pub reservation: Reservation,
    /// The output limit the reservation covers: lower than asked when a `clamp` budget
    /// lowered it.
    pub max_output: u64,
    /// Claims in monitor mode that would have refused.
    pub would_refuse: Vec<usize>,
}

/// A held reservation. Settle it with the real cost, or drop it to release it.
#[derive(Debug)]
pub struct Reservation {
    held: Few<Held>,
    cost: u64,
    tokens: u64,
    settled: bool,
}

/// One account a reservation holds.
#[derive(Debug)]
struct Held {
    account: Arc<Mutex<Account>>,
    /// For the ledger and the alerts.
    key: AccountKey,
    /// The claim it came from.
    claim: usize,
}

/// Output tokens below which a clamped request is not worth sending.
pub const MIN_CLAMPED_OUTPUT: u64 = 16;

impl Accounts {
    fn account(&self, key: &AccountKey) -> Arc<Mutex<Account>> {
        self.map.entry(key)
    }

    /// Reserves `ask`'s worst case on every claim at once, or on none.
    pub fn reserve(&self, claims: &[Claim], ask: Ask) -> Result<Granted, Refused> {
        // One global order (by key) for taking the locks: no two reservations can deadlock.
        let mut order: Few<usize> = (0..claims.len()).collect();
        order.sort_by(|&a, &b| claims[a].key.cmp(&claims[b].key));
        order.dedup_by(|a, b| claims[*a].key == claims[*b].key);
        let handles: Few<Arc<Mutex<Account>>> = order.iter().map(|&i| self.account(&claims[i].key)).collect();
        let mut guards: Few<MutexGuard<Account>> = handles.iter().map(|h| lock(h)).collect();
        let mut out = ask.max_output;
        let mut would_refuse = Vec::new();
        for (slot, &i) in order.iter().enumerate() {
            let c = &claims[i];
            let a = *guards[slot];
            let fits = |out: u64| {
                let usd_ok =
                    c.usd.is_none_or(|cap| a.spent.saturating_add(a.reserved).saturating_add(ask.cost(out)) <= cap);
                let tok_ok = c.tokens.is_none_or(|cap| {
                    a.spent_tokens.saturating_add(a.reserved_tokens).saturating_add(ask.tokens(out)) <= cap
                });
                usd_ok && tok_ok
            };
            if fits(out) {
                continue;
            }
            if !c.enforce {
                would_refuse.push(i);
                continue;
            }
            if c.on_exhausted == OnExhausted::Clamp {
                let per_token = ask.output_price.saturating_mul(ask.choices.max(1));
                let room_usd = c.usd.map(|cap| {
                    let left = cap.saturating_sub(a.spent.saturating_add(a.reserved)).checked_sub(ask.input_cost);
                    left.map_or(0, |l| l.checked_div(per_token).unwrap_or(u64::MAX))
                });
                let room_tok = c.tokens.map(|cap| {
                    let left = cap.saturating_sub(a.spent_tokens.saturating_add(a.reserved_tokens));
                    left.saturating_sub(ask.input_tokens) / ask.choices.max(1)
                });
                let room = room_usd.unwrap_or(u64::MAX).min(room_tok.unwrap_or(u64::MAX));
                if room >= MIN_CLAMPED_OUTPUT {
                    out = out.min(room);
                    continue;
                }
            }
            return Err(Refused { claim: i, account: a });
        }
        let (cost, tokens) = (ask.cost(out), ask.tokens(out));
        for g in &mut guards {
            g.reserved = g.reserved.saturating_add(cost);
            g.reserved_tokens = g.reserved_tokens.saturating_add(tokens);
        }
        drop(guards);
        let held = handles
            .into_iter()
            .zip(order)
            .map(|(account, claim)| Held { account, key: claims[claim].key.clone(), claim })
            .collect();
        Ok(Granted { reservation: Reservation { held, cost, tokens, settled: false }, max_output: out, would_refuse })
    }

    /// A copy of every account, for `/admin/spend` and tests.
    pub fn snapshot(&self) -> Vec<(AccountKey, Account)> {
        let mut all = self.map.snapshot();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Puts settled spend read from the ledger back (at start).
    pub fn load(&self, rows: Vec<crate::ledger::Row>) {
        for (key, cost, tokens) in rows {
            let a = self.account(&key);
            let mut a = lock(&a);
            a.spent = a.spent.saturating_add(cost);
            a.spent_tokens = a.spent_tokens.saturating_add(tokens);
        }
    }

    /// One account's numbers (zero if it was never used).
    pub fn get(&self, key: &AccountKey) -> Account {
        self.map.get(key)
    }
}

impl Reservation {
    /// Replaces the reservation by what the exchange really cost; returns each account
    /// charged (its claim's index, its key) with its numbers before and after.
    pub fn settle(mut self, cost: u64, tokens: u64) -> Few<(usize, AccountKey, Account, Account)> {
        self.settled = true;
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|h| {
                let (before, after) = self.apply(&h.account, cost, tokens);
                (h.claim, h.key, before, after)
            })
            .collect()
    }

    /// The account's numbers just before and just after, read under its lock (so a
    /// threshold crossed by concurrent settlements is seen by exactly one of them).
    fn apply(&self, account: &Mutex<Account>, cost: u64, tokens: u64) -> (Account, Account) {
        let mut a = lock(account);
        let before = *a;
        a.reserved = a.reserved.saturating_sub(self.cost);
        a.reserved_tokens = a.reserved_tokens.saturating_sub(self.tokens);
        a.spent = a.spent.saturating_add(cost);
        a.spent_tokens = a.spent_tokens.saturating_add(tokens);
        (before, *a)
    }
}

impl Drop for Reservation {
    /// Never settled: nothing was spent, the reservation is released.
    fn drop(&mut self) {
        if !self.settled {
            for h in &self.held {
                self.apply(&h.account, 0, 0);
            }
        }
    }
}

/// One budget account as `/admin/spend` and `warden spend` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpendRow {
    pub policy: String,
    pub budget: String,
    pub scope: String,
    pub window: std::borrow::Cow<'static, str>,
    pub window_start: i64,
    pub resets_at: i64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub limit_usd: Option<f64>,
    pub remaining_usd: Option<f64>,
    pub spent_tokens: u64,
    pub reserved_tokens: u64,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
}

/// The accounts of the windows open at `now`, with the limits of the live policies. A
/// budget no longer in the policies is left out; its spend stays in the ledger.
pub fn spend_rows(
    snap: &crate::config::Snapshot,
    accounts: impl IntoIterator<Item = (AccountKey, Account)>,
    now: i64,
) -> Vec<SpendRow> {
    use crate::config::prices::PICO;
    let usd = |pico: u64| pico as f64 / PICO;
    let mut rows = Vec::new();
    for (k, a) in accounts {
        let Some(policy) = snap.policies.policies.iter().find(|p| p.name == k.policy) else { continue };
        let Some(b) = policy.budgets.iter().find(|b| b.name == k.budget) else { continue };
        let (start, end) = window_bounds(b.window, now);
        if start != k.window_start {
            continue;
        }
        let used = a.spent.saturating_add(a.reserved);
        rows.push(SpendRow {
            policy: k.policy.to_string(),
            budget: k.budget.to_string(),
            scope: k.scope.to_string(),
            window: window_label(b.window).into(),
            window_start: start,
            resets_at: end,
            spent_usd: usd(a.spent),
            reserved_usd: usd(a.reserved),
            limit_usd: b.usd.map(usd),
            remaining_usd: b.usd.map(|cap| usd(cap.saturating_sub(used))),
            spent_tokens: a.spent_tokens,
            reserved_tokens: a.reserved_tokens,
            limit_tokens: b.tokens,
            remaining_tokens: b.tokens.map(|cap| cap.saturating_sub(a.spent_tokens.saturating_add(a.reserved_tokens))),
        });
    }
    rows.sort_by(|a, b| (&a.policy, &a.budget, &a.scope).cmp(&(&b.policy, &b.budget, &b.scope)));
    rows
}

/// The scopes a request counts under (`key:demo`, `team:demo`, `model:gpt-4o`, `global`),
/// each made once per request and shared by every budget and rate limit that uses it.
pub struct Scopes<'a> {
    key: &'a str,
    team: &'a str,
    model: &'a str,
    made: [OnceCell<Arc<str>>; 3],
}

impl<'a> Scopes<'a> {
    pub fn new(key: &'a str, team: &'a str, model: &'a str) -> Self {
        Scopes { key, team, model, made: Default::default() }
    }

    /// Takes the key and team scopes a configured key was compiled with.
    pub fn known(self, key: Option<Arc<str>>, team: Option<Arc<str>>) -> Self {
        let [k, t, m] = self.made;
        let fill = |cell: OnceCell<Arc<str>>, v: Option<Arc<str>>| v.map_or(cell, OnceCell::from);
        Scopes { made: [fill(k, key), fill(t, team), m], ..self }
    }

    pub fn get(&self, per: Per) -> Arc<str> {
        static GLOBAL: OnceLock<Arc<str>> = OnceLock::new();
        let (slot, kind, name) = match per {
            Per::Key => (0, "key", self.key),
            Per::Team => (1, "team", self.team),
            Per::Model => (2, "model", self.model),
            Per::Global => return GLOBAL.get_or_init(|| "global".into()).clone(),
        };
        self.made[slot].get_or_init(|| format!("{kind}:{name}").into()).clone()
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The calendar window (UTC) that `t` (unix seconds) falls in: its start and its end.
pub fn window_bounds(w: Window, t: i64) -> (i64, i64) {
    match w {
        Window::Minute => (t - t.rem_euclid(60), t - t.rem_euclid(60) + 60),
        Window::Hour => (t - t.rem_euclid(3600), t - t.rem_euclid(3600) + 3600),
        Window::Day => (t - t.rem_euclid(86_400), t - t.rem_euclid(86_400) + 86_400),
        Window::Month => {
            let (y, m, _) = crate::clock::civil_from_days(t.div_euclid(86_400));
            let start = crate::clock::days_from_civil(y, m, 1) * 86_400;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (start, crate::clock::days_from_civil(ny, nm, 1) * 86_400)
        }
    }
}

pub fn window_label(w: Window) -> &'static str {
    match w {
        Window::Minute => "minute",
        Window::Hour => "hour",
        Window::Day => "day",
        Window::Month => "month",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(budget: &str, usd: u64, on: OnExhausted) -> Claim {
        Claim {
            key: AccountKey { policy: "p".into(), budget: budget.into(), scope: "key:a".into(), window_start: 0 },
            usd: Some(usd),
            tokens: None,
            on_exhausted: on,
            enforce: true,
        }
    }

    const ASK: Ask = Ask { input_tokens: 10, input_cost: 10, max_output: 100, output_price: 1, choices: 1 };

    #[test]
    fn scopes_are_made_once_or_taken_from_the_key() {
        let s = Scopes::new("k", "t", "m");
        assert_eq!(&*s.get(Per::Key), "key:k");
        assert!(Arc::ptr_eq(&s.get(Per::Team), &s.get(Per::Team)));
        assert_eq!(&*s.get(Per::Model), "model:m");
        assert_eq!(&*s.get(Per::Global), "global");
        let known: Arc<str> = "key:k".into();
        let s = Scopes::new("k", "t", "m").known(Some(known.clone()), None);
        assert!(Arc::ptr_eq(&s.get(Per::Key), &known));
        assert_eq!(&*s.get(Per::Team), "team:t");
    }

    #[test]
    fn reserves_on_all_or_none_and_settles_to_the_real_cost() {
        let a = Accounts::default();
        let claims = [claim("big", 1000, OnExhausted::Reject), claim("small", 160, OnExhausted::Reject)];
        let g = a.reserve(&claims, ASK).unwrap();
        assert_eq!(a.get(&claims[1].key).reserved, 110);
        // The second does not fit the small budget: neither account is charged.
        let refused = a.reserve(&claims, ASK).unwrap_err();
        assert_eq!(refused.claim, 1);
        assert_eq!(a.get(&claims[0].key).reserved, 110);
        g.reservation.settle(42, 60);
        let acc = a.get(&claims[0].key);
        assert_eq!((acc.spent, acc.reserved, acc.spent_tokens), (42, 0, 60));
        let dropped = a.reserve(&claims, ASK).unwrap();
        drop(dropped);
        assert_eq!(a.get(&claims[1].key), Account { spent: 42, spent_tokens: 60, reserved: 0, reserved_tokens: 0 });
    }

    #[test]
    fn clamp_lowers_the_output_limit_until_too_little_is_left() {
        let a = Accounts::default();
        let claims = [claim("c", 60, OnExhausted::Clamp)];
        let g = a.reserve(&claims, ASK).unwrap();
        assert_eq!(g.max_output, 50);
        assert!(a.reserve(&claims, ASK).is_err(), "nothing left after the clamp");
        drop(g);
        let mut monitor = claim("m", 1, OnExhausted::Reject);
        monitor.enforce = false;
        let g = a.reserve(&[monitor], ASK).unwrap();
        assert_eq!((g.max_output, g.would_refuse.len()), (100, 1));
    }

    #[test]
    fn concurrent_reservations_never_share_the_same_dollars() {
        let a = Arc::new(Accounts::default());
        let claims = Arc::new([claim("c", 110 * 50, OnExhausted::Reject)]);
        let granted: Vec<_> = (0..8)
            .map(|_| {
                let (a, claims) = (a.clone(), claims.clone());
                std::thread::spawn(move || {
                    (0..100).filter_map(|_| a.reserve(&claims[..], ASK).ok()).collect::<Vec<_>>()
                })
            })
            .collect();
        let held: Vec<Granted> = granted.into_iter().flat_map(|h| h.join().unwrap()).collect();
        assert_eq!(held.len(), 50);
        assert_eq!(a.get(&claims[0].key).reserved, 110 * 50);
    }

    #[test]
    fn calendar_windows_in_utc() {
        // 2026-12-01T16:26:54Z
        let t = 1_796_142_414;
        assert_eq!(window_bounds(Window::Minute, t), (1_796_142_360, 1_796_142_420));
        assert_eq!(window_bounds(Window::Day, t), (1_796_083_200, 1_796_169_600));
        let (start, end) = window_bounds(Window::Month, t);
        assert_eq!(crate::clock::civil_from_days(start / 86_400), (2026, 12, 1));
        assert_eq!(crate::clock::civil_from_days(end / 86_400), (2027, 1, 1));
    }
}
