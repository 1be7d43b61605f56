//! The input side of a sink: a pulsar-rs `Consumer` held to what sink guarantees need.
//!
//! - one reader per partition: only Exclusive or Failover subscriptions;
//! - every message carries its id per partition topic ([`InputMessageId`]), ordered, so an
//!   effectively-once sink can skip what is at or below its checkpoint on replay;
//! - individual and cumulative acks; seek to a message id;
//! - messages not acknowledged are delivered again after a reconnect (the broker's doing);
//! - [`SinkConsumer::close`] closes at the broker after the acks, on the same connection, so
//!   acks are not lost the way a dropped consumer can lose them (pulsar-rs issue 175).

use std::collections::BTreeMap;
use std::fmt;

use futures::StreamExt;
use pulsar::consumer::{InitialPosition, Message};
use pulsar::message::proto::MessageIdData;
use pulsar::{ConsumerOptions, Pulsar, SubType, TokioExecutor};

use super::admin::{CursorPosition, PulsarAdmin, TopicName};

/// Subscription types a sink may use: both give each partition a single reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkSubscription {
    /// One consumer for the whole subscription; a second is refused.
    Exclusive,
    /// One active consumer per partition, others on standby to take over.
    Failover,
}

/// Where a new subscription starts (Pulsar's `subscriptionInitialPosition`); an existing
/// subscription resumes at its cursor either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartPosition {
    /// The oldest message still stored.
    Earliest,
    /// Only messages published after subscribing.
    Latest,
}

/// How a sink consumer subscribes.
#[derive(Debug, Clone)]
pub struct SinkConsumerOptions {
    /// Input topics (a partitioned topic counts as one; its partitions are consumed).
    pub topics: Vec<String>,
    /// Subscription name; its cursor outlives the consumer.
    pub subscription: String,
    /// Exclusive or Failover.
    pub subscription_type: SinkSubscription,
    /// Consumer name (Failover picks the active consumer by name order).
    pub consumer_name: String,
    /// Where a new subscription starts.
    pub start: StartPosition,
    /// Messages the broker may push ahead of processing.
    pub receive_queue_size: u32,
}

impl SinkConsumerOptions {
    /// Returns options for `topics` on `subscription`: Failover, from the earliest message,
    /// 1,000 messages of read-ahead.
    pub fn new(topics: Vec<String>, subscription: impl Into<String>) -> Self {
        let subscription = subscription.into();
        Self {
            topics,
            consumer_name: format!("{subscription}-consumer"),
            subscription,
            subscription_type: SinkSubscription::Failover,
            start: StartPosition::Earliest,
            receive_queue_size: 1000,
        }
    }
}

/// Errors of the sink consumer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// The options are unusable.
    #[error("invalid sink consumer option {field}: {reason}")]
    InvalidOption {
        /// The option's name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// pulsar-rs reported an error.
    #[error("{operation}: {reason}")]
    Pulsar {
        /// What was being done.
        operation: String,
        /// pulsar-rs's description.
        reason: String,
    },
    /// The message stream ended (the consumer was closed).
    #[error("the consumer's message stream ended")]
    Ended,
}

pub use crate::api::InputMessageId;

/// One message read from an input topic.
#[derive(Debug, Clone)]
pub struct InputMessage {
    /// The partition topic (or the topic, when not partitioned) it came from.
    pub topic: String,
    /// Its position in that topic.
    pub id: InputMessageId,
    /// Routing key.
    pub key: Option<String>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
    /// When the broker received it (ms since the Unix epoch).
    pub publish_time_ms: u64,
    /// Event time set by the producer, if any.
    pub event_time_ms: Option<u64>,
    /// Whether this is the last message of its entry (an unbatched message, or the last of
    /// a batch). The broker acknowledges whole entries (pulsar-rs sends no batch-index ack
    /// sets): acknowledging any message of a batch acknowledges all of it, so a consumer that
    /// must not lose the rest of a batch acknowledges only messages that end their entry.
    pub ends_entry: bool,
    raw_id: MessageIdData,
}

/// Reads a sink's input topics. See the module documentation.
pub struct SinkConsumer {
    client: Pulsar<TokioExecutor>,
    consumer: pulsar::Consumer<Vec<u8>, TokioExecutor>,
    options: SinkConsumerOptions,
}

impl fmt::Debug for SinkConsumer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SinkConsumer")
            .field("subscription", &self.options.subscription)
            .field("topics", &self.consumer.topics())
            .finish_non_exhaustive()
    }
}

fn pulsar_error(operation: impl Into<String>) -> impl FnOnce(pulsar::Error) -> ConsumerError {
    let operation = operation.into();
    move |error| ConsumerError::Pulsar {
        operation,
        reason: error.to_string(),
    }
}

impl SinkConsumer {
    /// Subscribes to the input topics.
    pub async fn open(
        client: &Pulsar<TokioExecutor>,
        mut options: SinkConsumerOptions,
    ) -> Result<Self, ConsumerError> {
        if options.topics.is_empty() {
            return Err(ConsumerError::InvalidOption {
                field: "topics",
                reason: "at least one input topic is required".to_owned(),
            });
        }
        let mut topics = Vec::with_capacity(options.topics.len());
        for topic in &options.topics {
            let name = TopicName::parse(topic).map_err(|error| ConsumerError::InvalidOption {
                field: "topics",
                reason: error.to_string(),
            })?;
            topics.push(name.to_string());
        }
        options.topics = topics;
        if options.subscription.trim().is_empty() {
            return Err(ConsumerError::InvalidOption {
                field: "subscription",
                reason: "must not be empty".to_owned(),
            });
        }
        let consumer = subscribe(client, &options).await?;
        Ok(Self {
            client: client.clone(),
            consumer,
            options,
        })
    }

    /// Waits for the next message.
    pub async fn next(&mut self) -> Result<InputMessage, ConsumerError> {
        match self.consumer.next().await {
            Some(Ok(message)) => Ok(convert(message)),
            Some(Err(error)) => Err(pulsar_error("receiving")(error)),
            None => Err(ConsumerError::Ended),
        }
    }

    /// Acknowledges one message: the broker acknowledges its whole entry (see
    /// [`InputMessage::ends_entry`]).
    pub async fn ack(&mut self, message: &InputMessage) -> Result<(), ConsumerError> {
        self.consumer
            .ack_with_id(&message.topic, message.raw_id.clone())
            .await
            .map_err(|error| ConsumerError::Pulsar {
                operation: format!("acknowledging {} on {}", message.id, message.topic),
                reason: error.to_string(),
            })
    }

    /// Acknowledges `message`, its whole entry and everything before it in its partition.
    pub async fn ack_cumulative(&mut self, message: &InputMessage) -> Result<(), ConsumerError> {
        self.consumer
            .cumulative_ack_with_id(&message.topic, message.raw_id.clone())
            .await
            .map_err(|error| ConsumerError::Pulsar {
                operation: format!("acknowledging up to {} on {}", message.id, message.topic),
                reason: error.to_string(),
            })
    }

    /// Moves the subscription on `topic` (an input topic, or one partition of one) so that
    /// the next message read from it is `id` itself, later ones following in order.
    ///
    /// Done as Pulsar's clients do it: the consumer closes, the subscription's cursor is reset
    /// (here through the admin REST API), and the consumer subscribes again.
    pub async fn seek(
        &mut self,
        admin: &PulsarAdmin,
        topic: &str,
        id: InputMessageId,
    ) -> Result<(), ConsumerError> {
        let name = TopicName::parse(topic).map_err(|error| ConsumerError::InvalidOption {
            field: "topic",
            reason: error.to_string(),
        })?;
        let full = name.to_string();
        let belongs = self.options.topics.iter().any(|input| {
            full == *input
                || full
                    .strip_prefix(input.as_str())
                    .is_some_and(|rest| rest.starts_with("-partition-"))
        });
        if !belongs {
            return Err(ConsumerError::InvalidOption {
                field: "topic",
                reason: format!("{full} is not an input of this consumer"),
            });
        }
        self.consumer
            .close()
            .await
            .map_err(pulsar_error("closing the consumer before a seek"))?;
        admin
            .reset_cursor(
                &name,
                &self.options.subscription,
                CursorPosition {
                    ledger_id: id.ledger_id,
                    entry_id: id.entry_id,
                    batch_index: id.batch_index,
                },
            )
            .await
            .map_err(|error| ConsumerError::Pulsar {
                operation: format!("seeking {full} to {id}"),
                reason: error.to_string(),
            })?;
        self.consumer = subscribe(&self.client, &self.options).await?;
        Ok(())
    }

    /// Closes the consumer at the broker, after every ack sent before this call.
    pub async fn close(mut self) -> Result<(), ConsumerError> {
        self.consumer
            .close()
            .await
            .map_err(pulsar_error("closing the consumer"))
    }
}

async fn subscribe(
    client: &Pulsar<TokioExecutor>,
    options: &SinkConsumerOptions,
) -> Result<pulsar::Consumer<Vec<u8>, TokioExecutor>, ConsumerError> {
    let sub_type = match options.subscription_type {
        SinkSubscription::Exclusive => SubType::Exclusive,
        SinkSubscription::Failover => SubType::Failover,
    };
    let initial_position = match options.start {
        StartPosition::Earliest => InitialPosition::Earliest,
        StartPosition::Latest => InitialPosition::Latest,
    };
    client
        .consumer()
        .with_topics(&options.topics)
        .with_subscription(&options.subscription)
        .with_subscription_type(sub_type)
        .with_consumer_name(&options.consumer_name)
        .with_batch_size(options.receive_queue_size.max(1))
        .with_options(ConsumerOptions::default().with_initial_position(initial_position))
        .build()
        .await
        .map_err(pulsar_error(format!(
            "subscribing {:?} to {}",
            options.subscription,
            options.topics.join(",")
        )))
}

fn convert(message: Message<Vec<u8>>) -> InputMessage {
    let metadata = &message.payload.metadata;
    let raw_id = message.message_id.id.clone();
    let batch_index = raw_id.batch_index.filter(|index| *index >= 0);
    let in_batch = metadata.num_messages_in_batch.unwrap_or(1);
    InputMessage {
        ends_entry: batch_index.is_none_or(|index| index + 1 >= in_batch),
        id: InputMessageId {
            ledger_id: raw_id.ledger_id,
            entry_id: raw_id.entry_id,
            batch_index: raw_id.batch_index.unwrap_or(-1),
        },
        key: metadata.partition_key.clone(),
        properties: metadata
            .properties
            .iter()
            .map(|pair| (pair.key.clone(), pair.value.clone()))
            .collect(),
        publish_time_ms: metadata.publish_time,
        event_time_ms: metadata.event_time.filter(|time| *time > 0),
        payload: message.payload.data,
        topic: message.topic,
        raw_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_order_by_ledger_entry_then_batch_index() {
        let id = |ledger_id, entry_id, batch_index| InputMessageId {
            ledger_id,
            entry_id,
            batch_index,
        };
        assert!(id(1, 5, -1) < id(1, 6, -1));
        assert!(id(1, 9, 3) < id(2, 0, -1));
        assert!(id(1, 5, 0) < id(1, 5, 1));
        assert_eq!(id(3, 4, 5).to_string(), "3:4:5");
    }
}
