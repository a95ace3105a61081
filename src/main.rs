//! The `warden` command line: `serve` (default), `check`, `mock`, `hash-key`. The only
//! place that uses `anyhow`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use warden::config::{self, LogFormat};
use warden::policy::reload::load_snapshot;

#[derive(Parser)]
#[command(name = "warden", version, about = "LLM reverse proxy with policy enforcement")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The proxy.yaml to use (its policy directory comes from its `policies.dir`).
    #[arg(long, default_value = "proxy.yaml", global = true)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate proxy.yaml and every policy offline; prints `file:line:col: message` and
    /// exits 1 on error.
    Check,
    /// Run the mock provider as its own server (fault directives in the `x-mock` header).
    Mock {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: SocketAddr,
        /// The name `on=NAME` fault directives single this mock out by.
        #[arg(long)]
        name: Option<String>,
    },
    /// Run the policy test cases (`*_test.yaml`) in DIR (default: the policy directory).
    Test { dir: Option<PathBuf> },
    /// Print the JSON Schema of policy files (shipped as policies/policy.schema.json).
    Schema,
    /// Print the SHA-256 of a virtual key for `keys[].sha256` (reads the key from stdin).
    HashKey,
    /// Show spend per budget and scope for the current windows, from the ledger (works while
    /// the proxy runs).
    Spend {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read the audit log (`audit.path` in proxy.yaml) as a person would.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// Measure a detector on labelled data.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
    /// The injection scanner on JSON Lines of `{"text", "label", "family"}`: precision,
    /// recall, F1, false-positive rate, per family, and the slowest inputs.
    Injection {
        file: PathBuf,
        /// The score at which a text counts as flagged.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// Also print up to N misclassified rows (missed injections, false positives).
        #[arg(long, default_value_t = 0)]
        show: usize,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The last records, then (with --follow) new ones as they come.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(short, long)]
        follow: bool,
        /// The JSON lines as stored.
        #[arg(long)]
        json: bool,
    },
    /// The records of one session, key or request, oldest first.
    Query {
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        request: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Check => return check(&cli.config),
        Command::Mock { listen, name } => mock(listen, name),
        Command::Test { dir } => return policy_test(&cli.config, dir),
        Command::Schema => {
            let _ = std::io::stdout().lock().write_all(warden::policy::schema_gen::policy_schema().as_bytes());
            return ExitCode::SUCCESS;
        }
        Command::HashKey => hash_key(),
        Command::Spend { json } => spend(&cli.config, json),
        Command::Audit { what } => audit(&cli.config, what),
        Command::Eval { what: EvalCommand::Injection { file, threshold, show } } => {
            eval_injection(&file, threshold, show)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn eval_injection(file: &std::path::Path, threshold: f32, show: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let report =
        warden::injection::eval::run(&text, threshold, show).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let _ = std::io::stdout().lock().write_all(report.as_bytes());
    Ok(())
}

fn init_logging(format: LogFormat) {
    warden::pipeline::access_log::init(format);
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn report(diags: &[config::Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = writeln!(err, "{d}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match load_snapshot(path) {
        Ok(snap) => {
            let tls = [&snap.settings.api_tls, &snap.settings.admin_tls];
            for files in tls.into_iter().flatten() {
                if let Err(e) = warden::server::check_tls(files) {
                    let _ = writeln!(std::io::stderr(), "{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            let disabled: Vec<&str> = snap.providers.iter().filter_map(|p| p.disabled.as_deref()).collect();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}: ok ({} providers, {} keys, {} policies in {} files)",
                path.display(),
                snap.providers.len(),
                snap.key_count(),
                snap.policies.policies.len(),
                snap.policies.files.len()
            );
            for d in disabled {
                let _ = writeln!(out, "note: {d}");
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            report(&diags);
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    // Load once up front for the log settings and to report errors before anything binds.
    let snapshot = match load_snapshot(path) {
        Ok(s) => s,
        Err(diags) => {
            report(&diags);
            anyhow::bail!("invalid configuration in {}", path.display());
        }
    };
    init_logging(snapshot.settings.log_format);
    for reason in snapshot.providers.iter().filter_map(|p| p.disabled.as_deref()) {
        tracing::info!(target: "warden", "{reason}");
    }
    drop(snapshot);
    let rt = runtime()?;
    let result = rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives once the listeners are up must drain, not
        // take the default action and kill the process mid-stream.
        let stop = shutdown_signal();
        let running = match warden::server::start_from_file(path, true).await {
            Ok(r) => r,
            Err(warden::server::StartError::Config(diags)) => {
                report(&diags);
                anyhow::bail!("invalid configuration in {}", path.display());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("binding listeners")),
        };
        stop.await;
        tracing::info!(target: "warden", "shutting down: draining in-flight requests");
        running.shutdown().await;
        warden::pipeline::access_log::flush();
        tracing::info!(target: "warden", "stopped");
        Ok(())
    });
    // A reload stuck in a blocking read (a FIFO, a hung network mount) must not keep the
    // process alive after the drain.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

fn policy_test(config_path: &std::path::Path, dir: Option<PathBuf>) -> ExitCode {
    let mut snap = match config::load(config_path) {
        Ok(s) => s,
        Err(diags) => {
            report(&diags);
            return ExitCode::FAILURE;
        }
    };
    let dir = dir.unwrap_or_else(|| snap.settings.policies_dir.clone());
    if let Err(diags) = warden::policy::reload::load_policies_into(&mut snap, &dir) {
        report(&diags);
        return ExitCode::FAILURE;
    }
    match warden::policy::testing::run_dir(&snap, &dir) {
        Ok((report_text, ok)) => {
            let _ = std::io::stdout().lock().write_all(report_text.as_bytes());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(diags) => {
            report(&diags);
            ExitCode::FAILURE
        }
    }
}

fn mock(listen: SocketAddr, name: Option<String>) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let stop = shutdown_signal();
        tracing::info!(target: "warden", "listening on mock={}", listener.local_addr()?);
        let (tx, rx) = watch::channel(false);
        let limits = warden::server::ConnLimits::standalone();
        let mock = name.as_deref().map_or_else(warden::provider::mock::Mock::new, warden::provider::mock::Mock::named);
        let server = warden::server::serve_mock(listener, mock, limits, rx);
        tokio::pin!(server);
        tokio::select! {
            () = &mut server => {}
            () = stop => { let _ = tx.send(true); server.await; }
        }
        Ok(())
    })
}

fn hash_key() -> anyhow::Result<()> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key).context("reading the key from stdin")?;
    let key = key.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!key.is_empty(), "no key on stdin");
    writeln!(std::io::stdout(), "{}", warden::secret::sha256_hex(key.as_bytes()))?;
    Ok(())
}

/// Registers the SIGTERM and SIGINT handlers now, and resolves when either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

fn audit(config: &std::path::Path, what: AuditCommand) -> anyhow::Result<()> {
    use std::io::BufRead;
    let snap = load_snapshot(config)
        .map_err(|d| anyhow::anyhow!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let path = snap
        .settings
        .audit
        .as_ref()
        .map(|a| a.path.clone())
        .context("proxy.yaml has no `audit:`; nothing is recorded")?;
    let show = |out: &mut dyn Write, line: &str, json: bool| -> anyhow::Result<()> {
        if json {
            writeln!(out, "{line}")?;
        } else if let Ok(r) = serde_json::from_str::<warden::audit::Record>(line) {
            writeln!(out, "{}", warden::audit::render(&r))?;
        }
        Ok(())
    };
    let lines = || -> anyhow::Result<Vec<String>> {
        let mut all = Vec::new();
        for f in warden::audit::files(&path) {
            let file = std::fs::File::open(&f).with_context(|| format!("reading {}", f.display()))?;
            all.extend(std::io::BufReader::new(file).lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()));
        }
        Ok(all)
    };
    let mut out = std::io::stdout().lock();
    match what {
        AuditCommand::Query { session, key, request, json } => {
            anyhow::ensure!(
                session.is_some() || key.is_some() || request.is_some(),
                "give --session, --key or --request"
            );
            for line in lines()? {
                let Ok(r) = serde_json::from_str::<warden::audit::Record>(&line) else { continue };
                let keep = session.as_ref().is_none_or(|s| r.session.as_ref() == Some(s))
                    && key.as_ref().is_none_or(|k| &r.key == k)
                    && request.as_ref().is_none_or(|id| &r.request_id == id);
                if keep {
                    show(&mut out, &line, json)?;
                }
            }
        }
        AuditCommand::Tail { lines: n, follow, json } => {
            let all = lines()?;
            for line in &all[all.len().saturating_sub(n)..] {
                show(&mut out, line, json)?;
            }
            out.flush()?;
            if follow {
                let mut seen = std::fs::metadata(&path).map_or(0, |m| m.len());
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                    // Rotated: the new file is read from its start.
                    let from = if len < seen { 0 } else { seen };
                    if len > from {
                        let mut f = std::fs::File::open(&path)?;
                        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
                        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                            show(&mut out, &line, json)?;
                        }
                        out.flush()?;
                    }
                    seen = len;
                }
            }
        }
    }
    Ok(())
}

fn spend(config: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let snap = load_snapshot(config)
        .map_err(|d| anyhow::anyhow!("{}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    let path = snap.settings.ledger_path.clone().context("proxy.yaml has no `ledger:`; spend is not kept")?;
    let stored = if path.exists() { warden::ledger::read_file(&path) } else { Ok(Vec::new()) };
    let rows: Vec<warden::budget::SpendRow> = match stored {
        Ok(rows) => {
            let accounts = rows.into_iter().map(|(k, spent, spent_tokens)| {
                (k, warden::budget::Account { spent, spent_tokens, reserved: 0, reserved_tokens: 0 })
            });
            warden::budget::spend_rows(&snap, accounts, warden::budget::now_secs())
        }
        // The running proxy holds the ledger's lock: ask it (its numbers include what is
        // reserved in flight).
        Err(read) => live_spend(&snap).map_err(|live| {
            anyhow::anyhow!("{read} (a ledger left by a crash is repaired by the next `warden serve`); {live:#}")
        })?,
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({ "budgets": rows }))?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<20} {:<24} {:<7} {:>12} {:>12} {:>12}  resets (UTC)",
        "policy", "budget", "scope", "window", "spent $", "limit $", "left $"
    )?;
    let money = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    for r in &rows {
        let (y, m, d) = warden::clock::civil_from_days(r.resets_at.div_euclid(86_400));
        let secs = r.resets_at.rem_euclid(86_400);
        writeln!(
            out,
            "{:<20} {:<20} {:<24} {:<7} {:>12.4} {:>12} {:>12}  {y:04}-{m:02}-{d:02} {:02}:{:02}",
            r.policy,
            r.budget,
            r.scope,
            r.window,
            r.spent_usd,
            money(r.limit_usd),
            money(r.remaining_usd),
            secs / 3600,
            secs / 60 % 60
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "no spend recorded in the current windows ({})", path.display())?;
    }
    Ok(())
}

/// `/admin/spend` of the running proxy, over its admin listener.
fn live_spend(snap: &warden::config::Snapshot) -> anyhow::Result<Vec<warden::budget::SpendRow>> {
    use http_body_util::BodyExt;
    let s = &snap.settings;
    anyhow::ensure!(
        s.admin_tls.is_none(),
        "the ledger is in use and the admin listener uses TLS: use `curl https://.../admin/spend`"
    );
    let url = format!("http://{}/admin/spend", s.admin_listen);
    let token = s.admin_token.as_ref().map(|t| format!("Bearer {}", t.expose()));
    runtime()?.block_on(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut req = http::Request::get(&url).body(http_body_util::Empty::new())?;
        if let Some(t) = token {
            req.headers_mut().insert(http::header::AUTHORIZATION, t.parse()?);
        }
        let resp = client.request(req).await.with_context(|| format!("no running proxy answered {url}"))?;
        anyhow::ensure!(resp.status().is_success(), "{url} answered {}", resp.status());
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let rows = v["budgets"].as_array().cloned().unwrap_or_default();
        rows.into_iter().map(|r| Ok(serde_json::from_value(r)?)).collect()
    })
}
