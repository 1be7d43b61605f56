//! The leader-only control loop (../shared/DESIGN.md §7): while this node leads, it gives
//! every wanted instance a live owner as the scheduler plans. Failure detection by lease and
//! planned handoffs are not here yet.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::meta::Meta;
use crate::meta::state::{Command, Outcome};
use crate::scheduler;

/// How often the leader looks for instances to place.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// Runs the control loop until `stop` changes or is dropped.
pub async fn run(meta: Meta, interval: Duration, mut stop: watch::Receiver<()>) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if meta.leader() != Some(meta.id()) {
            continue;
        }
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
    }
}
