//! Where an instance's checkpoints live, seen from the instance: a store bound to one
//! (connector, instance) that carries the owner's epoch on every commit.
//!
//! The node implements it over the Raft metadata store; [`MemoryCheckpointStore`] keeps the
//! same rules in memory for unit tests and single-process tests.

use std::fmt;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::api::Position;

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the source resumes.
    pub position: Position,
    /// The last Pulsar sequence id covered by the position (sources).
    pub sequence_id: Option<u64>,
}

/// Why a commit or load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A newer owner holds the instance: this one must stop at once.
    #[error("stale epoch {offered}: the instance now belongs to epoch {current:?}")]
    StaleEpoch {
        /// The epoch the commit carried.
        offered: u64,
        /// The current owner's epoch.
        current: Option<u64>,
    },
    /// The commit does not start where the stored checkpoint ends.
    #[error("checkpoint does not chain: commit starts at {from:?}, stored is {stored:?}")]
    DoesNotChain {
        /// Where the commit said it starts.
        from: Option<Position>,
        /// What is stored.
        stored: Option<Position>,
    },
    /// The store cannot be reached now; retry.
    #[error("checkpoint store unavailable: {0}")]
    Unavailable(String),
}

/// One instance's checkpoints.
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// Reads the committed checkpoint (linearizable: what the last owner committed).
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>>;

    /// Replaces the checkpoint that ends at `from` with `to`, if `epoch` still owns the
    /// instance.
    fn commit(
        &self,
        epoch: u64,
        from: Option<Position>,
        to: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>>;
}

#[derive(Debug, Default)]
struct MemoryState {
    owner_epoch: Option<u64>,
    checkpoint: Option<Checkpoint>,
    commits: u64,
}

/// An in-memory [`CheckpointStore`] with the metadata store's rules (epoch fencing, chaining).
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryCheckpointStore {
    /// Makes `epoch` the instance's owner, as an assignment does.
    pub fn assign(&self, epoch: u64) {
        self.lock().owner_epoch = Some(epoch);
    }

    /// The stored checkpoint.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.lock().checkpoint.clone()
    }

    /// How many commits were accepted.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        let checkpoint = self.checkpoint();
        Box::pin(async move { Ok(checkpoint) })
    }

    fn commit(
        &self,
        epoch: u64,
        from: Option<Position>,
        to: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let outcome = {
            let mut state = self.lock();
            if state.owner_epoch != Some(epoch) {
                Err(CheckpointError::StaleEpoch {
                    offered: epoch,
                    current: state.owner_epoch,
                })
            } else if state.checkpoint.as_ref().map(|c| &c.position) != from.as_ref() {
                Err(CheckpointError::DoesNotChain {
                    from,
                    stored: state.checkpoint.as_ref().map(|c| c.position.clone()),
                })
            } else {
                state.checkpoint = Some(to);
                state.commits += 1;
                Ok(())
            }
        };
        Box::pin(async move { outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(position: u8) -> Checkpoint {
        Checkpoint {
            position: vec![position],
            sequence_id: Some(u64::from(position)),
        }
    }

    #[tokio::test]
    async fn only_the_current_epoch_commits_and_commits_chain() {
        let store = MemoryCheckpointStore::default();
        store.assign(5);
        store
            .commit(5, None, checkpoint(1))
            .await
            .expect("first commit");
        store
            .commit(5, Some(vec![1]), checkpoint(2))
            .await
            .expect("chained commit");
        assert_eq!(
            store.commit(5, Some(vec![1]), checkpoint(3)).await,
            Err(CheckpointError::DoesNotChain {
                from: Some(vec![1]),
                stored: Some(vec![2])
            })
        );
        store.assign(6);
        assert_eq!(
            store.commit(5, Some(vec![2]), checkpoint(3)).await,
            Err(CheckpointError::StaleEpoch {
                offered: 5,
                current: Some(6)
            })
        );
        assert_eq!(store.load().await.expect("load"), Some(checkpoint(2)));
        assert_eq!(store.commits(), 2);
    }
}
