//! warden: a self-hosted LLM reverse proxy with policy enforcement.
//!
//! # Layout
//!
//! - [`config`]: `proxy.yaml` types, `${ENV}` interpolation, compilation into a
//!   [`config::Snapshot`], and `file:line:col` diagnostics.
//! - [`server`]: listeners (API and admin), TLS, HTTP/1.1 + HTTP/2, graceful drain.
//! - [`policy`]: policy files (YAML), their compilation, the `limits` rules, hot reload and
//!   `warden test`.
//! - [`pipeline`]: the life of one proxied request, one module per stage.
//! - [`provider`]: everything that differs between the OpenAI and Anthropic APIs, and the
//!   built-in mock provider.
//! - [`http`]: body limits, header hygiene, streaming body adapters.
//! - [`error`]: the single place where failures become statuses and native error bodies.
//! - [`metrics`] and [`admin`]: observation only.
//! - [`secret`]: redacted secrets and key hashing.
//! - [`budget`]: budget accounts (runtime state beside [`state`]): atomic reservations and
//!   their settlement.
//! - [`clock`]: UTC calendar arithmetic.

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod injection;
pub mod ledger;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod provider;
pub mod ratelimit;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod shard;
pub mod state;
