//! Reads a topic back from the start, for checkers that compare output with input.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, Pulsar, SubType, TokioExecutor};

/// One message as a checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The producer that published it (one per source instance).
    pub producer: String,
    /// Its key (for a batched message, its own, not the batch's).
    pub key: Option<String>,
    /// When the broker stored it (ms since the Unix epoch).
    pub publish_time_ms: u64,
}

/// Reads `topic` from the start until `expected` messages arrived and no more come for a
/// moment; returns them per producer, in the order stored.
///
/// # Panics
/// When fewer than `expected` arrive within 60 s.
pub async fn read_by_producer(topic: &str, expected: usize) -> BTreeMap<String, Vec<Read>> {
    let broker = ferry_test_support::broker::broker();
    let client: Pulsar<TokioExecutor> = Pulsar::builder(broker.url, TokioExecutor)
        .build()
        .await
        .expect("connect the checker");
    let mut consumer: pulsar::Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(topic)
        .with_subscription(ferry_test_support::unique_name("checker"))
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("subscribe the checker");
    let mut by_producer: BTreeMap<String, Vec<Read>> = BTreeMap::new();
    let mut count = 0;
    loop {
        let wait = if count < expected {
            Duration::from_secs(60)
        } else {
            Duration::from_millis(1_000)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(message))) => {
                let metadata = &message.payload.metadata;
                by_producer
                    .entry(metadata.producer_name.clone())
                    .or_default()
                    .push(Read {
                        producer: metadata.producer_name.clone(),
                        key: metadata.partition_key.clone(),
                        publish_time_ms: metadata.publish_time,
                    });
                count += 1;
            }
            Ok(Some(Err(error))) => panic!("the checker failed to read: {error}"),
            Ok(None) => panic!("the checker's stream ended"),
            Err(_) if count < expected => panic!("only {count} of {expected} messages arrived"),
            Err(_) => break,
        }
    }
    let _ = consumer.close().await;
    by_producer
}
