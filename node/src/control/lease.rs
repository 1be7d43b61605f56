//! Leases (../shared/DESIGN.md §5 invariant 4, §7): every node renews its lease with the leader
//! every `heartbeat`; the leader marks a node silent for `lease + margin` Down, and its
//! instances move. A node that could not renew for `lease` stops its instances first
//! (self-fencing), so by the time the leader may reassign them the old owner has stopped.
//!
//! Renewal is measured from when the node *sent* the heartbeat the leader confirmed, and the
//! leader measures silence from when it *received* one, so the node's deadline always falls
//! before the leader's; the margin covers the node's reaction time (its supervisor's tick).
//! The leader renews its own lease by confirming its leadership with a quorum.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_proto::cluster::v1::HeartbeatRequest;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use ferry_actors::instance::Fence;

use crate::meta::Meta;
use crate::meta::state::NodeId;

/// Lease timing. Every node of a cluster must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How often a node renews its lease.
    pub heartbeat: Duration,
    /// How long a renewal lasts: a node that cannot renew for this long stops its instances.
    pub lease: Duration,
    /// How much longer the leader waits before it marks a silent node Down.
    pub margin: Duration,
}

impl Default for LeaseSettings {
    /// Returns a 1 s lease (`ferry serve --lease-ms`'s default): heartbeats every 166 ms and a
    /// 333 ms margin, so a killed node's instances move about 1.3 s after its last heartbeat
    /// (measured kill to resumed output: 1.4-1.5 s), and a node must miss six heartbeats in a
    /// row before it is taken for dead.
    fn default() -> Self {
        Self::with_lease(Duration::from_secs(1))
    }
}

impl LeaseSettings {
    /// Returns the settings for `lease`, with heartbeats six times as often and a third of the
    /// lease as margin.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            heartbeat: lease / 6,
            lease,
            margin: lease / 3,
        }
    }

    /// How long the leader waits after a node's last heartbeat before marking it Down.
    pub fn down_after(&self) -> Duration {
        self.lease + self.margin
    }
}

/// This node's lease as the node sees it.
#[derive(Debug, Default)]
struct LeaseState {
    /// When the last confirmed heartbeat was sent.
    last: Option<Instant>,
    /// Grows by one whenever the lease is taken after a lapse (or for the first time).
    term: u64,
    /// The leader's commit index when the current term began: this node's view of the
    /// assignments is current once it has applied that far.
    caught_up_to: u64,
}

/// When this node last renewed its lease, and in which term: a lease that lapsed and was
/// renewed again is a new term, and whatever ran under the old one stays fenced (its
/// instances may have moved meanwhile).
#[derive(Debug, Clone)]
pub struct LeaseClock {
    state: Arc<Mutex<LeaseState>>,
    lease: Duration,
}

impl LeaseClock {
    /// Returns a clock for leases of `lease`, not yet held.
    pub fn new(lease: Duration) -> Self {
        Self {
            state: Arc::default(),
            lease,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a renewal by a heartbeat sent at `sent`, answered with the leader's commit
    /// index `index`.
    pub fn renewed(&self, sent: Instant, index: u64) {
        let lease = self.lease;
        let mut state = self.lock();
        let lapsed = state.last.is_none_or(|last| {
            sent.saturating_duration_since(last) >= lease || last.elapsed() >= lease
        });
        if lapsed {
            state.term += 1;
            state.caught_up_to = index;
        }
        if state.last.is_none_or(|last| last < sent) {
            state.last = Some(sent);
        }
    }

    /// Whether the lease holds now: renewed less than a lease ago.
    pub fn holds(&self) -> bool {
        let lease = self.lease;
        self.lock().last.is_some_and(|last| last.elapsed() < lease)
    }

    /// The current term, while the lease holds.
    pub fn term(&self) -> Option<u64> {
        let lease = self.lease;
        let state = self.lock();
        state
            .last
            .is_some_and(|last| last.elapsed() < lease)
            .then_some(state.term)
    }

    /// The index this node must have applied before it starts instances in this term.
    pub fn caught_up_to(&self) -> u64 {
        self.lock().caught_up_to
    }

    /// A fence for an instance started now: it holds while the lease holds in this term.
    pub fn fence(&self) -> Fence {
        let clock = self.clone();
        let term = self.term();
        Fence::new(move || term.is_some() && clock.term() == term)
    }
}

/// The leader's record of when it last heard from each node.
#[derive(Debug, Clone, Default)]
pub struct Heartbeats(Arc<Mutex<BTreeMap<NodeId, Instant>>>);

impl Heartbeats {
    /// Records a heartbeat from `node` now.
    pub fn heard(&self, node: NodeId) {
        self.lock().insert(node, Instant::now());
    }

    /// Returns when `node` was last heard, counting nodes never heard as heard now (a new
    /// leader gives every node a full lease before judging it).
    pub fn last_heard(&self, node: NodeId) -> Instant {
        *self.lock().entry(node).or_insert_with(Instant::now)
    }

    /// Whether `node` was heard within `window` (a node never heard was not).
    pub fn heard_within(&self, node: NodeId, window: Duration) -> bool {
        self.lock()
            .get(&node)
            .is_some_and(|heard| heard.elapsed() < window)
    }

    /// Forgets every record: a new leader starts every node's clock afresh.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Renews this node's lease every heartbeat until `stop` changes or is dropped.
pub async fn renew(
    meta: Meta,
    settings: LeaseSettings,
    clock: LeaseClock,
    mut stop: watch::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(settings.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let sent = Instant::now();
        let renewed = tokio::time::timeout(settings.lease, renew_once(&meta)).await;
        match renewed {
            Ok(Ok(index)) => {
                clock.renewed(sent, index);
                if !held {
                    info!(node = meta.id(), "lease renewed");
                    held = true;
                }
            }
            Ok(Err(reason)) => debug!(%reason, "lease not renewed"),
            Err(_) => debug!("lease renewal timed out"),
        }
        if held && !clock.holds() {
            warn!(node = meta.id(), lease = ?settings.lease, "lease expired: stopping this node's instances");
            held = false;
        }
    }
}

/// One renewal: the leader confirms its leadership (for itself) or answers our heartbeat;
/// returns the leader's commit index.
async fn renew_once(meta: &Meta) -> Result<u64, String> {
    match meta.leader_address() {
        None => Err("no leader".to_owned()),
        Some((leader, _)) if leader == meta.id() => meta
            .read_index_as_leader()
            .await
            .map_err(|error| error.to_string()),
        Some((_, address)) => {
            let mut client = meta
                .peers()
                .client(&address)
                .map_err(|error| error.to_string())?;
            client
                .heartbeat(HeartbeatRequest { node_id: meta.id() })
                .await
                .map(|response| response.into_inner().read_index)
                .map_err(|status| status.message().to_owned())
        }
    }
}
