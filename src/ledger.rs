//! The durable spend ledger: settled spend per budget account in redb (pure Rust, ACID,
//! fsync on every commit, no acknowledged commit lost across `kill -9` in our tests; see
//! the shared CRATES notes for the measurements behind the choice).
//!
//! Settlements are written by one thread with group commit: it takes every settlement
//! ready, writes them in one transaction and one fsync, then acknowledges each. A
//! response's last bytes wait for its acknowledgement (through the exchange guard), so the
//! spend of a response a client received whole is never lost; under load no request waits
//! for an fsync of its own: while one commit runs, the next batch gathers. Reservations are never
//! written: a crash releases them, as it should.

use std::path::Path;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::budget::AccountKey;

/// account key → (spent picodollars, spent tokens).
const SPEND: TableDefinition<&str, (u64, u64)> = TableDefinition::new("spend");

/// Separates the parts of an account key (never in policy, budget or scope names).
const SEP: char = '\u{1f}';

struct Write {
    key: AccountKey,
    cost: u64,
    tokens: u64,
    done: oneshot::Sender<()>,
}

/// A handle to the writer thread (cheap to clone).
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Write>,
}

/// One stored account.
pub type Row = (AccountKey, u64, u64);

fn encode(k: &AccountKey) -> String {
    format!("{}{SEP}{}{SEP}{}{SEP}{}", k.policy, k.budget, k.scope, k.window_start)
}

fn decode(s: &str) -> Option<AccountKey> {
    let mut parts = s.split(SEP);
    let (policy, budget, scope, start) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(AccountKey {
        policy: policy.into(),
        budget: budget.into(),
        scope: scope.into(),
        window_start: start.parse().ok()?,
    })
}

impl Ledger {
    /// Opens (or creates, with its folder) the ledger, reads every account in it, and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<(Ledger, Vec<Row>), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let db = Database::create(path).map_err(|e| format!("cannot open the ledger {}: {e}", path.display()))?;
        let rows = read_all(&db).map_err(|e| format!("cannot read the ledger {}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("warden-ledger".into())
            .spawn(move || writer(db, rx))
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        Ok((Ledger { tx }, rows))
    }

    /// Adds a settlement; the receiver completes once it is in a committed batch (or the
    /// write failed, which is logged).
    pub fn record(&self, key: AccountKey, cost: u64, tokens: u64) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(w)) = self.tx.send(Write { key, cost, tokens, done }) {
            tracing::error!(target: "warden", scope = %w.key.scope, "the ledger writer is gone: spend not recorded");
        }
        rx
    }
}

/// Every account in a ledger file, for `warden spend` (works while the proxy runs).
pub fn read_file(path: &Path) -> Result<Vec<Row>, String> {
    let db = redb::ReadOnlyDatabase::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    read_all(&db).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_all(db: &impl ReadableDatabase) -> Result<Vec<Row>, redb::Error> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(SPEND) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        if let Some(key) = decode(k.value()) {
            let (cost, tokens) = v.value();
            rows.push((key, cost, tokens));
        }
    }
    Ok(rows)
}

/// Group commit without a timer: a batch is every settlement that arrived while the last
/// commit ran, so under load one fsync serves many, and at a low rate a response waits for
/// one commit only, never for a window to pass.
fn writer(db: Database, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        match commit(&db, &batch) {
            Ok(()) => {
                for w in batch {
                    let _ = w.done.send(());
                }
            }
            Err(e) => {
                tracing::error!(target: "warden", error = %e, n = batch.len(), "ledger commit failed: spend not recorded")
            }
        }
    }
}

fn commit(db: &Database, batch: &[Write]) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(SPEND)?;
        for w in batch {
            let key = encode(&w.key);
            let (cost, tokens) = table.get(key.as_str())?.map_or((0, 0), |v| v.value());
            table.insert(key.as_str(), (cost.saturating_add(w.cost), tokens.saturating_add(w.tokens)))?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settlements_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/spend.redb");
        let key = AccountKey { policy: "p".into(), budget: "b".into(), scope: "key:a b".into(), window_start: 60 };
        {
            let (ledger, rows) = Ledger::open(&path).unwrap();
            assert!(rows.is_empty());
            let a = ledger.record(key.clone(), 5, 1);
            let b = ledger.record(key.clone(), 7, 2);
            a.await.unwrap();
            b.await.unwrap();
        }
        // The writer thread may still hold the file briefly after its handle is gone.
        let mut rows = Vec::new();
        for _ in 0..50 {
            match read_file(&path) {
                Ok(r) => {
                    rows = r;
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert_eq!(rows, vec![(key, 12, 3)]);
    }
}
