//! The connector API: what a source or sink implements. The instance actors
//! ([`crate::instance`]) apply guarantees, checkpoints, retries and status around it.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;

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

/// What a source can promise.
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
}

/// A source of records from an external system. Driven by one instance actor at a time.
pub trait Source: Send + fmt::Debug {
    /// What this source promises.
    fn capabilities(&self) -> SourceCapabilities;

    /// Prepares to read from `position` (`None`: the configured start).
    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Reads up to `max_records` records.
    fn read(&mut self, max_records: usize) -> BoxFuture<'_, Result<SourceRead, ConnectorError>>;
}
