//! `SinkInstance`: one sink connector instance, driven under its processing guarantee
//! (../shared/DESIGN.md §6).
//!
//! - **effectively-once**: input is read with a Failover subscription; a checkpoint holds the
//!   last written message id per partition and the sink's own position. It is committed only
//!   after [`Sink::flush`] made the writes durable, and the input is acknowledged only after
//!   the commit; the first is committed before anything is written, so that there is always
//!   a position to restore the output to. On replay, messages at or below a partition's checkpointed id are skipped; an
//!   idempotent sink restores its output to the checkpointed position first, a transactional
//!   one returns the input position it stored itself, which wins.
//! - **at-least-once**: the same order (write, flush, checkpoint, acknowledge); the sink may
//!   rewrite what followed the checkpoint (duplicates possible for a sink that is neither
//!   transactional nor idempotent).
//! - **at-most-once**: each message is acknowledged before it is written.
//!
//! A record the sink rejects (not JSON, wrong shape, a constraint violation) goes to the
//! connector's error policy ([`dead_letter`](super::dead_letter)): `fail` stops the instance
//! naming the message; `skip` and `dead-letter` count it as handled, so its input is
//! acknowledged after the checkpoint like a written record's; a dead letter's receipt is awaited
//! before the flush and the checkpoint that cover it.
//!
//! A commit rejected for a stale epoch stops the instance at once: a newer owner exists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{debug, info};

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use super::dead_letter::{
    DeadLetterConfig, DeadLetterError, DeadLetters, ErrorPolicy, Verdict, judge,
};
use super::shell::{Driver, Instance, draining};
use super::source::{CheckpointPolicy, DrainFlag, SharedStatus};
use super::{Guarantee, InstanceState, update};
use crate::api::{ConnectorError, InputMessageId, Position, Record, Sink, SinkRecord, SinkResume};
use crate::pulsar::sink_consumer::{
    ConsumerError, InputMessage, SinkConsumer, SinkConsumerOptions, SinkSubscription, StartPosition,
};
use crate::pulsar::{PulsarConnectError, PulsarSettings};

/// Everything a sink instance needs besides its connector and checkpoint store.
#[derive(Debug, Clone)]
pub struct SinkInstanceConfig {
    /// `tenant/namespace/name` of the connector.
    pub connector: String,
    /// Instance index within the connector.
    pub index: u32,
    /// The assignment's epoch; every commit carries it.
    pub epoch: u64,
    /// Input topics.
    pub inputs: Vec<String>,
    /// The subscription, shared by the connector's instances (Failover: one reader per
    /// partition).
    pub subscription: String,
    /// Processing guarantee.
    pub guarantee: Guarantee,
    /// When to flush and checkpoint.
    pub checkpoints: CheckpointPolicy,
    /// The Pulsar cluster.
    pub pulsar: PulsarSettings,
    /// Most records handed to the sink per write.
    pub write_batch: usize,
    /// Where a new subscription starts.
    pub start: StartPosition,
    /// Messages the broker may push ahead of processing (Pulsar's `receiverQueueSize`).
    pub receiver_queue_size: u32,
    /// What happens to a record the sink rejects.
    pub error_policy: ErrorPolicy,
    /// Asked before every write, flush, commit and acknowledgement: false stops the instance
    /// at once.
    pub fence: Option<super::Fence>,
    /// Tells apart connectors that had the same name (the log index that created this one);
    /// it keys the position a transactional sink stores, with the name and index.
    pub incarnation: u64,
}

/// Why a sink instance stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkInstanceError {
    /// The connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Reading the input failed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The Pulsar client could not connect.
    #[error("pulsar: {0}")]
    Connect(String),
    /// The checkpoint store failed or fenced this instance off.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Sending a dead letter failed, or the sink's report of rejected records was wrong.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// This owner lost its lease: it stops without another write, commit or ack.
    #[error("fenced: this node lost its lease, so the instance stops")]
    Fenced,
}

impl From<Verdict> for SinkInstanceError {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Failed(error) => Self::Connector(error),
            Verdict::Inconsistent(error) => Self::DeadLetter(error),
        }
    }
}

fn check_fence(config: &SinkInstanceConfig) -> Result<(), SinkInstanceError> {
    if super::Fence::allows(config.fence.as_ref()) {
        Ok(())
    } else {
        Err(SinkInstanceError::Fenced)
    }
}

impl From<PulsarConnectError> for SinkInstanceError {
    fn from(error: PulsarConnectError) -> Self {
        Self::Connect(error.to_string())
    }
}

/// The last written message id of each input partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputPosition(pub BTreeMap<String, InputMessageId>);

const FORMAT_VERSION: u8 = 1;

impl InputPosition {
    /// Encodes the position (what a transactional sink stores and returns as is).
    pub fn encode(&self) -> Position {
        let mut bytes = vec![FORMAT_VERSION];
        put_len(&mut bytes, self.0.len());
        for (topic, id) in &self.0 {
            put_bytes(&mut bytes, topic.as_bytes());
            bytes.extend_from_slice(&id.ledger_id.to_be_bytes());
            bytes.extend_from_slice(&id.entry_id.to_be_bytes());
            bytes.extend_from_slice(&id.batch_index.to_be_bytes());
        }
        bytes
    }

    /// Decodes what [`InputPosition::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConnectorError> {
        let mut reader = Reader::new(bytes, "input position")?;
        let count = reader.len()?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let topic = String::from_utf8(reader.bytes()?.to_vec())
                .map_err(|_| reader.error("a topic is not UTF-8"))?;
            let id = InputMessageId {
                ledger_id: u64::from_be_bytes(reader.array()?),
                entry_id: u64::from_be_bytes(reader.array()?),
                batch_index: i32::from_be_bytes(reader.array()?),
            };
            map.insert(topic, id);
        }
        reader.finish()?;
        Ok(Self(map))
    }

    /// Whether `message` was already covered (at or below its partition's id).
    fn covers(&self, topic: &str, id: InputMessageId) -> bool {
        self.0.get(topic).is_some_and(|last| id <= *last)
    }
}

/// A sink instance's checkpoint: the input position and the sink's own position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkCheckpoint {
    /// Last written id per input partition.
    pub input: InputPosition,
    /// What the sink's flush returned.
    pub sink: Position,
}

impl SinkCheckpoint {
    /// Encodes the checkpoint for the store.
    pub fn encode(&self) -> Position {
        let mut bytes = vec![FORMAT_VERSION];
        put_bytes(&mut bytes, &self.input.encode());
        put_bytes(&mut bytes, &self.sink);
        bytes
    }

    /// Decodes what [`SinkCheckpoint::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConnectorError> {
        let mut reader = Reader::new(bytes, "sink checkpoint")?;
        let input = InputPosition::decode(reader.bytes()?)?;
        let sink = reader.bytes()?.to_vec();
        reader.finish()?;
        Ok(Self { input, sink })
    }
}

fn put_len(bytes: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    bytes.extend_from_slice(&len.to_be_bytes());
}

fn put_bytes(bytes: &mut Vec<u8>, value: &[u8]) {
    put_len(bytes, value.len());
    bytes.extend_from_slice(value);
}

/// Reads the fields of an encoded position, failing with a clear error when it is damaged.
struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Self, ConnectorError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, rest)) => Ok(Self { rest, what }),
            Some((version, _)) => Err(ConnectorError::InvalidPosition(format!(
                "{what}: unknown format version {version}"
            ))),
            None => Err(ConnectorError::InvalidPosition(format!("{what}: empty"))),
        }
    }

    fn error(&self, reason: &str) -> ConnectorError {
        ConnectorError::InvalidPosition(format!("{}: {reason}", self.what))
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], ConnectorError> {
        if self.rest.len() < count {
            return Err(self.error("truncated"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ConnectorError> {
        let taken = self.take(N)?;
        taken.try_into().map_err(|_| self.error("truncated"))
    }

    fn len(&mut self) -> Result<usize, ConnectorError> {
        Ok(u32::from_be_bytes(self.array()?) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ConnectorError> {
        let len = self.len()?;
        self.take(len)
    }

    fn finish(self) -> Result<(), ConnectorError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.error("trailing bytes"))
        }
    }
}

/// The actor that owns one sink instance.
pub type SinkInstance = Instance<SinkDriver>;

/// A sink instance's loop: its connector, config and checkpoint store.
pub struct SinkDriver {
    config: SinkInstanceConfig,
    sink: Box<dyn Sink>,
    store: Arc<dyn CheckpointStore>,
}

impl SinkInstance {
    /// Returns an instance; it starts working when the actor starts.
    pub fn new(
        config: SinkInstanceConfig,
        sink: Box<dyn Sink>,
        store: Arc<dyn CheckpointStore>,
    ) -> Self {
        Instance::with_driver(SinkDriver {
            config,
            sink,
            store,
        })
    }
}

impl std::fmt::Debug for SinkDriver {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SinkDriver")
            .field("connector", &self.config.connector)
            .field("index", &self.config.index)
            .finish_non_exhaustive()
    }
}

impl Driver for SinkDriver {
    const KIND: &'static str = "sink";

    fn identity(&self) -> (&str, u32, u64) {
        (&self.config.connector, self.config.index, self.config.epoch)
    }

    fn run(
        self,
        status: SharedStatus,
        drain: DrainFlag,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            drive(self.config, self.sink, self.store, status, drain)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn ended(_drained: bool) -> InstanceState {
        // A sink's input never ends: it ends only drained.
        InstanceState::Stopped
    }
}

/// What was written since the last checkpoint.
#[derive(Debug, Default)]
struct Uncommitted {
    /// Records written.
    written: u64,
    /// Replayed records skipped.
    skipped: u64,
    /// Rejected records the error policy dropped.
    rejected_skipped: u64,
    /// Rejected records sent to the dead-letter topic.
    dead_lettered: u64,
    /// The newest message of each partition to acknowledge after the commit.
    to_ack: BTreeMap<String, InputMessage>,
}

impl Uncommitted {
    /// Records done with, once the checkpoint commits.
    fn handled(&self) -> u64 {
        self.written + self.skipped + self.rejected_skipped + self.dead_lettered
    }
}

/// Runs the instance until it is drained (a sink's input never ends) or something fails.
async fn drive(
    config: SinkInstanceConfig,
    mut sink: Box<dyn Sink>,
    store: Arc<dyn CheckpointStore>,
    status: SharedStatus,
    drain: DrainFlag,
) -> Result<(), SinkInstanceError> {
    let stored = store.load().await?;
    let mut committed = stored
        .as_ref()
        .map(|checkpoint| checkpoint.position.clone());
    let resumed = committed
        .as_deref()
        .map(SinkCheckpoint::decode)
        .transpose()?;
    let resume = SinkResume {
        instance: match config.incarnation {
            0 => format!("{}#{}", config.connector, config.index),
            incarnation => format!("{}#{}@{incarnation}", config.connector, config.index),
        },
        input: resumed.as_ref().map(|checkpoint| checkpoint.input.encode()),
        sink: resumed.as_ref().map(|checkpoint| checkpoint.sink.clone()),
        epoch: config.epoch,
    };
    let mut input = resumed
        .map(|checkpoint| checkpoint.input)
        .unwrap_or_default();
    if let Some(external) = sink.open(&resume).await? {
        // A transactional sink's own record of what it wrote wins over Ferry's checkpoint.
        input = InputPosition::decode(&external)?;
    }
    if config.guarantee == Guarantee::EffectivelyOnce && committed.is_none() {
        // Where the output starts is checkpointed before the first write, so that a crash
        // before the first checkpoint is undone like any other (an idempotent sink restores
        // its output to this position) instead of the replay writing it all again.
        check_fence(&config)?;
        let checkpoint = SinkCheckpoint {
            input: input.clone(),
            sink: sink.flush(&input.encode()).await?,
        }
        .encode();
        store
            .commit(
                config.epoch,
                None,
                Checkpoint {
                    position: checkpoint.clone(),
                    sequence_id: None,
                },
            )
            .await?;
        committed = Some(checkpoint);
    }
    let client = config.pulsar.connect().await?;
    let mut options = SinkConsumerOptions::new(config.inputs.clone(), config.subscription.clone());
    options.subscription_type = SinkSubscription::Failover;
    options.consumer_name = format!("{}-{}", config.subscription, config.index);
    options.start = config.start;
    options.receive_queue_size = config.receiver_queue_size.max(1);
    let mut consumer = SinkConsumer::open(&client, options).await?;
    let mut dead_letters = config.error_policy.dead_letter_topic().map(|topic| {
        DeadLetters::new(DeadLetterConfig {
            topic: topic.to_owned(),
            connector: config.connector.clone(),
            incarnation: config.incarnation,
            pulsar: config.pulsar.clone(),
            fence: config.fence.clone(),
        })
    });
    info!(
        connector = %config.connector,
        instance = config.index,
        epoch = config.epoch,
        guarantee = ?config.guarantee,
        error_policy = %config.error_policy,
        partitions = input.0.len(),
        "sink instance running"
    );
    update(&status, |status| status.state = InstanceState::Running);

    let mut uncommitted = Uncommitted::default();
    let mut last_commit = tokio::time::Instant::now();
    let mut batch: Vec<SinkRecord> = Vec::new();
    loop {
        // A drain takes no more input: it writes, flushes and commits what it holds, then
        // stops.
        let draining = draining(&drain);
        let due = last_commit + config.checkpoints.every;
        let received = if draining {
            None
        } else {
            tokio::time::timeout_at(due, consumer.next()).await.ok()
        };
        if let Some(message) = received {
            let message = message?;
            update(&status, |status| status.records_read += 1);
            if config.guarantee != Guarantee::AtMostOnce && input.covers(&message.topic, message.id)
            {
                // Written before the checkpoint this owner resumed from: a replay.
                update(&status, |status| status.duplicates_dropped += 1);
                uncommitted.skipped += 1;
                if message.ends_entry {
                    uncommitted.to_ack.insert(message.topic.clone(), message);
                }
            } else {
                if config.guarantee == Guarantee::AtMostOnce {
                    consumer.ack(&message).await?;
                }
                input.0.insert(message.topic.clone(), message.id);
                batch.push(to_sink_record(&message));
                // Acknowledging a message acknowledges its whole entry: only a message
                // that ends its entry is acknowledged, and the rest of a batch cut by a
                // crash is delivered again (and skipped up to the checkpoint).
                if config.guarantee != Guarantee::AtMostOnce && message.ends_entry {
                    uncommitted.to_ack.insert(message.topic.clone(), message);
                }
            }
            if batch.len() < config.write_batch.max(1) {
                continue;
            }
        }
        check_fence(&config)?;
        if !batch.is_empty() {
            let count = batch.len() as u64;
            let records = std::mem::take(&mut batch);
            let sources: Vec<(String, InputMessageId)> = records
                .iter()
                .map(|record| (record.topic.clone(), record.message_id))
                .collect();
            // A dead letter carries the original message: keep the batch when one may be due.
            let originals = dead_letters.is_some().then(|| records.clone());
            let rejected = sink.write(records).await?;
            // The error policy: `fail` stops here, naming the message.
            let judged = judge(&config.error_policy, &sources, rejected)?;
            if let (Some(dead_letters), Some(originals)) = (dead_letters.as_mut(), &originals) {
                for (index, reason) in &judged.dead_letters {
                    let record = originals.get(*index).ok_or(DeadLetterError::NoSuchRecord {
                        index: *index,
                        len: originals.len(),
                    })?;
                    debug!(
                        connector = %config.connector,
                        instance = config.index,
                        topic = %record.topic,
                        message_id = %record.message_id,
                        reason = %reason,
                        "record rejected: dead-lettering it"
                    );
                    check_fence(&config)?;
                    dead_letters.send(record, reason).await?;
                }
            }
            debug_assert_eq!(
                judged.written + judged.skipped + judged.dead_letters.len() as u64,
                count
            );
            uncommitted.written += judged.written;
            uncommitted.rejected_skipped += judged.skipped;
            uncommitted.dead_lettered += judged.dead_letters.len() as u64;
        }
        let due = draining
            || uncommitted.handled() >= config.checkpoints.every_records
            || last_commit.elapsed() >= config.checkpoints.every;
        if due && (uncommitted.handled() > 0 || !uncommitted.to_ack.is_empty()) {
            check_fence(&config)?;
            // The broker holds every dead letter before the flush (a transactional sink's
            // commit of its position) and the checkpoint cover their records.
            if let Some(dead_letters) = dead_letters.as_mut() {
                dead_letters.confirm().await?;
            }
            check_fence(&config)?;
            let sink_position = sink.flush(&input.encode()).await?;
            let checkpoint = SinkCheckpoint {
                input: input.clone(),
                sink: sink_position,
            }
            .encode();
            store
                .commit(
                    config.epoch,
                    committed.clone(),
                    Checkpoint {
                        position: checkpoint.clone(),
                        sequence_id: None,
                    },
                )
                .await?;
            committed = Some(checkpoint);
            check_fence(&config)?;
            for message in uncommitted.to_ack.values() {
                consumer.ack_cumulative(message).await?;
            }
            let handled = uncommitted.handled();
            let (rejected_skipped, dead_lettered) =
                (uncommitted.rejected_skipped, uncommitted.dead_lettered);
            uncommitted = Uncommitted::default();
            update(&status, |status| {
                status.records_confirmed += handled;
                status.records_skipped += rejected_skipped;
                status.records_dead_lettered += dead_lettered;
                status.checkpoints_committed += 1;
                status.last_progress = Some(SystemTime::now());
            });
        }
        if draining {
            if let Some(dead_letters) = dead_letters.take() {
                dead_letters.close().await?;
            }
            consumer.close().await?;
            return Ok(());
        }
        if due {
            last_commit = tokio::time::Instant::now();
        }
    }
}

fn to_sink_record(message: &InputMessage) -> SinkRecord {
    SinkRecord {
        record: Record {
            key: message.key.clone(),
            value: message.payload.clone(),
            properties: message.properties.clone(),
            event_time_ms: message.event_time_ms,
            schema_name: None,
        },
        topic: message.topic.clone(),
        message_id: message.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger_id: u64, entry_id: u64, batch_index: i32) -> InputMessageId {
        InputMessageId {
            ledger_id,
            entry_id,
            batch_index,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_damage_is_reported() {
        let checkpoint = SinkCheckpoint {
            input: InputPosition(BTreeMap::from([
                ("persistent://public/default/a".to_owned(), id(7, 3, -1)),
                (
                    "persistent://public/default/b-partition-1".to_owned(),
                    id(9, 0, 4),
                ),
            ])),
            sink: vec![0, 0, 0, 42],
        };
        let bytes = checkpoint.encode();
        assert_eq!(SinkCheckpoint::decode(&bytes).expect("decode"), checkpoint);
        let truncated = SinkCheckpoint::decode(&bytes[..bytes.len() - 1]).expect_err("truncated");
        assert!(truncated.to_string().contains("truncated"), "{truncated}");
        let mut versioned = bytes.clone();
        versioned[0] = 9;
        let error = SinkCheckpoint::decode(&versioned).expect_err("version");
        assert!(error.to_string().contains("version 9"), "{error}");
        let mut trailing = bytes;
        trailing.push(0);
        assert!(SinkCheckpoint::decode(&trailing).is_err());
    }

    #[test]
    fn an_input_position_covers_ids_at_or_below_its_partitions() {
        let position = InputPosition(BTreeMap::from([("t".to_owned(), id(5, 10, -1))]));
        assert!(position.covers("t", id(5, 10, -1)));
        assert!(position.covers("t", id(4, 99, -1)));
        assert!(!position.covers("t", id(5, 11, -1)));
        assert!(!position.covers("u", id(1, 0, -1)));
    }
}
