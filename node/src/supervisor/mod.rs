//! The per-node `Supervisor` (../shared/DESIGN.md §3): reconciles the assignments addressed to
//! this node into running instance actors, restarts failed ones with capped exponential
//! backoff, and publishes every instance's observable state on a [`StatusBoard`].
//!
//! - [`plan`]: every decision, a pure function of the assignments, the instances held, the
//!   lease and the time; unit-tested over plain data.
//! - this module: the thin executor, an actor that reads the plan's inputs whenever this node's
//!   assignments change (the state machine's watch) and on a short tick (connector updates,
//!   desired-state changes, due restarts, drain timeouts), and applies the actions: spawns
//!   instance actors, sends them Drain and Stop, writes hand-off confirmations.
//! - [`checkpoints`]: the Raft-backed checkpoint store instances commit to.

pub mod checkpoints;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use ferry_actors::api::registry::{self, InstanceContext};
use ferry_actors::api::{ConnectorError, Sink, Source};
use ferry_actors::instance::sink::{SinkInstance, SinkInstanceConfig};
use ferry_actors::instance::source::{
    CheckpointPolicy, Drain, SharedStatus, SourceInstance, SourceInstanceConfig, Stop,
};
use ferry_actors::instance::{InstanceState, InstanceStatus};
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::batch::BatchingOptions;
use tracing::{info, warn};

use self::checkpoints::RaftCheckpointStore;
use self::plan::{
    Action, Assigned, Backoff, ConnectorView, DRAIN_TIMEOUT, Inputs, Lease, Now, StopReason,
};
use crate::control::lease::LeaseClock;
use crate::meta::Meta;
use crate::meta::state::{
    Assignment, AssignmentPhase, Command, Connector, ConnectorKind, ConnectorName, DesiredState,
    InstanceKey, NodeId,
};

/// How the supervisor runs instances.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// The Pulsar cluster instances read from and write to.
    pub pulsar: PulsarSettings,
    /// When instances checkpoint.
    pub checkpoints: CheckpointPolicy,
    /// The first restart delay after a failure; doubled on each further failure.
    pub backoff_initial: Duration,
    /// The longest restart delay.
    pub backoff_max: Duration,
    /// An instance running this long without failing has its backoff reset.
    pub backoff_reset_after: Duration,
    /// A running instance with input pending and no progress for this long is STUCK.
    pub stuck_after: Duration,
    /// How often the supervisor reconciles without being told of a change.
    pub tick: Duration,
    /// This node's lease: while it does not hold, no instance runs here (self-fencing). None
    /// runs instances regardless (a single process without failure detection).
    pub lease: Option<LeaseClock>,
}

impl SupervisorSettings {
    /// Returns the defaults for `pulsar`: 100 ms checkpoints, restarts after 0.5 s doubling up
    /// to 30 s, STUCK after 30 s.
    pub fn new(pulsar: PulsarSettings) -> Self {
        Self {
            pulsar,
            checkpoints: CheckpointPolicy::default(),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            stuck_after: Duration::from_secs(30),
            tick: Duration::from_millis(100),
            lease: None,
        }
    }

    /// The delay before restart number `failures` (1 = the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        self.backoff_policy().delay(failures)
    }

    /// Returns the restart delays as the plan takes them.
    pub fn backoff_policy(&self) -> Backoff {
        Backoff {
            initial: self.backoff_initial,
            max: self.backoff_max,
            reset_after: self.backoff_reset_after,
        }
    }
}

/// What a node reports about one of its instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// The assignment's epoch the instance runs under.
    pub epoch: u64,
    /// The instance's state as reported (STUCK derived from its counters).
    pub state: ReportedState,
    /// Counters, last error, last progress.
    pub status: InstanceStatus,
    /// Restarts after failures so far.
    pub restarts: u32,
    /// When the next restart is due, while failed.
    pub retry_at: Option<SystemTime>,
}

/// The states status shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedState {
    /// Loading its checkpoint and connecting.
    Starting,
    /// Moving data, or idle with no input pending.
    Running,
    /// Input pending and no progress for `stuck_after`.
    Stuck,
    /// Failed; restarts after a backoff (see `last_error`).
    Failed,
    /// A bounded source read and delivered everything.
    Finished,
    /// Stopped.
    Stopped,
}

impl ReportedState {
    /// The name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Stuck => "STUCK",
            Self::Failed => "FAILED",
            Self::Finished => "FINISHED",
            Self::Stopped => "STOPPED",
        }
    }
}

/// The states of this node's instances, shared with the admin API and tests.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BTreeMap<InstanceKey, InstanceReport>>>);

impl StatusBoard {
    /// Returns a copy of every report.
    pub fn snapshot(&self) -> BTreeMap<InstanceKey, InstanceReport> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Returns the report of `key`, if this node runs it.
    pub fn get(&self, key: &InstanceKey) -> Option<InstanceReport> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn replace(&self, reports: BTreeMap<InstanceKey, InstanceReport>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = reports;
    }
}

/// Returns the reports on `board` as the cluster API carries them, only those of
/// `connector` (`tenant/namespace/name`) unless it is empty.
pub fn proto_reports(
    board: &StatusBoard,
    connector: &str,
) -> Vec<ferry_proto::cluster::v1::InstanceReport> {
    board
        .snapshot()
        .into_iter()
        .filter(|(key, _)| connector.is_empty() || key.connector.to_string() == connector)
        .map(|(key, report)| ferry_proto::cluster::v1::InstanceReport {
            connector: key.connector.to_string(),
            instance: key.instance,
            epoch: report.epoch,
            state: report.state.as_str().to_owned(),
            records_read: report.status.records_read,
            records_done: report.status.records_confirmed,
            duplicates_dropped: report.status.duplicates_dropped,
            records_skipped: report.status.records_skipped,
            records_dead_lettered: report.status.records_dead_lettered,
            checkpoints_committed: report.status.checkpoints_committed,
            restarts: report.restarts,
            last_error: report.status.last_error.clone().unwrap_or_default(),
            last_progress_ms: report
                .status
                .last_progress
                .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                }),
        })
        .collect()
}

/// One instance this node runs (or ran, and will restart).
#[derive(Debug)]
struct Held {
    epoch: u64,
    version: u64,
    /// Stops the actor; None when the instance could not even be built.
    stop: Option<Recipient<Stop>>,
    /// Drains the actor for a hand-off.
    drain: Option<Recipient<Drain>>,
    /// When it was asked to drain.
    draining_since: Option<Instant>,
    /// The lease term it started in (None without leases).
    term: Option<u64>,
    status: SharedStatus,
    started: SystemTime,
    failures: u32,
    retry_at: Option<SystemTime>,
}

impl Held {
    /// Returns what the plan sees of this instance.
    fn view(&self) -> plan::Held {
        plan::Held {
            epoch: self.epoch,
            version: self.version,
            term: self.term,
            state: lock(&self.status).state,
            drainable: self.drain.is_some(),
            draining_since: self.draining_since,
            started: self.started,
            failures: self.failures,
            retry_at: self.retry_at,
        }
    }
}

/// The per-node supervisor actor: the executor of the [`plan`].
pub struct Supervisor {
    meta: Meta,
    node: NodeId,
    settings: SupervisorSettings,
    board: StatusBoard,
    instances: BTreeMap<InstanceKey, Held>,
    /// Hand-offs being confirmed: (instance, epoch) -> the write confirming it.
    confirming: BTreeMap<(InstanceKey, u64), tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Supervisor")
            .field("node", &self.node)
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Returns the supervisor of node `meta.id()`; it starts reconciling when started.
    pub fn new(meta: Meta, settings: SupervisorSettings, board: StatusBoard) -> Self {
        Self {
            node: meta.id(),
            meta,
            settings,
            board,
            instances: BTreeMap::new(),
            confirming: BTreeMap::new(),
        }
    }

    /// The board this supervisor publishes its instances' states on.
    pub fn board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// Brings the running instances in line with this node's assignments: reads the inputs,
    /// asks the [`plan`] what to do, applies its actions in order and publishes the board.
    fn reconcile(&mut self) {
        let now = Now {
            monotonic: Instant::now(),
            wall: SystemTime::now(),
        };
        let lease = match &self.settings.lease {
            None => Lease::NotUsed,
            Some(clock) => match clock.term() {
                None => Lease::Lapsed,
                Some(term) => Lease::Held {
                    term,
                    caught_up: self.meta.applied_index() >= clock.caught_up_to(),
                },
            },
        };
        // One read of this node's assignments, with the connectors an instance may start from.
        let node = self.node;
        let mut assignments: BTreeMap<InstanceKey, Assigned> = BTreeMap::new();
        let mut connectors: BTreeMap<ConnectorName, Connector> = BTreeMap::new();
        self.meta.read_local(|state| {
            for (key, assignment) in &state.assignments {
                if assignment.node != node {
                    continue;
                }
                let connector = state.connectors.get(&key.connector);
                if let Some(connector) = connector
                    && assignment.phase == AssignmentPhase::Assigned
                    && connector.desired_state == DesiredState::Running
                    && !connectors.contains_key(&key.connector)
                {
                    connectors.insert(key.connector.clone(), connector.clone());
                }
                assignments.insert(
                    key.clone(),
                    Assigned {
                        epoch: assignment.epoch,
                        phase: assignment.phase,
                        connector: connector.map(|connector| ConnectorView {
                            version: connector.version,
                            desired_state: connector.desired_state,
                            parallelism: connector.spec.parallelism,
                        }),
                    },
                );
            }
        });
        // A finished confirmation is written again if the hand-off is still pending.
        self.confirming.retain(|(key, epoch), write| {
            !write.is_finished()
                && assignments.get(key).is_some_and(|assigned| {
                    assigned.epoch == *epoch && assigned.phase == AssignmentPhase::Revoking
                })
        });
        let held: BTreeMap<InstanceKey, plan::Held> = self
            .instances
            .iter()
            .map(|(key, instance)| (key.clone(), instance.view()))
            .collect();
        let confirming: BTreeSet<(InstanceKey, u64)> = self.confirming.keys().cloned().collect();
        let actions = plan::plan(&Inputs {
            lease,
            assignments: &assignments,
            held: &held,
            confirming: &confirming,
            backoff: self.settings.backoff_policy(),
            now,
        });
        for action in actions {
            self.apply(action, &connectors, now);
        }
        self.publish(now.wall);
    }

    /// Carries out one action of the plan.
    fn apply(&mut self, action: Action, connectors: &BTreeMap<ConnectorName, Connector>, now: Now) {
        match action {
            Action::Stop { key, epoch, reason } => {
                match reason {
                    StopReason::NoLease => {
                        warn!(instance = %key, epoch, "no lease: stopping the instance");
                    }
                    StopReason::LeaseLapsed => {
                        warn!(instance = %key, epoch, "the lease lapsed since it started: stopping the instance");
                    }
                    StopReason::Outdated => info!(instance = %key, epoch, "stopping instance"),
                    StopReason::Ended => {}
                    StopReason::DrainTimedOut => {
                        warn!(instance = %key, timeout = ?DRAIN_TIMEOUT, "the drain took too long: stopping the instance");
                    }
                }
                if let Some(instance) = self.instances.remove(&key)
                    && let Some(stop) = instance.stop
                {
                    stop.do_send(Stop);
                }
            }
            Action::Drain { key, epoch, reason } => {
                if let Some(instance) = self.instances.get_mut(&key) {
                    info!(instance = %key, epoch, "{}", reason.describe());
                    if let Some(drain) = &instance.drain {
                        drain.do_send(Drain);
                    }
                    instance.draining_since = Some(now.monotonic);
                }
            }
            Action::ConfirmHandoff { key, epoch } => {
                let meta = self.meta.clone();
                let handoff = (key.clone(), epoch);
                let write = tokio::spawn(async move {
                    match meta
                        .write(Command::ConfirmRevoked {
                            key: key.clone(),
                            epoch,
                        })
                        .await
                    {
                        Ok(Ok(_)) => info!(instance = %key, epoch, "hand-off confirmed"),
                        Ok(Err(rejection)) => {
                            warn!(instance = %key, %rejection, "hand-off refused");
                        }
                        Err(error) => warn!(instance = %key, %error, "hand-off not confirmed yet"),
                    }
                });
                self.confirming.insert(handoff, write);
            }
            Action::Start {
                key,
                epoch,
                failures,
            } => {
                // The plan starts only instances of connectors read with the assignments.
                let Some(connector) = connectors.get(&key.connector) else {
                    return;
                };
                let instance = self.start_instance(&key, epoch, connector, failures);
                self.instances.insert(key, instance);
            }
            Action::ScheduleRestart {
                key,
                failures,
                delay,
                retry_at,
            } => {
                if let Some(instance) = self.instances.get_mut(&key) {
                    instance.failures = failures;
                    instance.retry_at = Some(retry_at);
                    warn!(
                        instance = %key,
                        failures,
                        retry_in = ?delay,
                        error = lock(&instance.status).last_error.as_deref().unwrap_or(""),
                        "instance failed; restarting after a backoff"
                    );
                }
            }
        }
    }

    /// Starts an instance actor for `key`; an instance that cannot be built is recorded as
    /// failed, to be retried like any failure.
    fn start_instance(
        &self,
        key: &InstanceKey,
        epoch: u64,
        connector: &Connector,
        failures: u32,
    ) -> Held {
        let started = SystemTime::now();
        let (stop, drain, status) = match self.spawn_instance(key, epoch, connector) {
            Ok((stop, drain, status)) => {
                info!(instance = %key, epoch, version = connector.version, "instance started");
                (Some(stop), Some(drain), status)
            }
            Err(error) => {
                warn!(instance = %key, epoch, error = %error, "instance cannot start");
                let status = SharedStatus::default();
                {
                    let mut status = lock(&status);
                    status.state = InstanceState::Failed;
                    status.last_error = Some(error.to_string());
                }
                (None, None, status)
            }
        };
        Held {
            epoch,
            version: connector.version,
            stop,
            drain,
            draining_since: None,
            term: self.settings.lease.as_ref().and_then(LeaseClock::term),
            status,
            started,
            failures,
            retry_at: None,
        }
    }

    fn spawn_instance(
        &self,
        key: &InstanceKey,
        epoch: u64,
        connector: &Connector,
    ) -> Result<(Recipient<Stop>, Recipient<Drain>, SharedStatus), ConnectorError> {
        let spec = &connector.spec;
        let topic_field = match spec.kind {
            ConnectorKind::Source => "destination_topic_name",
            ConnectorKind::Sink => "inputs",
        };
        let connector_type =
            ferry_actors::connectors::registry().find(spec.kind, &spec.connector_type)?;
        // Secret values travel as given (a value or an env:/file: reference); the connector
        // resolves them on this node when it opens.
        let secrets: BTreeMap<String, String> = spec
            .secrets
            .iter()
            .map(|(field, secret)| (field.clone(), secret.expose().to_owned()))
            .collect();
        let config = registry::join_config(&spec.config, &secrets)?;
        let store = Arc::new(RaftCheckpointStore::new(self.meta.clone(), key.clone()));
        let name = key.connector.to_string();
        let guarantee = spec.guarantee;
        let context = InstanceContext {
            connector: name.clone(),
            index: key.instance,
            parallelism: spec.parallelism,
        };
        if spec.topics.is_empty() {
            return Err(ConnectorError::InvalidConfig {
                field: topic_field.to_owned(),
                reason: "no topic given".to_owned(),
            });
        }
        let started = match spec.kind {
            ConnectorKind::Source => {
                let source: Box<dyn Source> =
                    connector_type.build_source(&config, &context, guarantee)?;
                let config = SourceInstanceConfig {
                    connector: name,
                    index: key.instance,
                    epoch,
                    topic: spec.topics[0].clone(),
                    guarantee,
                    checkpoints: self.settings.checkpoints,
                    pulsar: self.settings.pulsar.clone(),
                    batching: BatchingOptions::default(),
                    read_batch: spec.options.read_batch(),
                    fence: self.settings.lease.as_ref().map(LeaseClock::fence),
                    incarnation: connector.created,
                };
                let instance = SourceInstance::new(config, source, store);
                let status = instance.status();
                let address = instance.start();
                (address.clone().recipient(), address.recipient(), status)
            }
            ConnectorKind::Sink => {
                let sink: Box<dyn Sink> =
                    connector_type.build_sink(&config, &context, guarantee)?;
                let subscription = spec.subscription.clone().unwrap_or_else(|| {
                    format!(
                        "ferry-{}-{}-{}",
                        key.connector.tenant, key.connector.namespace, key.connector.name
                    )
                });
                let config = SinkInstanceConfig {
                    connector: name,
                    index: key.instance,
                    epoch,
                    inputs: spec.topics.clone(),
                    subscription,
                    guarantee,
                    checkpoints: self.settings.checkpoints,
                    pulsar: self.settings.pulsar.clone(),
                    write_batch: spec.options.write_batch(),
                    start: spec.options.start(),
                    receiver_queue_size: spec.options.receiver_queue(),
                    error_policy: spec.error_policy.clone(),
                    fence: self.settings.lease.as_ref().map(LeaseClock::fence),
                    incarnation: connector.created,
                };
                let instance = SinkInstance::new(config, sink, store);
                let status = instance.status();
                let address = instance.start();
                (address.clone().recipient(), address.recipient(), status)
            }
        };
        Ok(started)
    }

    /// Stops every instance at once.
    fn stop_all(&mut self) {
        for (key, held) in std::mem::take(&mut self.instances) {
            info!(instance = %key, epoch = held.epoch, "stopping instance");
            if let Some(stop) = held.stop {
                stop.do_send(Stop);
            }
        }
    }

    /// Publishes every instance's state on the board.
    fn publish(&self, now: SystemTime) {
        let reports = self
            .instances
            .iter()
            .map(|(key, running)| {
                let status = lock(&running.status).clone();
                let state = match status.state {
                    InstanceState::Starting => ReportedState::Starting,
                    InstanceState::Running
                        if status.is_stuck(now, running.started, self.settings.stuck_after) =>
                    {
                        ReportedState::Stuck
                    }
                    InstanceState::Running => ReportedState::Running,
                    InstanceState::Finished => ReportedState::Finished,
                    InstanceState::Failed => ReportedState::Failed,
                    InstanceState::Stopped => ReportedState::Stopped,
                };
                let report = InstanceReport {
                    epoch: running.epoch,
                    state,
                    status,
                    restarts: running.failures,
                    retry_at: running.retry_at,
                };
                (key.clone(), report)
            })
            .collect();
        self.board.replace(reports);
    }
}

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, InstanceStatus> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        info!(node = self.node, "supervisor started");
        let assignments = self.meta.watch_assignments(self.node);
        context.add_stream(tokio_stream::wrappers::WatchStream::new(assignments));
        context.run_interval(self.settings.tick, |supervisor, _| {
            supervisor.reconcile();
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> actix::Running {
        self.stop_all();
        self.board.replace(BTreeMap::new());
        actix::Running::Stop
    }
}

/// Stops every instance, then the supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

impl Handler<StopSupervisor> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StopSupervisor, context: &mut Self::Context) {
        context.stop();
    }
}

impl StreamHandler<BTreeMap<InstanceKey, Assignment>> for Supervisor {
    fn handle(&mut self, _: BTreeMap<InstanceKey, Assignment>, _: &mut Self::Context) {
        self.reconcile();
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The assignment watch ended (the store stopped); the tick still reconciles.
    }
}
