//! The real broker round trip every later Pulsar test stands on.
//!
//! 1. Subscribe (Exclusive, from the earliest message) to a topic no earlier run used.
//! 2. Produce 10,000 messages with pulsar-rs, many in flight, and await every receipt.
//! 3. Consume them back and check that all are present, each once, in order.

use std::time::Duration;

use ferry_actors::pulsar::PulsarSettings;
use ferry_test_support::{broker, unique_name};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, SubType, producer};

const MESSAGES: usize = 10_000;
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_and_consumes_ten_thousand_messages_in_order() {
    let broker = broker::broker();
    let client = PulsarSettings::new(broker.url.clone())
        .connect()
        .await
        .expect("connect to the test broker");
    let topic = format!("persistent://public/default/{}", unique_name("roundtrip"));

    // Subscribing first creates the topic and the cursor before anything is written.
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(&topic)
        .with_subscription("roundtrip-check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("subscribe");

    let mut producer = client
        .producer()
        .with_topic(&topic)
        .with_name(unique_name("roundtrip-producer"))
        // Without this, pulsar-rs refuses sends beyond its pending-queue size (SlowDown).
        .with_options(producer::ProducerOptions {
            block_queue_if_full: true,
            ..Default::default()
        })
        .build()
        .await
        .expect("create producer");
    let mut receipts = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let message = producer::Message {
            payload: format!("message-{index}").into_bytes(),
            partition_key: Some(format!("key-{}", index % 7)),
            ..Default::default()
        };
        receipts.push(
            producer
                .send_non_blocking(message)
                .await
                .expect("queue send"),
        );
    }
    let mut last_message_id = None;
    for (index, receipt) in receipts.into_iter().enumerate() {
        let receipt = receipt.await.expect("send receipt");
        let message_id = receipt.message_id.expect("a persisted message has an id");
        let position = (message_id.ledger_id, message_id.entry_id);
        if let Some(previous) = last_message_id {
            assert!(
                position > previous,
                "receipt {index} has message id {position:?}, not after {previous:?}"
            );
        }
        last_message_id = Some(position);
    }
    producer.close().await.expect("close producer");

    for expected in 0..MESSAGES {
        let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no message {expected} within {RECEIVE_TIMEOUT:?}"))
            .expect("the consumer stream ended early")
            .expect("receive");
        let payload = String::from_utf8(message.payload.data.clone()).expect("utf-8 payload");
        assert_eq!(
            payload,
            format!("message-{expected}"),
            "out of order or missing"
        );
        assert_eq!(
            message.key().as_deref(),
            Some(format!("key-{}", expected % 7).as_str())
        );
        consumer.ack(&message).await.expect("ack");
    }

    // Nothing beyond the 10,000: a short wait for an extra message must come back empty.
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(
        extra.is_err(),
        "an unexpected extra message arrived: {extra:?}"
    );
    consumer.close().await.expect("close consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_connects_over_tls_with_the_test_ca() {
    let broker = broker::broker();
    let settings = PulsarSettings {
        tls_trust_certs_file: Some(broker.tls_trust_certs_file.clone()),
        ..PulsarSettings::new(broker.tls_url.clone())
    };
    let client = settings.connect().await.expect("connect over TLS");
    let topic = format!("persistent://public/default/{}", unique_name("tls-client"));
    let mut producer = client
        .producer()
        .with_topic(&topic)
        .build()
        .await
        .expect("producer over TLS");
    let receipt = producer
        .send_non_blocking(b"over tls".to_vec())
        .await
        .expect("send")
        .await
        .expect("receipt");
    assert!(receipt.message_id.is_some());
    producer.close().await.expect("close");
}
