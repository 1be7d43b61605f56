//! The metadata state machine as plain data: nodes, connectors, assignments and checkpoints,
//! the commands that change them, and [`State::apply`], a pure function from (state, log index,
//! command) to (state, reply).
//!
//! No I/O, no clock, no randomness: the log index stands in for time where an epoch is needed
//! (an assignment's epoch is the index of the entry that made it), and a checkpoint's wall-clock
//! time travels inside the command. Every command is idempotent under re-application: applying
//! the same entry twice leaves the state as applying it once did, because openraft re-applies
//! committed entries after a restart and clients retry writes whose answer was lost.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's id in the cluster (also its Raft id).
pub type NodeId = u64;

/// The index of one instance of a connector (0 .. parallelism).
pub type InstanceIndex = u32;

/// A connector's fully qualified name, `tenant/namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnectorName {
    /// The Pulsar tenant.
    pub tenant: String,
    /// The Pulsar namespace within the tenant.
    pub namespace: String,
    /// The connector's name within the namespace.
    pub name: String,
}

impl ConnectorName {
    /// Returns the name made of its three parts.
    pub fn new(
        tenant: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ConnectorName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}/{}",
            self.tenant, self.namespace, self.name
        )
    }
}

/// One instance of one connector: the key of assignments and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    /// The connector.
    pub connector: ConnectorName,
    /// The instance's index.
    pub instance: InstanceIndex,
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}#{}", self.connector, self.instance)
    }
}

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Runs instances and takes new ones.
    Active,
    /// Keeps its instances until they are handed off, takes no new ones.
    Draining,
    /// Missed its lease: its instances may be reassigned.
    Down,
    /// Left the cluster for good.
    Left,
}

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's gRPC address (host:port).
    pub address: String,
    /// Where the node is in its life.
    pub state: NodeState,
    /// Free-form labels the scheduler may match on.
    pub labels: BTreeMap<String, String>,
}

/// What a sink does with a record its connector rejects: the connector API's own type.
pub use ferry_actors::api::ErrorPolicy;
/// The processing guarantee a connector asks for: the connector API's own type.
pub use ferry_actors::api::Guarantee;
/// Whether a connector reads into Pulsar or writes out of it: the connector API's own type.
pub use ferry_actors::api::Kind as ConnectorKind;
/// Where a sink's new subscription starts: the sink consumer's own type.
pub use ferry_actors::pulsar::sink_consumer::StartPosition;

/// The batch size (records per source read or per sink write) when none is given.
pub const DEFAULT_BATCH_SIZE: u32 = 1000;
/// A sink's receiver queue (messages read ahead) when none is given.
pub const DEFAULT_RECEIVER_QUEUE_SIZE: u32 = 1000;
/// The largest batch or receiver queue a connector may ask for: each holds that many records
/// in memory per instance.
pub const MAX_RUNTIME_SIZE: u32 = 100_000;

/// How the runtime drives a connector's instances, as given: an absent value takes its
/// default when the instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeOptions {
    /// Sources: most records asked of the connector per read.
    pub read_batch_size: Option<u32>,
    /// Sinks: most records handed to the connector per write.
    pub write_batch_size: Option<u32>,
    /// Sinks: messages the broker may push ahead of processing.
    pub receiver_queue_size: Option<u32>,
    /// Sinks: where a new subscription starts.
    pub subscription_position: Option<StartPosition>,
}

impl RuntimeOptions {
    /// Returns the read batch size, or the default.
    pub fn read_batch(&self) -> usize {
        self.read_batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize
    }

    /// Returns the write batch size, or the default.
    pub fn write_batch(&self) -> usize {
        self.write_batch_size.unwrap_or(DEFAULT_BATCH_SIZE) as usize
    }

    /// Returns the receiver queue size, or the default.
    pub fn receiver_queue(&self) -> u32 {
        self.receiver_queue_size
            .unwrap_or(DEFAULT_RECEIVER_QUEUE_SIZE)
    }

    /// Returns where a new subscription starts: the earliest message unless given.
    pub fn start(&self) -> StartPosition {
        self.subscription_position
            .unwrap_or(StartPosition::Earliest)
    }
}

/// Whether a connector's instances should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredState {
    /// Instances should run.
    Running,
    /// Instances should be stopped.
    Stopped,
}

/// A secret config value: kept in the store, never shown by `Debug`.
///
/// Serialization keeps the value (the store must replicate it); read paths that leave the node
/// use [`Connector::without_secret_values`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(String);

impl Secret {
    /// Returns a secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret's value, for the connector that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// What a user asks for when creating or updating a connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorSpec {
    /// Source or sink.
    pub kind: ConnectorKind,
    /// The connector type's registered name (`datagen`, `file`, ...).
    pub connector_type: String,
    /// Plain config values.
    pub config: BTreeMap<String, String>,
    /// Secret config values, never echoed back.
    pub secrets: BTreeMap<String, Secret>,
    /// Output topic (sources) or input topics (sinks).
    pub topics: Vec<String>,
    /// The input subscription (sinks).
    pub subscription: Option<String>,
    /// How many instances run.
    pub parallelism: u32,
    /// The processing guarantee.
    pub guarantee: Guarantee,
    /// Sinks: what happens to a record the connector rejects (`Fail` for sources).
    pub error_policy: ErrorPolicy,
    /// Batch sizes, receiver queue and start position.
    pub options: RuntimeOptions,
}

/// A connector as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connector {
    /// What the user asked for.
    pub spec: ConnectorSpec,
    /// Whether its instances should run.
    pub desired_state: DesiredState,
    /// Starts at 1, grows by one on every change of the spec.
    pub version: u64,
    /// The log index of the entry that created it: tells apart two connectors that had the
    /// same name (one deleted, the other created later), whose instances must not share a
    /// producer name (the broker would drop the new one's records as duplicates) or a stored
    /// sink position.
    pub created: u64,
}

impl Connector {
    /// Returns a copy whose secret values are replaced by a marker, for read paths that leave
    /// the node.
    pub fn without_secret_values(&self) -> Self {
        let mut copy = self.clone();
        for value in copy.spec.secrets.values_mut() {
            *value = Secret::new("<redacted>");
        }
        copy
    }
}

/// Where a handoff is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentPhase {
    /// The owner runs the instance.
    Assigned,
    /// The owner should stop, commit a final checkpoint and confirm.
    Revoking,
}

/// Which node owns an instance, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The owner.
    pub node: NodeId,
    /// The index of the log entry that made this assignment: the owner's fencing token.
    pub epoch: u64,
    /// Running or being handed off.
    pub phase: AssignmentPhase,
}

/// An instance's committed progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The epoch of the owner that wrote it (0 after a reset).
    pub epoch: u64,
    /// Opaque position bytes, the connector's to interpret.
    pub position: Vec<u8>,
    /// The last Pulsar sequence id (sources) covered by the position.
    pub sequence_id: Option<u64>,
    /// The writer's wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// How many commits advanced this checkpoint since its instance was created or reset.
    pub commits: u64,
}

/// A change to the metadata: the application data of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a connector, Running at version 1.
    CreateConnector {
        /// The new connector's name.
        connector: ConnectorName,
        /// What it should do.
        spec: ConnectorSpec,
    },
    /// Replaces a connector's spec, bumping its version when the spec changes.
    UpdateConnector {
        /// The connector.
        connector: ConnectorName,
        /// The new spec.
        spec: ConnectorSpec,
        /// The version the update was based on; None skips the check.
        expected_version: Option<u64>,
    },
    /// Deletes a connector with its assignments and checkpoints.
    DeleteConnector {
        /// The connector.
        connector: ConnectorName,
    },
    /// Starts or stops a connector's instances.
    SetDesiredState {
        /// The connector.
        connector: ConnectorName,
        /// Running or Stopped.
        state: DesiredState,
    },
    /// Gives an instance to a node; the epoch is this entry's log index.
    Assign {
        /// The instance.
        key: InstanceKey,
        /// The new owner.
        node: NodeId,
    },
    /// Asks an instance's owner to hand it off.
    Revoke {
        /// The instance.
        key: InstanceKey,
        /// The owner's epoch.
        epoch: u64,
    },
    /// The owner stopped the instance: the assignment is removed.
    ConfirmRevoked {
        /// The instance.
        key: InstanceKey,
        /// The owner's epoch.
        epoch: u64,
    },
    /// A node joins (or comes back): it becomes Active.
    NodeJoin {
        /// The node.
        node: NodeId,
        /// Its gRPC address.
        address: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// A node is Draining: it keeps its instances but takes no new ones.
    NodeDrain {
        /// The node.
        node: NodeId,
    },
    /// A node left for good.
    NodeLeave {
        /// The node.
        node: NodeId,
    },
    /// A node missed its lease.
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// Advances an instance's checkpoint from `from` to `to`, only for the current owner.
    CommitCheckpoint {
        /// The instance.
        key: InstanceKey,
        /// The writer's epoch; anything but the current assignment's is rejected.
        epoch: u64,
        /// The position this commit starts at: the current checkpoint's (None: no checkpoint).
        from: Option<Vec<u8>>,
        /// The new position.
        to: Vec<u8>,
        /// The last Pulsar sequence id the new position covers.
        sequence_id: Option<u64>,
        /// The writer's wall-clock time, milliseconds since the Unix epoch.
        time_ms: u64,
    },
    /// Sets (or with None clears) checkpoints of a stopped connector.
    ResetOffsets {
        /// The connector.
        connector: ConnectorName,
        /// One instance, or all when None.
        instance: Option<InstanceIndex>,
        /// The new position; None forgets the checkpoint.
        position: Option<Vec<u8>>,
    },
    /// Checkpoint commits gathered into one log entry, applied in order, each with its own
    /// reply. Only `CommitCheckpoint` may be batched: it makes no epoch, so sharing one log index
    /// is harmless.
    Batch(Vec<Command>),
}

impl Command {
    /// Returns whether this command may travel in a [`Command::Batch`].
    pub fn is_batchable(&self) -> bool {
        matches!(self, Self::CommitCheckpoint { .. })
    }

    /// Returns whether applying this command can change nothing but checkpoints: nodes,
    /// connectors and assignments stay as they were, so whoever watches those need not look.
    pub fn changes_only_checkpoints(&self) -> bool {
        match self {
            // A reset also gives the reset instances' owners new epochs: not checkpoints only.
            Self::CommitCheckpoint { .. } => true,
            Self::Batch(commands) => commands.iter().all(Self::changes_only_checkpoints),
            _ => false,
        }
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command was applied (or had already been).
    Done,
    /// The connector now has this version.
    ConnectorVersion(u64),
    /// The instance is owned with this epoch.
    Assigned {
        /// The owner's epoch.
        epoch: u64,
    },
    /// The checkpoint now stands at the commit's `to`.
    CheckpointCommitted {
        /// True when this exact commit had already been applied (a retry).
        duplicate: bool,
    },
    /// The replies of a batch's commands, in order.
    Batch(Vec<Reply>),
}

/// Why a command was refused. The state is unchanged by a refused command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The connector already exists with a different spec.
    #[error("connector {connector} already exists")]
    ConnectorExists {
        /// The connector.
        connector: ConnectorName,
    },
    /// No such connector.
    #[error("connector {connector} not found")]
    ConnectorNotFound {
        /// The connector.
        connector: ConnectorName,
    },
    /// The update was based on an older version.
    #[error("connector {connector} is at version {actual}, not {expected} (expected_version)")]
    VersionMismatch {
        /// The connector.
        connector: ConnectorName,
        /// The version the update expected.
        expected: u64,
        /// The stored version.
        actual: u64,
    },
    /// A bad field value.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The instance index is not below the connector's parallelism.
    #[error("instance {instance} of {connector} does not exist (parallelism {parallelism})")]
    InstanceOutOfRange {
        /// The connector.
        connector: ConnectorName,
        /// The instance asked for.
        instance: InstanceIndex,
        /// The connector's parallelism.
        parallelism: u32,
    },
    /// The instance is owned by a live node.
    #[error("instance {key} is owned by node {node}")]
    InstanceOwned {
        /// The instance.
        key: InstanceKey,
        /// Its owner.
        node: NodeId,
    },
    /// The writer's epoch is not the current owner's: another instance owns it now.
    #[error("stale epoch {epoch} for instance {key} (current: {current:?})")]
    StaleEpoch {
        /// The instance.
        key: InstanceKey,
        /// The epoch the command carried.
        epoch: u64,
        /// The current owner's epoch, if any.
        current: Option<u64>,
    },
    /// The commit does not start where the checkpoint stands.
    #[error("checkpoint of {key} does not chain: the commit starts elsewhere (from)")]
    CheckpointGap {
        /// The instance.
        key: InstanceKey,
    },
    /// Offsets can be reset only while the connector is stopped.
    #[error("connector {connector} is not stopped")]
    NotStopped {
        /// The connector.
        connector: ConnectorName,
    },
    /// No such node.
    #[error("node {node} not found")]
    NodeNotFound {
        /// The node.
        node: NodeId,
    },
    /// The node takes no new instances.
    #[error("node {node} is not active")]
    NodeNotActive {
        /// The node.
        node: NodeId,
    },
}

/// The answer to an applied command.
pub type Reply = Result<Outcome, Rejection>;

/// All metadata. Ordered maps keep snapshots and iteration deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Connectors by name.
    pub connectors: BTreeMap<ConnectorName, Connector>,
    /// Assignments by instance.
    pub assignments: BTreeMap<InstanceKey, Assignment>,
    /// Checkpoints by instance.
    pub checkpoints: BTreeMap<InstanceKey, Checkpoint>,
}

impl State {
    /// Applies `command`, carried by the log entry at `index`, and returns its reply.
    pub fn apply(&mut self, index: u64, command: &Command) -> Reply {
        match command {
            Command::CreateConnector { connector, spec } => {
                self.create_connector(index, connector, spec)
            }
            Command::UpdateConnector {
                connector,
                spec,
                expected_version,
            } => self.update_connector(connector, spec, *expected_version),
            Command::DeleteConnector { connector } => {
                self.connectors.remove(connector);
                self.assignments
                    .retain(|key, _| &key.connector != connector);
                self.checkpoints
                    .retain(|key, _| &key.connector != connector);
                Ok(Outcome::Done)
            }
            Command::SetDesiredState { connector, state } => {
                let stored = self.connector_mut(connector)?;
                stored.desired_state = *state;
                Ok(Outcome::Done)
            }
            Command::Assign { key, node } => self.assign(index, key, *node),
            Command::Revoke { key, epoch } => {
                let assignment = self.owned_assignment_mut(key, *epoch)?;
                assignment.phase = AssignmentPhase::Revoking;
                Ok(Outcome::Done)
            }
            Command::ConfirmRevoked { key, epoch } => match self.assignments.get(key) {
                // Already confirmed (a retry or a re-application).
                None => Ok(Outcome::Done),
                Some(current) if current.epoch == *epoch => {
                    self.assignments.remove(key);
                    Ok(Outcome::Done)
                }
                Some(current) => Err(Rejection::StaleEpoch {
                    key: key.clone(),
                    epoch: *epoch,
                    current: Some(current.epoch),
                }),
            },
            Command::NodeJoin {
                node,
                address,
                labels,
            } => {
                if address.is_empty() {
                    return Err(invalid("address", "must not be empty"));
                }
                self.nodes.insert(
                    *node,
                    NodeRecord {
                        address: address.clone(),
                        state: NodeState::Active,
                        labels: labels.clone(),
                    },
                );
                Ok(Outcome::Done)
            }
            Command::NodeDrain { node } => self.set_node_state(*node, NodeState::Draining),
            Command::NodeLeave { node } => self.set_node_state(*node, NodeState::Left),
            Command::NodeDown { node } => self.set_node_state(*node, NodeState::Down),
            Command::CommitCheckpoint {
                key,
                epoch,
                from,
                to,
                sequence_id,
                time_ms,
            } => self.commit_checkpoint_if_epoch_matches(
                key,
                *epoch,
                from.as_deref(),
                to,
                *sequence_id,
                *time_ms,
            ),
            Command::ResetOffsets {
                connector,
                instance,
                position,
            } => self.reset_offsets(index, connector, *instance, position.as_ref()),
            Command::Batch(commands) => Ok(Outcome::Batch(
                commands
                    .iter()
                    .map(|command| {
                        if command.is_batchable() {
                            self.apply(index, command)
                        } else {
                            Err(invalid("batch", "only checkpoint commits may be batched"))
                        }
                    })
                    .collect(),
            )),
        }
    }

    fn create_connector(
        &mut self,
        index: u64,
        connector: &ConnectorName,
        spec: &ConnectorSpec,
    ) -> Reply {
        validate_spec(connector, spec)?;
        match self.connectors.get(connector) {
            // The same create again: a retry or a re-application.
            Some(stored) if &stored.spec == spec => Ok(Outcome::ConnectorVersion(stored.version)),
            Some(_) => Err(Rejection::ConnectorExists {
                connector: connector.clone(),
            }),
            None => {
                self.connectors.insert(
                    connector.clone(),
                    Connector {
                        spec: spec.clone(),
                        desired_state: DesiredState::Running,
                        version: 1,
                        created: index,
                    },
                );
                Ok(Outcome::ConnectorVersion(1))
            }
        }
    }

    fn update_connector(
        &mut self,
        connector: &ConnectorName,
        spec: &ConnectorSpec,
        expected_version: Option<u64>,
    ) -> Reply {
        validate_spec(connector, spec)?;
        let stored = self.connector_mut(connector)?;
        if &stored.spec == spec {
            // Nothing changes: also what re-applying this update finds.
            return Ok(Outcome::ConnectorVersion(stored.version));
        }
        if let Some(expected) = expected_version
            && expected != stored.version
        {
            return Err(Rejection::VersionMismatch {
                connector: connector.clone(),
                expected,
                actual: stored.version,
            });
        }
        stored.spec = spec.clone();
        stored.version += 1;
        let version = stored.version;
        let parallelism = spec.parallelism;
        // Instances beyond the new parallelism no longer exist.
        self.assignments
            .retain(|key, _| &key.connector != connector || key.instance < parallelism);
        Ok(Outcome::ConnectorVersion(version))
    }

    fn assign(&mut self, index: u64, key: &InstanceKey, node: NodeId) -> Reply {
        let connector = self.connector(&key.connector)?;
        if key.instance >= connector.spec.parallelism {
            return Err(Rejection::InstanceOutOfRange {
                connector: key.connector.clone(),
                instance: key.instance,
                parallelism: connector.spec.parallelism,
            });
        }
        if let Some(current) = self.assignments.get(key) {
            if current.node == node {
                // Already this node's: the epoch stays, or a running owner would be fenced.
                return Ok(Outcome::Assigned {
                    epoch: current.epoch,
                });
            }
            let owner_is_gone = self
                .nodes
                .get(&current.node)
                .is_none_or(|owner| matches!(owner.state, NodeState::Down | NodeState::Left));
            if !owner_is_gone {
                return Err(Rejection::InstanceOwned {
                    key: key.clone(),
                    node: current.node,
                });
            }
        }
        match self.nodes.get(&node) {
            None => return Err(Rejection::NodeNotFound { node }),
            Some(record) if record.state != NodeState::Active => {
                return Err(Rejection::NodeNotActive { node });
            }
            Some(_) => {}
        }
        self.assignments.insert(
            key.clone(),
            Assignment {
                node,
                epoch: index,
                phase: AssignmentPhase::Assigned,
            },
        );
        Ok(Outcome::Assigned { epoch: index })
    }

    /// Advances a checkpoint for the instance's current owner only. The commit must chain: it
    /// starts where the checkpoint stands (`from`), or it is this very commit again (the
    /// checkpoint already stands at `to` with the same epoch), which is answered as a duplicate.
    fn commit_checkpoint_if_epoch_matches(
        &mut self,
        key: &InstanceKey,
        epoch: u64,
        from: Option<&[u8]>,
        to: &[u8],
        sequence_id: Option<u64>,
        time_ms: u64,
    ) -> Reply {
        let current_epoch = self.assignments.get(key).map(|assignment| assignment.epoch);
        if current_epoch != Some(epoch) {
            return Err(Rejection::StaleEpoch {
                key: key.clone(),
                epoch,
                current: current_epoch,
            });
        }
        let stored = self.checkpoints.get(key);
        if let Some(stored) = stored
            && stored.position == to
            && stored.epoch == epoch
            && from != Some(to)
        {
            return Ok(Outcome::CheckpointCommitted { duplicate: true });
        }
        if stored.map(|checkpoint| checkpoint.position.as_slice()) != from {
            return Err(Rejection::CheckpointGap { key: key.clone() });
        }
        let commits = stored.map_or(0, |checkpoint| checkpoint.commits) + 1;
        self.checkpoints.insert(
            key.clone(),
            Checkpoint {
                epoch,
                position: to.to_vec(),
                sequence_id,
                time_ms,
                commits,
            },
        );
        Ok(Outcome::CheckpointCommitted { duplicate: false })
    }

    /// Sets or forgets checkpoints of a stopped connector. The reset instances' assignments take
    /// `index` as their epoch: the position their owners held is no longer the stored one, so
    /// an owner that has not stopped yet is fenced, and a supervisor that missed the stop (a
    /// stop, reset and start within one of its ticks) sees a new epoch and starts the instance
    /// again from the reset position.
    fn reset_offsets(
        &mut self,
        index: u64,
        connector: &ConnectorName,
        instance: Option<InstanceIndex>,
        position: Option<&Vec<u8>>,
    ) -> Reply {
        let stored = self.connector(connector)?;
        if stored.desired_state != DesiredState::Stopped {
            return Err(Rejection::NotStopped {
                connector: connector.clone(),
            });
        }
        let parallelism = stored.spec.parallelism;
        let instances = match instance {
            Some(instance) if instance >= parallelism => {
                return Err(Rejection::InstanceOutOfRange {
                    connector: connector.clone(),
                    instance,
                    parallelism,
                });
            }
            Some(instance) => instance..instance + 1,
            None => 0..parallelism,
        };
        for instance in instances {
            let key = InstanceKey {
                connector: connector.clone(),
                instance,
            };
            match position {
                Some(position) => {
                    self.checkpoints.insert(
                        key.clone(),
                        Checkpoint {
                            epoch: 0,
                            position: position.clone(),
                            sequence_id: None,
                            time_ms: 0,
                            commits: 0,
                        },
                    );
                }
                None => {
                    self.checkpoints.remove(&key);
                }
            }
            // A hand-off under way keeps its epoch: its confirmation names it, and the next
            // assignment makes a new one anyway.
            if let Some(assignment) = self.assignments.get_mut(&key)
                && assignment.phase == AssignmentPhase::Assigned
            {
                assignment.epoch = index;
            }
        }
        Ok(Outcome::Done)
    }

    fn set_node_state(&mut self, node: NodeId, state: NodeState) -> Reply {
        let record = self
            .nodes
            .get_mut(&node)
            .ok_or(Rejection::NodeNotFound { node })?;
        record.state = state;
        Ok(Outcome::Done)
    }

    fn connector(&self, connector: &ConnectorName) -> Result<&Connector, Rejection> {
        self.connectors
            .get(connector)
            .ok_or_else(|| Rejection::ConnectorNotFound {
                connector: connector.clone(),
            })
    }

    fn connector_mut(&mut self, connector: &ConnectorName) -> Result<&mut Connector, Rejection> {
        self.connectors
            .get_mut(connector)
            .ok_or_else(|| Rejection::ConnectorNotFound {
                connector: connector.clone(),
            })
    }

    fn owned_assignment_mut(
        &mut self,
        key: &InstanceKey,
        epoch: u64,
    ) -> Result<&mut Assignment, Rejection> {
        match self.assignments.get_mut(key) {
            Some(assignment) if assignment.epoch == epoch => Ok(assignment),
            other => Err(Rejection::StaleEpoch {
                key: key.clone(),
                epoch,
                current: other.map(|assignment| assignment.epoch),
            }),
        }
    }

    /// Returns the assignments addressed to `node`.
    pub fn assignments_of(&self, node: NodeId) -> BTreeMap<InstanceKey, Assignment> {
        self.assignments
            .iter()
            .filter(|(_, assignment)| assignment.node == node)
            .map(|(key, assignment)| (key.clone(), assignment.clone()))
            .collect()
    }
}

fn invalid(field: &str, reason: &str) -> Rejection {
    Rejection::InvalidArgument {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn validate_spec(connector: &ConnectorName, spec: &ConnectorSpec) -> Result<(), Rejection> {
    for (field, value) in [
        ("tenant", &connector.tenant),
        ("namespace", &connector.namespace),
        ("name", &connector.name),
    ] {
        if value.is_empty() || value.contains('/') {
            return Err(invalid(field, "must be non-empty and without '/'"));
        }
    }
    if spec.connector_type.is_empty() {
        return Err(invalid("type", "must not be empty"));
    }
    if spec.parallelism == 0 {
        return Err(invalid("parallelism", "must be at least 1"));
    }
    if spec.topics.is_empty() {
        return Err(invalid("topics", "must name at least one topic"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ConnectorName {
        ConnectorName::new("public", "default", "orders")
    }

    fn key(instance: InstanceIndex) -> InstanceKey {
        InstanceKey {
            connector: name(),
            instance,
        }
    }

    fn spec(parallelism: u32) -> ConnectorSpec {
        ConnectorSpec {
            kind: ConnectorKind::Source,
            connector_type: "datagen".to_owned(),
            config: BTreeMap::from([("rate".to_owned(), "10".to_owned())]),
            secrets: BTreeMap::from([("password".to_owned(), Secret::new("hunter2"))]),
            topics: vec!["persistent://public/default/orders".to_owned()],
            subscription: None,
            parallelism,
            guarantee: Guarantee::EffectivelyOnce,
            error_policy: crate::meta::state::ErrorPolicy::Fail,
            options: crate::meta::state::RuntimeOptions::default(),
        }
    }

    fn join(node: NodeId) -> Command {
        Command::NodeJoin {
            node,
            address: format!("127.0.0.1:{}", 7600 + node),
            labels: BTreeMap::new(),
        }
    }

    fn commit(epoch: u64, from: Option<&[u8]>, to: &[u8]) -> Command {
        Command::CommitCheckpoint {
            key: key(0),
            epoch,
            from: from.map(<[u8]>::to_vec),
            to: to.to_vec(),
            sequence_id: Some(7),
            time_ms: 1_000,
        }
    }

    /// A state with nodes 1 and 2 and a 2-instance connector whose instance 0 is on node 1 at
    /// epoch 10.
    fn assigned_state() -> State {
        let mut state = State::default();
        state.apply(1, &join(1)).unwrap();
        state.apply(2, &join(2)).unwrap();
        state
            .apply(
                3,
                &Command::CreateConnector {
                    connector: name(),
                    spec: spec(2),
                },
            )
            .unwrap();
        assert_eq!(
            state.apply(
                10,
                &Command::Assign {
                    key: key(0),
                    node: 1
                }
            ),
            Ok(Outcome::Assigned { epoch: 10 })
        );
        state
    }

    /// Applies `command` twice at the same index and checks the second changes nothing.
    fn assert_idempotent(mut state: State, index: u64, command: &Command) {
        state.apply(index, command).ok();
        let once = state.clone();
        state.apply(index, command).ok();
        assert_eq!(state, once, "re-applying {command:?} changed the state");
    }

    #[test]
    fn commands_said_to_change_only_checkpoints_leave_everything_else_alone() {
        let mut stopped = assigned_state();
        stopped
            .apply(
                11,
                &Command::SetDesiredState {
                    connector: name(),
                    state: DesiredState::Stopped,
                },
            )
            .unwrap();
        let commits = vec![commit(10, None, b"a"), commit(10, Some(b"a"), b"b")];
        let commands = [
            join(3),
            Command::NodeDown { node: 1 },
            Command::DeleteConnector { connector: name() },
            Command::SetDesiredState {
                connector: name(),
                state: DesiredState::Running,
            },
            Command::Assign {
                key: key(1),
                node: 2,
            },
            Command::Revoke {
                key: key(0),
                epoch: 10,
            },
            Command::ConfirmRevoked {
                key: key(0),
                epoch: 10,
            },
            commit(10, None, b"a"),
            Command::Batch(commits.clone()),
            Command::ResetOffsets {
                connector: name(),
                instance: None,
                position: Some(b"z".to_vec()),
            },
        ];
        let rest = |state: &State| {
            (
                state.nodes.clone(),
                state.connectors.clone(),
                state.assignments.clone(),
            )
        };
        for start in [assigned_state(), stopped] {
            for command in &commands {
                let mut state = start.clone();
                let before = rest(&state);
                state.apply(20, command).ok();
                if command.changes_only_checkpoints() {
                    assert_eq!(
                        rest(&state),
                        before,
                        "{command:?} changed more than checkpoints"
                    );
                }
            }
        }
        assert!(Command::Batch(commits).changes_only_checkpoints());
        assert!(!Command::Batch(vec![commit(10, None, b"a"), join(3)]).changes_only_checkpoints());
        assert!(
            !Command::Assign {
                key: key(1),
                node: 2
            }
            .changes_only_checkpoints()
        );
    }

    #[test]
    fn every_command_is_idempotent_under_re_application() {
        let commands = [
            join(3),
            Command::NodeDrain { node: 2 },
            Command::NodeLeave { node: 2 },
            Command::NodeDown { node: 1 },
            Command::CreateConnector {
                connector: ConnectorName::new("public", "default", "other"),
                spec: spec(1),
            },
            Command::UpdateConnector {
                connector: name(),
                spec: spec(3),
                expected_version: Some(1),
            },
            Command::DeleteConnector { connector: name() },
            Command::SetDesiredState {
                connector: name(),
                state: DesiredState::Stopped,
            },
            Command::Assign {
                key: key(1),
                node: 2,
            },
            Command::Revoke {
                key: key(0),
                epoch: 10,
            },
            Command::ConfirmRevoked {
                key: key(0),
                epoch: 10,
            },
            commit(10, None, b"a"),
            Command::ResetOffsets {
                connector: name(),
                instance: None,
                position: Some(b"z".to_vec()),
            },
        ];
        for command in &commands {
            assert_idempotent(assigned_state(), 20, command);
        }
        // And from a stopped connector, where reset applies.
        let mut stopped = assigned_state();
        stopped
            .apply(
                11,
                &Command::SetDesiredState {
                    connector: name(),
                    state: DesiredState::Stopped,
                },
            )
            .unwrap();
        for command in &commands {
            assert_idempotent(stopped.clone(), 20, command);
        }
    }

    #[test]
    fn a_checkpoint_from_a_stale_epoch_is_rejected_and_changes_nothing() {
        let mut state = assigned_state();
        state.apply(11, &commit(10, None, b"p1")).unwrap();
        // Node 1 goes down; instance 0 moves to node 2 with epoch 12.
        state.apply(12, &Command::NodeDown { node: 1 }).unwrap();
        assert_eq!(
            state.apply(
                13,
                &Command::Assign {
                    key: key(0),
                    node: 2
                }
            ),
            Ok(Outcome::Assigned { epoch: 13 })
        );
        let before = state.clone();
        assert_eq!(
            state.apply(14, &commit(10, Some(b"p1"), b"p2")),
            Err(Rejection::StaleEpoch {
                key: key(0),
                epoch: 10,
                current: Some(13),
            })
        );
        assert_eq!(state, before);
        // The new owner continues from the checkpoint.
        assert_eq!(
            state.apply(15, &commit(13, Some(b"p1"), b"p2")),
            Ok(Outcome::CheckpointCommitted { duplicate: false })
        );
        assert_eq!(state.checkpoints[&key(0)].epoch, 13);
        assert_eq!(state.checkpoints[&key(0)].commits, 2);
    }

    #[test]
    fn a_checkpoint_without_an_assignment_is_rejected() {
        let mut state = assigned_state();
        let commit = Command::CommitCheckpoint {
            key: key(1),
            epoch: 10,
            from: None,
            to: b"x".to_vec(),
            sequence_id: None,
            time_ms: 0,
        };
        assert_eq!(
            state.apply(11, &commit),
            Err(Rejection::StaleEpoch {
                key: key(1),
                epoch: 10,
                current: None,
            })
        );
    }

    #[test]
    fn checkpoints_must_chain_and_a_retried_commit_is_a_duplicate() {
        let mut state = assigned_state();
        assert_eq!(
            state.apply(11, &commit(10, None, b"p1")),
            Ok(Outcome::CheckpointCommitted { duplicate: false })
        );
        // The same commit again (a client retry after a lost answer).
        assert_eq!(
            state.apply(12, &commit(10, None, b"p1")),
            Ok(Outcome::CheckpointCommitted { duplicate: true })
        );
        assert_eq!(state.checkpoints[&key(0)].commits, 1);
        // A commit that skips ahead from a position the checkpoint never held.
        assert_eq!(
            state.apply(13, &commit(10, Some(b"p5"), b"p6")),
            Err(Rejection::CheckpointGap { key: key(0) })
        );
        assert_eq!(state.checkpoints[&key(0)].position, b"p1");
    }

    #[test]
    fn a_batch_applies_its_commits_in_order_and_refuses_other_commands() {
        let mut state = assigned_state();
        let batch = Command::Batch(vec![
            commit(10, None, b"p1"),
            commit(10, Some(b"p1"), b"p2"),
            commit(9, Some(b"p2"), b"p3"),
            Command::NodeDown { node: 2 },
        ]);
        let Ok(Outcome::Batch(replies)) = state.apply(11, &batch) else {
            panic!("a batch answers with a batch");
        };
        assert_eq!(
            replies[0],
            Ok(Outcome::CheckpointCommitted { duplicate: false })
        );
        assert_eq!(
            replies[1],
            Ok(Outcome::CheckpointCommitted { duplicate: false })
        );
        assert!(matches!(replies[2], Err(Rejection::StaleEpoch { .. })));
        assert!(matches!(replies[3], Err(Rejection::InvalidArgument { .. })));
        assert_eq!(state.checkpoints[&key(0)].position, b"p2");
        assert_eq!(state.nodes[&2].state, NodeState::Active);
        assert_idempotent(assigned_state(), 11, &batch);
    }

    #[test]
    fn offsets_reset_only_while_stopped() {
        let mut state = assigned_state();
        state.apply(11, &commit(10, None, b"p1")).unwrap();
        let reset = Command::ResetOffsets {
            connector: name(),
            instance: Some(0),
            position: Some(b"p0".to_vec()),
        };
        assert_eq!(
            state.apply(12, &reset),
            Err(Rejection::NotStopped { connector: name() })
        );
        assert_eq!(state.checkpoints[&key(0)].position, b"p1");
        state
            .apply(
                13,
                &Command::SetDesiredState {
                    connector: name(),
                    state: DesiredState::Stopped,
                },
            )
            .unwrap();
        assert_eq!(state.apply(14, &reset), Ok(Outcome::Done));
        assert_eq!(state.checkpoints[&key(0)].position, b"p0");
        assert_eq!(state.checkpoints[&key(0)].epoch, 0);
        let out_of_range = Command::ResetOffsets {
            connector: name(),
            instance: Some(2),
            position: None,
        };
        assert!(matches!(
            state.apply(15, &out_of_range),
            Err(Rejection::InstanceOutOfRange { instance: 2, .. })
        ));
    }

    /// Regression (issue 10, found by admin_api t50): `stop`, `offsets reset` and `start` given
    /// within one supervisor tick left a finished instance finished under the same epoch, so
    /// the owner never noticed it had to run again from the reset position (and a running
    /// owner that missed the stop could have gone on from the position it held). A reset
    /// fences the reset instances' owners: their assignments take the reset's index as epoch.
    #[test]
    fn a_reset_gives_the_reset_instances_a_new_epoch() {
        let mut state = assigned_state();
        state.apply(11, &commit(10, None, b"p1")).unwrap();
        state
            .apply(
                12,
                &Command::SetDesiredState {
                    connector: name(),
                    state: DesiredState::Stopped,
                },
            )
            .unwrap();
        let reset = Command::ResetOffsets {
            connector: name(),
            instance: Some(0),
            position: Some(b"p0".to_vec()),
        };
        assert_eq!(state.apply(13, &reset), Ok(Outcome::Done));
        assert_eq!(state.assignments[&key(0)].epoch, 13);
        assert_eq!(state.assignments[&key(0)].node, 1);
        // The old owner's commits are refused; the new epoch's chain from the reset.
        assert!(matches!(
            state.apply(14, &commit(10, Some(b"p0"), b"p2")),
            Err(Rejection::StaleEpoch { .. })
        ));
        assert_eq!(state.checkpoints[&key(0)].position, b"p0");
        assert_eq!(
            state.apply(15, &commit(13, Some(b"p0"), b"p2")),
            Ok(Outcome::CheckpointCommitted { duplicate: false })
        );
    }

    #[test]
    fn an_instance_owned_by_a_live_node_is_not_reassigned() {
        let mut state = assigned_state();
        assert_eq!(
            state.apply(
                11,
                &Command::Assign {
                    key: key(0),
                    node: 2
                }
            ),
            Err(Rejection::InstanceOwned {
                key: key(0),
                node: 1
            })
        );
        // Re-assigning to the owner keeps the owner's epoch: it must not fence itself.
        assert_eq!(
            state.apply(
                12,
                &Command::Assign {
                    key: key(0),
                    node: 1
                }
            ),
            Ok(Outcome::Assigned { epoch: 10 })
        );
        assert!(matches!(
            state.apply(
                13,
                &Command::Assign {
                    key: key(5),
                    node: 1
                }
            ),
            Err(Rejection::InstanceOutOfRange { instance: 5, .. })
        ));
        state.apply(14, &Command::NodeDrain { node: 2 }).unwrap();
        assert_eq!(
            state.apply(
                15,
                &Command::Assign {
                    key: key(1),
                    node: 2
                }
            ),
            Err(Rejection::NodeNotActive { node: 2 })
        );
    }

    #[test]
    fn a_handoff_revokes_then_confirms_with_the_owners_epoch() {
        let mut state = assigned_state();
        assert!(matches!(
            state.apply(
                11,
                &Command::Revoke {
                    key: key(0),
                    epoch: 9
                }
            ),
            Err(Rejection::StaleEpoch { .. })
        ));
        state
            .apply(
                12,
                &Command::Revoke {
                    key: key(0),
                    epoch: 10,
                },
            )
            .unwrap();
        assert_eq!(state.assignments[&key(0)].phase, AssignmentPhase::Revoking);
        // The revoking owner may still commit its final checkpoint.
        state.apply(13, &commit(10, None, b"final")).unwrap();
        state
            .apply(
                14,
                &Command::ConfirmRevoked {
                    key: key(0),
                    epoch: 10,
                },
            )
            .unwrap();
        assert!(!state.assignments.contains_key(&key(0)));
        assert_eq!(
            state.apply(
                15,
                &Command::Assign {
                    key: key(0),
                    node: 2
                }
            ),
            Ok(Outcome::Assigned { epoch: 15 })
        );
    }

    #[test]
    fn connectors_are_created_updated_and_deleted_with_versions() {
        let mut state = assigned_state();
        let create = Command::CreateConnector {
            connector: name(),
            spec: spec(3),
        };
        assert_eq!(
            state.apply(11, &create),
            Err(Rejection::ConnectorExists { connector: name() })
        );
        let update = Command::UpdateConnector {
            connector: name(),
            spec: spec(1),
            expected_version: Some(1),
        };
        assert_eq!(state.apply(12, &update), Ok(Outcome::ConnectorVersion(2)));
        // Re-applying the same update does not bump the version again.
        assert_eq!(state.apply(12, &update), Ok(Outcome::ConnectorVersion(2)));
        let stale_update = Command::UpdateConnector {
            connector: name(),
            spec: spec(4),
            expected_version: Some(1),
        };
        assert!(matches!(
            state.apply(13, &stale_update),
            Err(Rejection::VersionMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        state
            .apply(14, &Command::DeleteConnector { connector: name() })
            .unwrap();
        assert!(state.connectors.is_empty());
        assert!(state.assignments.is_empty());
        assert!(state.checkpoints.is_empty());
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let mut state = State::default();
        let mut bad = spec(0);
        let error = state
            .apply(
                1,
                &Command::CreateConnector {
                    connector: name(),
                    spec: bad.clone(),
                },
            )
            .unwrap_err();
        assert_eq!(error.to_string(), "invalid parallelism: must be at least 1");
        bad.parallelism = 1;
        bad.topics.clear();
        let error = state
            .apply(
                2,
                &Command::CreateConnector {
                    connector: name(),
                    spec: bad,
                },
            )
            .unwrap_err();
        assert!(error.to_string().contains("topics"), "{error}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_redacted_reads() {
        let state = assigned_state();
        let connector = &state.connectors[&name()];
        assert!(!format!("{connector:?}").contains("hunter2"));
        let redacted = connector.without_secret_values();
        assert_eq!(redacted.spec.secrets["password"].expose(), "<redacted>");
        assert_eq!(connector.spec.secrets["password"].expose(), "hunter2");
    }
}
