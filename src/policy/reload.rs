//! Loading and hot reload. `proxy.yaml` and the policy directory are read and compiled off
//! the request path into a new snapshot, then swapped in atomically. A `notify` watcher on
//! both (debounced, so editors' write-then-rename saves and Kubernetes ConfigMap symlink
//! swaps count once) and SIGHUP trigger it. An invalid edit keeps the last good snapshot
//! serving and is reported with its `file:line:col`.
//!
//! Reloadable: providers, routes, aliases, keys, `limits.max_body_bytes` and every policy.
//! Read once at start: `server`, `admin`, `log`, and the other `limits` (listeners and
//! connection settings).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};

use crate::config::{self, Diagnostic, Snapshot};
use crate::state::AppState;

/// Quiet time after the last file event before reloading: long enough to cover an editor's
/// temp-file-and-rename save, short enough to keep write-to-serving well under 500 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What `/admin/policies` reports about reloads.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub version: u64,
    pub hash: String,
    pub files: Vec<String>,
    pub policies: Vec<String>,
    /// Unix time of the last successful load.
    pub loaded_at: u64,
    pub last_result: String,
    pub last_error: Option<String>,
}

/// Reads and compiles `proxy.yaml` and its policy directory into one snapshot.
pub fn load_snapshot(config_path: &Path) -> Result<Snapshot, Vec<Diagnostic>> {
    let mut snap = config::load(config_path)?;
    let dir = snap.settings.policies_dir.clone();
    load_policies_into(&mut snap, &dir)?;
    let config_text = config::read_file(config_path).unwrap_or_default();
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(config_text.as_bytes());
    hasher.update(snap.policies.hash.as_bytes());
    snap.source_hash = crate::secret::hex(&hasher.finish().as_ref()[..8]);
    Ok(snap)
}

/// Compiles the policy files of `dir` against `snap` and attaches them.
pub fn load_policies_into(snap: &mut Snapshot, dir: &Path) -> Result<(), Vec<Diagnostic>> {
    let (files, hash) = super::load_dir(dir)?;
    snap.policies = super::compile_policies(&files, hash, snap)?;
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Records the first snapshot's status and metrics (version 1).
pub fn initial(app: &AppState) {
    let snap = app.snapshot.load();
    let mut status = status_of(&snap);
    status.last_result = "ok".into();
    app.metrics.set_policy_info(snap.policies.version, &snap.policies.hash);
    if let Ok(mut s) = app.reload_status.lock() {
        *s = status;
    }
}

fn status_of(snap: &Snapshot) -> ReloadStatus {
    ReloadStatus {
        version: snap.policies.version,
        hash: snap.policies.hash.clone(),
        files: snap.policies.files.clone(),
        policies: snap.policies.names().into_iter().map(str::to_string).collect(),
        loaded_at: now_unix(),
        last_result: String::new(),
        last_error: None,
    }
}

/// The outcome of one reload attempt.
#[derive(Debug)]
pub enum Reloaded {
    Swapped { version: u64 },
    Unchanged,
    Failed(Vec<Diagnostic>),
}

/// Loads, compiles and, if it is valid and different, swaps in a new snapshot.
pub fn reload_now(app: &AppState, config_path: &Path) -> Reloaded {
    let current = app.snapshot.load_full();
    let outcome = match load_snapshot(config_path) {
        Ok(snap) if snap.source_hash == current.source_hash => Reloaded::Unchanged,
        Ok(mut snap) => {
            if snap.settings.api_listen != current.settings.api_listen
                || snap.settings.admin_listen != current.settings.admin_listen
            {
                tracing::warn!(target: "warden", "listener addresses changed in proxy.yaml: they take effect after a restart");
            }
            // Listener and connection settings are fixed for the life of the process.
            app.transports.install(&snap, Some(&current));
            let keep = current.settings.clone();
            snap.settings = config::Settings { max_body_bytes: snap.settings.max_body_bytes, ..keep };
            let version = current.policies.version + 1;
            snap.policies.version = version;
            let mut status = status_of(&snap);
            status.last_result = "ok".into();
            app.metrics.set_policy_info(version, &snap.policies.hash);
            app.snapshot.store(Arc::new(snap));
            if let Ok(mut s) = app.reload_status.lock() {
                *s = status;
            }
            Reloaded::Swapped { version }
        }
        Err(diags) => Reloaded::Failed(diags),
    };
    let result = match &outcome {
        Reloaded::Swapped { version } => {
            tracing::info!(target: "warden", "reloaded configuration: version {version}, policies: {}", app.snapshot.load().policies.names().join(","));
            "ok"
        }
        Reloaded::Unchanged => {
            // An edit that was broken and is now undone leaves the files as they were: the
            // error is over, so say so.
            let recovered = app.reload_status.lock().ok().is_some_and(|mut s| {
                s.last_result = "unchanged".into();
                s.last_error.take().is_some()
            });
            if recovered {
                tracing::info!(target: "warden", "configuration is valid again; it equals the live version {}", current.policies.version);
            } else {
                tracing::info!(target: "warden", "reload: configuration unchanged (version {})", current.policies.version);
            }
            "unchanged"
        }
        Reloaded::Failed(diags) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            for line in &text {
                tracing::error!(target: "warden", "reload rejected, keeping the last good configuration: {line}");
            }
            if let Ok(mut s) = app.reload_status.lock() {
                s.last_result = "error".into();
                s.last_error = Some(text.join("\n"));
            }
            "error"
        }
    };
    app.metrics.policy_reloads.with_label_values(&[result]).inc();
    outcome
}

/// Starts the SIGHUP handler and (unless `policies.watch: false`) the file watcher; they live
/// until the process exits.
pub fn watch(app: Arc<AppState>, config_path: PathBuf) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let events = tx.clone();
    let relevant = Relevant::new(&config_path, &app.snapshot.load().settings.policies_dir);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !e.kind.is_access() && e.paths.iter().any(|p| relevant.matches(p))) {
            let _ = events.send(());
        }
    })?;
    let watching = app.snapshot.load().settings.watch_files;
    if watching {
        add_watches(&mut watcher, &watch_targets(&app, &config_path));
    }
    let hup = tx;
    #[expect(clippy::disallowed_methods, reason = "SIGHUP listener for the life of the process")]
    tokio::spawn(async move {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while sig.recv().await.is_some() {
            let _ = hup.send(());
        }
    });
    #[expect(clippy::disallowed_methods, reason = "the reload loop runs for the life of the process")]
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let first = Instant::now();
            // Drain the burst: wait until no event arrived for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                if first.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
            let app2 = app.clone();
            let path = config_path.clone();
            let _ = tokio::task::spawn_blocking(move || reload_now(&app2, &path)).await;
            // Directories swapped by rename or symlink get new inodes: watch them again.
            if watching {
                add_watches(&mut watcher, &watch_targets(&app, &config_path));
            }
        }
    });
    Ok(())
}

/// Which file events can change the configuration: `proxy.yaml` itself, policy files, and
/// the `..data` entries of a Kubernetes ConfigMap volume. Anything else written beside
/// them (a log file, an editor's swap file) is not worth a reload.
struct Relevant {
    config_dir: PathBuf,
    config_name: std::ffi::OsString,
    policies_dir: PathBuf,
}

impl Relevant {
    fn new(config_path: &Path, policies_dir: &Path) -> Relevant {
        let config_dir = config_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Relevant {
            config_dir: canonical(config_dir),
            config_name: config_path.file_name().map(ToOwned::to_owned).unwrap_or_default(),
            policies_dir: canonical(policies_dir),
        }
    }

    fn matches(&self, path: &Path) -> bool {
        let name = path.file_name().unwrap_or_default();
        let configmap = name.to_str().is_some_and(|n| n.starts_with(".."));
        let dir = canonical(path.parent().unwrap_or(Path::new(".")));
        if canonical(path) == self.policies_dir {
            return true;
        }
        (dir == self.config_dir && (name == self.config_name || configmap))
            || (dir == self.policies_dir && (configmap || super::is_policy_file(path) || is_schema_file(path)))
    }
}

/// A JSON Schema file a policy's `schema` section may name: editing it reloads too.
fn is_schema_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn watch_targets(app: &AppState, config_path: &Path) -> Vec<PathBuf> {
    let config_dir = config_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    vec![config_dir.to_path_buf(), app.snapshot.load().settings.policies_dir.clone()]
}

fn add_watches(watcher: &mut notify::RecommendedWatcher, targets: &[PathBuf]) {
    for t in targets {
        // The directories, not the files: saves replace files by rename.
        let _ = watcher.unwatch(t);
        if let Err(e) = watcher.watch(t, RecursiveMode::NonRecursive) {
            tracing::debug!(target: "warden", "cannot watch {}: {e}", t.display());
        }
    }
}
