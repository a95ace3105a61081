//! Budget alerts: when a settlement carries a budget's spend across one of its thresholds
//! (a share of the cap), the alert fires once for that window (spend only grows within a
//! window, and the crossing is seen under the account's lock by exactly one settlement):
//! a log event, `warden_budget_alerts_total`, and, when `alerts.webhook` is set, a JSON POST
//! retried with backoff from a queue of its own, so a slow or dead receiver never holds a
//! request.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;

use crate::http::client::{build_client, HttpClient};
use crate::metrics::Metrics;

/// One crossed threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    pub policy: String,
    pub budget: String,
    pub scope: String,
    pub window: &'static str,
    pub window_start: i64,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub threshold: f64,
}

/// Attempts per webhook delivery, and the first wait between them (doubling).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

fn client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(|| build_client(Duration::from_secs(5), false))
}

/// Thresholds in `thresholds` that the spend crossed going from `before` to `after`
/// (picodollars against `cap`).
pub fn crossed(thresholds: &[f64], cap: u64, before: u64, after: u64) -> Vec<f64> {
    thresholds
        .iter()
        .copied()
        .filter(|t| {
            let line = (cap as f64 * t).ceil() as u64;
            before < line && after >= line
        })
        .collect()
}

/// Records the alert and sends it to the webhook, if any.
pub fn fire(metrics: &Metrics, webhook: Option<&Uri>, alert: Alert) {
    let threshold = format!("{}", alert.threshold);
    let budget = format!("{}/{}", alert.policy, alert.budget);
    metrics.budget_alerts.with_label_values(&[budget.as_str(), alert.scope.as_str(), threshold.as_str()]).inc();
    tracing::warn!(
        target: "warden::alert",
        budget = %budget,
        scope = %alert.scope,
        window = alert.window,
        spent_usd = alert.spent_usd,
        limit_usd = alert.limit_usd,
        threshold = alert.threshold,
        "budget alert: spend crossed a threshold"
    );
    let Some(url) = webhook.cloned() else { return };
    let body = Bytes::from(serde_json::to_vec(&alert).unwrap_or_default());
    deliver_in_order(url, body);
}

type Queue = tokio::sync::mpsc::UnboundedSender<Bytes>;
/// The alerts thread's runtime, and each webhook's queue.
type Queues = (tokio::runtime::Handle, std::sync::Mutex<Vec<(Uri, Queue)>>);

/// Hands the alert to its webhook's queue: deliveries to one URL go in the order the alerts
/// fired (a receiver sees 50% before 80%, whichever API worker settled each), from a thread
/// of their own whose runtime outlives any request's. Sending never waits: a slow or dead
/// receiver delays its own later alerts, never a request or another webhook.
fn deliver_in_order(url: Uri, body: Bytes) {
    static QUEUES: OnceLock<Option<Queues>> = OnceLock::new();
    let Some((runtime, queues)) = QUEUES
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("warden-alerts".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
            Some((handle, std::sync::Mutex::new(Vec::new())))
        })
        .as_ref()
    else {
        return;
    };
    let Ok(mut queues) = queues.lock() else { return };
    // Alerts are rare (a threshold per budget and window): the lock is never contended.
    queues.retain(|(_, q)| !q.is_closed());
    let queue = match queues.iter().find(|(u, _)| *u == url) {
        Some((_, q)) => q.clone(),
        None => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
            let to = url.clone();
            runtime.spawn(async move {
                while let Some(body) = rx.recv().await {
                    deliver(&to, body).await;
                }
            });
            queues.push((url, tx.clone()));
            tx
        }
    };
    let _ = queue.send(body);
}

/// POSTs one alert, retried with backoff.
async fn deliver(url: &Uri, body: Bytes) {
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let req = Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let Ok(req) = req else { return };
        match tokio::time::timeout(Duration::from_secs(10), client().request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return,
            Ok(Ok(resp)) => {
                tracing::warn!(target: "warden", status = %resp.status(), attempt, "alert webhook refused the alert")
            }
            Ok(Err(e)) => tracing::warn!(target: "warden", error = %e, attempt, "alert webhook unreachable"),
            Err(_) => tracing::warn!(target: "warden", attempt, "alert webhook timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_is_crossed_once() {
        let t = [0.5, 0.8, 1.0];
        assert_eq!(crossed(&t, 100, 0, 49), Vec::<f64>::new());
        assert_eq!(crossed(&t, 100, 49, 50), vec![0.5]);
        assert_eq!(crossed(&t, 100, 50, 85), vec![0.8]);
        assert_eq!(crossed(&t, 100, 40, 120), vec![0.5, 0.8, 1.0]);
        assert_eq!(crossed(&t, 100, 120, 130), Vec::<f64>::new());
    }
}
