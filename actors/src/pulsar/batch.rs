//! Framing of outgoing messages into Pulsar SEND commands, with or without batching.
//!
//! Pure code: no I/O, no clock (the publish time is passed in). A batch is one SEND whose
//! payload holds several messages, each prefixed by its `SingleMessageMetadata`; the command
//! carries the first sequence id as `sequence_id` and the last as `highest_sequence_id`, which
//! is what the broker's deduplication compares against.

use std::collections::BTreeMap;

use prost_pulsar::Message as _;
use pulsar::message::proto::{
    self, BaseCommand, CommandSend, KeyValue, MessageMetadata, SingleMessageMetadata,
    base_command::Type as CommandType,
};
use pulsar::message::{Message as Frame, Payload};

/// One message to publish, with the sequence id the caller chose for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// Sequence id: strictly increasing within one producer name, a pure function of the
    /// message's source position so that a replay reuses it.
    pub sequence_id: u64,
    /// The message body.
    pub payload: Vec<u8>,
    /// Partition/routing key.
    pub key: Option<String>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time_ms: Option<u64>,
}

impl OutgoingMessage {
    /// Returns a message with only a sequence id and a payload.
    pub fn new(sequence_id: u64, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            sequence_id,
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Bytes this message adds to a batch: payload, key and properties (metadata overhead
    /// is small and bounded separately by the broker's frame limit).
    pub fn size_in_batch(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, String::len)
            + self
                .properties
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
            + 16
    }
}

/// When an open batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Most messages in one SEND; 1 turns batching off (each message its own SEND).
    pub max_messages: usize,
    /// Most payload bytes in one SEND (the broker's frame limit also applies).
    pub max_bytes: usize,
    /// Longest time the first message of a batch waits for more.
    pub max_delay: std::time::Duration,
}

impl Default for BatchingOptions {
    /// Returns the defaults of Pulsar's Java client: 1,000 messages, 128 KiB, 1 ms.
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_bytes: 128 * 1024,
            max_delay: std::time::Duration::from_millis(1),
        }
    }
}

impl BatchingOptions {
    /// Returns options that send every message in its own SEND.
    pub fn disabled() -> Self {
        Self {
            max_messages: 1,
            ..Self::default()
        }
    }

    /// True when messages are grouped at all.
    pub fn enabled(&self) -> bool {
        self.max_messages > 1
    }
}

/// Sequence ids covered by one SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceRange {
    /// First (lowest) sequence id in the SEND.
    pub first: u64,
    /// Last (highest) sequence id in the SEND.
    pub highest: u64,
}

/// Builds the SEND frame for `messages` (non-empty, increasing sequence ids).
///
/// With `batched` false, `messages` must hold exactly one message, sent in the plain format.
pub fn encode_send(
    producer_id: u64,
    producer_name: &str,
    messages: &[OutgoingMessage],
    batched: bool,
    publish_time_ms: u64,
) -> (Frame, SequenceRange) {
    let first = messages.first().map_or(0, |message| message.sequence_id);
    let highest = messages.last().map_or(0, |message| message.sequence_id);
    let range = SequenceRange { first, highest };
    let (metadata, data) = if batched {
        let mut data =
            Vec::with_capacity(messages.iter().map(OutgoingMessage::size_in_batch).sum());
        for message in messages {
            let single = SingleMessageMetadata {
                properties: key_values(&message.properties),
                partition_key: message.key.clone(),
                payload_size: i32::try_from(message.payload.len()).unwrap_or(i32::MAX),
                event_time: message.event_time_ms,
                sequence_id: Some(message.sequence_id),
                ..Default::default()
            };
            let length = u32::try_from(single.encoded_len()).unwrap_or(u32::MAX);
            data.extend_from_slice(&length.to_be_bytes());
            single
                .encode(&mut data)
                .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
            data.extend_from_slice(&message.payload);
        }
        let metadata = MessageMetadata {
            producer_name: producer_name.to_owned(),
            sequence_id: first,
            publish_time: publish_time_ms,
            num_messages_in_batch: Some(i32::try_from(messages.len()).unwrap_or(i32::MAX)),
            highest_sequence_id: Some(highest),
            ..Default::default()
        };
        (metadata, data)
    } else {
        let message = messages.first().cloned().unwrap_or_default();
        let metadata = MessageMetadata {
            producer_name: producer_name.to_owned(),
            sequence_id: message.sequence_id,
            publish_time: publish_time_ms,
            properties: key_values(&message.properties),
            partition_key: message.key,
            event_time: message.event_time_ms,
            ..Default::default()
        };
        (metadata, message.payload)
    };
    let frame = Frame {
        command: BaseCommand {
            r#type: CommandType::Send as i32,
            send: Some(CommandSend {
                producer_id,
                sequence_id: first,
                num_messages: Some(i32::try_from(messages.len()).unwrap_or(i32::MAX)),
                highest_sequence_id: batched.then_some(highest),
                ..Default::default()
            }),
            ..Default::default()
        },
        payload: Some(Payload { metadata, data }),
    };
    (frame, range)
}

fn key_values(properties: &BTreeMap<String, String>) -> Vec<KeyValue> {
    properties
        .iter()
        .map(|(key, value)| proto::KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Splits a batched payload back into its messages: what a consumer does. Used by tests to
/// check the encoding, and a guard for anyone changing it.
pub fn decode_batch(data: &[u8]) -> Result<Vec<(SingleMessageMetadata, Vec<u8>)>, String> {
    let mut rest = data;
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated metadata length")?;
        let length = u32::from_be_bytes(*length) as usize;
        let metadata_bytes = tail.get(..length).ok_or("truncated metadata")?;
        let metadata = SingleMessageMetadata::decode(metadata_bytes).map_err(|e| e.to_string())?;
        let size = usize::try_from(metadata.payload_size).map_err(|_| "negative payload size")?;
        let payload = tail
            .get(length..length + size)
            .ok_or("truncated payload")?
            .to_vec();
        rest = &tail[length + size..];
        messages.push((metadata, payload));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sequence_id: u64, payload: &str) -> OutgoingMessage {
        OutgoingMessage {
            sequence_id,
            payload: payload.as_bytes().to_vec(),
            key: Some(format!("key-{sequence_id}")),
            properties: BTreeMap::from([("origin".to_owned(), "test".to_owned())]),
            event_time_ms: Some(1_000 + sequence_id),
        }
    }

    #[test]
    fn a_batch_carries_first_and_highest_sequence_ids() {
        let messages = [message(7, "a"), message(8, "bb"), message(9, "ccc")];
        let (frame, range) = encode_send(3, "producer-x", &messages, true, 42);
        assert_eq!(
            range,
            SequenceRange {
                first: 7,
                highest: 9
            }
        );
        let send = frame.command.send.expect("a SEND command");
        assert_eq!(send.producer_id, 3);
        assert_eq!(send.sequence_id, 7);
        assert_eq!(send.highest_sequence_id, Some(9));
        assert_eq!(send.num_messages, Some(3));
        let payload = frame.payload.expect("a payload");
        assert_eq!(payload.metadata.producer_name, "producer-x");
        assert_eq!(payload.metadata.sequence_id, 7);
        assert_eq!(payload.metadata.highest_sequence_id, Some(9));
        assert_eq!(payload.metadata.num_messages_in_batch, Some(3));
        assert_eq!(payload.metadata.publish_time, 42);

        let decoded = decode_batch(&payload.data).expect("decodes");
        assert_eq!(decoded.len(), 3);
        for ((metadata, body), original) in decoded.iter().zip(&messages) {
            assert_eq!(body, &original.payload);
            assert_eq!(metadata.sequence_id, Some(original.sequence_id));
            assert_eq!(metadata.partition_key, original.key);
            assert_eq!(metadata.event_time, original.event_time_ms);
            assert_eq!(metadata.properties[0].key, "origin");
        }
    }

    #[test]
    fn a_single_message_is_sent_in_the_plain_format() {
        let (frame, range) = encode_send(1, "p", &[message(5, "hello")], false, 1);
        assert_eq!(
            range,
            SequenceRange {
                first: 5,
                highest: 5
            }
        );
        let send = frame.command.send.expect("a SEND command");
        assert_eq!(send.highest_sequence_id, None);
        let payload = frame.payload.expect("a payload");
        assert_eq!(payload.data, b"hello");
        assert_eq!(payload.metadata.num_messages_in_batch, None);
        assert_eq!(payload.metadata.partition_key.as_deref(), Some("key-5"));
        assert_eq!(payload.metadata.event_time, Some(1_005));
    }

    #[test]
    fn a_truncated_batch_is_an_error() {
        let (frame, _) = encode_send(1, "p", &[message(1, "abc")], true, 1);
        let data = frame.payload.expect("a payload").data;
        assert!(decode_batch(&data[..data.len() - 1]).is_err());
        assert!(decode_batch(&data[..2]).is_err());
    }
}
