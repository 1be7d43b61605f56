//! The connector conformance suite (../shared/STYLE.md 9): one generic suite runs every
//! connector type in `ferry_actors::connectors::registry()` through the same cases, through
//! the fixture the type gives (`ferry_actors::api::fixture`), against the real broker and the
//! type's real external system. A case runs every type under every guarantee it offers, all
//! at once, gathers every problem and reports them together, each naming the type, the case
//! and the guarantee.
//!
//! - t00 guard: every registered type has a fixture; the guard itself fails for a type
//!   registered without one.
//! - t10 bad config: each of a fixture's bad configs that validation must catch is refused
//!   naming the field, by the type's validation and by a real node's admin API (create), with
//!   no secret in the message nor in the node's log; the others pass validation.
//! - t11 bad config that slips through (written to the store as is, or only wrong at run
//!   time): the instance is FAILED with the reason naming the field and no secret, retried
//!   with backoff, and the node keeps running other connectors.
//! - t20 resume: the supervisor is restarted mid-stream (every instance actor stopped at once,
//!   no final checkpoint) once each instance committed a checkpoint covering a quarter of its
//!   input: the new instances start at the checkpoint (they read less than the input) and the
//!   output holds the input as the guarantee says.
//! - t21 crash, instance actors killed: the same restart as early as possible, as soon as each
//!   instance read anything (often before its first checkpoint covering input).
//! - t22 crash, node process killed: a real `ferry serve` is killed with SIGKILL mid-stream and
//!   started again from its data directory.
//! - t30 parallel: sources whose fixture splits an input between instances run with
//!   parallelism 3, restarted mid-stream: every record once (the regression test of issue 10's
//!   "datagen with parallelism N repeats itself").
//! - t40 outage: types whose fixture can take their system away: mid-stream the instance is
//!   FAILED with a reason naming the system, its restarts grow (backoff), and once the system
//!   is back it recovers with the guarantee intact.
//!
//! What "as the guarantee says" means: at-most-once repeats nothing, at-least-once loses
//! nothing, effectively-once gives every record exactly once (in order, with one instance).
//! Sources are counted in their topic by the fixture's record ids; sinks are fed JSON
//! `{"id": n, "text": ...}` keyed by `n` (once the sink runs), and counted by the ids the
//! fixture reads back (or by the committed position, `records=<n>`, when the output cannot be
//! read); a sink's committed position is also checked against its output.
//!
//! So that each kill lands where it should, t20, t21 and t30 give each run an in-process node
//! of its own, and t22 a `ferry serve` per type. A run is checked once its end holds still
//! (instances settled, input or output fully read, the same for longer than two status
//! refreshes).
//!
//! Needs the shared broker (`deploy/pulsar/standalone.sh start`) and PostgreSQL
//! (`deploy/postgres/postgres.sh start`; `FERRY_TEST_PG_URL` points elsewhere).

#[path = "common/runtime.rs"]
mod harness;

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_actors::api::fixture::{Feed, Outage, SinkOutput, SourceFixture, SourceInput};
use ferry_actors::api::registry::{
    ConnectorType, Fixture, InstanceContext, Registry, SinkFactory, split_config,
};
use ferry_actors::api::{ConnectorError, Sink, SinkCapabilities, SinkDelivery};
use ferry_actors::connectors::blackhole::{BlackholeConfig, BlackholeSink};
use ferry_actors::instance::sink::SinkCheckpoint;
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::sink_consumer::{
    SinkConsumer, SinkConsumerOptions, SinkSubscription, StartPosition,
};
use ferry_node::meta::state::{
    Command, ConnectorKind, ConnectorName, ConnectorSpec, Guarantee, InstanceKey, Secret,
};
use ferry_node::supervisor::ReportedState;
use ferry_proto::admin::v1 as proto;
use ferry_proto::admin::v1::admin_client::AdminClient;
use ferry_test_support::broker::broker;
use ferry_test_support::{unique_name, wait};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use pulsar::{Pulsar, TokioExecutor, producer};
use serde_json::{Map, Value};
use tonic::transport::Channel;

use harness::{Harness, TIMEOUT, backlog, topic};

/// Records per run: small, so the whole file runs in well under a minute.
const COUNT: u64 = 600;
/// Records a second: a restart lands mid-stream. The instance actors of a test share one
/// thread (the actix arbiter they start on), so all its runs together must stay well within
/// what a debug build moves on a loaded 2-core machine.
const RATE: u64 = 300;

// ---------------------------------------------------------------------------------------
// The types under test and their fixtures

/// A registered type and its fixture.
struct Subject {
    connector_type: &'static ConnectorType,
    fixture: Fixture,
}

impl Subject {
    /// `source datagen`, `sink postgres`.
    fn name(&self) -> String {
        format!("{} {}", self.connector_type.kind, self.connector_type.name)
    }

    /// The guarantees the type offers, weakest first.
    fn guarantees(&self) -> Vec<Guarantee> {
        Guarantee::ALL
            .into_iter()
            .filter(|guarantee| self.connector_type.check_guarantee(*guarantee).is_ok())
            .collect()
    }

    fn kind(&self) -> ConnectorKind {
        self.connector_type.kind
    }

    fn source(&self) -> Option<&dyn SourceFixture> {
        match &self.fixture {
            Fixture::Source(fixture) => Some(fixture.as_ref()),
            Fixture::Sink(_) => None,
        }
    }

    fn bad_configs(&self) -> Vec<ferry_actors::api::fixture::BadConfig> {
        match &self.fixture {
            Fixture::Source(fixture) => fixture.bad_configs(),
            Fixture::Sink(fixture) => fixture.bad_configs(),
        }
    }
}

/// The registered types of `registry` that have no fixture (`sink fixtureless`).
fn missing_fixtures(registry: &Registry) -> Vec<String> {
    registry
        .types()
        .iter()
        .filter(|connector_type| connector_type.fixture().is_none())
        .map(|connector_type| format!("{} {}", connector_type.kind, connector_type.name))
        .collect()
}

/// Every registered type with its fixture; fails naming the types without one.
fn subjects() -> Vec<Subject> {
    let registry = ferry_actors::connectors::registry();
    let missing = missing_fixtures(registry);
    assert!(
        missing.is_empty(),
        "registered types without a conformance fixture: {}",
        missing.join(", ")
    );
    registry
        .types()
        .iter()
        .filter_map(|connector_type| {
            Some(Subject {
                connector_type,
                fixture: connector_type.fixture()?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Problems, gathered and reported at the end

/// Which type, case and guarantee a problem is about.
#[derive(Debug, Clone)]
struct Label {
    subject: String,
    case: &'static str,
    guarantee: Option<Guarantee>,
    detail: String,
}

impl fmt::Display for Label {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "[{} / {}", self.subject, self.case)?;
        if let Some(guarantee) = self.guarantee {
            write!(formatter, " / {guarantee}")?;
        }
        if !self.detail.is_empty() {
            write!(formatter, " / {}", self.detail)?;
        }
        formatter.write_str("]")
    }
}

/// The problems a case found.
#[derive(Debug, Default)]
struct Report(Mutex<Vec<String>>);

impl Report {
    fn add(&self, label: &Label, problem: impl fmt::Display) {
        let line = format!("{label} {problem}");
        eprintln!("problem: {line}");
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Fails the test listing every problem.
    fn assert_none(self) {
        let problems = self.0.into_inner().unwrap_or_else(PoisonError::into_inner);
        assert!(
            problems.is_empty(),
            "{} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

/// Runs `future`, turning a panic (a harness wait that timed out, a failed expectation) into
/// an error, so that one run's failure does not hide the others'.
async fn attempt<T>(future: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned())),
    }
}

// ---------------------------------------------------------------------------------------
// Nodes: the in-process harness and a `ferry serve` process

/// A connector as a case creates it.
#[derive(Debug, Clone)]
struct Connector {
    kind: ConnectorKind,
    connector_type: &'static str,
    config: Map<String, Value>,
    topic: String,
    guarantee: Guarantee,
    parallelism: u32,
}

impl Connector {
    /// The spec as the admin API would store it: plain values as JSON texts, secrets apart.
    fn spec(&self, connector_type: &ConnectorType) -> Result<ConnectorSpec, String> {
        let stored = split_config(&connector_type.definition, &self.config)
            .map_err(|error| format!("cannot store the config: {error}"))?;
        Ok(ConnectorSpec {
            kind: self.kind,
            connector_type: self.connector_type.to_owned(),
            config: stored.plain,
            secrets: stored
                .secrets
                .into_iter()
                .map(|(field, value)| (field, Secret::new(value)))
                .collect(),
            topics: vec![self.topic.clone()],
            subscription: None,
            parallelism: self.parallelism,
            guarantee: self.guarantee,
            error_policy: ferry_node::meta::state::ErrorPolicy::Fail,
            options: ferry_node::meta::state::RuntimeOptions::default(),
        })
    }
}

/// Where an instance is, as a node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Failed,
    Finished,
    Other,
}

/// One instance, as a node reports it.
#[derive(Debug, Clone)]
struct Progress {
    state: State,
    /// Records read by the instance running now.
    read: u64,
    /// Of those, done with (confirmed, or written and checkpointed).
    done: u64,
    /// Restarts after failures.
    restarts: u64,
    /// The last error.
    error: String,
    /// The committed checkpoint, when any.
    checkpoint: Option<Vec<u8>>,
}

impl Progress {
    /// Running or finished with nothing read left undone.
    fn settled(&self) -> bool {
        matches!(self.state, State::Running | State::Finished) && self.read == self.done
    }
}

/// What the cases need of a node.
trait Node: Sync {
    /// Creates `connector` as `public/default/name`.
    fn create<'a>(
        &'a self,
        name: &'a str,
        connector_type: &'a ConnectorType,
        connector: &'a Connector,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Reports on instances `0..parallelism` of `name`; None for an instance it has no report
    /// of yet.
    fn progress<'a>(
        &'a self,
        name: &'a str,
        parallelism: u32,
    ) -> BoxFuture<'a, Vec<Option<Progress>>>;
}

/// The in-process node of the harness (borrowed: a restart replaces its supervisor and board,
/// and stopping it needs every handle on its store gone).
struct InProcess<'h>(&'h Harness);

fn key(name: &str, instance: u32) -> InstanceKey {
    InstanceKey {
        connector: ConnectorName::new("public", "default", name),
        instance,
    }
}

impl Node for InProcess<'_> {
    fn create<'a>(
        &'a self,
        name: &'a str,
        connector_type: &'a ConnectorType,
        connector: &'a Connector,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let spec = connector.spec(connector_type)?;
            self.0
                .meta()
                .write(Command::CreateConnector {
                    connector: ConnectorName::new("public", "default", name),
                    spec,
                })
                .await
                .map_err(|error| format!("create {name}: {error}"))?
                .map_err(|rejection| format!("create {name}: {rejection}"))?;
            Ok(())
        })
    }

    fn progress<'a>(
        &'a self,
        name: &'a str,
        parallelism: u32,
    ) -> BoxFuture<'a, Vec<Option<Progress>>> {
        Box::pin(async move {
            (0..parallelism)
                .map(|instance| {
                    let key = key(name, instance);
                    let report = self.0.board.get(&key)?;
                    let checkpoint = self.0.meta().read_local(|state| {
                        state.checkpoints.get(&key).map(|c| c.position.clone())
                    });
                    Some(Progress {
                        state: match report.state {
                            ReportedState::Starting => State::Starting,
                            ReportedState::Running => State::Running,
                            ReportedState::Failed => State::Failed,
                            ReportedState::Finished => State::Finished,
                            ReportedState::Stuck | ReportedState::Stopped => State::Other,
                        },
                        read: report.status.records_read,
                        done: report.status.records_confirmed,
                        restarts: u64::from(report.restarts),
                        error: report.status.last_error.unwrap_or_default(),
                        checkpoint,
                    })
                })
                .collect()
        })
    }
}

/// A `ferry serve` process with its own data directory, bootstrapped as a one-node cluster.
struct Served {
    /// The process (in a mutex so that the node can be shared between the runs' tasks).
    node: Mutex<Option<common::Node>>,
    args: Vec<String>,
    client: AdminClient<Channel>,
    dir: tempfile::TempDir,
}

impl Served {
    /// Starts the node and waits until it is in its cluster.
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data").display().to_string();
        let broker = broker();
        let args: Vec<String> = [
            "--bootstrap",
            "--node-id",
            "1",
            "--data-dir",
            &data,
            "--pulsar-url",
            &broker.url,
            "--pulsar-admin-url",
            &broker.admin_url,
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let node = Self::spawn(dir.path(), &args, "127.0.0.1:0").await;
        let client = AdminClient::new(
            tonic::transport::Endpoint::from_shared(node.url())
                .expect("a node URL")
                .connect_lazy(),
        );
        Self {
            node: Mutex::new(Some(node)),
            args,
            client,
            dir,
        }
    }

    async fn spawn(dir: &std::path::Path, args: &[String], listen: &str) -> common::Node {
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .expect("the node's log file");
        let mut args = args.to_vec();
        args.extend(["--listen".to_owned(), listen.to_owned()]);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut node = common::Node::start_with(&args, &[], Stdio::from(log));
            node.wait_for_line("node 1 is in its cluster");
            node
        })
        .await
        .expect("the node starts")
    }

    /// Kills the process with SIGKILL and starts it again on the same address and data.
    async fn kill_and_restart(&mut self) {
        let mut node = self
            .node
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("a running node");
        node.signal("KILL");
        node.wait_for_exit().await;
        let address = node.address.to_string();
        drop(node);
        let restarted = Self::spawn(self.dir.path(), &self.args, &address).await;
        *self.node.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(restarted);
    }

    /// What the node logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }
}

fn proto_name(name: &str) -> proto::ConnectorName {
    proto::ConnectorName {
        tenant: "public".to_owned(),
        namespace: "default".to_owned(),
        name: name.to_owned(),
    }
}

fn proto_kind(kind: ConnectorKind) -> i32 {
    match kind {
        ConnectorKind::Source => proto::ConnectorKind::Source,
        ConnectorKind::Sink => proto::ConnectorKind::Sink,
    }
    .into()
}

fn proto_guarantee(guarantee: Guarantee) -> i32 {
    match guarantee {
        Guarantee::AtMostOnce => proto::ProcessingGuarantee::AtMostOnce,
        Guarantee::AtLeastOnce => proto::ProcessingGuarantee::AtLeastOnce,
        Guarantee::EffectivelyOnce => proto::ProcessingGuarantee::EffectivelyOnce,
    }
    .into()
}

/// The admin API's create request for `connector`.
fn create_request(name: &str, connector: &Connector) -> proto::CreateConnectorRequest {
    proto::CreateConnectorRequest {
        name: Some(proto_name(name)),
        spec: Some(proto::ConnectorSpec {
            kind: proto_kind(connector.kind),
            connector_type: connector.connector_type.to_owned(),
            config_json: Value::Object(connector.config.clone()).to_string(),
            topics: vec![connector.topic.clone()],
            subscription: None,
            parallelism: Some(i32::try_from(connector.parallelism).expect("a small parallelism")),
            processing_guarantee: proto_guarantee(connector.guarantee),
            ..proto::ConnectorSpec::default()
        }),
    }
}

impl Node for Served {
    fn create<'a>(
        &'a self,
        name: &'a str,
        _connector_type: &'a ConnectorType,
        connector: &'a Connector,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.client
                .clone()
                .create_connector(create_request(name, connector))
                .await
                .map(drop)
                .map_err(|status| format!("create {name}: {}", status.message()))
        })
    }

    fn progress<'a>(
        &'a self,
        name: &'a str,
        parallelism: u32,
    ) -> BoxFuture<'a, Vec<Option<Progress>>> {
        Box::pin(async move {
            let status = self
                .client
                .clone()
                .get_connector_status(proto::GetConnectorStatusRequest {
                    name: Some(proto_name(name)),
                    kind: proto::ConnectorKind::Unspecified.into(),
                    instance_id: None,
                })
                .await;
            let instances = status
                .map(|status| status.into_inner().instances)
                .unwrap_or_default();
            (0..parallelism)
                .map(|instance| {
                    let status = instances
                        .iter()
                        .find(|status| status.instance_id == instance)?;
                    let state = match proto::InstanceState::try_from(status.state) {
                        Ok(proto::InstanceState::Starting) => State::Starting,
                        Ok(proto::InstanceState::Running) => State::Running,
                        Ok(proto::InstanceState::Failed) => State::Failed,
                        Ok(proto::InstanceState::Finished) => State::Finished,
                        // Assigned but not reported on yet: starting.
                        Ok(proto::InstanceState::Assigned) => State::Starting,
                        _ => State::Other,
                    };
                    Some(Progress {
                        state,
                        read: status.records_received,
                        done: status.records_written,
                        restarts: status.restarts,
                        error: status.last_error.clone(),
                        checkpoint: status
                            .checkpoint
                            .as_ref()
                            .map(|checkpoint| checkpoint.position.to_vec()),
                    })
                })
                .collect()
        })
    }
}

// ---------------------------------------------------------------------------------------
// Runs: one connector of one type under one guarantee, with its input or output

/// A message's key and value.
type KeyValue = (Option<String>, Vec<u8>);

/// What a source run reads back from its topic: every message, in order.
struct TopicReader {
    subscription: String,
    messages: Arc<Mutex<Vec<KeyValue>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TopicReader {
    /// Subscribes to `topic` from its start and keeps reading (and acknowledging, so that the
    /// subscription's backlog says when it has read everything stored).
    async fn start(pulsar: &Pulsar<TokioExecutor>, topic: &str) -> Result<Self, String> {
        let subscription = unique_name("checker");
        let mut options = SinkConsumerOptions::new(vec![topic.to_owned()], subscription.clone());
        options.subscription_type = SinkSubscription::Exclusive;
        options.start = StartPosition::Earliest;
        let mut consumer = SinkConsumer::open(pulsar, options)
            .await
            .map_err(|error| format!("subscribe to {topic}: {error}"))?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let messages = messages.clone();
            async move {
                loop {
                    let message = tokio::select! {
                        _ = stopped.changed() => break,
                        message = consumer.next() => message,
                    };
                    let Ok(message) = message else { break };
                    let _ = consumer.ack(&message).await;
                    messages
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((message.key, message.payload));
                }
                let _ = consumer.close().await;
            }
        });
        Ok(Self {
            subscription,
            messages,
            stop,
            task,
        })
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// How far a sink run's feeder got.
#[derive(Debug, Default)]
struct Fed {
    sent: u64,
    outcome: Option<Result<(), String>>,
}

/// Publishes `{"id": n, "text": "record n"}` keyed by `n` for `0..count` into `topic`, about
/// `rate` a second, never past the limit the returned sender sets (it starts at `limit`): a
/// sink's input waits until the sink runs, and an outage's second half until the system is
/// gone, so that the outage certainly meets input to write.
fn feed(
    pulsar: Pulsar<TokioExecutor>,
    topic: String,
    count: u64,
    rate: u64,
    limit: u64,
) -> (Arc<Mutex<Fed>>, tokio::sync::watch::Sender<u64>) {
    let fed = Arc::new(Mutex::new(Fed::default()));
    let (limit, mut limited) = tokio::sync::watch::channel(limit);
    let progress = fed.clone();
    tokio::spawn(async move {
        let outcome = async {
            let mut producer = pulsar
                .producer()
                .with_topic(&topic)
                .with_name(unique_name("feeder"))
                .with_options(producer::ProducerOptions {
                    block_queue_if_full: true,
                    ..Default::default()
                })
                .build()
                .await
                .map_err(|error| format!("feeder for {topic}: {error}"))?;
            // Pacing, not waiting for a condition: each tick sends the records due by then.
            let mut ticks = tokio::time::interval(Duration::from_millis(10));
            let mut started = tokio::time::Instant::now();
            let mut base = 0;
            let mut next = 0;
            while next < count {
                let allowed = *limited.borrow();
                if next >= allowed {
                    // Held: pace again from where it is once more is allowed.
                    if limited.wait_for(|allowed| *allowed > next).await.is_err() {
                        return Err(format!("the feed of {topic} was dropped at {next}"));
                    }
                    (started, base) = (tokio::time::Instant::now(), next);
                }
                ticks.tick().await;
                let allowed = *limited.borrow();
                let due = base + (started.elapsed().as_secs_f64() * rate as f64) as u64;
                let due = due.min(count).min(allowed);
                let mut receipts = Vec::new();
                for id in next..due {
                    let message = producer::Message {
                        payload: format!(r#"{{"id":{id},"text":"record {id}"}}"#).into_bytes(),
                        partition_key: Some(id.to_string()),
                        ..Default::default()
                    };
                    receipts.push(
                        producer
                            .send_non_blocking(message)
                            .await
                            .map_err(|error| format!("feed {topic}: {error}"))?,
                    );
                }
                for receipt in receipts {
                    receipt
                        .await
                        .map_err(|error| format!("feed {topic}: {error}"))?;
                }
                next = next.max(due);
                progress.lock().unwrap_or_else(PoisonError::into_inner).sent = next;
            }
            producer
                .close()
                .await
                .map_err(|error| format!("close the feeder of {topic}: {error}"))
        }
        .await;
        progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .outcome = Some(outcome);
    });
    (fed, limit)
}

/// What a run feeds and reads.
enum Side {
    Source {
        input: Box<dyn SourceInput>,
        reader: TopicReader,
    },
    Sink {
        output: Box<dyn SinkOutput>,
        fed: Arc<Mutex<Fed>>,
        /// How far the feeder may go.
        limit: tokio::sync::watch::Sender<u64>,
    },
}

/// One connector of one type under one guarantee, running.
struct Run<'s> {
    label: Label,
    subject: &'s Subject,
    guarantee: Guarantee,
    /// The connector's name in public/default.
    name: String,
    /// Its topic: the output of a source, the input of a sink.
    topic: String,
    parallelism: u32,
    count: u64,
    side: Side,
}

impl Run<'_> {
    fn outage(&self) -> Option<&dyn Outage> {
        match &self.side {
            Side::Source { input, .. } => input.outage(),
            Side::Sink { output, .. } => output.outage(),
        }
    }

    /// How far the feeder of a sink got, for a report (empty for a source).
    async fn feeding(&self) -> String {
        let Side::Sink { fed, .. } = &self.side else {
            return String::new();
        };
        let (sent, outcome) = {
            let fed = fed.lock().unwrap_or_else(PoisonError::into_inner);
            (fed.sent, fed.outcome.clone())
        };
        let left = backlog_of(&self.topic, &format!("ferry-public-default-{}", self.name)).await;
        format!(
            "{sent} of {} fed ({outcome:?}), backlog {left:?}, ",
            self.count
        )
    }

    /// Every instance's report, or a description of what is missing.
    async fn progress(&self, node: &dyn Node) -> Result<Vec<Progress>, String> {
        instances(node, &self.name, self.parallelism).await
    }

    /// The ids in the topic (sources), in order; records without an id are an error.
    fn topic_ids(
        &self,
        fixture: &dyn SourceFixture,
        reader: &TopicReader,
    ) -> Result<Vec<u64>, String> {
        reader
            .messages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key, value)| {
                fixture.record_id(key.as_deref(), value).ok_or_else(|| {
                    format!(
                        "a record of {} has no id: key {key:?}, value {:?}",
                        self.topic,
                        String::from_utf8_lossy(value)
                    )
                })
            })
            .collect()
    }

    /// Removes what the run made; problems are reported.
    async fn clean_up(self, report: &Report) {
        let cleaned = match self.side {
            Side::Source { input, reader } => {
                reader.stop().await;
                input.clean_up().await
            }
            Side::Sink { output, .. } => output.clean_up().await,
        };
        if let Err(problem) = cleaned {
            report.add(&self.label, format!("cleaning up: {problem}"));
        }
    }
}

/// Makes the input or output of `subject` for a run of `case` under `guarantee`, creates the
/// connector on `node` and starts feeding or reading. None when the feed asks for an outage
/// and the fixture has none to give.
async fn start_run<'s>(
    node: &dyn Node,
    pulsar: &Pulsar<TokioExecutor>,
    subject: &'s Subject,
    case: &'static str,
    guarantee: Guarantee,
    feed_as: Feed,
) -> Result<Option<Run<'s>>, (Label, String)> {
    let label = Label {
        subject: subject.name(),
        case,
        guarantee: Some(guarantee),
        detail: String::new(),
    };
    let test = format!(
        "{case}-{}-{}",
        subject.connector_type.name,
        guarantee.name()
    );
    let name = unique_name(&format!("{case}-{}", subject.connector_type.name));
    let topic = topic(&format!("conformance-{case}"));
    let started = async {
        let (config, side) = match &subject.fixture {
            Fixture::Source(fixture) => {
                let reader = TopicReader::start(pulsar, &topic).await?;
                let input = fixture.input(&test, feed_as).await?;
                (input.config(), Side::Source { input, reader })
            }
            Fixture::Sink(fixture) => {
                let output = fixture.output(&test, feed_as.outage).await?;
                // Held until the sink runs.
                let (fed, limit) = feed(
                    pulsar.clone(),
                    topic.clone(),
                    feed_as.count,
                    feed_as.rate,
                    0,
                );
                (output.config(), Side::Sink { output, fed, limit })
            }
        };
        let run = Run {
            label: label.clone(),
            subject,
            guarantee,
            name,
            topic,
            parallelism: feed_as.parallelism,
            count: feed_as.count,
            side,
        };
        let connector = Connector {
            kind: subject.kind(),
            connector_type: subject.connector_type.name,
            config,
            topic: run.topic.clone(),
            guarantee,
            parallelism: feed_as.parallelism,
        };
        Ok::<_, String>((run, connector))
    };
    let (run, connector) = attempt(started)
        .await
        .map_err(|problem| (label.clone(), problem))?;
    let report = Report::default();
    if feed_as.outage && run.outage().is_none() {
        eprintln!("{label} has no system to take away: nothing to test");
        run.clean_up(&report).await;
        return Ok(None);
    }
    let created = async {
        node.create(&run.name, run.subject.connector_type, &connector)
            .await?;
        if let Side::Sink { limit, .. } = &run.side {
            wait_instances(node, &run.name, run.parallelism, "is RUNNING", |progress| {
                progress.state == State::Running
            })
            .await?;
            // An outage must meet input to write: the second half waits for it.
            let count = feed_as.count;
            limit.send_replace(if feed_as.outage { count / 2 } else { count });
        }
        Ok::<_, String>(())
    };
    if let Err(problem) = attempt(created).await {
        run.clean_up(&report).await;
        return Err((label, problem));
    }
    Ok(Some(run))
}

/// Starts a run of `case` for every subject `feed_as` gives a feed, under every guarantee it
/// offers.
async fn start_runs<'s>(
    node: &dyn Node,
    pulsar: &Pulsar<TokioExecutor>,
    subjects: &'s [Subject],
    case: &'static str,
    feed_as: impl Fn(&Subject) -> Option<Feed>,
    report: &Report,
) -> Vec<Run<'s>> {
    let mut starting = Vec::new();
    for subject in subjects {
        let Some(feed_as) = feed_as(subject) else {
            continue;
        };
        for guarantee in subject.guarantees() {
            starting.push(start_run(node, pulsar, subject, case, guarantee, feed_as));
        }
    }
    let mut runs = Vec::new();
    for started in join_all(starting).await {
        match started {
            Ok(Some(run)) => runs.push(run),
            Ok(None) => {}
            Err((label, problem)) => report.add(&label, problem),
        }
    }
    runs
}

/// Keeps the runs whose step succeeded; reports the others and cleans them up.
async fn keep<'s>(
    runs: Vec<Run<'s>>,
    outcomes: Vec<Result<(), String>>,
    report: &Report,
) -> Vec<Run<'s>> {
    let mut kept = Vec::new();
    for (run, outcome) in runs.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => kept.push(run),
            Err(problem) => {
                report.add(&run.label, problem);
                run.clean_up(report).await;
            }
        }
    }
    kept
}

/// Every instance's report of connector `name`, or a description of what is missing.
async fn instances(node: &dyn Node, name: &str, parallelism: u32) -> Result<Vec<Progress>, String> {
    node.progress(name, parallelism)
        .await
        .into_iter()
        .enumerate()
        .map(|(instance, progress)| {
            progress.ok_or_else(|| format!("no report of instance {instance} yet"))
        })
        .collect()
}

/// Waits until every instance of connector `name` satisfies `condition` (named by `what`).
async fn wait_instances(
    node: &dyn Node,
    name: &str,
    parallelism: u32,
    what: &str,
    condition: impl Fn(&Progress) -> bool,
) -> Result<Vec<Progress>, String> {
    wait::within(&format!("{name} {what}"), TIMEOUT, || async {
        let progress = instances(node, name, parallelism).await?;
        if progress.iter().all(&condition) {
            Ok(progress)
        } else {
            Err(format!("{progress:?}"))
        }
    })
    .await
}

/// Waits until each instance of `run` committed a checkpoint and is done with a quarter of its
/// share of the input: mid-stream.
async fn mid_stream(node: &dyn Node, run: &Run<'_>) -> Result<(), String> {
    let quarter = run.count / 4 / u64::from(run.parallelism);
    wait::within(
        &format!(
            "{} checkpointed and is done with {quarter} records",
            run.name
        ),
        TIMEOUT,
        || async {
            let progress = run.progress(node).await?;
            if progress
                .iter()
                .all(|progress| progress.checkpoint.is_some() && progress.done >= quarter)
            {
                Ok(())
            } else {
                Err(format!("{}instances: {progress:?}", run.feeding().await))
            }
        },
    )
    .await
}

/// Waits until each instance of `run` read anything.
async fn read_anything(node: &dyn Node, run: &Run<'_>) -> Result<(), String> {
    wait_instances(
        node,
        &run.name,
        run.parallelism,
        "read a record",
        |progress| progress.read > 0,
    )
    .await
    .map(drop)
}

/// How long the end of a run must hold still before it is checked: longer than two refreshes
/// of a node's status board (a supervisor publishes its instances' states every 100 ms), so
/// that a report taken just before an instance moved again cannot pass for the end.
const HOLD_STILL: Duration = Duration::from_millis(300);

/// Waits until `observe` reports the same done state (Ok) for [`HOLD_STILL`] on end, and
/// returns it; an Err is what it saw instead (not done yet).
async fn until_still<T, F, Fut>(what: &str, mut observe: F) -> Result<T, String>
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = tokio::time::Instant::now();
    let mut since: Option<(tokio::time::Instant, T)> = None;
    loop {
        let seen = match observe().await {
            Ok(now) => match since.take() {
                Some((at, before)) if before == now && at.elapsed() >= HOLD_STILL => {
                    return Ok(now);
                }
                Some((at, before)) if before == now => {
                    since = Some((at, before));
                    "done, holding still".to_owned()
                }
                _ => {
                    since = Some((tokio::time::Instant::now(), now));
                    "done, just now".to_owned()
                }
            },
            Err(seen) => {
                since = None;
                seen
            }
        };
        if started.elapsed() >= TIMEOUT {
            return Err(format!(
                "timed out after {:.1?} waiting until {what} ({seen})",
                started.elapsed()
            ));
        }
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    }
}

/// The precise backlog of `subscription` on `topic`, off the async workers.
async fn backlog_of(topic: &str, subscription: &str) -> Option<u64> {
    let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
    tokio::task::spawn_blocking(move || backlog(&topic, &subscription))
        .await
        .unwrap_or(None)
}

/// Waits until `run` moved its whole input and holds still, and checks the output under its
/// guarantee.
async fn finish(node: &dyn Node, run: &Run<'_>) -> Result<(), String> {
    let count = run.count;
    let guarantee = run.guarantee;
    let in_order = run.parallelism == 1;
    match &run.side {
        Side::Source { reader, .. } => {
            let fixture = run.subject.source().expect("a source fixture");
            let (ids, _) = until_still(
                &format!("{} wrote its whole input to {}", run.name, run.topic),
                || async {
                    let ids = run.topic_ids(fixture, reader)?;
                    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
                    // At-most-once may lose what was in flight at a crash, the last records
                    // too: its end is the instances' and the topic's holding still.
                    let all_in =
                        distinct.len() as u64 == count || guarantee == Guarantee::AtMostOnce;
                    let progress = run.progress(node).await?;
                    let settled = progress.iter().all(Progress::settled);
                    let caught_up = backlog_of(&run.topic, &reader.subscription).await == Some(0);
                    if all_in && settled && caught_up {
                        Ok((ids, format!("{progress:?}")))
                    } else {
                        Err(format!(
                            "{} distinct ids of {count} in the topic, reader caught up: \
                             {caught_up}, instances: {progress:?}",
                            distinct.len()
                        ))
                    }
                },
            )
            .await?;
            check_ids(guarantee, &ids, count, in_order)
        }
        Side::Sink { output, fed, .. } => {
            let subscription = format!("ferry-public-default-{}", run.name);
            until_still(
                &format!("{} took in the whole of {}", run.name, run.topic),
                || async {
                    let feeding = {
                        let fed = fed.lock().unwrap_or_else(PoisonError::into_inner);
                        match &fed.outcome {
                            None => Some(format!("{} of {count} fed", fed.sent)),
                            Some(Err(problem)) => {
                                return Err(format!("the feeder failed: {problem}"));
                            }
                            Some(Ok(())) => None,
                        }
                    };
                    let progress = run.progress(node).await?;
                    let settled = progress.iter().all(Progress::settled);
                    let left = backlog_of(&run.topic, &subscription).await;
                    match feeding {
                        None if settled && left == Some(0) => Ok(format!("{progress:?}")),
                        _ => Err(format!(
                            "{}, backlog {left:?}, instances: {progress:?}",
                            feeding.as_deref().unwrap_or("all fed")
                        )),
                    }
                },
            )
            .await?;
            for position in committed_sink_positions(node, run).await? {
                output.check_committed(&position).await?;
            }
            match output.read_back().await? {
                Some(ids) => check_ids(guarantee, &ids, count, in_order),
                None => {
                    let counted = committed_count(node, run).await?;
                    check_count(guarantee, counted, count)
                }
            }
        }
    }
}

/// The sink's own positions (what its flushes returned) in the instances' committed
/// checkpoints. An instance may have none: at-most-once, a crash before its first checkpoint
/// can lose everything it took in, leaving nothing for the next instance to write.
async fn committed_sink_positions(node: &dyn Node, run: &Run<'_>) -> Result<Vec<Vec<u8>>, String> {
    run.progress(node)
        .await?
        .into_iter()
        .filter_map(|progress| progress.checkpoint)
        .map(|checkpoint| {
            SinkCheckpoint::decode(&checkpoint)
                .map(|checkpoint| checkpoint.sink)
                .map_err(|error| format!("the checkpoint does not decode: {error}"))
        })
        .collect()
}

/// The number of records a sink counted up to its committed checkpoint, from its position as
/// the type renders it (`records=<n>`).
async fn committed_count(node: &dyn Node, run: &Run<'_>) -> Result<u64, String> {
    let mut counted = 0;
    for position in committed_sink_positions(node, run).await? {
        let rendered = run
            .subject
            .connector_type
            .render_position(&position)
            .map_err(|error| format!("the sink position does not render: {error}"))?;
        counted += rendered
            .strip_prefix("records=")
            .and_then(|number| number.parse::<u64>().ok())
            .ok_or_else(|| format!("the sink position renders as {rendered:?}, not records=<n>"))?;
    }
    Ok(counted)
}

/// Checks ids read back against `0..count` under `guarantee`, naming the first problem.
fn check_ids(guarantee: Guarantee, ids: &[u64], count: u64, in_order: bool) -> Result<(), String> {
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    let strangers: Vec<&u64> = distinct.iter().filter(|id| **id >= count).take(5).collect();
    if !strangers.is_empty() {
        return Err(format!("ids that never went in: {strangers:?}"));
    }
    let missing: Vec<u64> = (0..count)
        .filter(|id| !distinct.contains(id))
        .take(5)
        .collect();
    let mut seen = BTreeSet::new();
    let repeated: Vec<u64> = ids
        .iter()
        .filter(|id| !seen.insert(**id))
        .copied()
        .take(5)
        .collect();
    let lost = || {
        format!(
            "lost records: {} of {count} missing, first {missing:?}",
            count - distinct.len() as u64
        )
    };
    let repeats = || {
        format!(
            "repeated records: {} repeats, first {repeated:?}",
            ids.len() - distinct.len()
        )
    };
    match guarantee {
        Guarantee::AtMostOnce if !repeated.is_empty() => Err(repeats()),
        Guarantee::AtLeastOnce if !missing.is_empty() => Err(lost()),
        Guarantee::EffectivelyOnce if !missing.is_empty() => Err(lost()),
        Guarantee::EffectivelyOnce if !repeated.is_empty() => Err(repeats()),
        Guarantee::EffectivelyOnce if in_order && ids.windows(2).any(|pair| pair[0] > pair[1]) => {
            let at = ids
                .windows(2)
                .position(|pair| pair[0] > pair[1])
                .unwrap_or_default();
            Err(format!(
                "out of order at position {at}: {:?}",
                &ids[at.saturating_sub(2)..(at + 3).min(ids.len())]
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a count of records against `count` under `guarantee`.
fn check_count(guarantee: Guarantee, counted: u64, count: u64) -> Result<(), String> {
    let fine = match guarantee {
        Guarantee::AtMostOnce => counted <= count,
        Guarantee::AtLeastOnce => counted >= count,
        Guarantee::EffectivelyOnce => counted == count,
    };
    if fine {
        Ok(())
    } else {
        Err(format!("counted {counted} records for {count} fed in"))
    }
}

/// Checks that every instance of `run` started at its checkpoint: it read less than the whole
/// input.
async fn resumed(node: &dyn Node, run: &Run<'_>) -> Result<(), String> {
    for (instance, progress) in run.progress(node).await?.iter().enumerate() {
        if progress.read >= run.count {
            return Err(format!(
                "instance {instance} read {} records after the restart: it did not resume from \
                 its checkpoint",
                progress.read
            ));
        }
    }
    Ok(())
}

/// Cleans every run up (those that passed every step), and says which they were.
async fn clean_up_all(runs: Vec<Run<'_>>, report: &Report) {
    let passed: Vec<String> = runs.iter().map(|run| run.label.to_string()).collect();
    eprintln!("{} run(s) passed: {}", passed.len(), passed.join(" "));
    join_all(runs.into_iter().map(|run| run.clean_up(report))).await;
}

async fn connect_pulsar() -> Pulsar<TokioExecutor> {
    PulsarSettings::new(broker().url)
        .connect()
        .await
        .expect("connect to the broker")
}

/// A feed of `COUNT` records at `RATE`, one instance.
fn plain_feed(_: &Subject) -> Option<Feed> {
    Some(Feed {
        count: COUNT,
        rate: RATE,
        parallelism: 1,
        outage: false,
    })
}

// ---------------------------------------------------------------------------------------
// t00: every type has a fixture

/// A sink type registered without a fixture, for the guard's own test.
#[derive(Debug)]
struct Fixtureless;

impl SinkFactory for Fixtureless {
    type Config = BlackholeConfig;
    const NAME: &'static str = "fixtureless";
    const CAPABILITIES: SinkCapabilities = SinkCapabilities {
        delivery: SinkDelivery::Neither,
    };

    fn build(
        _config: BlackholeConfig,
        _context: &InstanceContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(BlackholeSink::default()))
    }
}

#[test]
fn t00_every_registered_type_has_a_fixture() {
    let registry = ferry_actors::connectors::registry();
    assert_eq!(missing_fixtures(registry), Vec::<String>::new());
    // The types the issue names are there: a build without them tests nothing.
    for (kind, name) in [
        (ConnectorKind::Source, "datagen"),
        (ConnectorKind::Source, "file"),
        (ConnectorKind::Sink, "file"),
        (ConnectorKind::Sink, "postgres"),
        (ConnectorKind::Sink, "blackhole"),
    ] {
        assert!(
            registry.find(kind, name).is_ok(),
            "{kind} {name} is not registered"
        );
    }
}

#[test]
fn t00_the_guard_fails_for_a_type_without_a_fixture() {
    let mut registry = ferry_actors::connectors::builtin();
    registry.sink::<Fixtureless>();
    assert_eq!(missing_fixtures(&registry), ["sink fixtureless"]);
}

// ---------------------------------------------------------------------------------------
// t10, t11: bad configs

/// The values of `config`'s secret fields (as `connector_type` declares them): no error may
/// show them.
fn secret_values(connector_type: &ConnectorType, config: &Map<String, Value>) -> Vec<String> {
    config
        .iter()
        .filter(|(field, _)| {
            connector_type
                .definition
                .field(field)
                .is_some_and(|field| field.secret)
        })
        .filter_map(|(_, value)| value.as_str().map(str::to_owned))
        .filter(|value| !value.is_empty())
        .collect()
}

/// Checks that `error` names `field` and shows none of `secrets`.
fn names_field_without_secrets(error: &str, field: &str, secrets: &[String]) -> Result<(), String> {
    if !error.contains(field) {
        return Err(format!("{error:?} does not name the field {field}"));
    }
    if secrets.iter().any(|secret| error.contains(secret.as_str())) {
        return Err(format!("{error:?} shows a secret"));
    }
    Ok(())
}

#[test]
fn t10_bad_configs_are_refused_naming_the_field() {
    ferry_node::runtime::block_on(async {
        let subjects = subjects();
        let report = Report::default();
        let node = Served::start().await;
        let mut refused_secrets = Vec::new();
        for subject in &subjects {
            let connector_type = subject.connector_type;
            for bad in subject.bad_configs() {
                let label = Label {
                    subject: subject.name(),
                    case: "bad config",
                    guarantee: None,
                    detail: Value::Object(bad.config.clone()).to_string(),
                };
                let secrets = secret_values(connector_type, &bad.config);
                let validated = connector_type
                    .validate(&bad.config, &InstanceContext::single("public/default/bad"));
                match (bad.caught_by_validation, validated) {
                    (true, Err(ConnectorError::InvalidConfig { field, reason }))
                        if field == bad.field =>
                    {
                        let error = format!("invalid config field {field}: {reason}");
                        if let Err(problem) =
                            names_field_without_secrets(&error, bad.field, &secrets)
                        {
                            report.add(&label, format!("validation: {problem}"));
                        }
                    }
                    (true, other) => report.add(
                        &label,
                        format!(
                            "validation answered {other:?}, not an error naming {}",
                            bad.field
                        ),
                    ),
                    (false, Ok(_)) => {}
                    (false, Err(error)) => report.add(
                        &label,
                        format!(
                            "validation refused what only a running instance can find out: {error}"
                        ),
                    ),
                }
                if !bad.caught_by_validation {
                    continue;
                }
                refused_secrets
                    .extend(secrets.iter().map(|secret| (label.clone(), secret.clone())));
                let connector = Connector {
                    kind: subject.kind(),
                    connector_type: connector_type.name,
                    config: bad.config.clone(),
                    topic: topic("conformance-bad"),
                    guarantee: Guarantee::AtLeastOnce,
                    parallelism: 1,
                };
                let name = unique_name("bad");
                match node
                    .client
                    .clone()
                    .create_connector(create_request(&name, &connector))
                    .await
                {
                    Ok(_) => report.add(&label, "the admin API created it"),
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        if let Err(problem) =
                            names_field_without_secrets(status.message(), bad.field, &secrets)
                        {
                            report.add(&label, format!("create: {problem}"));
                        }
                    }
                    Err(status) => report.add(
                        &label,
                        format!("create answered {:?}: {}", status.code(), status.message()),
                    ),
                }
            }
        }
        // Nor does the node log what it refused.
        let log = node.log();
        for (label, secret) in &refused_secrets {
            if log.contains(secret.as_str()) {
                report.add(label, "the node logged a secret of a config it refused");
            }
        }
        report.assert_none();
    })
    .expect("the runtime builds");
}

#[test]
fn t11_a_bad_config_that_slips_through_is_failed_with_the_reason_and_retried() {
    ferry_node::runtime::block_on(async {
        let subjects = subjects();
        let report = Report::default();
        let harness = Harness::start().await;
        let node = InProcess(&harness);
        let pulsar = connect_pulsar().await;
        // Input for sinks that only fail on their first write.
        let input = topic("conformance-bad-input");
        let (fed, _limit) = feed(pulsar.clone(), input.clone(), 10, 1_000, 10);

        let mut created = Vec::new();
        for subject in &subjects {
            for bad in subject.bad_configs() {
                let label = Label {
                    subject: subject.name(),
                    case: "bad config at run time",
                    guarantee: None,
                    detail: Value::Object(bad.config.clone()).to_string(),
                };
                let connector = Connector {
                    kind: subject.kind(),
                    connector_type: subject.connector_type.name,
                    config: bad.config.clone(),
                    topic: match subject.kind() {
                        ConnectorKind::Source => topic("conformance-bad-output"),
                        ConnectorKind::Sink => input.clone(),
                    },
                    guarantee: Guarantee::AtLeastOnce,
                    parallelism: 1,
                };
                let name = unique_name("bad");
                match node.create(&name, subject.connector_type, &connector).await {
                    Ok(()) => created.push((
                        label,
                        name,
                        bad.field,
                        secret_values(subject.connector_type, &bad.config),
                    )),
                    Err(problem) => report.add(&label, problem),
                }
            }
        }
        let node = &node;
        let outcomes = join_all(created.iter().map(|(_, name, field, secrets)| {
            attempt(async move {
                let failing = |progress: &Progress| {
                    progress.state == State::Failed
                        && progress.error.contains(&format!("field {field}"))
                };
                let first = wait::within(
                    &format!("{name} is FAILED naming {field}"),
                    TIMEOUT,
                    || async {
                        match node.progress(name, 1).await.pop().flatten() {
                            Some(progress) if failing(&progress) => Ok(progress),
                            other => Err(format!("{other:?}")),
                        }
                    },
                )
                .await?;
                names_field_without_secrets(&first.error, field, secrets)?;
                // Retried with backoff, failing again each time.
                wait::within(
                    &format!("{name} is retried twice more"),
                    TIMEOUT,
                    || async {
                        match node.progress(name, 1).await.pop().flatten() {
                            Some(progress)
                                if failing(&progress)
                                    && progress.restarts >= first.restarts + 2 =>
                            {
                                Ok(())
                            }
                            other => Err(format!("{other:?}")),
                        }
                    },
                )
                .await
            })
        }))
        .await;
        for ((label, ..), outcome) in created.iter().zip(outcomes) {
            if let Err(problem) = outcome {
                report.add(label, problem);
            }
        }
        // The node keeps running good connectors.
        let good = topic("conformance-good");
        let mut config = Map::new();
        config.insert("count".to_owned(), 10.into());
        let connector = Connector {
            kind: ConnectorKind::Source,
            connector_type: "datagen",
            config,
            topic: good,
            guarantee: Guarantee::AtLeastOnce,
            parallelism: 1,
        };
        let datagen = ferry_actors::connectors::registry()
            .find(ConnectorKind::Source, "datagen")
            .expect("datagen");
        let name = unique_name("good");
        let label = Label {
            subject: "source datagen".to_owned(),
            case: "bad config at run time",
            guarantee: None,
            detail: "a good connector beside the bad ones".to_owned(),
        };
        let good = async {
            node.create(&name, datagen, &connector).await?;
            wait_instances(node, &name, 1, "is FINISHED", |progress| {
                progress.state == State::Finished
            })
            .await
            .map(drop)
        };
        if let Err(problem) = attempt(good).await {
            report.add(&label, problem);
        }
        if let Some(Err(problem)) = &fed.lock().unwrap_or_else(PoisonError::into_inner).outcome {
            report.add(&label, format!("feeding the sinks' input: {problem}"));
        }
        harness.stop().await;
        report.assert_none();
    })
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// t20, t21, t30: instance actors killed (the supervisor restarted), in process

/// When a case kills the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// Once each committed a checkpoint covering a quarter of its input; the new instances
    /// must have resumed from it.
    MidStream,
    /// As soon as each read anything.
    Early,
}

/// Runs `case` for every subject `feed_as` gives a feed, under every guarantee it offers, each
/// run on an in-process node of its own, so that each is killed at its own moment: restarts
/// the node's supervisor (every instance actor stopped at once, no final checkpoint) at
/// `kill`, and checks the output.
async fn restarted(case: &'static str, feed_as: impl Fn(&Subject) -> Option<Feed>, kill: Kill) {
    let subjects = subjects();
    let report = Report::default();
    let pulsar = connect_pulsar().await;
    let mut planned = Vec::new();
    for subject in &subjects {
        if let Some(feed_as) = feed_as(subject) {
            for guarantee in subject.guarantees() {
                planned.push((subject, guarantee, feed_as));
            }
        }
    }
    assert!(!planned.is_empty(), "{case}: no type to run it for");
    join_all(planned.into_iter().map(|(subject, guarantee, feed_as)| {
        restart_one(&pulsar, subject, case, guarantee, feed_as, kill, &report)
    }))
    .await;
    report.assert_none();
}

/// One run of [`restarted`], on a node of its own.
async fn restart_one(
    pulsar: &Pulsar<TokioExecutor>,
    subject: &Subject,
    case: &'static str,
    guarantee: Guarantee,
    feed_as: Feed,
    kill: Kill,
    report: &Report,
) {
    let mut harness = Harness::start().await;
    let started = start_run(
        &InProcess(&harness),
        pulsar,
        subject,
        case,
        guarantee,
        feed_as,
    )
    .await;
    let run = match started {
        Ok(Some(run)) => run,
        Ok(None) => return harness.stop().await,
        Err((label, problem)) => {
            report.add(&label, problem);
            return harness.stop().await;
        }
    };
    let killed = attempt(async {
        let node = InProcess(&harness);
        match kill {
            Kill::MidStream => mid_stream(&node, &run).await,
            Kill::Early => read_anything(&node, &run).await,
        }
    })
    .await;
    let outcome = match killed {
        Ok(()) => {
            // Where the kill lands, for whoever reads a failure: (read, done, checkpointed).
            let progress = run.progress(&InProcess(&harness)).await.unwrap_or_default();
            let at: Vec<(u64, u64, bool)> = progress
                .iter()
                .map(|progress| (progress.read, progress.done, progress.checkpoint.is_some()))
                .collect();
            eprintln!("{} killed at {at:?}", run.label);
            harness.restart_supervisor().await;
            attempt(async {
                let node = InProcess(&harness);
                finish(&node, &run).await?;
                match kill {
                    Kill::MidStream => resumed(&node, &run).await,
                    Kill::Early => Ok(()),
                }
            })
            .await
        }
        Err(problem) => Err(problem),
    };
    match outcome {
        Ok(()) => eprintln!("{} passed", run.label),
        Err(problem) => report.add(&run.label, problem),
    }
    run.clean_up(report).await;
    harness.stop().await;
}

#[test]
fn t20_instances_resume_from_their_checkpoint_after_a_restart_mid_stream() {
    ferry_node::runtime::block_on(restarted("resume", plain_feed, Kill::MidStream))
        .expect("the runtime builds");
}

#[test]
fn t21_instance_actors_killed_early_keep_the_guarantee() {
    ferry_node::runtime::block_on(restarted("crash-actor", plain_feed, Kill::Early))
        .expect("the runtime builds");
}

#[test]
fn t30_sources_with_parallelism_3_write_every_record_once() {
    ferry_node::runtime::block_on(restarted(
        "parallel",
        |subject| {
            let splits = subject
                .source()
                .is_some_and(|fixture| fixture.max_parallelism() >= 3);
            splits.then_some(Feed {
                count: COUNT,
                rate: RATE,
                parallelism: 3,
                outage: false,
            })
        },
        Kill::MidStream,
    ))
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// t22: the node process killed

#[test]
fn t22_a_node_process_killed_mid_stream_keeps_the_guarantee() {
    ferry_node::runtime::block_on(async {
        let subjects = subjects();
        let report = Report::default();
        let pulsar = connect_pulsar().await;
        // A node per type: the runs of one type start together, so one kill lands mid-stream
        // for each of them.
        join_all(
            subjects
                .iter()
                .map(|subject| kill_a_node(&pulsar, subject, &report)),
        )
        .await;
        report.assert_none();
    })
    .expect("the runtime builds");
}

/// Runs `subject` under every guarantee it offers on a `ferry serve` of its own, kills the
/// process with SIGKILL once every run is mid-stream, starts it again and checks the outputs.
async fn kill_a_node(pulsar: &Pulsar<TokioExecutor>, subject: &Subject, report: &Report) {
    let mut node = Served::start().await;
    let subjects = std::slice::from_ref(subject);
    let runs = start_runs(&node, pulsar, subjects, "crash-process", plain_feed, report).await;
    let outcomes = join_all(runs.iter().map(|run| attempt(mid_stream(&node, run)))).await;
    let runs = keep(runs, outcomes, report).await;
    for run in &runs {
        // Where the kill lands, for whoever reads a failure: (read, done, checkpointed).
        let progress = run.progress(&node).await.unwrap_or_default();
        let at: Vec<(u64, u64, bool)> = progress
            .iter()
            .map(|progress| (progress.read, progress.done, progress.checkpoint.is_some()))
            .collect();
        eprintln!("{} killed at {at:?}", run.label);
    }
    node.kill_and_restart().await;
    let outcomes = join_all(runs.iter().map(|run| attempt(finish(&node, run)))).await;
    let runs = keep(runs, outcomes, report).await;
    clean_up_all(runs, report).await;
    if !report.is_empty() {
        eprintln!(
            "the log of the node running {}:\n{}",
            subject.name(),
            node.log()
        );
    }
}

// ---------------------------------------------------------------------------------------
// t40: the external system goes away and comes back

/// Takes `run`'s system away mid-stream: the instance must be FAILED naming it and retried
/// with backoff; then brings it back: the instance must recover with the guarantee intact.
async fn outage_cycle(node: &dyn Node, run: &Run<'_>) -> Result<(), String> {
    let outage = run.outage().ok_or("no outage")?;
    mid_stream(node, run).await?;
    outage.take_away().await?;
    if let Side::Sink { limit, .. } = &run.side {
        limit.send_replace(run.count);
    }
    let words = outage.named_in_error();
    let failing = |progress: &Progress| {
        progress.state == State::Failed && words.iter().all(|word| progress.error.contains(word))
    };
    let first = wait_instances(
        node,
        &run.name,
        run.parallelism,
        &format!("is FAILED naming {words:?}"),
        failing,
    )
    .await?;
    let restarts = first
        .iter()
        .map(|progress| progress.restarts)
        .min()
        .unwrap_or(0);
    let failed = wait_instances(
        node,
        &run.name,
        run.parallelism,
        "is retried twice more, still failing",
        |progress| failing(progress) && progress.restarts >= restarts + 2,
    )
    .await?;
    eprintln!(
        "{} is FAILED after {} restarts: {}",
        run.label, failed[0].restarts, failed[0].error
    );
    outage.bring_back().await?;
    finish(node, run).await
}

#[test]
fn t40_an_instance_whose_system_goes_away_fails_is_retried_and_recovers() {
    ferry_node::runtime::block_on(async {
        let subjects = subjects();
        let report = Report::default();
        let harness = Harness::start().await;
        let pulsar = connect_pulsar().await;
        let node = InProcess(&harness);
        let runs = start_runs(
            &node,
            &pulsar,
            &subjects,
            "outage",
            |_| {
                Some(Feed {
                    count: COUNT,
                    rate: RATE,
                    parallelism: 1,
                    outage: true,
                })
            },
            &report,
        )
        .await;
        let outcomes = join_all(runs.iter().map(|run| attempt(outage_cycle(&node, run)))).await;
        let runs = keep(runs, outcomes, &report).await;
        clean_up_all(runs, &report).await;
        harness.stop().await;
        report.assert_none();
    })
    .expect("the runtime builds");
}
