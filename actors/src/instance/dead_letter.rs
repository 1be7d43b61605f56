//! A sink's error policy (../shared/DESIGN.md §3a) applied to the records its sink rejects, and
//! the producers that send dead letters.
//!
//! [`judge`] is the pure part: given the policy and what one write rejected, it fails the
//! instance naming the first message (`fail`), counts the rejected records as handled
//! (`skip`), or lists them for the dead-letter topic (`dead-letter`). [`DeadLetters`] sends
//! them: the original bytes, key, properties and event time, plus [`ERROR_PROPERTY`],
//! [`SOURCE_TOPIC_PROPERTY`], [`MESSAGE_ID_PROPERTY`] and [`CONNECTOR_PROPERTY`]. The sink
//! instance waits for every receipt ([`DeadLetters::confirm`]) before the flush and the
//! checkpoint that cover the records, so their input is acknowledged only once the broker holds
//! the dead letters. A send that fails fails the instance (a failure of the system, retried with
//! backoff from the checkpoint), never a silent drop.
//!
//! **Sequence ids.** Under effectively-once a dead letter must reach the topic once, even when a
//! crash between its send and the checkpoint makes a successor replay the input. Ferry's
//! [`ProducerSession`] sends with caller-chosen sequence ids under a stable producer name, and
//! the broker drops an id at or below the highest it stored for that name (deduplication must
//! be on for the dead-letter topic; the admin API checks it). So the id has to be a pure
//! function of the input position, increasing along the input. It is derived from the rejected
//! message's own id, not from a counter of dead letters kept in the checkpoint, because:
//!
//! - a counter follows the order the instance saw records in, and across partitions that
//!   interleaving differs from run to run; a transactional sink's own stored position (which
//!   wins over Ferry's checkpoint on recovery) would not carry it either;
//! - whether a record is rejected can change on a replay (a unique constraint depends on the
//!   table), which would shift every later number, and the broker would then drop a different
//!   dead letter as a "duplicate": a loss;
//! - a message id names one message forever, whichever instance reads its partition (a Failover
//!   subscription moves partitions between instances), so the producer name carries no
//!   instance index.
//!
//! Message ids are ordered only within one partition topic, and (ledger, entry, batch index)
//! does not fit the broker's 63 bits in general (Pulsar's own effectively-once sink packs
//! `ledger << 28 | entry` and gives the messages of a batch one id). So each (input partition,
//! ledger) gets its own producer name, [`producer_name`], and within it the id is
//! `entry << 20 | (batch index + 1)` ([`sequence_id`]): increasing along the partition and the
//! same on every replay. A ledger holds far fewer than 2^43 entries and a batch fewer than 2^20
//! messages; a message beyond that fails the instance, naming it. The broker forgets a producer
//! name idle for `brokerDeduplicationProducerInactivityTimeoutMinutes` (6 h by default): a replay
//! later than that may repeat dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::try_join_all;
use tracing::{info, warn};

pub use crate::api::ErrorPolicy;
use crate::api::{ConnectorError, InputMessageId, Rejected, SinkRecord};
use crate::pulsar::{
    OutgoingMessage, PendingReceipt, ProducerSession, ProducerSessionOptions, PulsarSettings,
    SessionError, partition_count,
};

use super::Fence;

/// The property naming why the sink rejected the record.
pub const ERROR_PROPERTY: &str = "ferry-error";
/// The property naming the topic (partition) the record was read from.
pub const SOURCE_TOPIC_PROPERTY: &str = "ferry-source-topic";
/// The property holding the record's message id there, `ledger:entry:batch`.
pub const MESSAGE_ID_PROPERTY: &str = "ferry-message-id";
/// The property naming the connector, `tenant/namespace/name`.
pub const CONNECTOR_PROPERTY: &str = "ferry-connector";

/// The longest reason carried in [`ERROR_PROPERTY`], in bytes (a database may quote the
/// whole row in its message).
const MAX_REASON_BYTES: usize = 4096;
/// Bits of a sequence id below the entry id: the message's index in its batch, plus one.
const BATCH_BITS: u32 = 20;
/// Entry ids must stay below this for the sequence id to fit the broker's signed 64 bits.
const ENTRY_LIMIT: u64 = 1 << (63 - BATCH_BITS);
/// Limit for looking up the dead-letter topic's partitions.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why dead-lettering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    /// The sink reported a record that is not in the batch it was given: a bug in the sink.
    #[error("the sink rejected record {index} of a batch of {len}: there is no such record")]
    NoSuchRecord {
        /// The index it reported.
        index: usize,
        /// The batch's length.
        len: usize,
    },
    /// The message's id does not fit a sequence id (see the module documentation).
    #[error("message {message_id} of {topic} cannot be dead-lettered: {reason}")]
    Unnumbered {
        /// The topic (partition) it was read from.
        topic: String,
        /// Its id.
        message_id: InputMessageId,
        /// Why.
        reason: String,
    },
    /// The dead-letter topic could not take the record: a failure of the system.
    #[error("dead-letter topic {topic}: {source}")]
    Send {
        /// The dead-letter topic.
        topic: String,
        /// What went wrong.
        #[source]
        source: SessionError,
    },
}

/// Why the policy stops the instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Verdict {
    /// Policy `fail`: the first rejected record, named.
    #[error(transparent)]
    Failed(#[from] ConnectorError),
    /// The sink's report is inconsistent.
    #[error(transparent)]
    Inconsistent(#[from] DeadLetterError),
}

/// What the error policy made of one write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Judged {
    /// Records the sink wrote.
    pub written: u64,
    /// Rejected records dropped (`skip`).
    pub skipped: u64,
    /// Rejected records to send to the dead-letter topic (`dead-letter`): their index in the
    /// batch and the reason, in batch order.
    pub dead_letters: Vec<(usize, String)>,
}

/// Applies `policy` to what the sink rejected of a batch whose records came from `sources`
/// (topic and message id of each record, in batch order). A record reported twice counts once.
pub fn judge(
    policy: &ErrorPolicy,
    sources: &[(String, InputMessageId)],
    rejected: Vec<Rejected>,
) -> Result<Judged, Verdict> {
    let len = sources.len();
    let mut reasons: BTreeMap<usize, String> = BTreeMap::new();
    for rejection in rejected {
        if rejection.index >= len {
            return Err(DeadLetterError::NoSuchRecord {
                index: rejection.index,
                len,
            }
            .into());
        }
        reasons.entry(rejection.index).or_insert(rejection.reason);
    }
    let written = (len - reasons.len()) as u64;
    match policy {
        _ if reasons.is_empty() => Ok(Judged {
            written,
            ..Judged::default()
        }),
        ErrorPolicy::Fail => {
            let (index, reason) = reasons.into_iter().next().unwrap_or_default();
            let (topic, message_id) = sources[index].clone();
            Err(ConnectorError::InvalidRecord {
                topic,
                message_id,
                reason,
            }
            .into())
        }
        ErrorPolicy::Skip => Ok(Judged {
            written,
            skipped: reasons.len() as u64,
            dead_letters: Vec::new(),
        }),
        ErrorPolicy::DeadLetter { .. } => Ok(Judged {
            written,
            skipped: 0,
            dead_letters: reasons.into_iter().collect(),
        }),
    }
}

/// Returns the sequence id of the dead letter of message `id`: `entry << 20 | (batch + 1)`,
/// increasing along one ledger of one partition (see the module documentation).
pub fn sequence_id(id: InputMessageId) -> Result<u64, String> {
    if id.entry_id >= ENTRY_LIMIT {
        return Err(format!(
            "its entry id is {} or more, too large for a sequence id",
            ENTRY_LIMIT
        ));
    }
    let in_batch = u64::try_from(i64::from(id.batch_index) + 1)
        .ok()
        .filter(|in_batch| *in_batch < 1 << BATCH_BITS)
        .ok_or_else(|| {
            format!(
                "its batch index {} is outside 0..{}, too large for a sequence id",
                id.batch_index,
                (1_u64 << BATCH_BITS) - 1
            )
        })?;
    Ok((id.entry_id << BATCH_BITS) | in_batch)
}

/// Returns the producer name for the dead letters of ledger `ledger` of input partition
/// `topic`: `{prefix}-{hash of topic}-l{ledger}`, stable across runs, owners and instances.
pub fn producer_name(prefix: &str, topic: &str, ledger: u64) -> String {
    format!("{prefix}-{:016x}-l{ledger}", stable_hash(topic))
}

/// Returns the producer name prefix of `connector` (`tenant/namespace/name`):
/// `ferry-dlq-{tenant}-{namespace}-{name}`, then `-c{incarnation}` when known, so that a
/// connector created again under the same name does not inherit the old one's deduplication
/// state.
pub fn producer_prefix(connector: &str, incarnation: u64) -> String {
    let mut prefix = format!("ferry-dlq-{}", connector.replace('/', "-"));
    if incarnation != 0 {
        prefix.push_str(&format!("-c{incarnation}"));
    }
    prefix
}

/// Returns the dead letter of `record`: its bytes, key, properties and event time, plus the
/// properties naming the error, the source topic, the message id and the connector.
pub fn dead_letter(
    record: &SinkRecord,
    reason: &str,
    connector: &str,
    sequence_id: u64,
) -> OutgoingMessage {
    let mut properties = record.record.properties.clone();
    properties.insert(ERROR_PROPERTY.to_owned(), truncated(reason).to_owned());
    properties.insert(SOURCE_TOPIC_PROPERTY.to_owned(), record.topic.clone());
    properties.insert(
        MESSAGE_ID_PROPERTY.to_owned(),
        record.message_id.to_string(),
    );
    properties.insert(CONNECTOR_PROPERTY.to_owned(), connector.to_owned());
    OutgoingMessage {
        sequence_id,
        payload: record.record.value.clone(),
        key: record.record.key.clone(),
        properties,
        event_time_ms: record.record.event_time_ms,
    }
}

/// Cuts `reason` to at most [`MAX_REASON_BYTES`], on a character boundary.
fn truncated(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// FNV-1a: a hash that stays the same across processes, builds and platforms.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a sink instance's dead letters go.
#[derive(Debug, Clone)]
pub struct DeadLetterConfig {
    /// The dead-letter topic.
    pub topic: String,
    /// `tenant/namespace/name` of the connector.
    pub connector: String,
    /// The connector's incarnation (see [`producer_prefix`]).
    pub incarnation: u64,
    /// The Pulsar cluster.
    pub pulsar: PulsarSettings,
    /// Asked before every SEND.
    pub fence: Option<Fence>,
}

/// One producer of dead letters: one (input partition, ledger).
#[derive(Debug)]
struct Producer {
    session: ProducerSession,
    /// The highest sequence id sent in this run.
    last_sent: Option<u64>,
}

/// Sends a sink instance's dead letters and tells when the broker holds them. See the module
/// documentation.
#[derive(Debug)]
pub struct DeadLetters {
    config: DeadLetterConfig,
    prefix: String,
    /// The dead-letter topic's partitions (0: not partitioned), once looked up.
    partitions: Option<u32>,
    producers: BTreeMap<(String, u64), Producer>,
    pending: Vec<PendingReceipt>,
}

impl DeadLetters {
    /// Returns a sender; it connects on its first dead letter.
    pub fn new(config: DeadLetterConfig) -> Self {
        Self {
            prefix: producer_prefix(&config.connector, config.incarnation),
            config,
            partitions: None,
            producers: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    fn send_error(&self, source: SessionError) -> DeadLetterError {
        DeadLetterError::Send {
            topic: self.config.topic.clone(),
            source,
        }
    }

    /// Queues the dead letter of `record`, rejected for `reason`; [`Self::confirm`] waits for
    /// its receipt.
    pub async fn send(&mut self, record: &SinkRecord, reason: &str) -> Result<(), DeadLetterError> {
        let id = record.message_id;
        let sequence_id = sequence_id(id).map_err(|reason| DeadLetterError::Unnumbered {
            topic: record.topic.clone(),
            message_id: id,
            reason,
        })?;
        let key = (record.topic.clone(), id.ledger_id);
        if !self.producers.contains_key(&key) {
            let producer = self.open(&record.topic, id.ledger_id).await?;
            self.producers.insert(key.clone(), producer);
        }
        let Some(producer) = self.producers.get_mut(&key) else {
            return Ok(());
        };
        if producer.last_sent.is_some_and(|last| sequence_id <= last) {
            // Delivered again within this run (only at-most-once reads without skipping
            // what it saw): its dead letter is on its way already.
            return Ok(());
        }
        let message = dead_letter(record, reason, &self.config.connector, sequence_id);
        let receipt = producer.session.send(message).await;
        let receipt = receipt.map_err(|error| self.send_error(error))?;
        if let Some(producer) = self.producers.get_mut(&key) {
            producer.last_sent = Some(sequence_id);
        }
        self.pending.push(receipt);
        Ok(())
    }

    /// Opens the producer of (`topic`, `ledger`), on the dead-letter topic's partition chosen
    /// by `topic` (stable, so a replay meets the same deduplication state).
    async fn open(&mut self, topic: &str, ledger: u64) -> Result<Producer, DeadLetterError> {
        let partitions = match self.partitions {
            Some(partitions) => partitions,
            None => {
                let partitions =
                    partition_count(&self.config.pulsar, &self.config.topic, LOOKUP_TIMEOUT)
                        .await
                        .map_err(|error| self.send_error(error))?;
                self.partitions = Some(partitions);
                partitions
            }
        };
        let target = match partitions {
            0 => self.config.topic.clone(),
            count => format!(
                "{}-partition-{}",
                self.config.topic,
                stable_hash(topic) % u64::from(count)
            ),
        };
        let name = producer_name(&self.prefix, topic, ledger);
        let options = ProducerSessionOptions {
            fence: self.config.fence.clone(),
            ..ProducerSessionOptions::new(&target, &name)
        };
        let session = ProducerSession::open(self.config.pulsar.clone(), options)
            .await
            .map_err(|error| self.send_error(error))?;
        info!(
            connector = %self.config.connector,
            dead_letter_topic = %target,
            producer = %name,
            last_sequence_id = ?session.last_sequence_id(),
            "dead-letter producer open"
        );
        Ok(Producer {
            session,
            last_sent: None,
        })
    }

    /// Whether dead letters were sent since the last [`Self::confirm`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Waits until the broker holds every dead letter sent so far (stored now, or earlier by
    /// a previous owner), then closes the producers of ledgers a partition has moved past.
    pub async fn confirm(&mut self) -> Result<(), DeadLetterError> {
        let pending = std::mem::take(&mut self.pending);
        try_join_all(pending)
            .await
            .map_err(|error| self.send_error(error))?;
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        for (topic, ledger) in self.producers.keys() {
            let entry = newest.entry(topic.as_str()).or_insert(*ledger);
            *entry = (*entry).max(*ledger);
        }
        let retired: BTreeSet<(String, u64)> = self
            .producers
            .keys()
            .filter(|(topic, ledger)| newest.get(topic.as_str()) != Some(ledger))
            .cloned()
            .collect();
        for key in retired {
            if let Some(producer) = self.producers.remove(&key) {
                self.close_producer(producer).await;
            }
        }
        Ok(())
    }

    /// Waits for every receipt, then closes every producer.
    pub async fn close(mut self) -> Result<(), DeadLetterError> {
        self.confirm().await?;
        for producer in std::mem::take(&mut self.producers).into_values() {
            self.close_producer(producer).await;
        }
        Ok(())
    }

    async fn close_producer(&self, producer: Producer) {
        // Every receipt is in: a failed close loses nothing.
        if let Err(error) = producer.session.close().await {
            warn!(connector = %self.config.connector, error = %error, "closing a dead-letter producer failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Record;

    fn id(ledger_id: u64, entry_id: u64, batch_index: i32) -> InputMessageId {
        InputMessageId {
            ledger_id,
            entry_id,
            batch_index,
        }
    }

    fn sources(count: u64) -> Vec<(String, InputMessageId)> {
        (0..count)
            .map(|entry| ("t".to_owned(), id(3, entry, -1)))
            .collect()
    }

    fn rejected(index: usize, reason: &str) -> Rejected {
        Rejected {
            index,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn nothing_rejected_is_all_written_under_every_policy() {
        let dead_letter = ErrorPolicy::DeadLetter {
            topic: "dlq".to_owned(),
        };
        for policy in [ErrorPolicy::Fail, ErrorPolicy::Skip, dead_letter] {
            assert_eq!(
                judge(&policy, &sources(4), Vec::new()),
                Ok(Judged {
                    written: 4,
                    ..Judged::default()
                }),
                "{policy}"
            );
        }
    }

    #[test]
    fn fail_names_the_first_rejected_message_of_the_batch() {
        let verdict = judge(
            &ErrorPolicy::Fail,
            &sources(5),
            vec![rejected(3, "later"), rejected(1, "not JSON")],
        )
        .expect_err("fails");
        assert_eq!(
            verdict,
            Verdict::Failed(ConnectorError::InvalidRecord {
                topic: "t".to_owned(),
                message_id: id(3, 1, -1),
                reason: "not JSON".to_owned(),
            })
        );
        assert!(verdict.to_string().contains("3:1:-1"), "{verdict}");
    }

    #[test]
    fn skip_counts_each_rejected_record_once() {
        let judged = judge(
            &ErrorPolicy::Skip,
            &sources(5),
            vec![rejected(0, "a"), rejected(4, "b"), rejected(0, "again")],
        )
        .expect("skips");
        assert_eq!(
            judged,
            Judged {
                written: 3,
                skipped: 2,
                dead_letters: Vec::new()
            }
        );
    }

    #[test]
    fn dead_letter_lists_the_rejected_records_in_batch_order_with_their_first_reason() {
        let policy = ErrorPolicy::DeadLetter {
            topic: "dlq".to_owned(),
        };
        let judged = judge(
            &policy,
            &sources(4),
            vec![rejected(2, "b"), rejected(0, "a"), rejected(2, "b again")],
        )
        .expect("dead-letters");
        assert_eq!(
            judged,
            Judged {
                written: 2,
                skipped: 0,
                dead_letters: vec![(0, "a".to_owned()), (2, "b".to_owned())]
            }
        );
    }

    #[test]
    fn a_rejection_outside_the_batch_is_the_sinks_bug() {
        let verdict = judge(&ErrorPolicy::Skip, &sources(2), vec![rejected(2, "x")])
            .expect_err("no such record");
        assert_eq!(
            verdict,
            Verdict::Inconsistent(DeadLetterError::NoSuchRecord { index: 2, len: 2 })
        );
    }

    #[test]
    fn sequence_ids_increase_along_a_ledger_and_are_refused_past_their_bits() {
        let ids = [
            id(9, 0, -1),
            id(9, 1, 0),
            id(9, 1, 1),
            id(9, 1, 999),
            id(9, 2, -1),
            id(9, ENTRY_LIMIT - 1, (1 << BATCH_BITS) - 2),
        ];
        let sequence: Vec<u64> = ids
            .iter()
            .map(|id| sequence_id(*id).expect("fits"))
            .collect();
        assert!(
            sequence.windows(2).all(|pair| pair[0] < pair[1]),
            "{sequence:?}"
        );
        assert_eq!(sequence[0], 0);
        assert_eq!(sequence[2], (1 << BATCH_BITS) | 2);
        assert!(sequence[5] < 1 << 63, "fits the broker's signed 64 bits");
        assert!(sequence_id(id(9, ENTRY_LIMIT, -1)).is_err());
        assert!(sequence_id(id(9, 0, 1 << BATCH_BITS)).is_err());
        assert!(sequence_id(id(9, 0, -2)).is_err());
    }

    #[test]
    fn producer_names_are_stable_per_partition_and_ledger() {
        let prefix = producer_prefix("public/default/pg", 42);
        assert_eq!(prefix, "ferry-dlq-public-default-pg-c42");
        assert_eq!(
            producer_prefix("public/default/pg", 0),
            "ferry-dlq-public-default-pg"
        );
        let a = producer_name(&prefix, "persistent://public/default/in-partition-0", 7);
        assert_eq!(
            a,
            producer_name(&prefix, "persistent://public/default/in-partition-0", 7)
        );
        assert!(a.starts_with("ferry-dlq-public-default-pg-c42-") && a.ends_with("-l7"));
        assert_ne!(
            a,
            producer_name(&prefix, "persistent://public/default/in-partition-1", 7)
        );
        assert_ne!(
            a,
            producer_name(&prefix, "persistent://public/default/in-partition-0", 8)
        );
        // FNV-1a of the empty string: the hash does not depend on the build.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn a_dead_letter_keeps_the_original_and_names_error_topic_id_and_connector() {
        let record = SinkRecord {
            record: Record {
                key: Some("k".to_owned()),
                value: b"not json {".to_vec(),
                properties: BTreeMap::from([("app".to_owned(), "x".to_owned())]),
                event_time_ms: Some(1_700_000_000_000),
                schema_name: None,
            },
            topic: "persistent://public/default/in".to_owned(),
            message_id: id(12, 34, -1),
        };
        let long = "é".repeat(MAX_REASON_BYTES);
        let message = dead_letter(&record, &long, "public/default/pg", 99);
        assert_eq!(message.sequence_id, 99);
        assert_eq!(message.payload, record.record.value);
        assert_eq!(message.key.as_deref(), Some("k"));
        assert_eq!(message.event_time_ms, Some(1_700_000_000_000));
        assert_eq!(message.properties["app"], "x");
        assert_eq!(
            message.properties[SOURCE_TOPIC_PROPERTY],
            "persistent://public/default/in"
        );
        assert_eq!(message.properties[MESSAGE_ID_PROPERTY], "12:34:-1");
        assert_eq!(message.properties[CONNECTOR_PROPERTY], "public/default/pg");
        let reason = &message.properties[ERROR_PROPERTY];
        assert!(reason.len() <= MAX_REASON_BYTES && reason.starts_with('é'));
    }
}
