//! Instance actors: one per running connector instance. They apply the processing guarantee,
//! batch checkpoints through a [`checkpoint::CheckpointStore`] carrying the owner's epoch, and
//! publish their observable state.
//!
//! - [`checkpoint`]: the store interface and an in-memory implementation.
//! - [`source`]: the source instance actor, [`source::SourceInstance`].
//! - [`position`]: a whole checkpoint as text (status, `offsets get`, `offsets reset`).
//! - [`sink`]: the sink instance actor, [`sink::SinkInstance`].
//! - [`shell`]: the one actor shell both instance kinds run in.
//! - [`dead_letter`]: a sink's error policy applied to rejected records, and the dead-letter
//!   producers.

pub mod checkpoint;
pub mod dead_letter;
pub mod position;
pub mod shell;
pub mod sink;
pub mod source;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Answers whether this owner may still act (its node holds the lease it started under). An
/// instance asks before it reads, writes, commits or acknowledges, and its producer session
/// before every SEND; false stops the instance at once (self-fencing, ../shared/DESIGN.md §5
/// invariant 4).
#[derive(Clone)]
pub struct Fence(Arc<dyn Fn() -> bool + Send + Sync>);

impl Fence {
    /// Returns a fence that asks `holds`.
    pub fn new(holds: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(holds))
    }

    /// Whether this owner may still act.
    pub fn holds(&self) -> bool {
        (self.0)()
    }
}

impl Fence {
    /// Whether `fence`, if any, still lets this owner act.
    pub(crate) fn allows(fence: Option<&Self>) -> bool {
        fence.is_none_or(Self::holds)
    }
}

/// Shared, observable state of one instance.
pub type SharedStatus = Arc<std::sync::Mutex<InstanceStatus>>;

/// Applies `change` to `status`.
pub(crate) fn update(status: &SharedStatus, change: impl FnOnce(&mut InstanceStatus)) {
    let mut status = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    change(&mut status);
}

/// Records how an instance's driver ended: `Ok(state)` (Finished, or Stopped after a drain)
/// or the error that failed it; logs it as `kind` (`source`, `sink`).
pub(crate) fn record_end(
    status: &SharedStatus,
    kind: &str,
    connector: &str,
    index: u32,
    outcome: Result<InstanceState, String>,
) {
    match outcome {
        Ok(state) => {
            tracing::info!(connector, instance = index, ?state, "{kind} instance ended");
            update(status, |status| status.state = state);
        }
        Err(error) => {
            tracing::warn!(connector, instance = index, %error, "{kind} instance failed");
            update(status, |status| {
                status.state = InstanceState::Failed;
                status.last_error = Some(error);
            });
        }
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fence(holds: {})", self.holds())
    }
}

pub use crate::api::Guarantee;

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
    /// Records done with: for a source, confirmed by Pulsar (persisted or dropped as
    /// duplicates); for a sink, checkpointed after being written, skipped as already
    /// written, or rejected and then skipped or dead-lettered by the error policy.
    pub records_confirmed: u64,
    /// Of those, replays after failover: duplicates the broker already had (sources), or
    /// messages at or below the checkpoint skipped (sinks).
    pub duplicates_dropped: u64,
    /// Of those, records the sink rejected and the error policy `skip` dropped.
    pub records_skipped: u64,
    /// Of those, records the sink rejected and the error policy `dead-letter` sent to the
    /// dead-letter topic (counted once the checkpoint covering them committed).
    pub records_dead_lettered: u64,
    /// Checkpoints committed.
    pub checkpoints_committed: u64,
    /// The error that stopped the instance.
    pub last_error: Option<String>,
    /// When records last moved.
    pub last_progress: Option<SystemTime>,
}

impl InstanceStatus {
    /// Records read but not yet done with: input the instance holds but has not moved.
    pub fn pending(&self) -> u64 {
        self.records_read.saturating_sub(self.records_confirmed)
    }

    /// Whether the instance is running with input pending but made no progress for
    /// `stuck_after` since `now` (or since `started`, when it never made any): STUCK, not
    /// RUNNING (../shared/DESIGN.md §5, status is truthful).
    pub fn is_stuck(&self, now: SystemTime, started: SystemTime, stuck_after: Duration) -> bool {
        let since = self.last_progress.unwrap_or(started);
        self.state == InstanceState::Running
            && self.pending() > 0
            && now.duration_since(since).unwrap_or_default() >= stuck_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_means_running_with_input_pending_and_no_recent_progress() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let stuck_after = Duration::from_secs(10);
        let mut status = InstanceStatus {
            state: InstanceState::Running,
            records_read: 5,
            records_confirmed: 5,
            last_progress: Some(started),
            ..InstanceStatus::default()
        };
        let later = started + Duration::from_secs(60);
        // Nothing pending: idle, not stuck.
        assert!(!status.is_stuck(later, started, stuck_after));
        status.records_read = 7;
        assert_eq!(status.pending(), 2);
        assert!(status.is_stuck(later, started, stuck_after));
        // Progress within stuck_after: running.
        assert!(!status.is_stuck(started + Duration::from_secs(5), started, stuck_after));
        // Only a running instance can be stuck.
        status.state = InstanceState::Failed;
        assert!(!status.is_stuck(later, started, stuck_after));
        // Never any progress: measured from the start.
        status.state = InstanceState::Running;
        status.last_progress = None;
        assert!(status.is_stuck(later, started, stuck_after));
        assert!(!status.is_stuck(started + Duration::from_secs(1), started, stuck_after));
    }
}
