//! An instance's checkpoints in the Raft metadata store: loads are linearizable reads, commits
//! are `CommitCheckpoint` commands carrying the owner's epoch (the state machine rejects a
//! stale one, and a commit that does not start where the stored checkpoint ends).

use std::time::SystemTime;

use ferry_actors::api::Position;
use ferry_actors::instance::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use futures::future::BoxFuture;

use crate::meta::Meta;
use crate::meta::state::{Command, InstanceKey, Outcome, Rejection};

/// The checkpoints of one instance, kept by the metadata store.
#[derive(Debug, Clone)]
pub struct RaftCheckpointStore {
    meta: Meta,
    key: InstanceKey,
}

impl RaftCheckpointStore {
    /// Returns the store of instance `key`.
    pub fn new(meta: Meta, key: InstanceKey) -> Self {
        Self { meta, key }
    }
}

impl CheckpointStore for RaftCheckpointStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        Box::pin(async move {
            let stored = self
                .meta
                .read(|state| state.checkpoints.get(&self.key).cloned())
                .await
                .map_err(|error| CheckpointError::Unavailable(error.to_string()))?;
            Ok(stored.map(|checkpoint| Checkpoint {
                position: checkpoint.position,
                sequence_id: checkpoint.sequence_id,
            }))
        })
    }

    fn commit(
        &self,
        epoch: u64,
        from: Option<Position>,
        to: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            let time_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                });
            let stored_from = from.clone();
            let command = Command::CommitCheckpoint {
                key: self.key.clone(),
                epoch,
                from,
                to: to.position,
                sequence_id: to.sequence_id,
                time_ms,
            };
            let reply = self
                .meta
                .write(command)
                .await
                .map_err(|error| CheckpointError::Unavailable(error.to_string()))?;
            match reply {
                Ok(Outcome::CheckpointCommitted { .. } | Outcome::Done) => Ok(()),
                Ok(other) => Err(CheckpointError::Unavailable(format!(
                    "unexpected answer to a checkpoint commit: {other:?}"
                ))),
                Err(Rejection::StaleEpoch { current, .. }) => Err(CheckpointError::StaleEpoch {
                    offered: epoch,
                    current,
                }),
                Err(Rejection::CheckpointGap { .. }) => {
                    let stored = self
                        .meta
                        .read(|state| {
                            state
                                .checkpoints
                                .get(&self.key)
                                .map(|checkpoint| checkpoint.position.clone())
                        })
                        .await
                        .ok()
                        .flatten();
                    Err(CheckpointError::DoesNotChain {
                        from: stored_from,
                        stored,
                    })
                }
                // The instance or its connector is gone (deleted, or its parallelism shrank):
                // nobody may write for it any more.
                Err(_) => Err(CheckpointError::StaleEpoch {
                    offered: epoch,
                    current: None,
                }),
            }
        })
    }
}
