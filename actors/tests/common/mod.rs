//! Shared pieces of the actors crate's broker tests.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

use std::io;
use std::net::Shutdown;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_actors::pulsar::connection::Dialer;
use ferry_actors::pulsar::{OutgoingMessage, PulsarSettings};
use futures::StreamExt;
use futures::future::BoxFuture;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, SubType};
use tokio::net::TcpStream;

/// Dials real TCP connections and keeps a second handle on each socket, so a test can cut
/// them at the kernel level (both directions, as a network failure would).
#[derive(Debug, Default)]
pub struct CuttableDialer {
    sockets: Mutex<Vec<std::net::TcpStream>>,
    refuse: AtomicBool,
}

impl CuttableDialer {
    /// Cuts every socket and refuses new ones: the owner is cut off from the broker, as in a
    /// network partition.
    pub fn isolate(&self) -> usize {
        self.refuse.store(true, Ordering::SeqCst);
        self.cut_all()
    }

    /// Shuts down every socket dialed so far; returns how many.
    pub fn cut_all(&self) -> usize {
        let sockets: Vec<_> = self.sockets.lock().expect("lock").drain(..).collect();
        for socket in &sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
        sockets.len()
    }
}

impl Dialer for CuttableDialer {
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(async move {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "isolated by the test",
                ));
            }
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            let standard = stream.into_std()?;
            self.sockets
                .lock()
                .expect("lock")
                .push(standard.try_clone()?);
            TcpStream::from_std(standard)
        })
    }
}

/// The payload test messages carry: their sequence id, readable.
pub fn message(sequence_id: u64) -> OutgoingMessage {
    OutgoingMessage {
        key: Some(format!("key-{}", sequence_id % 13)),
        ..OutgoingMessage::new(sequence_id, format!("seq-{sequence_id}"))
    }
}

/// Reads the whole topic from the start and returns the sequence ids (from `seq-N` payloads)
/// in the order stored.
pub async fn read_sequence_ids(
    settings: &PulsarSettings,
    topic: &str,
    expected: usize,
) -> Vec<u64> {
    read_topic(settings, topic, expected, |message| {
        let text = String::from_utf8(message.payload.data.clone()).expect("utf-8");
        text.strip_prefix("seq-")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("unexpected payload {text:?}"))
    })
    .await
}

/// Reads the whole topic from the start and returns `identify(message)` for each message in
/// the order stored: waits up to 30 s for each of the first `expected`, then 700 ms for more,
/// so that anything beyond `expected` is seen too.
pub async fn read_topic(
    settings: &PulsarSettings,
    topic: &str,
    expected: usize,
    identify: impl Fn(&pulsar::consumer::Message<Vec<u8>>) -> u64,
) -> Vec<u64> {
    let client = settings.connect().await.expect("connect reader");
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(topic)
        .with_subscription(format!(
            "checker-{}",
            ferry_test_support::unique_name("sub")
        ))
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .expect("subscribe reader");
    let mut ids = Vec::with_capacity(expected);
    loop {
        let wait = if ids.len() < expected {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(700)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(message))) => {
                ids.push(identify(&message));
                consumer.ack(&message).await.expect("ack");
            }
            Ok(Some(Err(error))) => panic!("reader failed: {error}"),
            Ok(None) => panic!("reader stream ended"),
            Err(_) if ids.len() < expected => {
                panic!("only {} of {expected} messages arrived", ids.len())
            }
            Err(_) => break,
        }
    }
    consumer.close().await.expect("close reader");
    ids
}

/// Asserts that `ids` is exactly `1..=count`, in order, naming the first problem.
pub fn assert_exactly_once_in_order(ids: &[u64], count: u64) {
    for (index, id) in ids.iter().enumerate() {
        let expected = index as u64 + 1;
        assert_eq!(
            *id, expected,
            "position {index}: expected sequence id {expected}, found {id} (duplicates or loss)"
        );
    }
    assert_eq!(ids.len() as u64, count, "wrong number of messages");
}
