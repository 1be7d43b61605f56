//! Instance actors: one per running connector instance. They apply the processing guarantee,
//! batch checkpoints through a [`checkpoint::CheckpointStore`] carrying the owner's epoch, and
//! publish their observable state.
//!
//! - [`checkpoint`]: the store interface and an in-memory implementation.
//! - [`source`]: the source instance actor, [`source::SourceInstance`].

pub mod checkpoint;
pub mod sink;
pub mod source;

use std::time::SystemTime;

/// Processing guarantees (../shared/DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Nothing repeated, loss possible.
    AtMostOnce,
    /// Nothing lost, repeats possible.
    AtLeastOnce,
    /// Every input yields exactly one output, across crashes and failover.
    EffectivelyOnce,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceState {
    /// Loading its checkpoint and connecting.
    #[default]
    Starting,
    /// Moving data.
    Running,
    /// A bounded source read everything and it was all confirmed and checkpointed.
    Finished,
    /// Stopped with an error (see `last_error`).
    Failed,
    /// Stopped on request.
    Stopped,
}

/// What an instance reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceStatus {
    /// Life-cycle state.
    pub state: InstanceState,
    /// Records read from the source.
    pub records_read: u64,
    /// Records confirmed by Pulsar (persisted or dropped as duplicates).
    pub records_confirmed: u64,
    /// Of those, duplicates the broker already had (replays after failover).
    pub duplicates_dropped: u64,
    /// Checkpoints committed.
    pub checkpoints_committed: u64,
    /// The error that stopped the instance.
    pub last_error: Option<String>,
    /// When records last moved.
    pub last_progress: Option<SystemTime>,
}
