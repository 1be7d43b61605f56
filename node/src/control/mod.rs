//! The leader-only control loop (../shared/DESIGN.md §7): while this node leads, it marks
//! nodes that missed their lease Down (and Active again when they come back), gives every
//! wanted instance a live owner as the scheduler plans, and starts the hand-offs the scheduler
//! plans to empty draining nodes and balance the others (the owner drains the instance,
//! commits a final checkpoint and confirms; the instance is then placed again).
//!
//! - [`lease`]: heartbeats, leases and self-fencing.

pub mod lease;

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use self::lease::{Heartbeats, LeaseSettings};
use crate::meta::Meta;
use crate::meta::state::{Command, NodeState, Outcome};
use crate::scheduler;

/// How often the leader looks for instances to place.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// Runs the control loop without failure detection until `stop` changes or is dropped.
pub async fn run(meta: Meta, interval: Duration, stop: watch::Receiver<()>) {
    run_with_leases(meta, interval, None, stop).await;
}

/// Runs the control loop until `stop` changes or is dropped; with `leases` (their timing and
/// this node's record of heartbeats, kept by its cluster service), nodes that miss their lease
/// are marked Down.
pub async fn run_with_leases(
    meta: Meta,
    interval: Duration,
    leases: Option<(LeaseSettings, Heartbeats)>,
    mut stop: watch::Receiver<()>,
) {
    let mut leading = false;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if meta.leader() != Some(meta.id()) {
            leading = false;
            continue;
        }
        if let Some((settings, heartbeats)) = &leases {
            if !leading {
                // Every node gets a full lease from the moment this node leads.
                heartbeats.reset();
            }
            judge_nodes(&meta, settings, heartbeats).await;
        }
        leading = true;
        let placements = meta.read_local(scheduler::place);
        for placement in placements {
            let command = Command::Assign {
                key: placement.key.clone(),
                node: placement.node,
            };
            match meta.write(command).await {
                Ok(Ok(Outcome::Assigned { epoch })) => {
                    info!(instance = %placement.key, node = placement.node, epoch, "instance assigned");
                }
                Ok(Ok(other)) => debug!(?other, "unexpected answer to an assignment"),
                // The state moved under the plan (a node left, the connector changed): the
                // next tick plans again.
                Ok(Err(rejection)) => debug!(%rejection, "assignment refused"),
                Err(error) => {
                    warn!(%error, "assignment failed");
                    break;
                }
            }
        }
        for revocation in meta.read_local(scheduler::rebalance) {
            let command = Command::Revoke {
                key: revocation.key.clone(),
                epoch: revocation.epoch,
            };
            match meta.write(command).await {
                Ok(Ok(_)) => {
                    info!(instance = %revocation.key, epoch = revocation.epoch, "handing off to rebalance");
                }
                Ok(Err(rejection)) => debug!(%rejection, "hand-off refused"),
                Err(error) => {
                    warn!(%error, "hand-off failed");
                    break;
                }
            }
        }
    }
}

/// Marks nodes silent for longer than their lease (plus the margin) Down, and Down nodes that
/// renew again Active.
async fn judge_nodes(meta: &Meta, leases: &LeaseSettings, heartbeats: &Heartbeats) {
    let nodes = meta.read_local(|state| state.nodes.clone());
    for (node, record) in nodes {
        if node == meta.id() {
            continue;
        }
        let command = match record.state {
            NodeState::Active | NodeState::Draining
                if heartbeats.last_heard(node).elapsed() > leases.down_after() =>
            {
                warn!(node, lease = ?leases.lease, "node missed its lease: marking it Down");
                Command::NodeDown { node }
            }
            NodeState::Down if heartbeats.heard_within(node, leases.lease) => {
                info!(node, "node renews its lease again: marking it Active");
                Command::NodeJoin {
                    node,
                    address: record.address.clone(),
                    labels: record.labels.clone(),
                }
            }
            _ => continue,
        };
        if let Err(error) = meta.write(command).await {
            warn!(node, %error, "could not record the node's state");
            return;
        }
    }
}
