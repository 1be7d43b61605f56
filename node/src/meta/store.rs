//! Durable storage of the metadata store: the Raft log, the vote, and state-machine snapshots in
//! one redb database (`<data dir>/meta.redb`).
//!
//! - [`LogStore`] (in `log_store`) implements openraft's `RaftLogStorage`. An append is
//!   reported flushed only after its redb transaction committed with `Durability::Immediate`
//!   (fsync); so is a vote.
//! - [`StateMachineStore`] implements `RaftStateMachine`. The applied state lives in memory and
//!   is made durable by snapshots: a snapshot is written (fsync'd) to the same database before
//!   openraft may purge the log behind it, and at start the state is the last snapshot, to which
//!   openraft re-applies the committed log entries that follow it (the committed log id is
//!   stored for that). Applying therefore needs no fsync of its own, and a crash can lose
//!   nothing that was committed.
//!
//! redb work runs on tokio's blocking pool or the log's writer thread. One database holds both
//! halves, so a durable commit of either also makes every earlier commit durable.

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::TypeConfig;
use super::codec::{self, CodecError};
pub use super::log_store::LogStore;
use super::state::{Outcome, Reply, State};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "meta.redb";

/// How long opening waits for a store this process is still closing.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Log entries by index.
pub(super) const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
/// The vote, the committed log id and the last purged log id, by name.
pub(super) const LOG_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("log_meta");
/// The current snapshot (meta and data) under one key.
const SNAPSHOTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshots");

pub(super) const VOTE: &str = "vote";
pub(super) const COMMITTED: &str = "committed";
pub(super) const LAST_PURGED: &str = "last_purged";
const CURRENT_SNAPSHOT: &str = "current";

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Errors of opening or using the store outside openraft's interfaces.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path} (--data-dir): {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened: missing permissions, corruption, truncation,
    /// or another process holding it.
    #[error("cannot open metadata store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// A stored value does not decode: the file is corrupted or from an incompatible version.
    #[error("metadata store {path} is corrupted: {source}")]
    Corrupted {
        /// The database file.
        path: PathBuf,
        /// What did not decode.
        #[source]
        source: CodecError,
    },
    /// The database file is damaged beyond what redb reports as an error.
    #[error("metadata store {path} is damaged: opening it failed with {reason:?}")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A database operation failed.
    #[error("metadata store operation failed: {0}")]
    Database(#[from] redb::Error),
    /// A stored value does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The log writer thread could not start.
    #[error("cannot start the log writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The log writer thread stopped (the store is shutting down).
    #[error("the log writer thread stopped")]
    WriterStopped,
    /// A blocking task panicked or was cancelled.
    #[error("metadata store task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StoreError {
    fn any(&self) -> AnyError {
        AnyError::new(self)
    }
}

/// Runs blocking redb work on tokio's blocking pool.
pub(super) async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await?
}

pub(super) fn redb_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(error.into())
}

/// A snapshot as stored: its meta and the encoded [`State`].
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// Opens (or creates) the store in `data_dir` and returns its two halves.
///
/// Every stored value the node needs at start (vote, committed log id, last log entry, current
/// snapshot) is decoded here, so a corrupted or truncated file fails with an error naming it
/// instead of surfacing later inside Raft.
pub async fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    // A store closed in this process a moment ago may still be held by its log writer thread,
    // which ends on its own once it sees the store dropped: wait for it, briefly.
    let deadline = std::time::Instant::now() + REOPEN_WAIT;
    let (db, snapshot) = loop {
        let dir = data_dir.to_owned();
        match blocking(move || open_blocking(&dir)).await {
            Err(StoreError::Open {
                source: redb::Error::DatabaseAlreadyOpen,
                ..
            }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // redb can panic on some damage it does not expect (the panic stays in the
            // blocking task): report it like any other unreadable file.
            Err(StoreError::Task(error)) if error.is_panic() => {
                return Err(StoreError::Damaged {
                    path: data_dir.join(DATABASE_FILE),
                    reason: panic_message(error.into_panic()),
                });
            }
            opened => break opened?,
        }
    };
    let db = Arc::new(Db::new(db));
    let applied = match snapshot {
        Some(snapshot) => Applied {
            last_applied: snapshot.meta.last_log_id,
            membership: snapshot.meta.last_membership.clone(),
            state: codec::decode("snapshot state", &snapshot.data)?,
        },
        None => Applied::default(),
    };
    let last_index = applied.last_applied.map_or(0, |log_id| log_id.index);
    let (applied_index, _) = watch::channel(last_index);
    let (changed_index, _) = watch::channel(last_index);
    Ok((
        LogStore::new(db.clone())?,
        StateMachineStore {
            db,
            applied: Arc::new(RwLock::new(applied)),
            applied_index: Arc::new(applied_index),
            changed_index: Arc::new(changed_index),
        },
    ))
}

/// Returns a panic's message, when it has one.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => panic
            .downcast::<&'static str>()
            .map(|message| (*message).to_owned())
            .unwrap_or_else(|_| "a panic".to_owned()),
    }
}

fn open_blocking(data_dir: &Path) -> Result<(Database, Option<StoredSnapshot>), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DATABASE_FILE);
    let open_error = |source: redb::Error| StoreError::Open {
        path: path.clone(),
        source,
    };
    let corrupted = |source: CodecError| StoreError::Corrupted {
        path: path.clone(),
        source,
    };
    let db = Database::create(&path).map_err(|error| open_error(error.into()))?;
    // Create the tables, so readers never meet a missing one.
    let txn = db.begin_write().map_err(|error| open_error(error.into()))?;
    txn.open_table(LOG)
        .map_err(|error| open_error(error.into()))?;
    txn.open_table(LOG_META)
        .map_err(|error| open_error(error.into()))?;
    txn.open_table(SNAPSHOTS)
        .map_err(|error| open_error(error.into()))?;
    txn.commit().map_err(|error| open_error(error.into()))?;

    let read = db.begin_read().map_err(|error| open_error(error.into()))?;
    let meta = read
        .open_table(LOG_META)
        .map_err(|error| open_error(error.into()))?;
    if let Some(vote) = meta.get(VOTE).map_err(|error| open_error(error.into()))? {
        codec::decode::<Vote<NodeId>>("vote", vote.value()).map_err(corrupted)?;
    }
    for key in [COMMITTED, LAST_PURGED] {
        if let Some(log_id) = meta.get(key).map_err(|error| open_error(error.into()))? {
            codec::decode::<LogId<NodeId>>("log id", log_id.value()).map_err(corrupted)?;
        }
    }
    let log = read
        .open_table(LOG)
        .map_err(|error| open_error(error.into()))?;
    if let Some((_, entry)) = log.last().map_err(|error| open_error(error.into()))? {
        codec::decode::<Entry<TypeConfig>>("log entry", entry.value()).map_err(corrupted)?;
    }
    let snapshots = read
        .open_table(SNAPSHOTS)
        .map_err(|error| open_error(error.into()))?;
    let snapshot = match snapshots
        .get(CURRENT_SNAPSHOT)
        .map_err(|error| open_error(error.into()))?
    {
        Some(bytes) => {
            let snapshot: StoredSnapshot =
                codec::decode("snapshot", bytes.value()).map_err(corrupted)?;
            codec::decode::<State>("snapshot state", &snapshot.data).map_err(corrupted)?;
            Some(snapshot)
        }
        None => None,
    };
    drop((meta, log, snapshots, read));
    Ok((db, snapshot))
}

/// The open database, which records when it has been closed (its file written and released).
#[derive(Debug)]
pub struct Db {
    database: Option<Database>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Db {
    fn new(database: Database) -> Self {
        Self {
            database: Some(database),
            closed: Arc::default(),
        }
    }
}

impl std::ops::Deref for Db {
    type Target = Database;

    fn deref(&self) -> &Database {
        // Taken only by `drop`, after which nothing can reach this value.
        self.database
            .as_ref()
            .unwrap_or_else(|| unreachable!("the database is taken only when dropped"))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // redb writes its clean-shutdown header while it drops: signal only after that.
        drop(self.database.take());
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Tells when a store's database has been closed.
#[derive(Debug, Clone)]
pub struct ClosedSignal(Arc<std::sync::atomic::AtomicBool>);

impl ClosedSignal {
    /// Waits until the database is closed, up to `timeout`; returns whether it is.
    pub async fn wait(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.0.load(std::sync::atomic::Ordering::Acquire) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

/// The applied state and what openraft needs to know about it.
#[derive(Debug, Default)]
pub struct Applied {
    /// The last applied log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last applied membership.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The metadata.
    pub state: State,
}

/// The state machine: applied state in memory, snapshots in the database.
///
/// Clones share the state; the node reads it through [`StateMachineStore::read`] and learns of
/// progress through [`StateMachineStore::subscribe`], and of changes to anything but
/// checkpoints through [`StateMachineStore::subscribe_changes`].
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    db: Arc<Db>,
    applied: Arc<RwLock<Applied>>,
    applied_index: Arc<watch::Sender<u64>>,
    /// The index of the last applied entry that may have changed more than checkpoints.
    changed_index: Arc<watch::Sender<u64>>,
}

impl StateMachineStore {
    /// Returns a handle that tells when the database behind this store has been closed (every
    /// clone of both halves dropped, the log writer thread ended).
    pub fn closed_signal(&self) -> ClosedSignal {
        ClosedSignal(self.db.closed.clone())
    }

    /// Returns a read guard on the applied state. Hold it briefly and never across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means a panic while applying, which never leaves the state half
        // changed (apply builds each reply before anything else can observe it).
        self.applied
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns a receiver of the last applied log index, changed after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Returns a receiver of the index of the last applied entry that may have changed nodes,
    /// connectors or assignments: unlike [`StateMachineStore::subscribe`] it stays quiet while
    /// only checkpoints advance, which is nearly every entry of a busy cluster, so whoever
    /// watches the assignments need not look at them hundreds of times a second.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed_index.subscribe()
    }

    /// Returns the index of the last applied entry that may have changed more than checkpoints.
    pub fn last_change(&self) -> u64 {
        *self.changed_index.borrow()
    }

    /// Stores `snapshot` as the current one, unless the stored one is newer: a snapshot built
    /// here can finish after a newer one was installed from the leader, and the older must not
    /// win, or a restart would resume from state behind the purged log.
    async fn save_snapshot(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        let last_log_id = snapshot.meta.last_log_id;
        let bytes = codec::encode("snapshot", &snapshot)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(redb_error)?;
            {
                let mut table = txn.open_table(SNAPSHOTS).map_err(redb_error)?;
                let stored = table
                    .get(CURRENT_SNAPSHOT)
                    .map_err(redb_error)?
                    .map(|value| codec::decode::<StoredSnapshot>("snapshot", value.value()))
                    .transpose()?;
                if stored.is_some_and(|stored| stored.meta.last_log_id > last_log_id) {
                    tracing::debug!(?last_log_id, "a newer snapshot is stored; keeping it");
                    return Ok(());
                }
                table
                    .insert(CURRENT_SNAPSHOT, bytes.as_slice())
                    .map_err(redb_error)?;
            }
            txn.commit().map_err(redb_error)?;
            Ok(())
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let encoded = {
            let applied = self.read();
            codec::encode("snapshot state", &applied.state).map(|data| {
                let last_index = applied.last_applied.map_or(0, |log_id| log_id.index);
                let meta = SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership.clone(),
                    snapshot_id: format!(
                        "{last_index}-{}",
                        applied.membership.log_id().map_or(0, |id| id.index)
                    ),
                };
                (meta, data)
            })
        };
        let (meta, data) =
            encoded.map_err(|error| StorageIOError::write_snapshot(None, AnyError::new(&error)))?;
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await
        .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), error.any()))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Reply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut last_change = None;
        let last_index = {
            let mut applied = self
                .applied
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let checkpoints_only = matches!(
                    &entry.payload,
                    EntryPayload::Normal(command) if command.changes_only_checkpoints()
                );
                if !checkpoints_only {
                    last_change = Some(entry.log_id.index);
                }
                let reply = match entry.payload {
                    EntryPayload::Blank => Ok(Outcome::Done),
                    EntryPayload::Normal(command) => {
                        applied.state.apply(entry.log_id.index, &command)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Outcome::Done)
                    }
                };
                replies.push(reply);
            }
            applied.last_applied.map_or(0, |log_id| log_id.index)
        };
        // Both after the lock is released: a watcher woken by them reads the new state.
        if let Some(index) = last_change {
            self.changed_index.send_replace(index);
        }
        self.applied_index.send_replace(last_index);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let read_error =
            |error: StoreError| StorageIOError::read_snapshot(Some(meta.signature()), error.any());
        let state: State =
            codec::decode("snapshot state", &data).map_err(|error| read_error(error.into()))?;
        self.save_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await
        .map_err(|error| StorageIOError::write_snapshot(Some(meta.signature()), error.any()))?;
        let last_index = {
            let mut applied = self
                .applied
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *applied = Applied {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state,
            };
            applied.last_applied.map_or(0, |log_id| log_id.index)
        };
        self.changed_index.send_replace(last_index);
        self.applied_index.send_replace(last_index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let db = self.db.clone();
        let stored = blocking(move || {
            let txn = db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(SNAPSHOTS).map_err(redb_error)?;
            let stored = table.get(CURRENT_SNAPSHOT).map_err(redb_error)?;
            stored
                .map(|bytes| codec::decode::<StoredSnapshot>("snapshot", bytes.value()))
                .transpose()
                .map_err(StoreError::from)
        })
        .await
        .map_err(|error| StorageIOError::read_snapshot(None, error.any()))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    /// Builds a store in a fresh temporary directory, removed when the test ends.
    struct TempStoreBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStoreBuilder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir()
                .map_err(|error| StorageIOError::write(AnyError::new(&error)))?;
            let (log, state_machine) = open(dir.path())
                .await
                .map_err(|error| StorageIOError::write(error.any()))?;
            Ok((dir, log, state_machine))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(TempStoreBuilder).expect("the storage suite passes");
    }
}
