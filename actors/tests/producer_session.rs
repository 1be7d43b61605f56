//! Ferry's producer session against the real broker (deduplication on).
//!
//! - a connection cut mid-stream: the old session dies; a new one with the same name reads the
//!   broker's last sequence id and resends from an earlier point → every id exactly once;
//! - a connection cut mid-stream that the session itself repairs → every id exactly once;
//! - a second session with a connected name is refused as busy, and gets in once the first
//!   closes;
//! - oversized and out-of-order messages fail with errors naming the problem.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CuttableDialer, assert_exactly_once_in_order, message, read_sequence_ids};
use ferry_actors::pulsar::partition_count;
use ferry_actors::pulsar::{
    OutgoingMessage, ProducerSession, ProducerSessionOptions, PulsarSettings, Receipt, SessionError,
};
use ferry_test_support::broker::http_request;
use ferry_test_support::{broker, unique_name};

const COUNT: u64 = 10_000;

fn settings() -> PulsarSettings {
    PulsarSettings::new(broker::broker().url)
}

fn fresh_topic(prefix: &str) -> String {
    format!("persistent://public/default/{}", unique_name(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_resumes_after_a_cut_without_loss_or_duplicates() {
    let topic = fresh_topic("session-resume");
    let name = unique_name("resume-producer");
    let dialer = Arc::new(CuttableDialer::default());
    let mut first = ProducerSession::open(
        settings(),
        ProducerSessionOptions {
            dialer: dialer.clone(),
            // The first owner must not heal itself: it plays an owner cut off for good.
            reconnect_deadline: Duration::ZERO,
            ..ProducerSessionOptions::new(&topic, &name)
        },
    )
    .await
    .expect("open first session");
    assert_eq!(
        first.last_sequence_id(),
        None,
        "a fresh name has no history"
    );

    let mut confirmed = Vec::new();
    for id in 1..=5_000 {
        confirmed.push(first.send(message(id)).await.expect("send"));
    }
    for receipt in confirmed {
        assert!(matches!(receipt.await, Ok(Receipt::Persisted { .. })));
    }
    // 1,000 more go out without waiting, and the wire is cut halfway through them: the
    // second half can never reach the broker, the first half may or may not have.
    let mut unconfirmed = Vec::new();
    let mut lost = 0;
    for id in 5_001..=6_000 {
        // Once the session has noticed it is cut off, it refuses new sends outright.
        match first.send(message(id)).await {
            Ok(receipt) => unconfirmed.push(receipt),
            Err(error) => {
                assert!(matches!(error, SessionError::Connect { .. }), "{error}");
                lost += 1;
            }
        }
        if id == 5_500 {
            assert!(
                dialer.isolate() >= 1,
                "the session dialed through the test dialer"
            );
        }
    }
    for receipt in unconfirmed {
        if receipt.await.is_err() {
            lost += 1;
        }
    }
    assert!(
        lost >= 500,
        "only {lost} sends failed although the wire was cut before 500 of them"
    );
    drop(first);

    let mut second = ProducerSession::open(settings(), ProducerSessionOptions::new(&topic, &name))
        .await
        .expect("open second session");
    let last = second
        .last_sequence_id()
        .expect("the broker remembers the name's last sequence id");
    assert!(
        (5_000..=5_500).contains(&last),
        "last sequence id {last} outside what could have reached the broker"
    );
    assert!(
        6_000 - last <= lost,
        "{lost} failed sends cannot explain last id {last}"
    );
    tracing_free_log(&format!(
        "cut left {lost} sends unconfirmed; broker's last sequence id {last}"
    ));

    // Replay from well before the broker's last id, as a new owner does from its checkpoint.
    let mut receipts = Vec::new();
    for id in 4_001..=COUNT {
        receipts.push(second.send(message(id)).await.expect("send"));
    }
    let (mut duplicates, mut persisted) = (0, 0);
    for receipt in receipts {
        match receipt.await.expect("receipt") {
            Receipt::Duplicate { sequence_id } => {
                assert!(
                    sequence_id <= last,
                    "{sequence_id} dropped but above {last}"
                );
                duplicates += 1;
            }
            Receipt::Persisted { sequence_id, .. } => {
                assert!(sequence_id > last, "{sequence_id} stored twice");
                persisted += 1;
            }
        }
    }
    assert_eq!(duplicates, last - 4_000);
    assert_eq!(persisted, COUNT - last);
    second.close().await.expect("close");

    let ids = read_sequence_ids(&settings(), &topic, COUNT as usize).await;
    assert_exactly_once_in_order(&ids, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_repairs_a_cut_connection_itself() {
    let topic = fresh_topic("session-heal");
    let dialer = Arc::new(CuttableDialer::default());
    let mut session = ProducerSession::open(
        settings(),
        ProducerSessionOptions {
            dialer: dialer.clone(),
            ..ProducerSessionOptions::new(&topic, unique_name("heal-producer"))
        },
    )
    .await
    .expect("open session");
    let mut receipts = Vec::new();
    for id in 1..=COUNT {
        receipts.push(session.send(message(id)).await.expect("send"));
        if id % 2_500 == 0 {
            assert!(dialer.cut_all() >= 1);
        }
    }
    for (index, receipt) in receipts.into_iter().enumerate() {
        let receipt = receipt
            .await
            .expect("every send confirmed despite the cuts");
        assert_eq!(receipt.sequence_id(), index as u64 + 1);
    }
    assert!(
        session.reconnects() >= 4,
        "4 cuts but only {} reconnects",
        session.reconnects()
    );
    session.close().await.expect("close");
    let ids = read_sequence_ids(&settings(), &topic, COUNT as usize).await;
    assert_exactly_once_in_order(&ids, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_name_is_busy_until_its_owner_closes() {
    let topic = fresh_topic("session-busy");
    let name = unique_name("busy-producer");
    let mut owner = ProducerSession::open(settings(), ProducerSessionOptions::new(&topic, &name))
        .await
        .expect("open owner");
    owner
        .send(message(1))
        .await
        .expect("send")
        .await
        .expect("persisted");

    let refused = ProducerSession::open(
        settings(),
        ProducerSessionOptions {
            busy_deadline: Duration::from_millis(500),
            ..ProducerSessionOptions::new(&topic, &name)
        },
    )
    .await
    .expect_err("the name is held");
    assert!(
        matches!(refused, SessionError::ProducerBusy { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains(&name), "{refused}");

    // A contender that keeps retrying gets in once the owner leaves.
    let contender = tokio::spawn({
        let (topic, name) = (topic.clone(), name.clone());
        async move {
            ProducerSession::open(
                settings(),
                ProducerSessionOptions {
                    busy_deadline: Duration::from_secs(30),
                    ..ProducerSessionOptions::new(topic, name)
                },
            )
            .await
        }
    });
    owner.close().await.expect("close owner");
    let successor = contender
        .await
        .expect("task")
        .expect("the successor registers after the owner closed");
    assert_eq!(successor.last_sequence_id(), Some(1));
    successor.close().await.expect("close successor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_fail_with_errors_naming_the_problem() {
    let topic = fresh_topic("session-bad");
    let mut session = ProducerSession::open(
        settings(),
        ProducerSessionOptions::new(&topic, unique_name("bad-producer")),
    )
    .await
    .expect("open session");

    let oversized = session
        .send(OutgoingMessage::new(1, vec![0_u8; 6 * 1024 * 1024]))
        .await
        .expect("queued")
        .await
        .expect_err("6 MiB is above the broker's 5 MiB frame limit");
    assert!(matches!(
        oversized,
        SessionError::MessageTooLarge { sequence_id: 1, .. }
    ));
    assert!(
        oversized.to_string().contains("above the broker's limit"),
        "{oversized}"
    );

    session
        .send(message(10))
        .await
        .expect("queued")
        .await
        .expect("persisted");
    let backwards = session
        .send(message(10))
        .await
        .expect("queued")
        .await
        .expect("an id the broker has resolves as a duplicate");
    assert_eq!(backwards, Receipt::Duplicate { sequence_id: 10 });
    let pending = session.send(message(20)).await.expect("queued");
    let out_of_order = session.send(message(15)).await.expect("queued").await;
    pending.await.expect("20 persisted");
    // 15 was neither persisted nor above the last id sent when it arrived: a caller bug.
    match out_of_order {
        Err(SessionError::SequenceNotIncreasing {
            sequence_id: 15,
            last_sent: 20,
            ..
        }) => {}
        Ok(Receipt::Duplicate { sequence_id: 15 }) => {} // 20 was confirmed first: 15 <= 20 persisted
        other => panic!("unexpected outcome for an out-of-order id: {other:?}"),
    }
    session.close().await.expect("close");
}

/// Test progress lines, visible with `--nocapture`.
fn tracing_free_log(line: &str) {
    eprintln!("producer_session test: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_publishes_over_tls() {
    let broker = broker::broker();
    let tls_settings = PulsarSettings {
        tls_trust_certs_file: Some(broker.tls_trust_certs_file.clone()),
        ..PulsarSettings::new(broker.tls_url.clone())
    };
    let topic = fresh_topic("session-tls");
    let mut session = ProducerSession::open(
        tls_settings,
        ProducerSessionOptions::new(&topic, unique_name("tls-producer")),
    )
    .await
    .expect("open a session over TLS");
    let mut receipts = Vec::new();
    for id in 1..=500 {
        receipts.push(session.send(message(id)).await.expect("send"));
    }
    for receipt in receipts {
        assert!(matches!(receipt.await, Ok(Receipt::Persisted { .. })));
    }
    session.close().await.expect("close");
    let ids = read_sequence_ids(&settings(), &topic, 500).await;
    assert_exactly_once_in_order(&ids, 500);
}

#[tokio::test]
async fn a_broker_certificate_from_an_unknown_ca_is_refused() {
    let broker = broker::broker();
    // Without the test CA only the public roots are trusted.
    let error = ProducerSession::open(
        PulsarSettings::new(broker.tls_url.clone()),
        ProducerSessionOptions {
            reconnect_deadline: Duration::ZERO,
            ..ProducerSessionOptions::new(fresh_topic("session-tls-bad"), unique_name("p"))
        },
    )
    .await
    .expect_err("an unknown CA");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("tls with {} failed", broker.tls_url)),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_topic_takes_one_session_per_partition() {
    let local = unique_name("session-partitioned");
    let topic = format!("persistent://public/default/{local}");
    let (status, body) = http_request(
        "PUT",
        &broker::broker().admin_url,
        &format!("/admin/v2/persistent/public/default/{local}/partitions"),
        Some("3"),
    )
    .expect("create partitioned topic");
    assert!((200..300).contains(&status), "{status}: {body}");
    let timeout = Duration::from_secs(10);
    assert_eq!(
        partition_count(&settings(), &topic, timeout)
            .await
            .expect("partitions"),
        3
    );
    assert_eq!(
        partition_count(&settings(), &fresh_topic("plain"), timeout)
            .await
            .expect("partitions"),
        0
    );

    let name = unique_name("partitioned-producer");
    for partition in 0..3 {
        let partition_topic = format!("{topic}-partition-{partition}");
        let mut session = ProducerSession::open(
            settings(),
            ProducerSessionOptions::new(&partition_topic, &name),
        )
        .await
        .expect("open a session on the partition");
        assert_eq!(session.last_sequence_id(), None);
        let mut receipts = Vec::new();
        for id in 1..=100 {
            receipts.push(session.send(message(id)).await.expect("send"));
        }
        for receipt in receipts {
            receipt.await.expect("persisted");
        }
        session.close().await.expect("close");
        let ids = read_sequence_ids(&settings(), &partition_topic, 100).await;
        assert_exactly_once_in_order(&ids, 100);
    }
}
