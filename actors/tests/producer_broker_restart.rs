//! The broker restarts mid-stream under a producer session.
//!
//! 1. Send 1..=3,000 and wait for their receipts.
//! 2. Keep sending 3,001..=10,000 from a task while the broker is stopped and started again
//!    with `deploy/pulsar/standalone.sh` (sends wait for room while it is down).
//! 3. Every send resolves as persisted or duplicate; a reader sees 1..=10,000 exactly once.
//!
//! This test stops the shared broker, so it lives alone in its test binary (cargo runs test
//! binaries one after another) and needs the broker that script started.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_exactly_once_in_order, message, read_sequence_ids};
use ferry_actors::pulsar::{ProducerSession, ProducerSessionOptions, PulsarSettings};
use ferry_test_support::{broker, unique_name};

const COUNT: u64 = 10_000;

async fn standalone(action: &'static str) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/pulsar/standalone.sh");
    tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(&script)
            .arg(action)
            .output()
            .expect("run deploy/pulsar/standalone.sh")
    })
    .await
    .expect("script task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_and_duplicates_nothing() {
    let settings = PulsarSettings::new(broker::broker().url);
    let status = standalone("status").await;
    assert!(
        status.status.success(),
        "this test restarts the broker and needs the one deploy/pulsar/standalone.sh started: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    let topic = format!("persistent://public/default/{}", unique_name("restart"));
    let mut session = ProducerSession::open(
        settings.clone(),
        ProducerSessionOptions {
            reconnect_deadline: Duration::from_secs(240),
            max_pending_messages: 1_000,
            ..ProducerSessionOptions::new(&topic, unique_name("restart-producer"))
        },
    )
    .await
    .expect("open session");
    let mut first = Vec::new();
    for id in 1..=3_000 {
        first.push(session.send(message(id)).await.expect("send"));
    }
    for receipt in first {
        receipt.await.expect("persisted before the restart");
    }

    let sender = tokio::spawn(async move {
        let mut receipts = Vec::new();
        for id in 3_001..=COUNT {
            receipts.push(session.send(message(id)).await.expect("send"));
            // Keep the stream going at a steady pace across the restart.
            if id % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for receipt in receipts {
            receipt
                .await
                .expect("every send resolves after the restart");
        }
        let reconnects = session.reconnects();
        session.close().await.expect("close");
        reconnects
    });

    let stop = standalone("stop").await;
    assert!(
        stop.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let restarted = Instant::now();
    let start = standalone("start").await;
    assert!(
        start.status.success(),
        "start: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    eprintln!("broker back after {:?}", restarted.elapsed());

    let reconnects = tokio::time::timeout(Duration::from_secs(300), sender)
        .await
        .expect("the stream finishes within 5 minutes")
        .expect("sender task");
    assert!(reconnects >= 1, "the session never reconnected");

    let ids = read_sequence_ids(&settings, &topic, COUNT as usize).await;
    assert_exactly_once_in_order(&ids, COUNT);
}
