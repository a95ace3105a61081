//! Shared application state: the live configuration snapshot and the metrics registry.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Snapshot;
use crate::metrics::Metrics;
use crate::policy::reload::ReloadStatus;

pub struct AppState {
    /// The live snapshot. A request loads it once, in `RequestCtx::begin`, and keeps that
    /// `Arc` for its whole life, so a reload never changes a request half-way.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Set when draining: `/readyz` turns 503 so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// The last reload's outcome, for `/admin/policies`. Written only by the reloader.
    pub reload_status: Mutex<ReloadStatus>,
}

impl AppState {
    pub fn new(snapshot: Snapshot) -> Arc<AppState> {
        Arc::new(AppState {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics: Metrics::new(),
            draining: AtomicBool::new(false),
            reload_status: Mutex::new(ReloadStatus::default()),
        })
    }
}
