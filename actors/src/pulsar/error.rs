//! Errors of Ferry's own Pulsar protocol sessions.

use std::time::Duration;

use pulsar::message::proto::ServerError;

/// What went wrong talking to Pulsar. Cloneable: one failure may end many pending sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// This owner lost its lease (or its instance moved): nothing more is sent.
    #[error("fenced: this owner may no longer write (its lease lapsed)")]
    Fenced,
    /// A broker or service URL is malformed.
    #[error("invalid pulsar url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Broker URL.
        url: String,
        /// The operating system's reason.
        reason: String,
    },
    /// TLS set-up or handshake failed.
    #[error("tls with {url} failed: {reason}")]
    Tls {
        /// Broker URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The broker answered a request with an error.
    #[error("{operation}: broker error {}: {message}", error.as_str_name())]
    Broker {
        /// What was being done.
        operation: String,
        /// The broker's error code.
        error: ServerError,
        /// The broker's message.
        message: String,
    },
    /// Another producer with the same name is still connected (an old owner): the fence
    /// against zombies. Reported once the busy deadline has passed.
    #[error(
        "producer name {producer_name:?} on {topic} is still held by another connection after {waited:?} of retries"
    )]
    ProducerBusy {
        /// Topic.
        topic: String,
        /// The contested producer name.
        producer_name: String,
        /// How long the session retried.
        waited: Duration,
    },
    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// The limit.
        after: Duration,
    },
    /// The connection broke; the session reconnects on its own, so callers see this only when
    /// reconnecting also failed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The broker sent something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message is larger than the broker accepts.
    #[error(
        "message with sequence id {sequence_id} is {size} bytes, above the broker's limit of {limit} bytes"
    )]
    MessageTooLarge {
        /// The message's sequence id.
        sequence_id: u64,
        /// Its size.
        size: usize,
        /// The broker's limit.
        limit: usize,
    },
    /// Sequence ids must increase; replays of already persisted ids are fine (they resolve as
    /// duplicates), anything else going backwards is a caller bug.
    #[error(
        "sequence id {sequence_id} is not above the last one sent ({last_sent}) and not yet persisted (broker has up to {last_persisted:?})"
    )]
    SequenceNotIncreasing {
        /// The refused id.
        sequence_id: u64,
        /// The last id accepted by this session.
        last_sent: u64,
        /// The highest id the broker confirmed.
        last_persisted: Option<u64>,
    },
    /// The session was closed or failed earlier.
    #[error("producer session closed: {0}")]
    Closed(String),
}
