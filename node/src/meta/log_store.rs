//! The Raft log and vote in redb, with group commit.
//!
//! openraft's `append` contract is: entries are readable when the call returns, and durable when
//! the callback fires. So `append` only puts the entries in an in-memory map of recent entries
//! (which reads consult; it also keeps the last few thousand flushed ones, so replication rarely
//! reads the database) and queues them for one writer thread; the thread commits every
//! append queued behind the one it is flushing in a single redb transaction (one fsync), then
//! fires their callbacks. Raft therefore replicates to followers while the leader's own fsync is
//! under way, and concurrent writes share fsyncs instead of queueing for one each.
//!
//! Votes, truncations and purges go through the same queue, so every write lands in the order
//! Raft issued it; their calls return once they are durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::TypeConfig;
use super::codec::{self, CodecError};
use super::store::{
    COMMITTED, Db, LAST_PURGED, LOG, LOG_META, StoreError, VOTE, blocking, redb_error,
};

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Writes waiting for the writer thread.
const QUEUE_DEPTH: usize = 1024;
/// The most appends one transaction commits.
const MAX_APPENDS_PER_COMMIT: usize = 1024;

/// Entries with their log ids, encoded for the database.
type EncodedEntries = Vec<(LogId<NodeId>, Vec<u8>)>;

/// One write for the writer thread, in Raft's order.
enum WriteOp {
    /// Entries to make durable, then the callback to fire.
    Append {
        entries: EncodedEntries,
        callback: LogFlushed<TypeConfig>,
    },
    /// Any other write, whose caller waits for it.
    Other {
        change: Change,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A write other than an append.
#[derive(Debug)]
enum Change {
    /// Stores the (encoded) vote.
    Vote(Vec<u8>),
    /// Deletes entries from this index on.
    Truncate(u64),
    /// Deletes entries up to and including this index, and records the (encoded) log id as the
    /// last purged.
    Purge(u64, Vec<u8>),
}

/// How many recent entries stay in memory after they are flushed, so replication reads them
/// without a database read.
const RECENT_CAPACITY: usize = 4096;

/// The most recent entries, contiguous by index: every entry not yet flushed (what reads see
/// before the database does), and up to [`RECENT_CAPACITY`] flushed ones before them.
#[derive(Debug, Default)]
struct RecentEntries {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// The log ids of the entries appended but not yet flushed.
    unflushed: BTreeMap<u64, LogId<NodeId>>,
}

impl RecentEntries {
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) {
        for entry in entries {
            self.unflushed.insert(entry.log_id.index, entry.log_id);
            self.entries.insert(entry.log_id.index, entry);
        }
    }

    /// Marks `flushed` durable, then forgets the oldest flushed entries beyond the capacity.
    fn flushed(&mut self, flushed: impl Iterator<Item = LogId<NodeId>>) {
        for log_id in flushed {
            // Only if no truncation replaced it meanwhile.
            if self.unflushed.get(&log_id.index) == Some(&log_id) {
                self.unflushed.remove(&log_id.index);
            }
        }
        while self.entries.len() > RECENT_CAPACITY {
            match self.entries.first_key_value() {
                Some((index, _)) if !self.unflushed.contains_key(index) => {
                    let index = *index;
                    self.entries.remove(&index);
                }
                _ => break,
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|index, _| keep(*index));
        self.unflushed.retain(|index, _| keep(*index));
    }

    /// Returns the entries in `bounds` if this cache holds all of them.
    fn covering(&self, bounds: (Bound<u64>, Bound<u64>)) -> Option<Vec<Entry<TypeConfig>>> {
        let (first, _) = self.entries.first_key_value()?;
        let start = match bounds.0 {
            Bound::Included(start) => start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Contiguous from `first` to the log's end: nothing in range lies elsewhere.
        (start >= *first).then(|| {
            self.entries
                .range(bounds)
                .map(|(_, entry)| entry.clone())
                .collect()
        })
    }
}

/// The recent entries, shared by the store, its readers and the writer thread.
type Recent = Arc<Mutex<RecentEntries>>;

/// The latest committed log id, written along with the next transaction instead of costing one
/// of its own on every commit.
type PendingCommitted = Arc<Mutex<Option<LogId<NodeId>>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Raft log and vote. Clones share the writer thread.
#[derive(Debug, Clone)]
pub struct LogStore {
    reader: LogReader,
    writes: mpsc::Sender<WriteOp>,
    committed: PendingCommitted,
}

impl Debug for WriteOp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append { entries, .. } => write!(formatter, "Append({} entries)", entries.len()),
            Self::Other { change, .. } => write!(formatter, "{change:?}"),
        }
    }
}

/// Reads of the log: the recent entries, else the database overlaid with them.
#[derive(Debug, Clone)]
pub struct LogReader {
    db: Arc<Db>,
    recent: Recent,
}

impl LogStore {
    /// Returns the log store of `db` and starts its writer thread, which ends when the last
    /// clone is dropped.
    pub(crate) fn new(db: Arc<Db>) -> Result<Self, StoreError> {
        let (writes, queue) = mpsc::channel(QUEUE_DEPTH);
        let recent = Recent::default();
        let committed = PendingCommitted::default();
        let writer = Writer {
            db: db.clone(),
            recent: recent.clone(),
            committed: committed.clone(),
        };
        std::thread::Builder::new()
            .name("ferry-meta-log".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(StoreError::Thread)?;
        Ok(Self {
            reader: LogReader { db, recent },
            writes,
            committed,
        })
    }

    /// Queues `change` and waits until the writer thread reports it durable.
    async fn write_and_wait(&self, change: Change) -> Result<(), StoreError> {
        let (done, finished) = oneshot::channel();
        self.writes
            .send(WriteOp::Other { change, done })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        finished.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl LogReader {
    async fn read_meta<T>(
        &self,
        key: &'static str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let db = self.db.clone();
        blocking(move || {
            get_meta(&db, key)?
                .map(|bytes| codec::decode(what, &bytes).map_err(StoreError::from))
                .transpose()
        })
        .await
    }
}

fn get_meta(db: &Database, key: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(redb_error)?;
    let table = txn.open_table(LOG_META).map_err(redb_error)?;
    Ok(table
        .get(key)
        .map_err(redb_error)?
        .map(|value| value.value().to_vec()))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        // The recent entries first: one flushed and forgotten meanwhile is then found in the
        // database.
        let unflushed: Vec<Entry<TypeConfig>> = {
            let recent = lock(&self.recent);
            if let Some(entries) = recent.covering(bounds) {
                return Ok(entries);
            }
            recent
                .entries
                .range(bounds)
                .map(|(_, entry)| entry.clone())
                .collect()
        };
        let db = self.db.clone();
        let mut entries = blocking(move || {
            let txn = db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(LOG).map_err(redb_error)?;
            let mut entries = BTreeMap::new();
            for item in table.range(bounds).map_err(redb_error)? {
                let (index, value) = item.map_err(redb_error)?;
                let entry: Entry<TypeConfig> = codec::decode("log entry", value.value())?;
                entries.insert(index.value(), entry);
            }
            Ok(entries)
        })
        .await
        .map_err(|error| StorageIOError::read_logs(AnyError::new(&error)))?;
        for entry in unflushed {
            entries.insert(entry.log_id.index, entry);
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let read = |error: StoreError| StorageIOError::read_logs(AnyError::new(&error));
        let last_unflushed = lock(&self.reader.recent)
            .entries
            .last_key_value()
            .map(|(_, entry)| entry.log_id);
        let db = self.reader.db.clone();
        let (last_purged_log_id, last_stored) = blocking(move || {
            let last_purged = get_meta(&db, LAST_PURGED)?
                .map(|bytes| codec::decode::<LogId<NodeId>>("log id", &bytes))
                .transpose()?;
            let txn = db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(LOG).map_err(redb_error)?;
            let last_stored = match table.last().map_err(redb_error)? {
                Some((_, value)) => {
                    Some(codec::decode::<Entry<TypeConfig>>("log entry", value.value())?.log_id)
                }
                None => None,
            };
            Ok((last_purged, last_stored))
        })
        .await
        .map_err(read)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_unflushed.or(last_stored).or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let write = |error: StoreError| StorageIOError::write_vote(AnyError::new(&error));
        let bytes = codec::encode("vote", vote).map_err(|error| write(error.into()))?;
        self.write_and_wait(Change::Vote(bytes))
            .await
            .map_err(|error| write(error).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.reader
            .read_meta(VOTE, "vote")
            .await
            .map_err(|error| StorageIOError::read_vote(AnyError::new(&error)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // No write of its own: the committed id is a hint for re-applying entries at start,
        // written with the next transaction (openraft only needs it no newer on disk than what
        // really committed).
        if committed.is_some() {
            *lock(&self.committed) = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let pending = *lock(&self.committed);
        if pending.is_some() {
            return Ok(pending);
        }
        self.reader
            .read_meta(COMMITTED, "log id")
            .await
            .map_err(|error| StorageIOError::read(AnyError::new(&error)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |error: StoreError| StorageIOError::write_logs(AnyError::new(&error));
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|entry| Ok((entry.log_id, codec::encode("log entry", entry)?)))
            .collect::<Result<Vec<_>, CodecError>>()
            .map_err(|error| write(error.into()))?;
        lock(&self.reader.recent).append(entries);
        self.writes
            .send(WriteOp::Append {
                entries: encoded,
                callback,
            })
            .await
            .map_err(|_| write(StoreError::WriterStopped))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        lock(&self.reader.recent).retain(|index| index < log_id.index);
        self.write_and_wait(Change::Truncate(log_id.index))
            .await
            .map_err(|error| StorageIOError::write_logs(AnyError::new(&error)).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let write = |error: StoreError| StorageIOError::write_logs(AnyError::new(&error));
        let bytes = codec::encode("log id", &log_id).map_err(|error| write(error.into()))?;
        lock(&self.reader.recent).retain(|index| index > log_id.index);
        self.write_and_wait(Change::Purge(log_id.index, bytes))
            .await
            .map_err(|error| write(error).into())
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Db>,
    recent: Recent,
    committed: PendingCommitted,
}

impl Writer {
    /// Serves the queue until every [`LogStore`] is dropped.
    fn run(self, mut queue: mpsc::Receiver<WriteOp>) {
        while let Some(first) = queue.blocking_recv() {
            let mut appends = Vec::new();
            let mut next = Some(first);
            let mut other = None;
            // Gather the appends queued behind this one into one transaction.
            while let Some(op) = next.take() {
                match op {
                    WriteOp::Append { entries, callback } => {
                        appends.push((entries, callback));
                        if appends.len() < MAX_APPENDS_PER_COMMIT {
                            next = queue.try_recv().ok();
                        }
                    }
                    WriteOp::Other { change, done } => other = Some((change, done)),
                }
            }
            if !appends.is_empty() {
                self.flush_appends(appends);
            }
            if let Some((change, done)) = other {
                let _ = done.send(self.write_change(&change));
            }
        }
    }

    fn flush_appends(&self, appends: Vec<(EncodedEntries, LogFlushed<TypeConfig>)>) {
        let started = std::time::Instant::now();
        let result = self.transaction(|txn| {
            let mut table = txn.open_table(LOG).map_err(redb_error)?;
            for (entries, _) in &appends {
                for (log_id, bytes) in entries {
                    table
                        .insert(log_id.index, bytes.as_slice())
                        .map_err(redb_error)?;
                }
            }
            Ok(())
        });
        tracing::trace!(
            appends = appends.len(),
            entries = appends
                .iter()
                .map(|(entries, _)| entries.len())
                .sum::<usize>(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "log appends flushed"
        );
        match result {
            Ok(()) => {
                lock(&self.recent).flushed(
                    appends
                        .iter()
                        .flat_map(|(entries, _)| entries.iter().map(|(log_id, _)| *log_id)),
                );
                for (_, callback) in appends {
                    callback.log_io_completed(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, "log append failed");
                for (_, callback) in appends {
                    callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                }
            }
        }
    }

    fn write_change(&self, change: &Change) -> Result<(), StoreError> {
        self.transaction(|txn| {
            match change {
                Change::Vote(bytes) => {
                    txn.open_table(LOG_META)
                        .map_err(redb_error)?
                        .insert(VOTE, bytes.as_slice())
                        .map_err(redb_error)?;
                }
                Change::Truncate(from) => {
                    txn.open_table(LOG)
                        .map_err(redb_error)?
                        .retain_in(*from.., |_, _| false)
                        .map_err(redb_error)?;
                }
                Change::Purge(upto, bytes) => {
                    txn.open_table(LOG_META)
                        .map_err(redb_error)?
                        .insert(LAST_PURGED, bytes.as_slice())
                        .map_err(redb_error)?;
                    txn.open_table(LOG)
                        .map_err(redb_error)?
                        .retain_in(..=*upto, |_, _| false)
                        .map_err(redb_error)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `work` in a write transaction that also stores the pending committed log id, and
    /// commits it durably (`Durability::Immediate`, the default: commit returns after fsync).
    fn transaction(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let committed = *lock(&self.committed);
        let txn = self.db.begin_write().map_err(redb_error)?;
        work(&txn)?;
        if let Some(committed) = committed {
            let bytes = codec::encode("log id", &committed)?;
            txn.open_table(LOG_META)
                .map_err(redb_error)?
                .insert(COMMITTED, bytes.as_slice())
                .map_err(redb_error)?;
        }
        txn.commit().map_err(redb_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|entry| entry.log_id.index).collect()
    }

    #[test]
    fn recent_entries_forget_only_flushed_ones_and_cover_only_what_they_hold() {
        let mut recent = RecentEntries::default();
        let count = RECENT_CAPACITY as u64 + 10;
        recent.append((1..=count).map(entry).collect());
        // Nothing is flushed: nothing may be forgotten.
        recent.flushed(std::iter::empty());
        assert_eq!(recent.entries.len(), count as usize);
        recent.flushed((1..=5).map(|index| entry(index).log_id));
        assert_eq!(recent.entries.len(), count as usize - 5);
        assert_eq!(
            recent.entries.first_key_value().map(|(index, _)| *index),
            Some(6)
        );
        // A range starting before the first held entry must go to the database.
        assert!(
            recent
                .covering((Bound::Included(5), Bound::Excluded(8)))
                .is_none()
        );
        let covered = recent
            .covering((Bound::Included(6), Bound::Excluded(9)))
            .expect("held");
        assert_eq!(indexes(&covered), [6, 7, 8]);
        // A truncated entry re-appended with another log id stays unflushed when the old one
        // is reported flushed.
        recent.retain(|index| index < 10);
        let mut replacement = entry(10);
        replacement.log_id = LogId::new(CommittedLeaderId::new(2, 2), 10);
        recent.append(vec![replacement]);
        recent.flushed(std::iter::once(entry(10).log_id));
        assert!(recent.unflushed.contains_key(&10));
    }
}
