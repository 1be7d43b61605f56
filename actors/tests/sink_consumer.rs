//! The sink consumer against the real broker.
//!
//! - individual acks survive a close, and what was not acknowledged comes again on reconnect;
//! - a cumulative ack covers everything before it;
//! - seek moves the subscription back to a message id (that message is read next);
//! - Failover: one active reader; its standby takes over the unacknowledged messages;
//! - a partitioned input: every message carries its partition topic, in order per partition;
//! - unusable options fail with errors naming the option.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::admin::PulsarAdmin;
use ferry_actors::pulsar::sink_consumer::{
    ConsumerError, InputMessage, SinkConsumer, SinkConsumerOptions, SinkSubscription,
};
use ferry_test_support::broker::{broker, http_request};
use ferry_test_support::unique_name;
use pulsar::{Pulsar, TokioExecutor, producer};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

async fn client() -> Pulsar<TokioExecutor> {
    PulsarSettings::new(broker().url)
        .connect()
        .await
        .expect("connect")
}

fn fresh_topic(prefix: &str) -> String {
    format!("persistent://public/default/{}", unique_name(prefix))
}

/// Publishes `value-1` ..= `value-count` (keys `key-N`), unbatched, and waits for receipts.
async fn publish(client: &Pulsar<TokioExecutor>, topic: &str, count: u32) {
    let mut producer = client
        .producer()
        .with_topic(topic)
        .with_options(producer::ProducerOptions {
            block_queue_if_full: true,
            ..Default::default()
        })
        .build()
        .await
        .expect("producer");
    let mut receipts = Vec::new();
    for index in 1..=count {
        let message = producer::Message {
            payload: format!("value-{index}").into_bytes(),
            partition_key: Some(format!("key-{index}")),
            ..Default::default()
        };
        receipts.push(producer.send_non_blocking(message).await.expect("send"));
    }
    for receipt in receipts {
        receipt.await.expect("receipt");
    }
    producer.close().await.expect("close producer");
}

async fn open(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
    kind: SinkSubscription,
    name: &str,
) -> SinkConsumer {
    SinkConsumer::open(
        client,
        SinkConsumerOptions {
            subscription_type: kind,
            consumer_name: name.to_owned(),
            ..SinkConsumerOptions::new(vec![topic.to_owned()], subscription)
        },
    )
    .await
    .expect("open consumer")
}

/// Opens the Exclusive consumer most tests use.
async fn open_exclusive(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
) -> SinkConsumer {
    open(
        client,
        topic,
        subscription,
        SinkSubscription::Exclusive,
        "c",
    )
    .await
}

async fn receive(consumer: &mut SinkConsumer) -> InputMessage {
    tokio::time::timeout(RECEIVE_TIMEOUT, consumer.next())
        .await
        .expect("a message within the timeout")
        .expect("receive")
}

fn value(message: &InputMessage) -> u32 {
    String::from_utf8_lossy(&message.payload)
        .strip_prefix("value-")
        .and_then(|number| number.parse().ok())
        .expect("a test payload")
}

/// Reads until nothing arrives for a short while; returns the values in order.
async fn drain(consumer: &mut SinkConsumer) -> Vec<u32> {
    let mut values = Vec::new();
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(1_500), consumer.next()).await
    {
        values.push(value(&message.expect("receive")));
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_come_again_after_a_reconnect() {
    let client = client().await;
    let topic = fresh_topic("sink-redeliver");
    let subscription = unique_name("sub");
    let mut consumer = open_exclusive(&client, &topic, &subscription).await;
    publish(&client, &topic, 10).await;
    let mut previous = None;
    for expected in 1..=10 {
        let message = receive(&mut consumer).await;
        assert_eq!(value(&message), expected);
        assert_eq!(message.key, Some(format!("key-{expected}")));
        assert_eq!(message.topic, topic);
        assert!(previous.is_none_or(|id| id < message.id), "ids increase");
        previous = Some(message.id);
        if expected <= 5 || expected == 7 {
            consumer.ack(&message).await.expect("ack");
        }
    }
    consumer.close().await.expect("close flushes acks");

    let mut consumer = open_exclusive(&client, &topic, &subscription).await;
    assert_eq!(drain(&mut consumer).await, vec![6, 8, 9, 10]);
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cumulative_ack_covers_everything_before_it() {
    let client = client().await;
    let topic = fresh_topic("sink-cumulative");
    let subscription = unique_name("sub");
    let mut consumer = open_exclusive(&client, &topic, &subscription).await;
    publish(&client, &topic, 10).await;
    let mut seventh = None;
    for expected in 1..=10 {
        let message = receive(&mut consumer).await;
        if expected == 7 {
            seventh = Some(message);
        }
    }
    consumer
        .ack_cumulative(&seventh.expect("message 7"))
        .await
        .expect("cumulative ack");
    consumer.close().await.expect("close");

    let mut consumer = open_exclusive(&client, &topic, &subscription).await;
    assert_eq!(drain(&mut consumer).await, vec![8, 9, 10]);
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_reads_again_from_the_given_message() {
    let client = client().await;
    let topic = fresh_topic("sink-seek");
    let subscription = unique_name("sub");
    let mut consumer = open_exclusive(&client, &topic, &subscription).await;
    publish(&client, &topic, 10).await;
    let mut third = None;
    for expected in 1..=10 {
        let message = receive(&mut consumer).await;
        consumer.ack(&message).await.expect("ack");
        if expected == 3 {
            third = Some(message.id);
        }
    }
    let admin = PulsarAdmin::new(&broker().admin_url, None, None).expect("admin");
    consumer
        .seek(&admin, &topic, third.expect("message 3"))
        .await
        .expect("seek");
    assert_eq!(drain(&mut consumer).await, (3..=10).collect::<Vec<_>>());
    consumer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_standby_takes_over_unacknowledged_messages() {
    let client = client().await;
    let topic = fresh_topic("sink-failover");
    let subscription = unique_name("sub");
    let mut first = open(
        &client,
        &topic,
        &subscription,
        SinkSubscription::Failover,
        "a",
    )
    .await;
    let mut second = open(
        &client,
        &topic,
        &subscription,
        SinkSubscription::Failover,
        "b",
    )
    .await;
    publish(&client, &topic, 6).await;
    // The broker picks the active consumer; whichever gets the first message is it.
    let (mut active, mut standby, message) = tokio::select! {
        message = first.next() => (first, second, message.expect("receive")),
        message = second.next() => (second, first, message.expect("receive")),
        () = tokio::time::sleep(RECEIVE_TIMEOUT) => panic!("nobody received the first message"),
    };
    assert_eq!(value(&message), 1);
    active.ack(&message).await.expect("ack");
    for expected in 2..=6 {
        let message = receive(&mut active).await;
        assert_eq!(value(&message), expected);
        if expected == 2 {
            active.ack(&message).await.expect("ack");
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(700), standby.next())
            .await
            .is_err(),
        "the standby must not receive while the active consumer is connected"
    );
    active.close().await.expect("close active");
    assert_eq!(drain(&mut standby).await, vec![3, 4, 5, 6]);
    standby.close().await.expect("close standby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_input_names_each_partition_and_keeps_their_order() {
    let client = client().await;
    let local = unique_name("sink-partitioned");
    let topic = format!("persistent://public/default/{local}");
    let (status, body) = http_request(
        "PUT",
        &broker().admin_url,
        &format!("/admin/v2/persistent/public/default/{local}/partitions"),
        Some("3"),
    )
    .expect("create partitioned topic");
    assert!((200..300).contains(&status), "{status}: {body}");
    let mut consumer = open(
        &client,
        &topic,
        &unique_name("sub"),
        SinkSubscription::Failover,
        "c",
    )
    .await;
    publish(&client, &topic, 60).await;

    let mut per_partition: BTreeMap<String, Vec<InputMessage>> = BTreeMap::new();
    for _ in 0..60 {
        let message = receive(&mut consumer).await;
        per_partition
            .entry(message.topic.clone())
            .or_default()
            .push(message);
    }
    assert!(
        per_partition.len() >= 2,
        "keys spread over partitions: {:?}",
        per_partition.keys()
    );
    for (partition, messages) in &per_partition {
        assert!(
            partition.starts_with(&format!("{topic}-partition-")),
            "{partition}"
        );
        let values: Vec<u32> = messages.iter().map(value).collect();
        assert!(values.is_sorted(), "{partition} out of order: {values:?}");
        assert!(messages.windows(2).all(|pair| pair[0].id < pair[1].id));
    }
    let total: usize = per_partition.values().map(Vec::len).sum();
    assert_eq!(total, 60);
    consumer.close().await.expect("close");
}

#[tokio::test]
async fn unusable_options_are_refused_naming_the_option() {
    let client = client().await;
    let error = SinkConsumer::open(&client, SinkConsumerOptions::new(vec![], "s"))
        .await
        .expect_err("no topics");
    assert_eq!(
        error.to_string(),
        "invalid sink consumer option topics: at least one input topic is required"
    );
    let error = SinkConsumer::open(
        &client,
        SinkConsumerOptions::new(vec!["persistent://public/default/a b".to_owned()], "s"),
    )
    .await
    .expect_err("bad topic");
    assert!(
        matches!(
            error,
            ConsumerError::InvalidOption {
                field: "topics",
                ..
            }
        ),
        "{error}"
    );
    let error = SinkConsumer::open(
        &client,
        SinkConsumerOptions::new(vec![fresh_topic("t")], " "),
    )
    .await
    .expect_err("blank subscription");
    assert!(
        error
            .to_string()
            .contains("subscription: must not be empty"),
        "{error}"
    );
}
