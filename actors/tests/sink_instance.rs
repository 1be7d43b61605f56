//! A file sink instance reading the real broker, effectively-once, that fails before its first
//! checkpoint covering any input commits (a crash right after its first write): the successor
//! must leave each record in the file once, so what the first one wrote must be cut, and for
//! that the output's start must have been checkpointed before anything was written.
//!
//! Found by the conformance suite (node/tests/conformance.rs, t21: instance actors killed as
//! soon as they read anything): the file kept the first owner's lines and the replay wrote
//! them again.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use ferry_actors::api::Position;
use ferry_actors::connectors::file::{FileSink, FileSinkConfig};
use ferry_actors::instance::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, MemoryCheckpointStore,
};
use ferry_actors::instance::sink::{SinkCheckpoint, SinkInstance, SinkInstanceConfig};
use ferry_actors::instance::source::CheckpointPolicy;
use ferry_actors::instance::{Guarantee, InstanceState, InstanceStatus};
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::sink_consumer::StartPosition;
use ferry_test_support::{broker, unique_name, wait};
use futures::future::BoxFuture;
use pulsar::producer;

const COUNT: u64 = 20;
const TIMEOUT: Duration = Duration::from_secs(60);

/// A memory store that refuses, once, the first commit covering any input: the instance fails
/// after writing, before its checkpoint, as a crash there would leave it.
#[derive(Debug, Clone, Default)]
struct FailsFirstCoveringCommit {
    inner: MemoryCheckpointStore,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl CheckpointStore for FailsFirstCoveringCommit {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        self.inner.load()
    }

    fn commit(
        &self,
        epoch: u64,
        from: Option<Position>,
        to: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let covers_input = SinkCheckpoint::decode(&to.position)
            .map(|checkpoint| !checkpoint.input.0.is_empty())
            .unwrap_or(false);
        if covers_input && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async {
                Err(CheckpointError::Unavailable(
                    "refused by the test: a crash before the first checkpoint".to_owned(),
                ))
            });
        }
        self.inner.commit(epoch, from, to)
    }
}

fn config(topic: &str, connector: &str) -> SinkInstanceConfig {
    SinkInstanceConfig {
        connector: connector.to_owned(),
        index: 0,
        epoch: 1,
        inputs: vec![topic.to_owned()],
        subscription: unique_name("sink"),
        guarantee: Guarantee::EffectivelyOnce,
        checkpoints: CheckpointPolicy {
            every_records: 1_000,
            every: Duration::from_millis(50),
        },
        pulsar: PulsarSettings::new(broker::broker().url),
        write_batch: 1_000,
        receiver_queue_size: 1_000,
        start: StartPosition::Earliest,
        error_policy: ferry_actors::api::ErrorPolicy::Fail,
        fence: None,
        incarnation: 0,
    }
}

async fn publish(topic: &str) {
    let client = PulsarSettings::new(broker::broker().url)
        .connect()
        .await
        .expect("connect");
    let mut producer = client
        .producer()
        .with_topic(topic)
        .build()
        .await
        .expect("a producer");
    for id in 0..COUNT {
        producer
            .send_non_blocking(producer::Message {
                payload: format!("line-{id}").into_bytes(),
                ..Default::default()
            })
            .await
            .expect("send")
            .await
            .expect("receipt");
    }
    producer.close().await.expect("close");
}

/// Runs a sink instance writing `path` until `done` holds for its status, and returns it.
async fn run(
    config: SinkInstanceConfig,
    path: &std::path::Path,
    store: &FailsFirstCoveringCommit,
    what: &str,
    done: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let sink = FileSink::new(&FileSinkConfig {
        path: path.display().to_string(),
    })
    .expect("a file sink");
    let instance = SinkInstance::new(config, Box::new(sink), Arc::new(store.clone()));
    let status = instance.status();
    instance.start();
    wait::until(what, TIMEOUT, || {
        let status = status.lock().expect("status").clone();
        let finished = done(&status);
        async move { finished.then_some(status) }
    })
    .await
}

#[actix_rt::test]
async fn effectively_once_a_crash_before_the_first_checkpoint_repeats_nothing() {
    let topic = format!("persistent://public/default/{}", unique_name("sink-eo"));
    let connector = format!("public/default/{}", unique_name("out"));
    publish(&topic).await;
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("out.txt");
    let store = FailsFirstCoveringCommit::default();
    store.inner.assign(1);
    let config = config(&topic, &connector);

    let failed = run(
        config.clone(),
        &path,
        &store,
        "the first owner fails",
        |status| status.state == InstanceState::Failed,
    )
    .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("refused by the test")),
        "{failed:?}"
    );
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        !written.is_empty(),
        "the first owner wrote before it failed"
    );

    run(
        config,
        &path,
        &store,
        "the successor writes everything",
        |status| {
            assert_ne!(status.state, InstanceState::Failed, "{status:?}");
            status.records_confirmed >= COUNT
        },
    )
    .await;
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .expect("the output")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..COUNT).map(|id| format!("line-{id}")).collect();
    assert_eq!(lines, expected, "each record once, in order");
}
