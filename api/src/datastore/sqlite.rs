//! The embedded backend: one SQLite file that every process on a host can share.
//!
//! WAL lets readers run beside a writer; every write is one `BEGIN IMMEDIATE` transaction (the
//! write lock is taken up front, so two writers never deadlock upgrading a read lock) that
//! checks the revision, bumps the global revision and appends to a change log. One thread per
//! process serves every watch: it asks SQLite whether anything changed (`PRAGMA data_version`,
//! which reads no table) every 100 ms while changes are coming in and every 500 ms at rest, and
//! only then reads the new log entries, once for all watches; the same thread checkpoints the
//! WAL when there were writes. An idle process thus costs two pragmas a second, whatever it
//! watches. The busy timeout makes a process wait for
//! another's transaction instead of failing.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::mpsc;

use super::{strip_revision, with_revision, Datastore, DatastoreError, RawList, RawObject, Result, Revision, WatchEvent, WatchStream};
use crate::resources::KindInfo;

/// How often the change poller asks whether anything changed: often while changes are coming
/// in (for a while after the last one), rarely at rest.
const POLL: Duration = Duration::from_millis(100);
const POLL_IDLE: Duration = Duration::from_millis(500);
const BUSY_FOR: Duration = Duration::from_secs(5);
/// Changes kept for watchers; older ones are compacted away and a watch behind them resyncs.
const HISTORY: i64 = 10_000;
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite gives each page cache (one per connection, and one per temporary database) a first
/// bulk of 20 pages at once, 87 KB, where a node's whole database is a few pages: 260 KB of an
/// idle agent's heap. Without it, pages are allocated as a cache fills (up to its
/// `cache_size`). A process-wide setting, made before the first connection; the paths that
/// open connections all come through here.
fn no_bulk_page_caches() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_PAGECACHE takes a pointer and two ints (no memory of our own:
        // null, 0, 0). Called before SQLite is initialized (it initializes at the first
        // connection, and none has been opened: every open comes after this call); were it
        // already, SQLite would refuse with SQLITE_MISUSE and change nothing.
        let refused = unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_PAGECACHE, std::ptr::null_mut::<std::ffi::c_void>(), 0, 0)
        };
        if refused != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(code = refused, "SQLite kept its bulk page caches (initialized before the datastore opened)");
        }
    });
}

const ADDED: i64 = 0;
const MODIFIED: i64 = 1;
const DELETED: i64 = 2;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// New watches for the change poller.
    watches: std::sync::mpsc::Sender<Subscription>,
}

/// One watch, as the change poller keeps it.
struct Subscription {
    kind: &'static str,
    /// The last revision this watch has seen.
    last: i64,
    tx: mpsc::Sender<WatchEvent>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        no_bulk_page_caches();
        let conn = Connection::open(path).map_err(|e| backend(format!("open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        // journal_mode answers with a row, so it cannot go through execute_batch.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend(format!("{}: could not switch to WAL (got {mode})", path.display())));
        }
        // NORMAL in WAL mode: a commit survives a process crash; only a power loss can take the
        // last transactions, which the agents redo from the live state.
        conn.execute_batch("PRAGMA synchronous=NORMAL;").map_err(sql)?;
        // The schema is created once; later opens only read, so a reader never waits behind
        // another process's write transaction for the write lock the creation would take.
        let created: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'", [], |r| r.get::<_, i64>(0))
            .map_err(sql)?
            > 0;
        if !created {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS objects (
                 kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL, body TEXT NOT NULL,
                 PRIMARY KEY (kind, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS changes (
                 revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, event INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS changes_by_kind ON changes (kind, revision);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
             COMMIT;",
            )
            .map_err(sql)?;
        }
        // Checkpoints (copying the WAL into the database, with an fsync) happen on a thread of
        // their own instead of inside whichever commit crosses the threshold: a CNI request
        // must not wait ~20 ms for a disk flush.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql)?;
        // A node's working set is small; SQLite's default 2 MB page cache per connection would be
        // a tenth of an agent's memory.
        conn.pragma_update(None, "cache_size", -512).map_err(sql)?;
        let conn = Arc::new(Mutex::new(conn));
        let (watches, subscriptions) = std::sync::mpsc::channel();
        spawn_poller(path.to_path_buf(), Arc::downgrade(&conn), subscriptions)?;
        Ok(SqliteStore { conn, watches })
    }

    /// Drops the whole change log now (normally only entries older than the last 10,000 go):
    /// watches from an older revision get [`WatchEvent::Resync`].
    pub async fn compact(&self) -> Result<()> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            tx.execute("DELETE FROM changes", []).map_err(sql)?;
            tx.execute("UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'revision') WHERE key = 'compacted'", [])
                .map_err(sql)?;
            tx.commit().map_err(sql)
        })
        .await
    }

    /// Runs `f` on the connection. A statement takes tens of microseconds, less than handing it
    /// to another thread would (measured: 2.4 ms vs 1.95 ms per IPAM assignment), but a write
    /// may wait for another process's transaction, so on a multi-threaded runtime the worker
    /// first hands its other tasks to its peers.
    async fn with_conn<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let run = || {
            let mut conn = self.conn.lock().expect("sqlite connection lock");
            f(&mut conn)
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }
}

/// The change poller: one thread per store, on a connection of its own (so that `data_version`
/// sees this process's writes too), serving every watch and checkpointing after writes. It
/// ends with the store.
///
/// (Every connection is opened after [`no_bulk_page_caches`], which `open` calls first.)
fn spawn_poller(
    path: std::path::PathBuf,
    alive: std::sync::Weak<Mutex<Connection>>,
    subscriptions: std::sync::mpsc::Receiver<Subscription>,
) -> Result<()> {
    let mut conn = Connection::open(&path).map_err(|e| backend(format!("open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_millis(100)).map_err(sql)?;
    // It reads the tail of the change log only.
    conn.pragma_update(None, "cache_size", -128).map_err(sql)?;
    std::thread::Builder::new()
        .name("sqlite-changes".into())
        .spawn(move || {
            let mut subs: Vec<Subscription> = Vec::new();
            let mut version: Option<i64> = None;
            let mut unchecked_writes = false;
            let mut last_change = std::time::Instant::now();
            let mut last_checkpoint = std::time::Instant::now();
            while alive.strong_count() > 0 {
                let mut fresh = false;
                while let Ok(s) = subscriptions.try_recv() {
                    subs.push(s);
                    fresh = true;
                }
                subs.retain(|s| !s.tx.is_closed());
                let now = conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok();
                let changed = now != version;
                version = now;
                unchecked_writes |= changed;
                if changed {
                    last_change = std::time::Instant::now();
                }
                if (changed || fresh) && !subs.is_empty() {
                    if let Err(e) = dispatch(&mut conn, &mut subs) {
                        tracing::warn!(error = %e, "sqlite watch poll failed; retrying");
                        version = None;
                    }
                }
                // At most every 500 ms, and only when something was written since the last one.
                if unchecked_writes && last_checkpoint.elapsed() >= Duration::from_millis(500) {
                    unchecked_writes = false;
                    last_checkpoint = std::time::Instant::now();
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "sqlite checkpoint");
                    }
                }
                std::thread::sleep(if last_change.elapsed() < BUSY_FOR { POLL } else { POLL_IDLE });
            }
        })
        .map_err(|e| backend(format!("starting the change poller: {e}")))?;
    Ok(())
}

/// Reads the log entries no watch has seen yet, once, and hands each watch those of its kind.
fn dispatch(conn: &mut Connection, subs: &mut [Subscription]) -> Result<()> {
    let Some(from) = subs.iter().map(|s| s.last).min() else { return Ok(()) };
    let tx = conn.transaction().map_err(sql)?;
    let read = |key: &str| -> Result<i64> {
        tx.prepare_cached("SELECT value FROM meta WHERE key = ?1").map_err(sql)?.query_row([key], |r| r.get(0)).map_err(sql)
    };
    let (head, compacted) = (read("revision")?, read("compacted")?);
    if from >= head {
        return Ok(());
    }
    let mut changes: Vec<(i64, String, WatchEvent)> = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT revision, kind, name, event, body FROM changes WHERE revision > ?1 AND revision <= ?2 ORDER BY revision",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![from.max(compacted), head], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?))
            })
            .map_err(sql)?;
        for row in rows {
            let (rev, kind, name, event, body) = row.map_err(sql)?;
            let obj = parse(&name, rev, &body)?;
            let event = match event {
                ADDED => WatchEvent::Added(obj),
                MODIFIED => WatchEvent::Modified(obj),
                _ => WatchEvent::Deleted(obj),
            };
            changes.push((rev, kind, event));
        }
    }
    tx.commit().map_err(sql)?;
    for sub in subs.iter_mut() {
        if sub.last < compacted {
            // Entries it needed are gone: it must list again.
            let _ = sub.tx.blocking_send(WatchEvent::Resync);
        } else {
            for (rev, kind, event) in &changes {
                if *rev > sub.last && kind == sub.kind && sub.tx.blocking_send(event.clone()).is_err() {
                    break;
                }
            }
        }
        sub.last = head;
    }
    Ok(())
}

fn sql(e: rusqlite::Error) -> DatastoreError {
    backend(format!("sqlite: {e}"))
}

fn backend(reason: String) -> DatastoreError {
    DatastoreError::Backend(reason)
}

fn parse(name: &str, revision: i64, body: &str) -> Result<RawObject> {
    let value = serde_json::from_str(body).map_err(|e| backend(format!("stored object {name:?} is not JSON: {e}")))?;
    Ok(with_revision(name, Revision::from(revision as u64), value))
}

/// One write: check, bump the revision, apply, log, commit.
fn write(
    conn: &mut Connection,
    kind: KindInfo,
    name: &str,
    expect: Expect,
    event: i64,
    value: Option<serde_json::Value>,
) -> Result<RawObject> {
    let value = value.map(strip_revision);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
    let current: Option<(i64, String)> = tx
        .prepare_cached("SELECT revision, body FROM objects WHERE kind = ?1 AND name = ?2")
        .map_err(sql)?
        .query_row(params![kind.kind, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(sql)?;
    match (&expect, &current) {
        (Expect::Absent, Some(_)) => return Err(DatastoreError::AlreadyExists { kind: kind.kind, name: name.into() }),
        (Expect::Revision(_), None) => return Err(DatastoreError::NotFound { kind: kind.kind, name: name.into() }),
        (Expect::Revision(want), Some((have, _))) if Some(*have as u64) != want.as_u64() => {
            return Err(DatastoreError::Conflict { kind: kind.kind, name: name.into() })
        }
        _ => {}
    }
    let revision: i64 = tx
        .prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value")
        .map_err(sql)?
        .query_row([], |r| r.get(0))
        .map_err(sql)?;
    let logged = match value.as_ref().map(|v| v.to_string()) {
        Some(body) => {
            tx.prepare_cached("INSERT OR REPLACE INTO objects VALUES (?1, ?2, ?3, ?4)")
                .map_err(sql)?
                .execute(params![kind.kind, name, revision, body])
                .map_err(sql)?;
            body
        }
        None => {
            tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND name = ?2")
                .map_err(sql)?
                .execute(params![kind.kind, name])
                .map_err(sql)?;
            current.expect("checked above").1
        }
    };
    tx.prepare_cached("INSERT INTO changes VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql)?
        .execute(params![revision, kind.kind, name, event, logged])
        .map_err(sql)?;
    if revision % 1000 == 0 {
        let floor = revision - HISTORY;
        tx.execute("DELETE FROM changes WHERE revision <= ?1", params![floor]).map_err(sql)?;
        tx.execute("UPDATE meta SET value = max(value, ?1) WHERE key = 'compacted'", params![floor]).map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    match value {
        Some(value) => Ok(with_revision(name, Revision::from(revision as u64), value)),
        None => parse(name, revision, &logged),
    }
}

enum Expect {
    Absent,
    Revision(Revision),
}

impl Datastore for SqliteStore {
    async fn get(&self, kind: KindInfo, name: &str) -> Result<Option<RawObject>> {
        let name = name.to_string();
        self.with_conn(move |conn| {
            let row: Option<(i64, String)> = conn
                .prepare_cached("SELECT revision, body FROM objects WHERE kind = ?1 AND name = ?2")
                .map_err(sql)?
                .query_row(params![kind.kind, name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(sql)?;
            row.map(|(rev, body)| parse(&name, rev, &body)).transpose()
        })
        .await
    }

    async fn list(&self, kind: KindInfo) -> Result<RawList> {
        self.with_conn(move |conn| {
            // One read transaction so the items and the revision agree.
            let tx = conn.transaction().map_err(sql)?;
            let revision: i64 = tx
                .prepare_cached("SELECT value FROM meta WHERE key = 'revision'")
                .map_err(sql)?
                .query_row([], |r| r.get(0))
                .map_err(sql)?;
            let mut stmt = tx.prepare_cached("SELECT name, revision, body FROM objects WHERE kind = ?1 ORDER BY name").map_err(sql)?;
            let rows = stmt
                .query_map(params![kind.kind], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
                .map_err(sql)?;
            let mut items = Vec::new();
            for row in rows {
                let (name, rev, body) = row.map_err(sql)?;
                items.push(parse(&name, rev, &body)?);
            }
            drop(stmt);
            tx.commit().map_err(sql)?;
            Ok(RawList { items, revision: Revision::from(revision as u64) })
        })
        .await
    }

    async fn create(&self, kind: KindInfo, name: &str, value: serde_json::Value) -> Result<RawObject> {
        let name = name.to_string();
        self.with_conn(move |conn| write(conn, kind, &name, Expect::Absent, ADDED, Some(value))).await
    }

    async fn update(&self, kind: KindInfo, name: &str, value: serde_json::Value, revision: &Revision) -> Result<RawObject> {
        let (name, revision) = (name.to_string(), revision.clone());
        self.with_conn(move |conn| write(conn, kind, &name, Expect::Revision(revision), MODIFIED, Some(value))).await
    }

    async fn delete(&self, kind: KindInfo, name: &str, revision: &Revision) -> Result<()> {
        let (name, revision) = (name.to_string(), revision.clone());
        self.with_conn(move |conn| write(conn, kind, &name, Expect::Revision(revision), DELETED, None)).await.map(|_| ())
    }

    async fn watch(&self, kind: KindInfo, from: &Revision) -> Result<WatchStream> {
        let last = from.as_u64().ok_or_else(|| backend(format!("revision {from:?} is not a sqlite revision")))? as i64;
        let (tx, rx) = mpsc::channel(256);
        self.watches.send(Subscription { kind: kind.kind, last, tx }).map_err(|_| backend("the change poller has stopped".into()))?;
        Ok(rx)
    }
}
