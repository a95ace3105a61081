//! Model prices: the built-in table (USD per million tokens, each row dated from the
//! providers' public price pages) and `prices:` from proxy.yaml on top. Costs are computed in
//! whole picodollars (10⁻¹² USD) so that sums never drift: a token at $0.075 per million is
//! 75,000 picodollars.
//!
//! A model's price is found by its exact name, else by the longest table name it starts with
//! followed by `-` (so `gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`, and
//! `claude-haiku-4-5-20251001` as `claude-haiku-4-5`).

use std::collections::HashMap;

use serde::Deserialize;

use crate::provider::usage::Usage;

/// USD per million tokens, as written in proxy.yaml.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    /// OpenAI cached input tokens (default: `input`).
    pub cached_input: Option<f64>,
    /// Anthropic cache reads (default: `cached_input`, else `input`).
    pub cache_read: Option<f64>,
    /// Anthropic cache writes (default: `input`).
    pub cache_write: Option<f64>,
}

/// What to do with a model that has no price.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unpriced {
    /// Refuse requests to it where a dollar budget applies (never silently free).
    #[default]
    Reject,
    /// Count its tokens, cost 0, warn once.
    Meter,
}

/// A price in picodollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

/// Picodollars per USD.
pub const PICO: f64 = 1e12;

fn pico_per_token(usd_per_million: f64) -> u64 {
    (usd_per_million * 1e6).round().max(0.0) as u64
}

impl From<RawPrice> for Price {
    fn from(r: RawPrice) -> Price {
        let cached = r.cache_read.or(r.cached_input).unwrap_or(r.input);
        Price {
            input: pico_per_token(r.input),
            output: pico_per_token(r.output),
            cached_input: pico_per_token(cached),
            cache_write: pico_per_token(r.cache_write.unwrap_or(r.input)),
        }
    }
}

impl Price {
    /// Each component at the higher of the two: what a request that may be answered by
    /// either model must be reserved at.
    pub fn dearest(self, other: &Price) -> Price {
        Price {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cached_input: self.cached_input.max(other.cached_input),
            cache_write: self.cache_write.max(other.cache_write),
        }
    }

    /// The cost of what an exchange used, each token at its own price and counted once
    /// (reasoning tokens are output tokens).
    pub fn cost(&self, u: &Usage) -> u64 {
        u.input
            .saturating_mul(self.input)
            .saturating_add(u.cached_input.saturating_mul(self.cached_input))
            .saturating_add(u.cache_write.saturating_mul(self.cache_write))
            .saturating_add(u.output.saturating_add(u.reasoning).saturating_mul(self.output))
    }
}

/// Built-in prices, USD per million tokens: (model, input, output, cached input / cache
/// read, cache write). Dated: the list prices as published on the date given.
const BUILT_IN: &[(&str, f64, f64, f64, f64)] = &[
    // OpenAI, https://openai.com/api/pricing (2026-11-01)
    ("gpt-4o", 2.50, 10.00, 1.25, 2.50),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.15),
    ("gpt-4.1", 2.00, 8.00, 0.50, 2.00),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.40),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.10),
    ("gpt-5", 1.25, 10.00, 0.125, 1.25),
    ("gpt-5-mini", 0.25, 2.00, 0.025, 0.25),
    ("gpt-5-nano", 0.05, 0.40, 0.005, 0.05),
    ("o1", 15.00, 60.00, 7.50, 15.00),
    ("o3", 2.00, 8.00, 0.50, 2.00),
    ("o3-mini", 1.10, 4.40, 0.55, 1.10),
    ("o4-mini", 1.10, 4.40, 0.275, 1.10),
    ("text-embedding-3-small", 0.02, 0.0, 0.02, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13, 0.13),
    // Anthropic, https://www.anthropic.com/pricing#api (2026-11-01); cache write = 5-minute TTL
    ("claude-opus-4-1", 15.00, 75.00, 1.50, 18.75),
    ("claude-opus-4", 15.00, 75.00, 1.50, 18.75),
    ("claude-opus-4-5", 5.00, 25.00, 0.50, 6.25),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30, 3.75),
    ("claude-sonnet-4", 3.00, 15.00, 0.30, 3.75),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30, 3.75),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00),
    ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30),
];

/// The compiled price table.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    by_model: HashMap<String, Price>,
    pub unpriced: Unpriced,
}

impl Prices {
    /// The built-in table with `overrides` on top.
    pub fn new(overrides: &std::collections::BTreeMap<String, RawPrice>, unpriced: Unpriced) -> Prices {
        let mut by_model: HashMap<String, Price> = BUILT_IN
            .iter()
            .map(|&(m, input, output, cached, write)| {
                let raw =
                    RawPrice { input, output, cached_input: Some(cached), cache_read: None, cache_write: Some(write) };
                (m.to_string(), Price::from(raw))
            })
            .collect();
        for (model, raw) in overrides {
            by_model.insert(model.clone(), Price::from(*raw));
        }
        Prices { by_model, unpriced }
    }

    /// The price of a model: its exact name, else the longest priced name it extends with `-`.
    pub fn get(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.by_model.get(model) {
            return Some(p);
        }
        let mut end = model.len();
        while let Some(dash) = model[..end].rfind('-') {
            if let Some(p) = self.by_model.get(&model[..dash]) {
                return Some(p);
            }
            end = dash;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn prices_by_name_dated_variant_and_override() {
        let mut over = BTreeMap::new();
        over.insert("mock-1".to_string(), RawPrice { input: 1.0, output: 2.0, ..RawPrice::default() });
        let p = Prices::new(&over, Unpriced::Reject);
        assert_eq!(p.get("gpt-4o-mini").unwrap().input, 150_000);
        assert_eq!(p.get("gpt-4o-mini-2024-07-18"), p.get("gpt-4o-mini"));
        assert_eq!(p.get("claude-haiku-4-5-20251001"), p.get("claude-haiku-4-5"));
        assert_eq!(p.get("mock-1").unwrap().output, 2_000_000);
        assert!(p.get("llama-3").is_none());
        assert!(p.get("gpt").is_none());
    }

    #[test]
    fn each_token_at_its_own_price_once() {
        let p = Prices::new(&BTreeMap::new(), Unpriced::Reject);
        let haiku = p.get("claude-haiku-4-5").unwrap();
        let u = Usage {
            input: 1_000_000,
            output: 1_000_000,
            cached_input: 1_000_000,
            cache_write: 1_000_000,
            ..Usage::default()
        };
        // $1 input + $5 output + $0.10 cache read + $1.25 cache write.
        assert_eq!(haiku.cost(&u), (7.35 * PICO) as u64);
        let mini = p.get("gpt-4o-mini").unwrap();
        let u = Usage { input: 70, cached_input: 30, output: 30, reasoning: 20, ..Usage::default() };
        assert_eq!(mini.cost(&u), 70 * 150_000 + 30 * 75_000 + 50 * 600_000);
    }
}
