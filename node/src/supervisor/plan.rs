//! The supervisor's plan: a pure function from this node's assignments, the instances it holds,
//! its lease and the time to the actions that bring the instances in line (DESIGN.md §3).
//!
//! No clock, no I/O, no actor: the executor ([`super::Supervisor`]) reads the inputs, applies
//! the actions in order (spawning actors, sending them messages, writing commands) and
//! publishes the board. Every decision the supervisor makes is here, so each case is a unit
//! test over plain data, like the scheduler's.
//!
//! An instance runs while its assignment names this node and its connector is Running. A new
//! epoch stops the old actor and starts a new one; a new connector version, a connector asked
//! to stop and a hand-off (Revoking) drain it first (a final checkpoint), stopping it hard
//! after [`DRAIN_TIMEOUT`]; a drained hand-off is confirmed. A failed instance restarts after a
//! capped exponential backoff. Without a lease nothing runs (self-fencing), and after a lapse
//! nothing starts before the node has caught up with the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use ferry_actors::instance::InstanceState;

use crate::meta::state::{AssignmentPhase, DesiredState, InstanceKey};

/// The longest a draining instance may take before it is stopped hard.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// This node's lease as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The node runs without leases (a single process without failure detection).
    NotUsed,
    /// The lease does not hold: nothing may run here.
    Lapsed,
    /// The lease holds in `term`; `caught_up` once this node has applied what the leader had
    /// when the term began.
    Held {
        /// The current term.
        term: u64,
        /// Whether this node's view of the assignments is current for the term.
        caught_up: bool,
    },
}

/// One assignment addressed to this node, with what the plan needs of its connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The assignment's epoch.
    pub epoch: u64,
    /// Assigned, or Revoking (being handed off).
    pub phase: AssignmentPhase,
    /// The connector; None when it no longer exists.
    pub connector: Option<ConnectorView>,
}

/// What the plan needs of a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorView {
    /// Its version (bumped by every update).
    pub version: u64,
    /// Running or Stopped.
    pub desired_state: DesiredState,
    /// How many instances it has.
    pub parallelism: u32,
}

/// One instance this node holds (running, draining, or failed and waiting for its restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The epoch it runs under.
    pub epoch: u64,
    /// The connector version it runs.
    pub version: u64,
    /// The lease term it started in (None without leases).
    pub term: Option<u64>,
    /// Its state as the instance reports it.
    pub state: InstanceState,
    /// Whether it can be asked to drain (false when it could not even be built).
    pub drainable: bool,
    /// When it was asked to drain.
    pub draining_since: Option<Instant>,
    /// When it started.
    pub started: SystemTime,
    /// Restarts after failures so far.
    pub failures: u32,
    /// When its restart is due, once its failure is recorded.
    pub retry_at: Option<SystemTime>,
}

/// Restart delays after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first restart delay; doubled on each further failure.
    pub initial: Duration,
    /// The longest restart delay.
    pub max: Duration,
    /// An instance running this long without failing starts its count afresh.
    pub reset_after: Duration,
}

impl Backoff {
    /// Returns the delay before restart number `failures` (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.initial
            .saturating_mul(1_u32 << doublings)
            .min(self.max)
    }
}

/// The time, read once by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For drain timeouts.
    pub monotonic: Instant,
    /// For restart times and how long an instance ran (reported in status).
    pub wall: SystemTime,
}

/// Everything the plan decides from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// This node's lease.
    pub lease: Lease,
    /// The assignments addressed to this node.
    pub assignments: &'a BTreeMap<InstanceKey, Assigned>,
    /// The instances this node holds.
    pub held: &'a BTreeMap<InstanceKey, Held>,
    /// Hand-offs whose confirmation is being written: (instance, epoch).
    pub confirming: &'a BTreeSet<(InstanceKey, u64)>,
    /// Restart delays.
    pub backoff: Backoff,
    /// The time.
    pub now: Now,
}

/// Why an instance stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The lease does not hold: the leader may give the instance to another node.
    NoLease,
    /// The lease lapsed since the instance started: it may have moved meanwhile.
    LeaseLapsed,
    /// It no longer runs as wanted: a new epoch, unassigned, or beyond the parallelism.
    Outdated,
    /// It drained, ended by itself, or has nothing to drain.
    Ended,
    /// It took longer than [`DRAIN_TIMEOUT`] to drain.
    DrainTimedOut,
}

/// Why an instance drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    /// Its assignment is being handed off to another node.
    HandOff,
    /// Its connector was asked to stop.
    Stopping,
    /// Its connector was updated: the new version starts from the final checkpoint.
    Updated,
}

impl DrainReason {
    /// Returns what the executor logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::HandOff => "handing off: draining the instance",
            Self::Stopping => "stopping: draining the instance",
            Self::Updated => "the connector was updated: draining the instance",
        }
    }
}

/// One step for the executor, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the instance's actor and forget the instance.
    Stop {
        /// The instance.
        key: InstanceKey,
        /// The epoch it ran under.
        epoch: u64,
        /// Why.
        reason: StopReason,
    },
    /// Ask the instance to drain (finish what it holds, commit a final checkpoint) and record
    /// that it was asked now.
    Drain {
        /// The instance.
        key: InstanceKey,
        /// The epoch it runs under.
        epoch: u64,
        /// Why.
        reason: DrainReason,
    },
    /// Write the confirmation that the hand-off of `key` at `epoch` is done, so the control
    /// loop may place the instance again.
    ConfirmHandoff {
        /// The instance.
        key: InstanceKey,
        /// The revoked assignment's epoch.
        epoch: u64,
    },
    /// Start an instance of `key` under `epoch` at the connector's current version (a restart
    /// when `failures` > 0).
    Start {
        /// The instance.
        key: InstanceKey,
        /// The assignment's epoch.
        epoch: u64,
        /// Failures so far, carried over to the new instance.
        failures: u32,
    },
    /// Record that the instance failed: it restarts at `retry_at`.
    ScheduleRestart {
        /// The instance.
        key: InstanceKey,
        /// Failures so far, this one included.
        failures: u32,
        /// The delay before the restart.
        delay: Duration,
        /// When the restart is due.
        retry_at: SystemTime,
    },
}

/// Returns the actions that bring the held instances in line with `inputs`.
pub fn plan(inputs: &Inputs<'_>) -> Vec<Action> {
    let mut planner = Planner {
        held: inputs.held.clone(),
        actions: Vec::new(),
        now: inputs.now,
    };
    match inputs.lease {
        Lease::NotUsed => {}
        Lease::Lapsed => {
            // The leader may give these instances to others: stop them now, before it can (it
            // waits the lease plus a margin).
            let keys: Vec<InstanceKey> = planner.held.keys().cloned().collect();
            for key in keys {
                planner.stop(&key, StopReason::NoLease);
            }
            return planner.actions;
        }
        Lease::Held { term, caught_up } => {
            // Instances of an earlier term may have moved while the lease had lapsed (their
            // fence already stops them writing).
            let stale: Vec<InstanceKey> = planner
                .held
                .iter()
                .filter(|(_, held)| held.term.is_some_and(|started| started != term))
                .map(|(key, _)| key.clone())
                .collect();
            for key in stale {
                planner.stop(&key, StopReason::LeaseLapsed);
            }
            // After a lapse, start nothing before this node has seen the assignments the
            // leader had when it renewed the lease.
            if !caught_up {
                return planner.actions;
            }
        }
    }
    // What should run (instance -> epoch, version), what is being handed off (drained, then
    // confirmed), and what belongs to a connector asked to stop (drained, and stays assigned).
    let mut wanted: BTreeMap<&InstanceKey, (u64, u64)> = BTreeMap::new();
    let mut revoking: Vec<(&InstanceKey, u64)> = Vec::new();
    let mut stopping: Vec<(&InstanceKey, u64)> = Vec::new();
    for (key, assigned) in inputs.assignments {
        if assigned.phase == AssignmentPhase::Revoking {
            revoking.push((key, assigned.epoch));
            continue;
        }
        let Some(connector) = &assigned.connector else {
            continue;
        };
        match connector.desired_state {
            DesiredState::Stopped => stopping.push((key, assigned.epoch)),
            DesiredState::Running if key.instance < connector.parallelism => {
                wanted.insert(key, (assigned.epoch, connector.version));
            }
            DesiredState::Running => {}
        }
    }
    for (key, epoch) in &stopping {
        planner.drained(key, *epoch, DrainReason::Stopping);
    }
    // An updated connector's instances drain (a final checkpoint) before the new version
    // starts from it, so an update repeats nothing even under at-least-once.
    let updated: Vec<(InstanceKey, u64)> = planner
        .held
        .iter()
        .filter(|(key, held)| {
            wanted
                .get(key)
                .is_some_and(|(epoch, version)| *epoch == held.epoch && *version != held.version)
        })
        .map(|(key, held)| (key.clone(), held.epoch))
        .collect();
    for (key, epoch) in &updated {
        planner.drained(key, *epoch, DrainReason::Updated);
    }
    // Stop what is no longer wanted as it runs; what is handed off, stopped or updated drains
    // first.
    let outdated: Vec<InstanceKey> = planner
        .held
        .iter()
        .filter(|(key, held)| {
            let draining = revoking.contains(&(*key, held.epoch))
                || stopping.contains(&(*key, held.epoch))
                || updated.iter().any(|(k, e)| k == *key && *e == held.epoch);
            !draining
                && wanted
                    .get(key)
                    .is_none_or(|(epoch, version)| *epoch != held.epoch || *version != held.version)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in outdated {
        planner.stop(&key, StopReason::Outdated);
    }
    for (key, epoch) in revoking {
        if planner.drained(key, epoch, DrainReason::HandOff)
            && !inputs.confirming.contains(&(key.clone(), epoch))
        {
            planner.actions.push(Action::ConfirmHandoff {
                key: key.clone(),
                epoch,
            });
        }
    }
    let now = inputs.now.wall;
    for (key, (epoch, _)) in wanted {
        let Some(held) = planner.held.get(key) else {
            planner.actions.push(Action::Start {
                key: key.clone(),
                epoch,
                failures: 0,
            });
            continue;
        };
        if held.state != InstanceState::Failed {
            continue;
        }
        match held.retry_at {
            None => {
                let healthy = now
                    .duration_since(held.started)
                    .is_ok_and(|ran| ran >= inputs.backoff.reset_after);
                let failures = if healthy { 1 } else { held.failures + 1 };
                let delay = inputs.backoff.delay(failures);
                planner.actions.push(Action::ScheduleRestart {
                    key: key.clone(),
                    failures,
                    delay,
                    retry_at: now + delay,
                });
            }
            Some(at) if at <= now => {
                planner.actions.push(Action::Start {
                    key: key.clone(),
                    epoch,
                    failures: held.failures,
                });
            }
            Some(_) => {}
        }
    }
    planner.actions
}

/// The plan's working copy of the held instances, and the actions so far.
struct Planner {
    held: BTreeMap<InstanceKey, Held>,
    actions: Vec<Action>,
    now: Now,
}

impl Planner {
    fn stop(&mut self, key: &InstanceKey, reason: StopReason) {
        if let Some(held) = self.held.remove(key) {
            self.actions.push(Action::Stop {
                key: key.clone(),
                epoch: held.epoch,
                reason,
            });
        }
    }

    /// Drains instance `key` (run under `epoch`) so it finishes what it holds and commits a
    /// final checkpoint; returns true once it no longer runs here (drained, ended, or stopped
    /// hard after [`DRAIN_TIMEOUT`]).
    fn drained(&mut self, key: &InstanceKey, epoch: u64, reason: DrainReason) -> bool {
        let Some(held) = self.held.get_mut(key) else {
            return true;
        };
        if held.epoch != epoch {
            return true;
        }
        let ended = matches!(
            held.state,
            InstanceState::Stopped | InstanceState::Finished | InstanceState::Failed
        ) || !held.drainable;
        let reason = match held.draining_since {
            _ if ended => StopReason::Ended,
            None => {
                held.draining_since = Some(self.now.monotonic);
                self.actions.push(Action::Drain {
                    key: key.clone(),
                    epoch,
                    reason,
                });
                return false;
            }
            Some(since) if self.now.monotonic.saturating_duration_since(since) < DRAIN_TIMEOUT => {
                return false;
            }
            Some(_) => StopReason::DrainTimedOut,
        };
        self.stop(key, reason);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::ConnectorName;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
    };

    fn key(instance: u32) -> InstanceKey {
        InstanceKey {
            connector: ConnectorName::new("public", "default", "c"),
            instance,
        }
    }

    fn connector(version: u64, desired_state: DesiredState, parallelism: u32) -> ConnectorView {
        ConnectorView {
            version,
            desired_state,
            parallelism,
        }
    }

    fn assigned(epoch: u64, version: u64) -> Assigned {
        Assigned {
            epoch,
            phase: AssignmentPhase::Assigned,
            connector: Some(connector(version, DesiredState::Running, 2)),
        }
    }

    /// The plan's inputs, and the executor's effect of its actions on them.
    struct World {
        lease: Lease,
        assignments: BTreeMap<InstanceKey, Assigned>,
        held: BTreeMap<InstanceKey, Held>,
        confirming: BTreeSet<(InstanceKey, u64)>,
        start: Instant,
        base: SystemTime,
        elapsed: Duration,
    }

    impl World {
        fn new() -> Self {
            Self {
                lease: Lease::NotUsed,
                assignments: BTreeMap::new(),
                held: BTreeMap::new(),
                confirming: BTreeSet::new(),
                start: Instant::now(),
                base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
                elapsed: Duration::ZERO,
            }
        }

        fn now(&self) -> Now {
            Now {
                monotonic: self.start + self.elapsed,
                wall: self.base + self.elapsed,
            }
        }

        fn plan(&self) -> Vec<Action> {
            plan(&Inputs {
                lease: self.lease,
                assignments: &self.assignments,
                held: &self.held,
                confirming: &self.confirming,
                backoff: BACKOFF,
                now: self.now(),
            })
        }

        /// Plans and applies the actions as the executor would; returns them.
        fn step(&mut self) -> Vec<Action> {
            let actions = self.plan();
            for action in &actions {
                self.apply(action);
            }
            actions
        }

        fn apply(&mut self, action: &Action) {
            let now = self.now();
            match action {
                Action::Stop { key, .. } => {
                    assert!(self.held.remove(key).is_some(), "{action:?}: not held");
                }
                Action::Drain { key, .. } => {
                    let held = self.held.get_mut(key).expect("a drained instance is held");
                    held.draining_since = Some(now.monotonic);
                }
                Action::ConfirmHandoff { key, epoch } => {
                    assert!(self.confirming.insert((key.clone(), *epoch)), "{action:?}");
                }
                Action::Start {
                    key,
                    epoch,
                    failures,
                } => {
                    let version = self.assignments[key]
                        .connector
                        .expect("a started instance has a connector")
                        .version;
                    let replaced = self.held.insert(
                        key.clone(),
                        Held {
                            epoch: *epoch,
                            version,
                            term: match self.lease {
                                Lease::Held { term, .. } => Some(term),
                                Lease::NotUsed | Lease::Lapsed => None,
                            },
                            state: InstanceState::Starting,
                            drainable: true,
                            draining_since: None,
                            started: now.wall,
                            failures: *failures,
                            retry_at: None,
                        },
                    );
                    assert!(
                        replaced.is_none_or(|old| old.state == InstanceState::Failed),
                        "{action:?} replaced a live instance"
                    );
                }
                Action::ScheduleRestart {
                    key,
                    failures,
                    retry_at,
                    ..
                } => {
                    let held = self.held.get_mut(key).expect("a failed instance is held");
                    held.failures = *failures;
                    held.retry_at = Some(*retry_at);
                }
            }
        }

        fn set_state(&mut self, instance: u32, state: InstanceState) {
            self.held.get_mut(&key(instance)).expect("held").state = state;
        }

        fn advance(&mut self, by: Duration) {
            self.elapsed += by;
        }
    }

    fn stop(instance: u32, epoch: u64, reason: StopReason) -> Action {
        Action::Stop {
            key: key(instance),
            epoch,
            reason,
        }
    }

    fn start(instance: u32, epoch: u64, failures: u32) -> Action {
        Action::Start {
            key: key(instance),
            epoch,
            failures,
        }
    }

    fn drain(instance: u32, epoch: u64, reason: DrainReason) -> Action {
        Action::Drain {
            key: key(instance),
            epoch,
            reason,
        }
    }

    fn confirm(instance: u32, epoch: u64) -> Action {
        Action::ConfirmHandoff {
            key: key(instance),
            epoch,
        }
    }

    /// A world where instance 0 of a Running connector (version 1) runs under epoch 5.
    fn running_world() -> World {
        let mut world = World::new();
        world.assignments.insert(key(0), assigned(5, 1));
        assert_eq!(world.step(), [start(0, 5, 0)]);
        world.set_state(0, InstanceState::Running);
        world
    }

    #[test]
    fn a_new_assignment_starts_its_instance_once() {
        let mut world = running_world();
        assert_eq!(world.step(), []);
        world.assignments.insert(key(1), assigned(6, 1));
        assert_eq!(world.step(), [start(1, 6, 0)]);
        assert_eq!(world.step(), [], "a starting instance is left alone");
    }

    #[test]
    fn a_new_epoch_stops_the_old_instance_and_starts_a_new_one() {
        let mut world = running_world();
        world.assignments.insert(key(0), assigned(9, 1));
        assert_eq!(
            world.step(),
            [stop(0, 5, StopReason::Outdated), start(0, 9, 0)]
        );
    }

    #[test]
    fn an_update_drains_the_old_version_before_the_new_one_starts() {
        let mut world = running_world();
        world.assignments.insert(key(0), assigned(5, 2));
        assert_eq!(world.step(), [drain(0, 5, DrainReason::Updated)]);
        world.advance(Duration::from_secs(1));
        assert_eq!(world.step(), [], "still draining");
        world.set_state(0, InstanceState::Stopped);
        assert_eq!(
            world.step(),
            [stop(0, 5, StopReason::Ended), start(0, 5, 0)]
        );
        assert_eq!(world.held[&key(0)].version, 2);
    }

    #[test]
    fn a_stopped_connector_drains_its_instances_and_starts_nothing() {
        let mut world = running_world();
        world.assignments.insert(
            key(0),
            Assigned {
                connector: Some(connector(1, DesiredState::Stopped, 2)),
                ..assigned(5, 1)
            },
        );
        assert_eq!(world.step(), [drain(0, 5, DrainReason::Stopping)]);
        world.set_state(0, InstanceState::Stopped);
        assert_eq!(world.step(), [stop(0, 5, StopReason::Ended)]);
        assert_eq!(world.step(), [], "it stays assigned here, not running");
    }

    #[test]
    fn a_hand_off_drains_then_confirms_once_per_write() {
        let mut world = running_world();
        world.assignments.get_mut(&key(0)).expect("assigned").phase = AssignmentPhase::Revoking;
        assert_eq!(world.step(), [drain(0, 5, DrainReason::HandOff)]);
        world.set_state(0, InstanceState::Stopped);
        assert_eq!(world.step(), [stop(0, 5, StopReason::Ended), confirm(0, 5)]);
        assert_eq!(world.step(), [], "the confirmation is being written");
        // The write finished but the assignment is still Revoking (the write was lost).
        world.confirming.clear();
        assert_eq!(world.step(), [confirm(0, 5)]);
    }

    #[test]
    fn a_hand_off_of_an_instance_not_held_is_confirmed_at_once() {
        let mut world = World::new();
        world.assignments.insert(
            key(0),
            Assigned {
                phase: AssignmentPhase::Revoking,
                ..assigned(5, 1)
            },
        );
        assert_eq!(world.step(), [confirm(0, 5)]);
    }

    #[test]
    fn a_drain_that_takes_too_long_is_stopped_hard() {
        let mut world = running_world();
        world.assignments.get_mut(&key(0)).expect("assigned").phase = AssignmentPhase::Revoking;
        assert_eq!(world.step(), [drain(0, 5, DrainReason::HandOff)]);
        world.advance(DRAIN_TIMEOUT - Duration::from_millis(1));
        assert_eq!(world.step(), []);
        world.advance(Duration::from_millis(1));
        assert_eq!(
            world.step(),
            [stop(0, 5, StopReason::DrainTimedOut), confirm(0, 5)]
        );
    }

    #[test]
    fn an_instance_that_could_not_be_built_is_not_asked_to_drain() {
        let mut world = running_world();
        let held = world.held.get_mut(&key(0)).expect("held");
        held.drainable = false;
        world.assignments.get_mut(&key(0)).expect("assigned").phase = AssignmentPhase::Revoking;
        assert_eq!(world.step(), [stop(0, 5, StopReason::Ended), confirm(0, 5)]);
    }

    #[test]
    fn a_failed_instance_restarts_after_a_doubling_backoff_capped_at_the_maximum() {
        let mut world = running_world();
        let mut delays = Vec::new();
        for failures in 1..=8 {
            world.set_state(0, InstanceState::Failed);
            let actions = world.step();
            let [
                Action::ScheduleRestart {
                    delay, retry_at, ..
                },
            ] = actions.as_slice()
            else {
                panic!("failure {failures}: {actions:?}");
            };
            assert_eq!(*retry_at, world.now().wall + *delay);
            delays.push(delay.as_millis());
            world.advance(*delay - Duration::from_millis(1));
            assert_eq!(world.step(), [], "failure {failures}: not due yet");
            world.advance(Duration::from_millis(1));
            assert_eq!(world.step(), [start(0, 5, failures)]);
            world.set_state(0, InstanceState::Running);
        }
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
    }

    #[test]
    fn the_backoff_starts_afresh_after_a_long_healthy_run() {
        let mut world = running_world();
        world.held.get_mut(&key(0)).expect("held").failures = 5;
        world.advance(BACKOFF.reset_after);
        world.set_state(0, InstanceState::Failed);
        let actions = world.step();
        assert!(
            matches!(
                actions.as_slice(),
                [Action::ScheduleRestart { failures: 1, delay, .. }] if *delay == BACKOFF.initial
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn without_a_lease_every_instance_stops_and_nothing_starts() {
        let mut world = running_world();
        world.assignments.insert(key(1), assigned(6, 1));
        world.step();
        world.lease = Lease::Lapsed;
        world.assignments.insert(key(2), assigned(7, 1));
        assert_eq!(
            world.step(),
            [
                stop(0, 5, StopReason::NoLease),
                stop(1, 6, StopReason::NoLease)
            ]
        );
        assert_eq!(world.step(), []);
    }

    #[test]
    fn after_a_lapse_old_instances_stop_and_nothing_starts_before_the_node_catches_up() {
        let mut world = World::new();
        world.lease = Lease::Held {
            term: 1,
            caught_up: true,
        };
        world.assignments.insert(key(0), assigned(5, 1));
        assert_eq!(world.step(), [start(0, 5, 0)]);
        assert_eq!(world.held[&key(0)].term, Some(1));
        world.lease = Lease::Held {
            term: 2,
            caught_up: false,
        };
        assert_eq!(world.step(), [stop(0, 5, StopReason::LeaseLapsed)]);
        assert_eq!(world.step(), []);
        world.lease = Lease::Held {
            term: 2,
            caught_up: true,
        };
        assert_eq!(world.step(), [start(0, 5, 0)]);
    }

    #[test]
    fn instances_beyond_the_parallelism_or_of_a_deleted_connector_stop() {
        let mut world = running_world();
        world.assignments.insert(key(1), assigned(6, 1));
        world.step();
        world
            .assignments
            .get_mut(&key(1))
            .expect("assigned")
            .connector = Some(connector(1, DesiredState::Running, 1));
        assert_eq!(world.step(), [stop(1, 6, StopReason::Outdated)]);
        world
            .assignments
            .get_mut(&key(0))
            .expect("assigned")
            .connector = None;
        assert_eq!(world.step(), [stop(0, 5, StopReason::Outdated)]);
    }

    /// A small deterministic generator, as the scheduler's property test uses.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Returns true one time in `n`.
    fn one_in(seed: &mut u64, n: u64) -> bool {
        next(seed).is_multiple_of(n)
    }

    /// From any assignments and instances held, repeated plans (with instances that start,
    /// drain slowly or never, and hand-offs confirmed by the leader) end with exactly the wanted
    /// instances running at their epoch and version and every hand-off confirmed, never
    /// starting an instance twice in one plan nor over a live one.
    #[test]
    fn property_any_node_converges_to_its_wanted_instances() {
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        let states = [
            InstanceState::Starting,
            InstanceState::Running,
            InstanceState::Finished,
            InstanceState::Failed,
            InstanceState::Stopped,
        ];
        for round in 0..500 {
            let mut world = World::new();
            world.lease = if one_in(&mut seed, 2) {
                Lease::NotUsed
            } else {
                Lease::Held {
                    term: 3,
                    caught_up: true,
                }
            };
            for instance in 0..4 {
                let epoch = 10 + next(&mut seed) % 3;
                let version = 1 + next(&mut seed) % 2;
                let desired_state = if one_in(&mut seed, 4) {
                    DesiredState::Stopped
                } else {
                    DesiredState::Running
                };
                let phase = if one_in(&mut seed, 4) {
                    AssignmentPhase::Revoking
                } else {
                    AssignmentPhase::Assigned
                };
                let parallelism = 2 + (next(&mut seed) % 3) as u32;
                let deleted = one_in(&mut seed, 8);
                let connector = (!deleted).then(|| connector(version, desired_state, parallelism));
                if !one_in(&mut seed, 5) {
                    world.assignments.insert(
                        key(instance),
                        Assigned {
                            epoch,
                            phase,
                            connector,
                        },
                    );
                }
                if !one_in(&mut seed, 3) {
                    let failed = one_in(&mut seed, 2);
                    world.held.insert(
                        key(instance),
                        Held {
                            epoch: 10 + next(&mut seed) % 3,
                            version: 1 + next(&mut seed) % 2,
                            term: one_in(&mut seed, 2).then_some(2 + next(&mut seed) % 2),
                            state: states[(next(&mut seed) % 5) as usize],
                            drainable: !one_in(&mut seed, 6),
                            draining_since: None,
                            started: world.base,
                            failures: (next(&mut seed) % 6) as u32,
                            retry_at: failed
                                .then(|| world.base + Duration::from_secs(next(&mut seed) % 20)),
                        },
                    );
                }
            }
            // Some instances never finish a drain: only the timeout ends them.
            let hanging: BTreeSet<InstanceKey> =
                (0..4).filter(|_| one_in(&mut seed, 4)).map(key).collect();
            for step in 0..60 {
                let actions = world.step();
                let mut started = BTreeSet::new();
                for action in &actions {
                    if let Action::Start { key, .. } = action {
                        assert!(
                            started.insert(key.clone()),
                            "round {round} step {step}: {key} started twice: {actions:?}"
                        );
                    }
                }
                // Instances move on: starting ones run, draining ones stop (or hang, to time
                // out), failed ones stay failed until restarted.
                for (key, held) in &mut world.held {
                    if held.draining_since.is_some() {
                        if !hanging.contains(key) && one_in(&mut seed, 3) {
                            held.state = InstanceState::Stopped;
                        }
                    } else if matches!(held.state, InstanceState::Starting) {
                        held.state = InstanceState::Running;
                    }
                }
                // The leader places confirmed hand-offs elsewhere.
                for (key, epoch) in std::mem::take(&mut world.confirming) {
                    if world.assignments.get(&key).is_some_and(|assigned| {
                        assigned.epoch == epoch && assigned.phase == AssignmentPhase::Revoking
                    }) {
                        world.assignments.remove(&key);
                    }
                }
                world.advance(Duration::from_secs(1 + next(&mut seed) % 2));
            }
            assert_eq!(world.step(), [], "round {round}: not settled");
            for (key, assigned) in &world.assignments {
                assert_ne!(
                    assigned.phase,
                    AssignmentPhase::Revoking,
                    "round {round}: {key} never confirmed"
                );
                let wanted = assigned.connector.filter(|connector| {
                    connector.desired_state == DesiredState::Running
                        && key.instance < connector.parallelism
                });
                match (wanted, world.held.get(key)) {
                    (Some(connector), Some(held)) => {
                        assert_eq!(
                            (held.epoch, held.version),
                            (assigned.epoch, connector.version),
                            "round {round}: {key}"
                        );
                        assert_ne!(held.state, InstanceState::Failed, "round {round}: {key}");
                    }
                    (Some(_), None) => panic!("round {round}: {key} wanted but not running"),
                    (None, Some(held)) => {
                        panic!("round {round}: {key} held but not wanted: {held:?}")
                    }
                    (None, None) => {}
                }
            }
            for key in world.held.keys() {
                assert!(
                    world.assignments.contains_key(key),
                    "round {round}: {key} held but not assigned"
                );
            }
        }
    }
}
