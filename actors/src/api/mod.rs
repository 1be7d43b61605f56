//! The connector API: what a source or sink implements. The instance actors
//! ([`crate::instance`]) apply guarantees, checkpoints, retries and status around it.
//!
//! - this module: records, positions, the [`Source`] and [`Sink`] traits, [`Kind`] and
//!   [`Guarantee`];
//! - [`config`]: typed configs, [`config::Secret`], the config definition derived from them;
//! - [`registry`]: the factory traits and the registry of connector types;
//! - [`fixture`]: what a connector gives the conformance suite.
//!
//! A leaf: nothing here imports a connector.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod config;
pub mod fixture;
pub mod registry;

/// Whether a connector reads into Pulsar or writes out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// External system -> Pulsar.
    Source,
    /// Pulsar -> external system.
    Sink,
}

impl fmt::Display for Kind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Source => "source",
            Self::Sink => "sink",
        })
    }
}

/// Processing guarantees (../shared/DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Guarantee {
    /// Nothing repeated, loss possible.
    AtMostOnce,
    /// Nothing lost, repeats possible.
    AtLeastOnce,
    /// Every input yields exactly one output, across crashes and failover.
    EffectivelyOnce,
}

impl Guarantee {
    /// Every guarantee, weakest first.
    pub const ALL: [Self; 3] = [Self::AtMostOnce, Self::AtLeastOnce, Self::EffectivelyOnce];

    /// The name users write (`effectively-once`).
    pub fn name(self) -> &'static str {
        match self {
            Self::AtMostOnce => "at-most-once",
            Self::AtLeastOnce => "at-least-once",
            Self::EffectivelyOnce => "effectively-once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One piece of data moving through Ferry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Routing key.
    pub key: Option<String>,
    /// Body.
    pub value: Vec<u8>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
    /// Event time, milliseconds since the Unix epoch.
    pub event_time_ms: Option<u64>,
    /// Name of the value's schema, if the connector knows one.
    pub schema_name: Option<String>,
}

/// A source's opaque resume point; only the source that produced it interprets it.
pub type Position = Vec<u8>;

/// A record read by a source, with the position to resume from after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// The record.
    pub record: Record,
    /// Reopening the source at this position reads the records after this one.
    pub position_after: Position,
}

/// What one read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRead {
    /// Records, oldest first (never empty).
    Records(Vec<SourceRecord>),
    /// Nothing available now; the caller reads again later.
    Idle,
    /// The source is finished (a bounded source read everything).
    End,
}

/// What a source type can promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCapabilities {
    /// Reading from a position always yields the same records in the same order, so a replay
    /// after failover reproduces what was sent: the condition for effectively-once.
    pub replayable: bool,
}

/// Errors a connector reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The configuration is unusable; names the field.
    #[error("invalid config field {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A checkpointed position cannot be read back.
    #[error("invalid position: {0}")]
    InvalidPosition(String),
    /// The external system failed; the instance retries with backoff.
    #[error("{system} unavailable: {reason}")]
    Unavailable {
        /// Which system.
        system: String,
        /// Why.
        reason: String,
    },
    /// A record the sink cannot write as it is (retrying does not help): names the message so
    /// a user can find it, and says why.
    #[error(
        "message {}:{}:{} of {topic} cannot be written: {reason}",
        .message_id.ledger_id,
        .message_id.entry_id,
        .message_id.batch_index
    )]
    InvalidRecord {
        /// The topic (partition) it was read from.
        topic: String,
        /// Its message id there.
        message_id: InputMessageId,
        /// Why.
        reason: String,
    },
    /// A newer owner recorded its epoch in the external system: this owner must stop at once
    /// (retrying does not help).
    #[error("{system}: fenced by epoch {current} (this owner has epoch {ours})")]
    Fenced {
        /// Which system holds the newer epoch.
        system: String,
        /// This owner's epoch.
        ours: u64,
        /// The epoch stored there.
        current: u64,
    },
}

/// A source of records from an external system. Driven by one instance actor at a time.
pub trait Source: Send + fmt::Debug {
    /// Prepares to read from `position` (`None`: the configured start).
    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Reads up to `max_records` records, waiting for the first one until `deadline` at the
    /// latest: it returns as soon as records are available, and [`SourceRead::Idle`] when none
    /// came by the deadline. An idle source waits (on its system, a timer, a notification)
    /// instead of returning at once, so an idle instance costs no CPU.
    fn read(
        &mut self,
        max_records: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SourceRead, ConnectorError>>;

    /// Called once a checkpoint covering every record up to `position` has committed: a queue
    /// source acknowledges upstream (RabbitMQ, MQTT, NATS, a CDC slot) only now. The default
    /// does nothing (a replayable source keeps no upstream state).
    fn committed(&mut self, position: &Position) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let _ = position;
        Box::pin(async { Ok(()) })
    }
}

/// A message's position within one partition topic, ordered like the topic: enough to skip
/// it on a replay (every id at or below a partition's checkpointed one was written already).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InputMessageId {
    /// The ledger.
    pub ledger_id: u64,
    /// The entry in the ledger.
    pub entry_id: u64,
    /// The index in a batch entry (-1 when not batched).
    pub batch_index: i32,
}

impl fmt::Display for InputMessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}:{}",
            self.ledger_id, self.entry_id, self.batch_index
        )
    }
}

/// A record read from Pulsar for a sink, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    /// The record.
    pub record: Record,
    /// The topic (partition) it was read from.
    pub topic: String,
    /// Its message id in that topic.
    pub message_id: InputMessageId,
}

/// How a sink can make its output effectively-once (../shared/DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkDelivery {
    /// Writes and the input position commit in one external transaction; the position stored
    /// there wins over Ferry's checkpoint on recovery.
    Transactional,
    /// Replaying from the checkpoint rewrites the same output (upsert by key, truncation back
    /// to a checkpointed length): the sink's own position travels in the checkpoint.
    Idempotent,
    /// Neither: at most at-least-once.
    Neither,
}

/// What a sink type can promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkCapabilities {
    /// How its output can be made effectively-once.
    pub delivery: SinkDelivery,
}

/// The last checkpoint of a sink instance, given to the sink when it opens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkResume {
    /// The instance, `tenant/namespace/name#index`: stable across owners, so a transactional
    /// sink can key its stored position by it.
    pub instance: String,
    /// The input position Ferry committed (opaque to the sink; a transactional sink stores
    /// and returns it as is).
    pub input: Option<Position>,
    /// The sink's own position committed with it (what [`Sink::flush`] returned).
    pub sink: Option<Position>,
    /// The owner's epoch: a transactional sink records it as a fencing token, so a write from
    /// an older owner fails.
    pub epoch: u64,
}

/// What a sink instance does with a record its sink rejects ([`Rejected`]): the record itself is
/// at fault, so retrying does not help. Failures of the external system are not records' fault
/// and are always retried.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ErrorPolicy {
    /// The instance stops (FAILED), naming the message and the reason.
    #[default]
    Fail,
    /// The record is dropped and counted; its input is acknowledged like a written one's.
    Skip,
    /// The original message goes to `topic` with properties naming the error, the source topic
    /// and the message id, before its input is acknowledged (Pulsar's `deadLetterTopic`).
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
}

impl ErrorPolicy {
    /// The name users write (`fail`, `skip`, `dead-letter`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::DeadLetter { .. } => "dead-letter",
        }
    }

    /// The dead-letter topic, under the dead-letter policy.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        match self {
            Self::DeadLetter { topic } => Some(topic),
            Self::Fail | Self::Skip => None,
        }
    }
}

impl fmt::Display for ErrorPolicy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A record of a batch a sink could not write: the record itself is at fault (not JSON,
/// wrong shape, a constraint violation), so retrying does not help. The instance applies the
/// connector's error policy to it (fail, skip or dead-letter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its index in the batch given to [`Sink::write`].
    pub index: usize,
    /// Why it cannot be written.
    pub reason: String,
}

/// A sink writing records to an external system. Driven by one instance actor at a time.
///
/// The instance calls `open` once, then `write` batches and `flush` at each checkpoint; only
/// after `flush` returns does it commit the checkpoint and acknowledge the input.
pub trait Sink: Send + fmt::Debug {
    /// Connects and recovers. A transactional sink returns the input position it stored
    /// itself (which then wins over `resume.input`); an idempotent sink restores its output to
    /// `resume.sink` (for example truncating a file back to that length) and returns `None`.
    fn open(
        &mut self,
        resume: &SinkResume,
    ) -> BoxFuture<'_, Result<Option<Position>, ConnectorError>>;

    /// Writes a batch. The writes need not be durable before [`Sink::flush`], but a sink
    /// should find here what its system refuses: a transactional sink applies the batch in its
    /// open transaction right away, so a constraint violation is reported now, not at flush.
    /// Returns the records it could not write because of the records themselves, each at most
    /// once (every other record of the batch is written); an error is a failure of the system
    /// (the instance retries). The instance applies its [`ErrorPolicy`] to the rejected
    /// records, and sends a dead-letter before the flush that covers it.
    fn write(
        &mut self,
        records: Vec<SinkRecord>,
    ) -> BoxFuture<'_, Result<Vec<Rejected>, ConnectorError>>;

    /// Makes every write so far durable; a transactional sink stores `input` (the position
    /// after them) in the same transaction. Returns the sink's own position to checkpoint
    /// (empty when it has none).
    fn flush(&mut self, input: &Position) -> BoxFuture<'_, Result<Position, ConnectorError>>;
}
