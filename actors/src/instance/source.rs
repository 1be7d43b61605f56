//! `SourceInstance`: one source connector instance, driven under its processing guarantee.
//!
//! - **effectively-once**: a stable producer name per instance and sequence ids that are a
//!   pure function of the source position: after checkpoint (P, S) the records read from P get
//!   S+1, S+2, … A successor replays from P with the same ids and the broker drops what it
//!   already has. Checkpoints cover only records whose receipts arrived.
//! - **at-least-once**: checkpoints after receipts as above; the producer name carries the
//!   epoch, so a replay is published again (duplicates possible).
//! - **at-most-once**: the read position is committed before the records are sent, and
//!   receipts are not waited for.
//!
//! A commit rejected for a stale epoch stops the instance at once: a newer owner exists.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tracing::info;

pub use super::SharedStatus;
use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
pub use super::shell::{Drain, DrainFlag, GetStatus, Stop};
use super::shell::{Driver, Instance, draining};
use super::{Guarantee, InstanceState, update};
use crate::api::{ConnectorError, Position, Source, SourceRead};
use crate::pulsar::{
    BatchingOptions, OutgoingMessage, ProducerSession, ProducerSessionOptions, PulsarSettings,
    Receipt, SessionError,
};

/// When checkpoints are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many confirmed records.
    pub every_records: u64,
    /// Or after this long, whichever comes first.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    /// Returns every 1,000 records or 100 ms.
    fn default() -> Self {
        Self {
            every_records: 1000,
            every: Duration::from_millis(100),
        }
    }
}

/// Everything a source instance needs besides its connector and checkpoint store.
#[derive(Debug, Clone)]
pub struct SourceInstanceConfig {
    /// `tenant/namespace/name` of the connector.
    pub connector: String,
    /// Instance index within the connector.
    pub index: u32,
    /// The assignment's epoch; every commit carries it.
    pub epoch: u64,
    /// Output topic.
    pub topic: String,
    /// Processing guarantee.
    pub guarantee: Guarantee,
    /// When to checkpoint.
    pub checkpoints: CheckpointPolicy,
    /// The Pulsar cluster.
    pub pulsar: PulsarSettings,
    /// Producer batching.
    pub batching: BatchingOptions,
    /// Most records asked of the source per read.
    pub read_batch: usize,
    /// Asked before every read, send and commit: false stops the instance at once.
    pub fence: Option<super::Fence>,
    /// Tells apart connectors that had the same name (the log index that created this one);
    /// 0 leaves it out of the producer name.
    pub incarnation: u64,
}

impl SourceInstanceConfig {
    /// The producer name: stable per instance (`ferry-{tenant}-{namespace}-{name}-{index}`,
    /// then `-c{incarnation}` when known), with the epoch appended unless effectively-once.
    pub fn producer_name(&self) -> String {
        let mut stable = format!("ferry-{}-{}", self.connector.replace('/', "-"), self.index);
        if self.incarnation != 0 {
            // A connector created again under the same name must not inherit the broker's
            // deduplication state of the old one's producer: its records would be dropped.
            stable.push_str(&format!("-c{}", self.incarnation));
        }
        match self.guarantee {
            Guarantee::EffectivelyOnce => stable,
            Guarantee::AtLeastOnce | Guarantee::AtMostOnce => format!("{stable}-e{}", self.epoch),
        }
    }
}

/// Why a source instance stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceInstanceError {
    /// The connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Pulsar failed.
    #[error(transparent)]
    Pulsar(#[from] SessionError),
    /// The checkpoint store failed or fenced this instance off.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// This owner lost its lease: it stops without another read, send or commit.
    #[error("fenced: this node lost its lease, so the instance stops")]
    Fenced,
}

/// Fails with `Fenced` when `fence` says this owner may no longer act.
fn check_fence(fence: Option<&super::Fence>) -> Result<(), SourceInstanceError> {
    if super::Fence::allows(fence) {
        Ok(())
    } else {
        Err(SourceInstanceError::Fenced)
    }
}

/// The actor that owns one source instance.
pub type SourceInstance = Instance<SourceDriver>;

/// A source instance's loop: its connector, config and checkpoint store.
pub struct SourceDriver {
    config: SourceInstanceConfig,
    source: Box<dyn Source>,
    store: Arc<dyn CheckpointStore>,
}

impl SourceInstance {
    /// Returns an instance; it starts working when the actor starts.
    pub fn new(
        config: SourceInstanceConfig,
        source: Box<dyn Source>,
        store: Arc<dyn CheckpointStore>,
    ) -> Self {
        Instance::with_driver(SourceDriver {
            config,
            source,
            store,
        })
    }
}

impl std::fmt::Debug for SourceDriver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SourceDriver")
            .field("connector", &self.config.connector)
            .field("index", &self.config.index)
            .finish_non_exhaustive()
    }
}

impl Driver for SourceDriver {
    const KIND: &'static str = "source";

    fn identity(&self) -> (&str, u32, u64) {
        (&self.config.connector, self.config.index, self.config.epoch)
    }

    fn run(
        self,
        status: SharedStatus,
        drain: DrainFlag,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            drive(self.config, self.source, self.store, status, drain)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn ended(drained: bool) -> InstanceState {
        // A drained source stopped for a hand-off; otherwise it read everything.
        if drained {
            InstanceState::Stopped
        } else {
            InstanceState::Finished
        }
    }
}

/// A sent record: its receipt, and the checkpoint it completes once confirmed.
type Sent = futures::future::BoxFuture<'static, (Result<Receipt, SessionError>, Position, u64)>;

/// Runs the instance until the source ends or something fails.
async fn drive(
    config: SourceInstanceConfig,
    mut source: Box<dyn Source>,
    store: Arc<dyn CheckpointStore>,
    status: SharedStatus,
    drain: DrainFlag,
) -> Result<(), SourceInstanceError> {
    let checkpoint = store.load().await?;
    let mut committed = checkpoint.as_ref().map(|c| c.position.clone());
    source.open(committed.as_ref()).await?;
    let session_options = ProducerSessionOptions {
        batching: config.batching,
        fence: config.fence.clone(),
        ..ProducerSessionOptions::new(&config.topic, config.producer_name())
    };
    let mut session = ProducerSession::open(config.pulsar.clone(), session_options).await?;
    let mut next_sequence = match config.guarantee {
        // A pure function of the position: the checkpoint's id, plus one per record after it.
        Guarantee::EffectivelyOnce => checkpoint.and_then(|c| c.sequence_id).unwrap_or(0) + 1,
        // Whatever follows the broker's last id for this (per-epoch) name.
        Guarantee::AtLeastOnce | Guarantee::AtMostOnce => {
            session.last_sequence_id().unwrap_or(0) + 1
        }
    };
    info!(
        connector = %config.connector,
        instance = config.index,
        epoch = config.epoch,
        guarantee = ?config.guarantee,
        next_sequence,
        "source instance running"
    );
    update(&status, |status| status.state = InstanceState::Running);

    let mut in_flight: FuturesOrdered<Sent> = FuturesOrdered::new();
    let mut confirmed: Option<(Position, u64)> = None;
    let mut confirmed_since_commit = 0_u64;
    let mut last_commit = tokio::time::Instant::now();
    let mut ended = false;
    loop {
        check_fence(config.fence.as_ref())?;
        // Take every receipt that has arrived, oldest first.
        while let Some(Some(done)) = in_flight.next().now_or_never() {
            confirm(&config, done, &mut confirmed, &status)?;
            confirmed_since_commit += 1;
        }
        let due = confirmed_since_commit >= config.checkpoints.every_records
            || last_commit.elapsed() >= config.checkpoints.every;
        if config.guarantee != Guarantee::AtMostOnce && due && confirmed.is_some() {
            commit(
                &config,
                &*store,
                &mut *source,
                &mut committed,
                confirmed.take(),
                &status,
            )
            .await?;
            confirmed_since_commit = 0;
            last_commit = tokio::time::Instant::now();
        }
        // A drain reads nothing more and ends like a finished source: receipts, a final
        // checkpoint, a clean close.
        ended |= draining(&drain);
        if ended {
            match in_flight.next().await {
                Some(done) => {
                    confirm(&config, done, &mut confirmed, &status)?;
                    confirmed_since_commit += 1;
                    continue;
                }
                None => {
                    if config.guarantee != Guarantee::AtMostOnce {
                        commit(
                            &config,
                            &*store,
                            &mut *source,
                            &mut committed,
                            confirmed.take(),
                            &status,
                        )
                        .await?;
                    }
                    session.close().await?;
                    return Ok(());
                }
            }
        }
        // Wait for input until the next checkpoint is due while sends are unconfirmed or
        // uncommitted, else up to IDLE_WAIT: an idle instance wakes about once a second.
        let wait = if in_flight.is_empty() && confirmed.is_none() {
            IDLE_WAIT
        } else {
            config.checkpoints.every
        };
        let deadline = tokio::time::Instant::now() + wait;
        match source.read(config.read_batch.max(1), deadline).await? {
            SourceRead::Records(records) => {
                update(&status, |status| {
                    status.records_read += records.len() as u64
                });
                if config.guarantee == Guarantee::AtMostOnce
                    && let Some(last) = records.last()
                {
                    // The position moves before anything is sent: a crash loses, never repeats.
                    let eager = Some((
                        last.position_after.clone(),
                        next_sequence + records.len() as u64 - 1,
                    ));
                    commit(
                        &config,
                        &*store,
                        &mut *source,
                        &mut committed,
                        eager,
                        &status,
                    )
                    .await?;
                }
                for record in records {
                    let sequence_id = next_sequence;
                    next_sequence += 1;
                    let message = OutgoingMessage {
                        sequence_id,
                        payload: record.record.value,
                        key: record.record.key,
                        properties: record.record.properties,
                        event_time_ms: record.record.event_time_ms,
                    };
                    let receipt = session.send(message).await?;
                    let position = record.position_after;
                    in_flight.push_back(Box::pin(
                        async move { (receipt.await, position, sequence_id) },
                    ));
                }
                update(&status, |status| {
                    status.last_progress = Some(SystemTime::now())
                });
            }
            // Nothing came by the deadline: take receipts and commit at the top of the loop.
            SourceRead::Idle => {}
            SourceRead::End => ended = true,
        }
    }
}

/// Records one confirmed send.
fn confirm(
    config: &SourceInstanceConfig,
    (receipt, position, sequence_id): (Result<Receipt, SessionError>, Position, u64),
    confirmed: &mut Option<(Position, u64)>,
    status: &SharedStatus,
) -> Result<(), SourceInstanceError> {
    match receipt {
        Ok(receipt) => {
            update(status, |status| {
                status.records_confirmed += 1;
                if matches!(receipt, Receipt::Duplicate { .. }) {
                    status.duplicates_dropped += 1;
                }
            });
            *confirmed = Some((position, sequence_id));
            Ok(())
        }
        // At-most-once does not wait for receipts, and a lost one is no error for it.
        Err(_) if config.guarantee == Guarantee::AtMostOnce => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The longest an idle source's read waits before the instance looks at receipts, drains
/// and fences again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Commits `target` (position, last sequence id) after `committed`, then tells the source
/// (which may acknowledge upstream now).
async fn commit(
    config: &SourceInstanceConfig,
    store: &dyn CheckpointStore,
    source: &mut dyn Source,
    committed: &mut Option<Position>,
    target: Option<(Position, u64)>,
    status: &SharedStatus,
) -> Result<(), SourceInstanceError> {
    let Some((position, sequence_id)) = target else {
        return Ok(());
    };
    check_fence(config.fence.as_ref())?;
    let checkpoint = Checkpoint {
        position: position.clone(),
        sequence_id: Some(sequence_id),
    };
    store
        .commit(config.epoch, committed.clone(), checkpoint)
        .await?;
    update(status, |status| status.checkpoints_committed += 1);
    source.committed(&position).await?;
    *committed = Some(position);
    Ok(())
}
