//! Where instances go: a pure function of the cluster's state (../shared/DESIGN.md §7).
//!
//! Today it places what has no live owner: each instance of a Running connector that is
//! unassigned, or whose owner is Down or has Left, goes to the Active node with the fewest
//! instances (ties to the lowest id). Placing one at a time onto the least loaded node keeps
//! every Active node within one instance of the others as instances are added. Planned moves
//! between live nodes (rebalancing after a join, draining) are not made here yet.

use std::collections::BTreeMap;

use crate::meta::state::{DesiredState, InstanceKey, NodeId, NodeState, State};

/// One placement: give `key` to `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The instance.
    pub key: InstanceKey,
    /// Its new owner.
    pub node: NodeId,
}

/// Returns the placements that give every wanted instance a live owner.
pub fn place(state: &State) -> Vec<Placement> {
    let mut load: BTreeMap<NodeId, usize> = state
        .nodes
        .iter()
        .filter(|(_, node)| node.state == NodeState::Active)
        .map(|(id, _)| (*id, 0))
        .collect();
    if load.is_empty() {
        return Vec::new();
    }
    let live = |node: &NodeId| {
        state
            .nodes
            .get(node)
            .is_some_and(|record| matches!(record.state, NodeState::Active | NodeState::Draining))
    };
    for assignment in state.assignments.values() {
        if let Some(count) = load.get_mut(&assignment.node) {
            *count += 1;
        }
    }
    let mut placements = Vec::new();
    for (name, connector) in &state.connectors {
        if connector.desired_state != DesiredState::Running {
            continue;
        }
        for instance in 0..connector.spec.parallelism {
            let key = InstanceKey {
                connector: name.clone(),
                instance,
            };
            let owned = state
                .assignments
                .get(&key)
                .is_some_and(|assignment| live(&assignment.node));
            if owned {
                continue;
            }
            let Some((&node, count)) = load.iter_mut().min_by_key(|(id, count)| (**count, **id))
            else {
                break;
            };
            *count += 1;
            placements.push(Placement { key, node });
        }
    }
    placements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::{Command, ConnectorKind, ConnectorName, ConnectorSpec, Guarantee};

    fn state_with(nodes: &[NodeId], connectors: &[(&str, u32)]) -> (State, u64) {
        let mut state = State::default();
        let mut index = 1;
        for node in nodes {
            state
                .apply(
                    index,
                    &Command::NodeJoin {
                        node: *node,
                        address: format!("127.0.0.1:{}", 7600 + node),
                        labels: BTreeMap::new(),
                    },
                )
                .expect("join");
            index += 1;
        }
        for (name, parallelism) in connectors {
            let spec = ConnectorSpec {
                kind: ConnectorKind::Source,
                connector_type: "datagen".to_owned(),
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
                topics: vec!["persistent://public/default/t".to_owned()],
                subscription: None,
                parallelism: *parallelism,
                guarantee: Guarantee::AtLeastOnce,
            };
            state
                .apply(
                    index,
                    &Command::CreateConnector {
                        connector: ConnectorName::new("public", "default", *name),
                        spec,
                    },
                )
                .expect("create");
            index += 1;
        }
        (state, index)
    }

    fn apply_all(state: &mut State, index: &mut u64, placements: &[Placement]) {
        for placement in placements {
            state
                .apply(
                    *index,
                    &Command::Assign {
                        key: placement.key.clone(),
                        node: placement.node,
                    },
                )
                .expect("assign");
            *index += 1;
        }
    }

    fn per_node(state: &State) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for assignment in state.assignments.values() {
            *counts.entry(assignment.node).or_default() += 1;
        }
        counts
    }

    #[test]
    fn every_instance_gets_an_owner_and_loads_stay_within_one() {
        let (mut state, mut index) = state_with(&[1, 2, 3], &[("a", 4), ("b", 3), ("c", 1)]);
        let placements = place(&state);
        assert_eq!(placements.len(), 8);
        apply_all(&mut state, &mut index, &placements);
        let counts = per_node(&state);
        let (min, max) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        assert!(max - min <= 1, "{counts:?}");
        assert_eq!(counts.len(), 3);
        // Nothing left to place: the plan is stable.
        assert!(place(&state).is_empty());
    }

    #[test]
    fn instances_of_a_down_node_move_and_stopped_connectors_are_left_alone() {
        let (mut state, mut index) = state_with(&[1, 2], &[("a", 4)]);
        let placements = place(&state);
        apply_all(&mut state, &mut index, &placements);
        state
            .apply(index, &Command::NodeDown { node: 1 })
            .expect("down");
        index += 1;
        let moves = place(&state);
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(moves.iter().all(|placement| placement.node == 2));
        apply_all(&mut state, &mut index, &moves);
        assert_eq!(per_node(&state).get(&2), Some(&4));

        let (mut stopped, index) = state_with(&[1], &[("s", 2)]);
        stopped
            .apply(
                index,
                &Command::SetDesiredState {
                    connector: ConnectorName::new("public", "default", "s"),
                    state: DesiredState::Stopped,
                },
            )
            .expect("stop");
        assert!(place(&stopped).is_empty());
        let (no_nodes, _) = state_with(&[], &[("x", 2)]);
        assert!(place(&no_nodes).is_empty());
    }
}
