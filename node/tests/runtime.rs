//! The connector runtime on a node: connectors written to the metadata store are placed by the
//! control loop, run by the supervisor against the real broker, and survive the supervisor
//! being torn down mid-stream (every instance actor killed, no final checkpoint) and started
//! again: the output is compared record by record with what went in.
//!
//! - t10: a datagen source under each guarantee: effectively-once gives every record once and
//!   in order; at-least-once loses none; at-most-once repeats none.
//! - t20: datagen -> topic -> file sink under each guarantee, the same comparison on the file.
//! - t30: a connector that cannot start (a secret reference that does not resolve) is FAILED
//!   with the reason, restarts with backoff, and the node keeps running other connectors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, Addr};
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::sink_consumer::{
    SinkConsumer, SinkConsumerOptions, SinkSubscription, StartPosition,
};
use ferry_node::control;
use ferry_node::meta::local::LocalNode;
use ferry_node::meta::state::{
    Command, ConnectorKind, ConnectorName, ConnectorSpec, Guarantee, InstanceKey, Secret,
};
use ferry_node::meta::{Faults, Meta, RaftTuning};
use ferry_node::supervisor::{
    ReportedState, StatusBoard, StopSupervisor, Supervisor, SupervisorSettings,
};
use ferry_test_support::broker::{self, broker};
use ferry_test_support::{unique_name, wait};
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(60);

/// One node with its supervisor and control loop.
struct Harness {
    node: Option<LocalNode>,
    _dir: TempDir,
    settings: SupervisorSettings,
    board: StatusBoard,
    supervisor: Addr<Supervisor>,
    stop_control: tokio::sync::watch::Sender<()>,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let node = LocalNode::start(
            1,
            "127.0.0.1:0".parse().expect("an address"),
            dir.path(),
            RaftTuning::default(),
            Faults::default(),
        )
        .await
        .expect("the node starts");
        node.meta.bootstrap().await.expect("bootstrap");
        let mut settings = SupervisorSettings::new(PulsarSettings::new(broker().url));
        settings.backoff_initial = Duration::from_millis(100);
        settings.backoff_max = Duration::from_millis(400);
        let board = StatusBoard::default();
        let supervisor =
            Supervisor::new(node.meta.clone(), settings.clone(), board.clone()).start();
        let (stop_control, stopped) = tokio::sync::watch::channel(());
        tokio::spawn(control::run(
            node.meta.clone(),
            Duration::from_millis(50),
            stopped,
        ));
        Self {
            node: Some(node),
            _dir: dir,
            settings,
            board,
            supervisor,
            stop_control,
        }
    }

    fn meta(&self) -> &Meta {
        &self.node.as_ref().expect("a running node").meta
    }

    /// Tears the supervisor down (every instance stopped at once, no final checkpoint) and
    /// starts a new one, as a node process restart would.
    async fn restart_supervisor(&mut self) {
        self.supervisor
            .send(StopSupervisor)
            .await
            .expect("the supervisor stops");
        self.board = StatusBoard::default();
        self.supervisor = Supervisor::new(
            self.meta().clone(),
            self.settings.clone(),
            self.board.clone(),
        )
        .start();
    }

    async fn create(&self, name: &str, spec: ConnectorSpec) -> InstanceKey {
        let connector = ConnectorName::new("public", "default", name);
        self.meta()
            .write(Command::CreateConnector {
                connector: connector.clone(),
                spec,
            })
            .await
            .expect("write")
            .expect("created");
        InstanceKey {
            connector,
            instance: 0,
        }
    }

    /// Waits until `key` reports `state`, and returns its report's counters.
    async fn wait_state(&self, key: &InstanceKey, state: ReportedState) {
        let board = self.board.clone();
        wait::until(&format!("{key} is {}", state.as_str()), TIMEOUT, || {
            let report = board.get(key);
            async move { report.filter(|report| report.state == state).map(drop) }
        })
        .await;
    }

    /// Waits until `key` has confirmed at least `count` records under the current supervisor.
    async fn wait_confirmed(&self, key: &InstanceKey, count: u64) {
        let board = self.board.clone();
        wait::until(&format!("{key} confirmed {count} records"), TIMEOUT, || {
            let report = board.get(key);
            async move {
                report
                    .filter(|report| {
                        report.status.records_confirmed >= count
                            && report.status.checkpoints_committed > 0
                    })
                    .map(drop)
            }
        })
        .await;
    }

    async fn stop(mut self) {
        let _ = self.stop_control.send(());
        let _ = self.supervisor.send(StopSupervisor).await;
        if let Some(node) = self.node.take() {
            node.stop().await.expect("the node stops");
        }
    }
}

fn topic(prefix: &str) -> String {
    format!("persistent://public/default/{}", unique_name(prefix))
}

fn datagen(topic: &str, guarantee: Guarantee, count: u64, rate: u64) -> ConnectorSpec {
    ConnectorSpec {
        kind: ConnectorKind::Source,
        connector_type: "datagen".to_owned(),
        config: BTreeMap::from([
            ("count".to_owned(), count.to_string()),
            ("rate".to_owned(), rate.to_string()),
            ("payload_size".to_owned(), "60".to_owned()),
        ]),
        secrets: BTreeMap::new(),
        topics: vec![topic.to_owned()],
        subscription: None,
        parallelism: 1,
        guarantee,
    }
}

fn file_sink(input: &str, path: &Path, guarantee: Guarantee) -> ConnectorSpec {
    ConnectorSpec {
        kind: ConnectorKind::Sink,
        connector_type: "file".to_owned(),
        config: BTreeMap::from([(
            "path".to_owned(),
            serde_json::Value::String(path.display().to_string()).to_string(),
        )]),
        secrets: BTreeMap::new(),
        topics: vec![input.to_owned()],
        subscription: None,
        parallelism: 1,
        guarantee,
    }
}

/// Reads every message of `topic` from the start and returns the datagen indexes (keys) in
/// the order stored; waits for `at_least`, then briefly for more.
async fn read_indexes(topic: &str, at_least: usize) -> Vec<u64> {
    let client = PulsarSettings::new(broker().url)
        .connect()
        .await
        .expect("connect the reader");
    let mut options = SinkConsumerOptions::new(vec![topic.to_owned()], unique_name("checker"));
    options.subscription_type = SinkSubscription::Exclusive;
    options.start = StartPosition::Earliest;
    let mut consumer = SinkConsumer::open(&client, options)
        .await
        .expect("subscribe the reader");
    let mut indexes = Vec::new();
    loop {
        let wait = if indexes.len() < at_least {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(700)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(message) => {
                let message = message.expect("a message");
                let key = message.key.clone().expect("datagen keys every record");
                indexes.push(key.parse().expect("a numeric key"));
            }
            Err(_) if indexes.len() < at_least => {
                panic!("only {} of {at_least} messages arrived", indexes.len())
            }
            Err(_) => break,
        }
    }
    consumer.close().await.expect("close the reader");
    indexes
}

/// The number of messages of `topic` that `subscription` has yet to acknowledge, from the
/// broker's topic stats (None while the broker does not know the subscription).
fn backlog(topic: &str, subscription: &str) -> Option<u64> {
    let path = topic.strip_prefix("persistent://")?;
    let (status, body) = broker::http_get(
        &broker().admin_url,
        &format!("/admin/v2/persistent/{path}/stats"),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
    stats["subscriptions"][subscription]["msgBacklog"].as_u64()
}

/// The datagen indexes in the lines of `path`, in file order.
fn file_indexes(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["index"].as_u64().expect("an index")
        })
        .collect()
}

/// Checks `indexes` against `0..count` under `guarantee`, naming the first problem.
fn check(guarantee: Guarantee, indexes: &[u64], count: u64) {
    let distinct: BTreeSet<u64> = indexes.iter().copied().collect();
    let expected: BTreeSet<u64> = (0..count).collect();
    assert!(
        distinct.is_subset(&expected),
        "records that never went in: {:?}",
        distinct.difference(&expected).take(5).collect::<Vec<_>>()
    );
    match guarantee {
        Guarantee::EffectivelyOnce => {
            let missing: Vec<&u64> = expected.difference(&distinct).take(5).collect();
            assert!(
                missing.is_empty(),
                "effectively-once lost records: {missing:?}"
            );
            let in_order: Vec<u64> = (0..count).collect();
            assert_eq!(
                indexes.len() as u64,
                count,
                "effectively-once: {} records for {count} in (duplicates or loss)",
                indexes.len()
            );
            assert!(indexes == in_order, "effectively-once: out of order");
        }
        Guarantee::AtLeastOnce => {
            let missing: Vec<&u64> = expected.difference(&distinct).take(5).collect();
            assert!(
                missing.is_empty(),
                "at-least-once lost records: {missing:?}"
            );
        }
        Guarantee::AtMostOnce => {
            assert_eq!(
                distinct.len(),
                indexes.len(),
                "at-most-once repeated records"
            );
        }
    }
}

const GUARANTEES: [Guarantee; 3] = [
    Guarantee::EffectivelyOnce,
    Guarantee::AtLeastOnce,
    Guarantee::AtMostOnce,
];

#[test]
fn t10_a_source_survives_its_supervisor_restarting_under_each_guarantee() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        for guarantee in GUARANTEES {
            let count = 3_000;
            let output = topic("runtime-source");
            let key = harness
                .create(
                    &unique_name("gen"),
                    datagen(&output, guarantee, count, 3_000),
                )
                .await;
            harness.wait_confirmed(&key, 600).await;
            harness.restart_supervisor().await;
            harness.wait_state(&key, ReportedState::Finished).await;
            let indexes = read_indexes(&output, 1).await;
            check(guarantee, &indexes, count);
            if guarantee == Guarantee::EffectivelyOnce {
                let report = harness.board.get(&key).expect("a report");
                assert!(
                    report.status.records_read < count,
                    "the restarted instance resumed from its checkpoint, not from the start"
                );
            }
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t20_a_file_sink_survives_its_supervisor_restarting_under_each_guarantee() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        for guarantee in GUARANTEES {
            let count = 3_000;
            let input = topic("runtime-sink");
            let path: PathBuf = dir.path().join(unique_name("out"));
            let source = harness
                .create(
                    &unique_name("gen"),
                    // Slow enough that the sink is restarted mid-stream.
                    datagen(&input, Guarantee::EffectivelyOnce, count, 1_000),
                )
                .await;
            let sink = harness
                .create(&unique_name("file"), file_sink(&input, &path, guarantee))
                .await;
            harness.wait_confirmed(&sink, 600).await;
            harness.restart_supervisor().await;
            harness.wait_state(&source, ReportedState::Finished).await;
            // A sink never ends: it is done when its subscription has nothing left to
            // deliver (everything acknowledged) and it holds nothing unflushed.
            let board = harness.board.clone();
            let sink_key = sink.clone();
            let subscription = format!("ferry-public-default-{}", sink.connector.name);
            wait::until("the sink took in the whole input", TIMEOUT, || {
                let report = board.get(&sink_key);
                let backlog = backlog(&input, &subscription);
                async move {
                    let report = report?;
                    (report.state == ReportedState::Running
                        && report.status.pending() == 0
                        && backlog == Some(0))
                    .then_some(())
                }
            })
            .await;
            check(guarantee, &file_indexes(&path), count);
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t30_an_instance_that_cannot_start_is_failed_with_its_reason_and_retried() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let output = topic("runtime-bad");
        let mut spec = datagen(&output, Guarantee::AtLeastOnce, 10, 1_000);
        // datagen has no secret fields, so the reference lands in the config join as an
        // unknown field only after it resolves: it never does.
        spec.secrets = BTreeMap::from([(
            "password".to_owned(),
            Secret::new("env:FERRY_TEST_SURELY_UNSET"),
        )]);
        let bad = harness.create(&unique_name("bad"), spec).await;
        harness.wait_state(&bad, ReportedState::Failed).await;
        let board = harness.board.clone();
        let retried = wait::until("the failed instance is retried", TIMEOUT, || {
            let report = board.get(&bad);
            async move { report.filter(|report| report.restarts >= 2) }
        })
        .await;
        let error = retried.status.last_error.unwrap_or_default();
        assert!(
            error.contains("password") && error.contains("FERRY_TEST_SURELY_UNSET"),
            "{error}"
        );
        // The node still runs other connectors.
        let good = harness
            .create(
                &unique_name("good"),
                datagen(&topic("runtime-good"), Guarantee::AtLeastOnce, 10, 1_000),
            )
            .await;
        harness.wait_state(&good, ReportedState::Finished).await;
        harness.stop().await;
    })
    .expect("the runtime builds");
}
