//! Listeners: the API and admin listeners (and `warden mock`), optional TLS with ALPN,
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN), and graceful drain. No policy
//! knowledge here; one connection's lifecycle is in [`conn`].
//!
//! Shutdown phases: 1. mark not-ready (`/readyz` 503) and stop accepting on the API
//! listener, 2. ask every API connection to close after its in-flight requests (HTTP/1 stops
//! keep-alive, HTTP/2 sends GOAWAY), 3. wait for them up to the drain deadline, then close
//! the rest, 4. stop the admin listener, which answered probes until then.

pub mod conn;
mod workers;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::compile::TlsFiles;
use crate::http::body::Body;
use crate::pipeline::ctx::ConnInfo;
use crate::provider::mock::Mock;
use crate::state::AppState;
use conn::{serve_conn, stopped, Conns};

/// Connection-level limits, shared by all listeners of a process.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval (and how long an answer may take).
    pub http2_keep_alive: Duration,
    /// Open connections at most: each holds buffers, so this bounds their memory.
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_settings(s: &crate::config::Settings) -> ConnLimits {
        ConnLimits {
            max_header_bytes: s.max_header_bytes,
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
            http2_keep_alive: s.http2_keep_alive,
            max_connections: s.max_connections,
        }
    }

    /// For `warden mock` and test servers.
    pub fn standalone() -> ConnLimits {
        ConnLimits {
            max_header_bytes: 64 << 10,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_keep_alive: Duration::from_secs(20),
            max_connections: 100_000,
        }
    }
}

/// A running warden: its bound addresses and the handle to stop it.
pub struct Running {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<AppState>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Shuts down gracefully and waits until every connection has finished or the drain
    /// deadline has passed.
    pub async fn shutdown(self) {
        self.begin_shutdown();
        let _ = self.done.await;
    }

    /// Waits until the server has stopped (after [`Running::begin_shutdown`]).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Why warden could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration")]
    Config(Vec<crate::config::Diagnostic>),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Loads `proxy.yaml` and its policies, starts both listeners and, with `watch`, the hot
/// reloader (file watcher and SIGHUP). What `warden serve` runs.
pub async fn start_from_file(config_path: &Path, watch: bool) -> Result<Running, StartError> {
    let mut snap = crate::policy::reload::load_snapshot(config_path).map_err(StartError::Config)?;
    snap.policies.version = 1;
    let ledger_path = snap.settings.ledger_path.clone();
    let app = AppState::new(snap);
    if let Some(path) = ledger_path {
        let (ledger, rows) = crate::ledger::Ledger::open(&path).map_err(|e| StartError::Io(io::Error::other(e)))?;
        tracing::info!(target: "warden", path = %path.display(), accounts = rows.len(), "spend ledger open");
        app.budgets.load(rows);
        let _ = app.ledger.set(ledger);
    }
    if app.snapshot.load().settings.prompt_tokens == crate::config::PromptTokens::Tiktoken {
        // The encoding loads in about 100 ms: not on the first request's clock.
        let _ = std::thread::Builder::new()
            .name("warden-tiktoken".into())
            .spawn(|| crate::pipeline::budget::tiktoken_count("warm up"));
    }
    crate::policy::reload::initial(&app);
    let running = start(app.clone()).await?;
    if watch {
        if let Err(e) = crate::policy::reload::watch(app, config_path.to_path_buf()) {
            tracing::warn!(target: "warden", "file watching is off ({e}); reload with SIGHUP");
        }
    }
    // Printed once SIGHUP is handled too: what tests and scripts wait for before signalling.
    tracing::info!(target: "warden", "listening on api={} admin={}", running.api_addr, running.admin_addr);
    Ok(running)
}

/// Binds both listeners from the snapshot's settings and starts serving.
pub async fn start(app: Arc<AppState>) -> io::Result<Running> {
    let settings = app.snapshot.load().settings.clone();
    if let Some(audit) = &settings.audit {
        let m = &app.metrics;
        let log = crate::audit::AuditLog::start(audit, m.audit_dropped.clone(), m.audit_write_errors.clone())?;
        tracing::info!(target: "warden", path = %audit.path.display(), "audit log on");
        let _ = app.audit.set(log);
    }
    // The scanner's automata are built before the first request rather than during it.
    if app.snapshot.load().policies.policies.iter().any(|p| p.injection.is_some()) {
        crate::injection::warm();
    }
    let limits = ConnLimits::from_settings(&settings);
    let api = workers::bind(settings.api_listen, settings.api_workers)?;
    let admin = TcpListener::bind(settings.admin_listen).await?;
    let api_tls = settings.api_tls.as_ref().map(tls_acceptor).transpose()?;
    let admin_tls = settings.admin_tls.as_ref().map(tls_acceptor).transpose()?;
    let api_addr = api.first().map_or(Ok(settings.api_listen), std::net::TcpListener::local_addr)?;
    let admin_addr = admin.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    // The admin listener outlives the API's drain, so probes see `/readyz` answer 503.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let api_conns = Conns::new(stop_rx.clone());
    let admin_conns = Conns::new(admin_stop_rx);

    let api_app = app.clone();
    let accepting = workers::spawn(api, api_tls, limits, &api_conns, move |conn, req| {
        crate::pipeline::handle(api_app.clone(), conn, req)
    })?;
    let admin_app = app.clone();
    let admin_loop = accept_loop(admin, admin_tls, limits, admin_conns.clone(), move |_conn, req| {
        crate::admin::handle(admin_app.clone(), req)
    });
    let drain_app = app.clone();
    let drain = settings.drain_timeout;
    #[expect(clippy::disallowed_methods, reason = "the admin listener; it ends after the API's drain")]
    let admin_task = tokio::spawn(admin_loop);
    let mut stop_seen = stop_rx;
    #[expect(clippy::disallowed_methods, reason = "the server's supervisor task; it ends after the drain")]
    let done = tokio::spawn(async move {
        stopped(&mut stop_seen).await;
        drain_app.draining.store(true, Ordering::SeqCst);
        for worker in accepting {
            let _ = worker.await;
        }
        api_conns.drain(drain).await;
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
        admin_conns.drain(Duration::from_secs(1)).await;
    });
    Ok(Running { api_addr, admin_addr, app, stop, done })
}

/// Serves `warden mock` on `listener` until `stop` turns true.
pub async fn serve_mock(listener: TcpListener, mock: Mock, limits: ConnLimits, stop: watch::Receiver<bool>) {
    let mock = Arc::new(mock);
    let conns = Conns::new(stop);
    accept_loop(listener, None, limits, conns.clone(), move |_conn, req: Request<Incoming>| {
        let mock = mock.clone();
        async move {
            use http_body_util::BodyExt;
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            mock.respond(&parts.method, parts.uri.path(), &parts.headers, body).await
        }
    })
    .await;
    conns.drain(Duration::from_secs(5)).await;
}

/// Convenience for tests: the mock on `127.0.0.1:0`, recording credentials and bodies. The
/// server stops when the returned sender is dropped or sends `true`.
pub async fn spawn_local_mock(
) -> std::io::Result<(std::net::SocketAddr, Arc<crate::provider::mock::MockStats>, tokio::sync::watch::Sender<bool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mock = Mock { record: true, ..Mock::default() };
    let stats = mock.stats.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let limits = ConnLimits::standalone();
    #[expect(clippy::disallowed_methods, reason = "the test mock server runs until its sender says stop")]
    tokio::spawn(serve_mock(listener, mock, limits, rx));
    Ok((addr, stats, tx))
}

fn builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keep_alive))
        .keep_alive_timeout(limits.http2_keep_alive)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    b
}

/// Accepts connections until the listener's stop signal, serving each on its own task.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    conns: Conns,
    handler: F,
) where
    F: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = builder(limits);
    let mut stop = conns.stop.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(target: "warden", "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if conns.live() >= limits.max_connections {
            // Closed at once: a client sees a reset or an EOF and retries elsewhere.
            drop(stream);
            conns.refused();
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo { peer };
        let task = serve_conn(stream, conn, tls.clone(), builder.clone(), conns.clone(), limits, handler.clone());
        #[expect(
            clippy::disallowed_methods,
            reason = "one task per connection; it ends with the connection or the drain"
        )]
        tokio::spawn(task);
    }
}

/// A rustls acceptor (ring provider) offering h2 and http/1.1 by ALPN.
fn tls_acceptor(files: &TlsFiles) -> io::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("cannot read certificate", &files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("invalid certificate", &files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("cannot read private key", &files.key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key do not form a valid pair", &files.cert, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Loads and checks TLS files without serving (for `warden check`).
pub fn check_tls(files: &TlsFiles) -> io::Result<()> {
    tls_acceptor(files).map(|_| ())
}
