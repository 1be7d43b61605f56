//! The node-side handle of the metadata store: start, bootstrap or join, write (forwarded to
//! the leader from followers), linearizable and local reads, and a watch of one node's
//! assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_proto::cluster::v1::cluster_server::ClusterServer;
use ferry_proto::cluster::v1::{JoinRequest, ReadIndexRequest};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, SnapshotPolicy};
use tokio::sync::watch;
use tracing::{info, warn};

use super::TypeConfig;
use super::codec::CodecError;
use super::network::{Faults, MAX_MESSAGE_BYTES, NetworkFactory, PeerError, Peers};
use super::service::{ClusterService, NodeCalls};
use super::state::{Assignment, Command, InstanceKey, NodeId, Reply, State};
use super::store::{self, StateMachineStore, StoreError};
pub(crate) use super::write::LeaderWriteError;
use super::write::{Batcher, Writer};

/// How long a write keeps retrying (leader changes, forwarding failures) before it gives up.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a forwarded call to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `--join` keeps asking before it gives up, unless told otherwise
/// (`--join-timeout-secs`).
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The first pause between two attempts to join; it doubles after each refusal up to
/// [`JOIN_RETRY_MAX`], and each pause is jittered so that nodes started together spread out.
const JOIN_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between two attempts to join.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long the leader gives one node's membership change, its wait for its turn included:
/// past it the joining node is told to try again (a learner that cannot catch up, or a new
/// voter that does not answer, would otherwise hold every later change up for good).
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between retries of a linearizable read that met no leader.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Raft timing and log compaction.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat: Duration,
    /// Election timeout range: a follower that hears nothing for a random time in it campaigns.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (the rest are purged).
    pub keep_after_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        // Elections a little slower than openraft's default: a loaded 2-core machine must not
        // mistake a slow heartbeat for a dead leader.
        Self {
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

/// What a node needs to run its part of the metadata store.
#[derive(Debug, Clone)]
pub struct MetaSettings {
    /// This node's id.
    pub node_id: NodeId,
    /// The address other nodes reach this node's gRPC port at (host:port).
    pub advertise: String,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Raft timing and compaction.
    pub tuning: RaftTuning,
    /// How long a write keeps retrying.
    pub write_timeout: Duration,
}

/// Errors of the metadata store as the node sees it.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Raft settings are invalid.
    #[error("invalid raft settings: {0}")]
    Config(String),
    /// Raft stopped (a storage failure or shutdown).
    #[error("metadata store stopped: {0}")]
    Stopped(String),
    /// No leader could take the request in time, or the leader changed under it.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A peer could not be addressed.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// A message did not encode or decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The leader refused a forwarded request (malformed, or not allowed in this state).
    #[error("refused: {0}")]
    Refused(String),
    /// A membership change failed.
    #[error("membership change failed: {0}")]
    Membership(String),
    /// A join kept being put off (no answer from the seed, no leader yet, other changes under
    /// way) until its deadline passed.
    #[error(
        "gave up joining the cluster through {seed} (--join) after {timeout:?} \
         (--join-timeout-secs); last answer: {last}"
    )]
    JoinTimedOut {
        /// The address the node joins through.
        seed: String,
        /// How long it kept trying.
        timeout: Duration,
        /// Why its last attempt did not get it in.
        last: String,
    },
}

impl MetaError {
    /// Returns whether trying again later may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Returns the same error for another waiter of a failed batch.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Unavailable(message) => Self::Unavailable(message.clone()),
            Self::Refused(message) => Self::Refused(message.clone()),
            Self::Membership(message) => Self::Membership(message.clone()),
            Self::Config(message) => Self::Config(message.clone()),
            Self::JoinTimedOut {
                seed,
                timeout,
                last,
            } => Self::JoinTimedOut {
                seed: seed.clone(),
                timeout: *timeout,
                last: last.clone(),
            },
            other => Self::Stopped(other.to_string()),
        }
    }
}

/// A running member of the metadata store. Clones share it.
#[derive(Clone)]
pub struct Meta {
    id: NodeId,
    advertise: String,
    raft: Raft<TypeConfig>,
    state_machine: StateMachineStore,
    peers: Peers,
    write_timeout: Duration,
    writer: Writer,
    batcher: Batcher,
    /// Held by the leader across one membership change (add a learner and promote it, or
    /// remove a node): openraft refuses a change while another is under way.
    membership_changes: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Meta")
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl Meta {
    /// Opens the store in `settings.data_dir` and starts Raft. The node is not yet part of a
    /// cluster unless its data says so: call [`Meta::bootstrap`] or [`Meta::join`] once its
    /// gRPC server (with [`Meta::cluster_service`]) is listening.
    pub async fn start(settings: MetaSettings, faults: Faults) -> Result<Self, MetaError> {
        Self::start_with_peers(settings, faults, Peers::default()).await
    }

    /// Starts like [`Meta::start`], reaching the other nodes through `peers` (over TLS and
    /// with the cluster's token when the node has them).
    pub async fn start_with_peers(
        settings: MetaSettings,
        faults: Faults,
        peers: Peers,
    ) -> Result<Self, MetaError> {
        let tuning = &settings.tuning;
        let config = openraft::Config {
            cluster_name: "ferry".to_owned(),
            heartbeat_interval: millis(tuning.heartbeat),
            election_timeout_min: millis(tuning.election_timeout.0),
            election_timeout_max: millis(tuning.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_after_snapshot,
            // Snapshot chunks stay well below the gRPC message limit.
            snapshot_max_chunk_size: (MAX_MESSAGE_BYTES / 4) as u64,
            ..Default::default()
        }
        .validate()
        .map_err(|error| MetaError::Config(error.to_string()))?;
        let (log_store, state_machine) = store::open(&settings.data_dir).await?;
        let network = NetworkFactory::new(settings.node_id, peers.clone(), faults);
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            network,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|error| MetaError::Stopped(error.to_string()))?;
        let writer = Writer {
            id: settings.node_id,
            raft: raft.clone(),
            peers: peers.clone(),
            write_timeout: settings.write_timeout,
        };
        Ok(Self {
            id: settings.node_id,
            advertise: settings.advertise,
            raft,
            state_machine,
            writer: writer.clone(),
            batcher: Batcher::start(writer),
            peers,
            write_timeout: settings.write_timeout,
            membership_changes: Arc::default(),
        })
    }

    /// Returns this node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Returns the address other nodes reach this node at.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Returns the Raft instance, for metrics and tests.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Returns the gRPC service that carries this node's Raft traffic, answering heartbeats and
    /// instance-report calls through `node` (what runs around the store on this node).
    pub fn cluster_service(&self, node: Arc<dyn NodeCalls>) -> ClusterServer<ClusterService> {
        ClusterServer::new(ClusterService::new(self.clone(), node))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Returns the current leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Returns whether this node's store already belongs to a cluster (it was bootstrapped or
    /// joined before a restart).
    pub async fn is_initialized(&self) -> Result<bool, MetaError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|error| MetaError::Stopped(error.to_string()))
    }

    /// Starts a one-node cluster of this node, unless its store already holds one, and records
    /// the node as Active.
    pub async fn bootstrap(&self) -> Result<(), MetaError> {
        if !self.is_initialized().await? {
            let members = BTreeMap::from([(self.id, BasicNode::new(&self.advertise))]);
            self.raft
                .initialize(members)
                .await
                .map_err(|error| MetaError::Membership(error.to_string()))?;
            info!(node = self.id, address = %self.advertise, "bootstrapped a one-node cluster");
        }
        self.record_join(self.id, &self.advertise).await
    }

    /// Asks the cluster at `seed` (any member's address) to add this node: it becomes a learner,
    /// catches up, and is promoted to voter. Until `timeout` has passed, an answer that may
    /// change (the seed not listening yet, no leader yet, other nodes' changes under way) is
    /// retried, with a growing, jittered pause; a refusal (a bad request, a wrong token) is not.
    pub async fn join(&self, seed: &str, timeout: Duration) -> Result<(), MetaError> {
        let deadline = Instant::now() + timeout;
        let mut pause = JOIN_RETRY_FIRST;
        loop {
            let client = self.peers.client(seed)?;
            // Even the last attempt gets time to be answered: a deadline that falls during a
            // pause must not turn it into a timeout of nothing.
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.ask_to_join(client, left.max(JOIN_RETRY_MAX)).await {
                Ok(leader) => {
                    info!(node = self.id, seed, leader, "joined the cluster");
                    return Ok(());
                }
                Err(JoinAnswer::Refused(reason)) => {
                    return Err(MetaError::Membership(format!(
                        "join through {seed} (--join) refused: {reason}"
                    )));
                }
                Err(JoinAnswer::NotYet(reason)) => reason,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MetaError::JoinTimedOut {
                    seed: seed.to_owned(),
                    timeout,
                    last,
                });
            }
            let wait = jittered(pause).min(left);
            warn!(
                node = self.id,
                seed,
                reason = %last,
                retry_in = ?wait,
                gives_up_in = ?left,
                "waiting to join the cluster through {seed} (--join)"
            );
            tokio::time::sleep(wait).await;
            pause = (pause * 2).min(JOIN_RETRY_MAX);
        }
    }

    /// Asks the seed behind `client` once, waiting at most `timeout`, to add this node; returns
    /// the leader that did.
    async fn ask_to_join(
        &self,
        mut client: super::network::PeerClient,
        timeout: Duration,
    ) -> Result<NodeId, JoinAnswer> {
        let request = JoinRequest {
            node_id: self.id,
            address: self.advertise.clone(),
            forwarded: false,
        };
        match tokio::time::timeout(timeout, client.join(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner().leader_id),
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                ) =>
            {
                Err(JoinAnswer::Refused(status.message().to_owned()))
            }
            Ok(Err(status)) => Err(JoinAnswer::NotYet(status.message().to_owned())),
            Err(_) => Err(JoinAnswer::NotYet(format!("no answer within {timeout:?}"))),
        }
    }

    /// Adds `node` at `address` as a voter (on the leader): learner first, promoted once it has
    /// caught up; then records it as Active. Changes take turns: a join that arrives while
    /// another is under way waits for it instead of failing.
    pub(crate) async fn add_voter(&self, node: NodeId, address: &str) -> Result<(), MetaError> {
        let change = async {
            let _turn = self.membership_changes.lock().await;
            self.promote_to_voter(node, address).await
        };
        tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, change)
            .await
            .map_err(|_| {
                MetaError::Unavailable(format!(
                    "node {node} was not made a voter within {MEMBERSHIP_CHANGE_TIMEOUT:?} \
                     (it waits behind other membership changes, or has not caught up with the \
                     log from {address})"
                ))
            })??;
        self.record_join(node, address).await
    }

    /// Makes `node` a learner, waits until it has caught up, and makes it a voter, unless it
    /// already is one. The caller holds the membership-change turn.
    async fn promote_to_voter(&self, node: NodeId, address: &str) -> Result<(), MetaError> {
        let is_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|voter| voter == node);
        if is_voter {
            return Ok(());
        }
        self.raft
            .add_learner(node, BasicNode::new(address), true)
            .await
            .map_err(membership_error)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(membership_error)?;
        info!(node, address, "node promoted to voter");
        Ok(())
    }

    /// Removes `node` (on the leader): records it Draining so it takes no new instances, removes
    /// it from the voters and the membership, then records that it left. Handing off the
    /// instances it still owns is the control loop's job (DESIGN.md §7), not this call's.
    pub async fn remove_node(&self, node: NodeId) -> Result<(), MetaError> {
        self.write(Command::NodeDrain { node })
            .await?
            .map_err(|rejection| MetaError::Membership(rejection.to_string()))?;
        {
            let _turn = self.membership_changes.lock().await;
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await
                .map_err(membership_error)?;
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map_err(membership_error)?;
        }
        self.write(Command::NodeLeave { node })
            .await?
            .map_err(|rejection| MetaError::Membership(rejection.to_string()))?;
        info!(node, "node removed");
        Ok(())
    }

    async fn record_join(&self, node: NodeId, address: &str) -> Result<(), MetaError> {
        let reply = self
            .write(Command::NodeJoin {
                node,
                address: address.to_owned(),
                labels: BTreeMap::new(),
            })
            .await?;
        reply.map_err(|rejection| MetaError::Membership(rejection.to_string()))?;
        Ok(())
    }

    /// Commits `command` through the leader and returns its reply. A follower forwards it; a
    /// leader change is retried until the write timeout (commands are idempotent, so a retry of
    /// a write that did commit is harmless and answered as the command's re-application).
    /// Concurrent checkpoint commits share one log entry (one fsync per node).
    pub async fn write(&self, command: Command) -> Result<Reply, MetaError> {
        if command.is_batchable() {
            self.batcher.write(command).await
        } else {
            self.writer.write(command).await
        }
    }

    /// Commits `command` on this node only if it is the leader (the far end of a forward).
    pub(crate) async fn write_as_leader(
        &self,
        command: Command,
    ) -> Result<Reply, LeaderWriteError> {
        self.writer.write_as_leader(command).await
    }

    /// Returns the leader's read index (on the leader: the far end of [`Meta::read`] from a
    /// follower).
    pub(crate) async fn read_index_as_leader(&self) -> Result<u64, MetaError> {
        let (read_log_id, _) = self.raft.get_read_log_id().await.map_err(|error| {
            MetaError::Unavailable(format!(
                "node {} cannot serve a read index: {error}",
                self.id
            ))
        })?;
        // openraft's read log id is max(the first entry of this leader's term, committed). A
        // leader restarted without losing its vote resumes leading with its term's first entry
        // long committed and only the committed id it had persisted, which can lag: a read at
        // that index would miss writes acknowledged before the restart. Every acknowledged
        // write is in the leader's log, so its last index is always a safe read index (at
        // worst the read also waits for writes in flight to commit).
        let last_log_index = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        Ok(read_log_id
            .map_or(0, |log_id| log_id.index)
            .max(last_log_index))
    }

    /// Runs `read` on state that reflects every write committed before this call (a
    /// linearizable read). The leader confirms its leadership; a follower asks the leader for
    /// its read index and waits until it has applied that far.
    pub async fn read<T>(&self, read: impl FnOnce(&State) -> T) -> Result<T, MetaError> {
        let deadline = Instant::now() + self.write_timeout;
        let index = loop {
            let error = match self.read_index().await {
                Ok(index) => break index,
                Err(error) => error,
            };
            if !error.is_retryable() || Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|error| MetaError::Unavailable(error.to_string()))?;
        Ok(self.read_local(read))
    }

    /// Returns the leader's id and address, as this node knows them.
    pub(crate) fn leader_address(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Returns this node's peer channels.
    pub(crate) fn peers(&self) -> &Peers {
        &self.peers
    }

    async fn read_index(&self) -> Result<u64, MetaError> {
        let address = match self.leader_address() {
            None => return Err(MetaError::Unavailable("no leader".to_owned())),
            Some((leader, _)) if leader == self.id => return self.read_index_as_leader().await,
            Some((_, address)) => address,
        };
        let mut client = self.peers.client(&address)?;
        match tokio::time::timeout(
            FORWARD_TIMEOUT,
            client.read_index(ReadIndexRequest { forwarded: true }),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner().index),
            Ok(Err(status)) => Err(MetaError::Unavailable(format!(
                "leader at {address}: {}",
                status.message()
            ))),
            Err(_) => Err(MetaError::Unavailable(format!(
                "leader at {address} did not answer within {FORWARD_TIMEOUT:?}"
            ))),
        }
    }

    /// Runs `read` on this node's applied state, which may lag the leader (for listing).
    pub fn read_local<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.state_machine.read().state)
    }

    /// Returns the index of the last log entry this node applied.
    pub fn applied_index(&self) -> u64 {
        *self.state_machine.subscribe().borrow()
    }

    /// Returns the index of the last entry this node applied that may have changed nodes,
    /// connectors or assignments (not just checkpoints): while it stays the same, whatever was
    /// decided from them still holds.
    pub fn last_change(&self) -> u64 {
        self.state_machine.last_change()
    }

    /// Returns a receiver of the assignments addressed to `node`, updated whenever they change
    /// on this node. The watch ends when the receiver is dropped.
    ///
    /// It looks at the assignments only after entries that may change them are applied, not
    /// after checkpoint commits: with hundreds of instances committing, rebuilding this node's
    /// assignments for every entry cost a fifth of the node's CPU.
    pub fn watch_assignments(
        &self,
        node: NodeId,
    ) -> watch::Receiver<BTreeMap<InstanceKey, Assignment>> {
        let mut applied = self.state_machine.subscribe_changes();
        let current = self.read_local(|state| state.assignments_of(node));
        let (sender, receiver) = watch::channel(current);
        let state_machine = self.state_machine.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = sender.closed() => return,
                    changed = applied.changed() => if changed.is_err() { return },
                }
                let latest = state_machine.read().state.assignments_of(node);
                sender.send_if_modified(|assignments| {
                    let modified = *assignments != latest;
                    *assignments = latest;
                    modified
                });
            }
        });
        receiver
    }

    /// Returns a handle that tells when this node's store is closed, after every clone of this
    /// handle is dropped and Raft has stopped.
    pub fn closed_signal(&self) -> super::store::ClosedSignal {
        self.state_machine.closed_signal()
    }

    /// Stops Raft on this node.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        self.raft
            .shutdown()
            .await
            .map_err(|error| MetaError::Stopped(error.to_string()))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How one attempt to join went, short of getting in.
enum JoinAnswer {
    /// Asking again may succeed (the seed is not listening yet, there is no leader yet, another
    /// membership change is under way, the answer took too long).
    NotYet(String),
    /// Asking again will not help.
    Refused(String),
}

/// Returns `pause` shortened by a random part of up to half of it, so that nodes started
/// together do not ask again in step.
fn jittered(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A randomly keyed hasher is a random source std already has.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = u64::try_from(pause.as_micros() / 2)
        .unwrap_or(u64::MAX)
        .max(1);
    pause.saturating_sub(Duration::from_micros(random % half))
}

fn membership_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MetaError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            MetaError::Unavailable(format!("not the leader (leader: {:?})", forward.leader_id))
        }
        // Another leader's change still being committed (this leader's own take turns): the
        // caller may try again once it is.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(in_progress),
        )) => MetaError::Unavailable(format!(
            "another membership change is under way: {in_progress}"
        )),
        other => MetaError::Membership(other.to_string()),
    }
}
