//! A node's connector runtime in-process, shared by the runtime and conformance tests: a
//! 1-node metadata store, the supervisor against the real broker and the leader's placement
//! loop, plus readers of what the connectors wrote.
//!
//! Included with `#[path = "common/runtime.rs"]` by the test files that run connectors, so
//! that `common/mod.rs` (the `ferry serve` child process) stays free of them.

#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use actix::{Actor, Addr};
use ferry_actors::instance::sink::SinkCheckpoint;
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::sink_consumer::{
    InputMessage, SinkConsumer, SinkConsumerOptions, SinkSubscription, StartPosition,
};
use ferry_node::control;
use ferry_node::meta::local::LocalNode;
use ferry_node::meta::state::{
    Command, ConnectorKind, ConnectorName, ConnectorSpec, Guarantee, InstanceKey,
};
use ferry_node::meta::{Faults, Meta, RaftTuning};
use ferry_node::supervisor::{
    InstanceReport, ReportedState, StatusBoard, StopSupervisor, Supervisor, SupervisorSettings,
};
use ferry_test_support::broker::{self, broker};
use ferry_test_support::{unique_name, wait};
use tempfile::TempDir;

/// How long any one condition may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);

/// Every guarantee, strongest first.
pub(crate) const GUARANTEES: [Guarantee; 3] = [
    Guarantee::EffectivelyOnce,
    Guarantee::AtLeastOnce,
    Guarantee::AtMostOnce,
];

/// One node with its supervisor and control loop.
pub(crate) struct Harness {
    node: Option<LocalNode>,
    _dir: TempDir,
    /// How the supervisor runs instances (fast backoff).
    pub(crate) settings: SupervisorSettings,
    /// The current supervisor's board (replaced by a restart).
    pub(crate) board: StatusBoard,
    supervisor: Addr<Supervisor>,
    stop_control: tokio::sync::watch::Sender<()>,
}

impl Harness {
    /// Starts a bootstrapped one-node store, a supervisor restarting failed instances after
    /// 100 ms doubling up to 400 ms, and the placement loop.
    pub(crate) async fn start() -> Self {
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

    /// The metadata store.
    pub(crate) fn meta(&self) -> &Meta {
        &self.node.as_ref().expect("a running node").meta
    }

    /// Tears the supervisor down (every instance stopped at once, no final checkpoint) and
    /// starts a new one, as a node process restart would.
    pub(crate) async fn restart_supervisor(&mut self) {
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

    /// Creates connector `public/default/name` in the store and returns its instance 0.
    pub(crate) async fn create(&self, name: &str, spec: ConnectorSpec) -> InstanceKey {
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

    /// Waits until `key`'s report satisfies `condition` (named by `reason`), and returns it.
    pub(crate) async fn wait_report(
        &self,
        key: &InstanceKey,
        reason: &str,
        condition: impl Fn(&InstanceReport) -> bool,
    ) -> InstanceReport {
        let board = self.board.clone();
        wait::until(&format!("{key} {reason}"), TIMEOUT, || {
            let report = board.get(key).filter(|report| condition(report));
            async move { report }
        })
        .await
    }

    /// Waits until `key` reports `state`, and returns its report.
    pub(crate) async fn wait_state(
        &self,
        key: &InstanceKey,
        state: ReportedState,
    ) -> InstanceReport {
        self.wait_report(key, &format!("is {}", state.as_str()), |report| {
            report.state == state
        })
        .await
    }

    /// Waits until `key` has confirmed at least `count` records under the current supervisor.
    pub(crate) async fn wait_confirmed(&self, key: &InstanceKey, count: u64) {
        self.wait_report(key, &format!("confirmed {count} records"), |report| {
            report.status.records_confirmed >= count && report.status.checkpoints_committed > 0
        })
        .await;
    }

    /// Waits until sink `key` took in the whole of `input`: a sink never ends, so it is done
    /// when its subscription has nothing left to deliver (everything acknowledged) and it
    /// holds nothing unflushed. Returns its report.
    pub(crate) async fn wait_drained(&self, key: &InstanceKey, input: &str) -> InstanceReport {
        let board = self.board.clone();
        let subscription = format!("ferry-public-default-{}", key.connector.name);
        wait::until(&format!("{key} took in the whole input"), TIMEOUT, || {
            let report = board.get(key);
            let backlog = backlog(input, &subscription);
            async move {
                let report = report?;
                (report.state == ReportedState::Running
                    && report.status.pending() == 0
                    && backlog == Some(0))
                .then_some(report)
            }
        })
        .await
    }

    /// Returns the committed checkpoint of sink `key`, decoded.
    pub(crate) fn sink_checkpoint(&self, key: &InstanceKey) -> Option<SinkCheckpoint> {
        let position = self
            .meta()
            .read_local(|state| state.checkpoints.get(key).map(|c| c.position.clone()))?;
        Some(SinkCheckpoint::decode(&position).expect("a sink checkpoint"))
    }

    /// Stops the control loop, the supervisor and the node.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop_control.send(());
        let _ = self.supervisor.send(StopSupervisor).await;
        if let Some(node) = self.node.take() {
            node.stop().await.expect("the node stops");
        }
    }
}

/// Returns a new topic name in public/default.
pub(crate) fn topic(prefix: &str) -> String {
    format!("persistent://public/default/{}", unique_name(prefix))
}

/// Returns a spec of one instance of `connector_type` with `config` (field -> JSON text).
pub(crate) fn spec(
    kind: ConnectorKind,
    connector_type: &str,
    config: &[(&str, String)],
    topic: &str,
    guarantee: Guarantee,
) -> ConnectorSpec {
    ConnectorSpec {
        kind,
        connector_type: connector_type.to_owned(),
        config: config
            .iter()
            .map(|(field, value)| ((*field).to_owned(), value.clone()))
            .collect(),
        secrets: BTreeMap::new(),
        topics: vec![topic.to_owned()],
        subscription: None,
        parallelism: 1,
        guarantee,
        error_policy: ferry_node::meta::state::ErrorPolicy::Fail,
        options: ferry_node::meta::state::RuntimeOptions::default(),
    }
}

/// The JSON text of the string `text`.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A datagen source of `count` records at `rate` records/s into `topic`.
pub(crate) fn datagen(topic: &str, guarantee: Guarantee, count: u64, rate: u64) -> ConnectorSpec {
    spec(
        ConnectorKind::Source,
        "datagen",
        &[
            ("count", count.to_string()),
            ("rate", rate.to_string()),
            ("payload_size", "60".to_owned()),
        ],
        topic,
        guarantee,
    )
}

/// A file sink from `input` to `path`.
pub(crate) fn file_sink(input: &str, path: &Path, guarantee: Guarantee) -> ConnectorSpec {
    spec(
        ConnectorKind::Sink,
        "file",
        &[("path", json_string(&path.display().to_string()))],
        input,
        guarantee,
    )
}

/// The `index` field of a JSON record value (datagen's, or a line the tests wrote).
pub(crate) fn index_of(value: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(value).expect("a JSON value");
    value["index"].as_u64().expect("an index")
}

/// Reads `topic` from the start until `complete` says the messages read so far are all that
/// was wanted (`wanted` says what, for the failure), then for `settle` more (a repeat would
/// show there); returns them in the order stored.
pub(crate) async fn read_messages(
    topic: &str,
    wanted: &str,
    mut complete: impl FnMut(&[InputMessage]) -> bool,
    settle: Duration,
) -> Vec<InputMessage> {
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
    let mut messages = Vec::new();
    loop {
        let done = complete(&messages);
        let wait = if done {
            settle
        } else {
            Duration::from_secs(30)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(message) => messages.push(message.expect("a message")),
            Err(_) if !done => panic!(
                "not all of {wanted} arrived in {topic}: {} messages",
                messages.len()
            ),
            Err(_) => break,
        }
    }
    consumer.close().await.expect("close the reader");
    messages
}

/// Reads every message of `topic` from the start and returns the indexes in their values, in
/// the order stored; waits until `distinct` different indexes arrived, then briefly for more
/// (duplicates).
pub(crate) async fn read_indexes(topic: &str, distinct: usize) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    let mut counted = 0;
    let messages = read_messages(
        topic,
        &format!("{distinct} distinct records"),
        |messages| {
            for message in &messages[counted..] {
                seen.insert(index_of(&message.payload));
            }
            counted = messages.len();
            seen.len() >= distinct
        },
        Duration::from_millis(700),
    )
    .await;
    messages
        .iter()
        .map(|message| index_of(&message.payload))
        .collect()
}

/// The number of messages of `topic` that `subscription` has yet to acknowledge, from the
/// broker's topic stats (None while the broker does not know the subscription). Precise: the
/// broker's default estimate counts what it dispatched to a consumer as consumed, so after a
/// consumer dies with messages unacknowledged it can say 0 while they wait for redelivery.
pub(crate) fn backlog(topic: &str, subscription: &str) -> Option<u64> {
    let path = topic.strip_prefix("persistent://")?;
    let (status, body) = broker::http_get(
        &broker().admin_url,
        &format!("/admin/v2/persistent/{path}/stats?getPreciseBacklog=true"),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    let stats: serde_json::Value = serde_json::from_str(&body).ok()?;
    stats["subscriptions"][subscription]["msgBacklog"].as_u64()
}

/// The indexes in the lines of `path`, in file order.
pub(crate) fn file_indexes(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|line| index_of(line.as_bytes())).collect()
}

/// Checks `indexes` against `0..count` under `guarantee`, naming the first problem.
pub(crate) fn check(guarantee: Guarantee, indexes: &[u64], count: u64) {
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
