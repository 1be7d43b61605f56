//! Where instances go: a pure function of the cluster's state (../shared/DESIGN.md §7).
//!
//! - [`place`]: what has no live owner (each instance of a Running connector that is
//!   unassigned, or whose owner is Down or has Left) goes to the Active node with the fewest
//!   instances (ties to the lowest id). Placing one at a time onto the least loaded node keeps
//!   every Active node within one instance of the others as instances are added.
//! - [`rebalance`]: planned moves between live nodes, made as hand-offs (revoke, the owner
//!   drains and confirms, then [`place`] puts the instance on the least loaded node): every
//!   instance of a Draining node, and, while nothing else is moving, as few instances as it
//!   takes from the most loaded Active nodes to bring every Active node within one of the
//!   others (`max - min <= 1`).

use std::collections::BTreeMap;

use crate::meta::state::{AssignmentPhase, DesiredState, InstanceKey, NodeId, NodeState, State};

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

/// One planned move: the owner of `key` (at `epoch`) hands it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The instance.
    pub key: InstanceKey,
    /// Its owner's epoch.
    pub epoch: u64,
}

/// Returns the hand-offs that empty Draining nodes and balance the Active ones. Nothing is
/// planned while an instance is unplaced or already being handed off, so moves happen one
/// round at a time and never chase each other.
pub fn rebalance(state: &State) -> Vec<Revocation> {
    let moving = state
        .assignments
        .values()
        .any(|assignment| assignment.phase == AssignmentPhase::Revoking);
    if moving || !place(state).is_empty() {
        return Vec::new();
    }
    let running = |key: &InstanceKey| {
        state
            .connectors
            .get(&key.connector)
            .is_some_and(|connector| connector.desired_state == DesiredState::Running)
    };
    let node_state = |node: &NodeId| state.nodes.get(node).map(|record| record.state);
    let mut revocations: Vec<Revocation> = state
        .assignments
        .iter()
        .filter(|(key, assignment)| {
            node_state(&assignment.node) == Some(NodeState::Draining) && running(key)
        })
        .map(|(key, assignment)| Revocation {
            key: key.clone(),
            epoch: assignment.epoch,
        })
        .collect();
    if !revocations.is_empty() {
        return revocations;
    }
    // Instances per Active node, newest keys last so the moves are deterministic.
    let mut owned: BTreeMap<NodeId, Vec<(&InstanceKey, u64)>> = state
        .nodes
        .iter()
        .filter(|(_, record)| record.state == NodeState::Active)
        .map(|(id, _)| (*id, Vec::new()))
        .collect();
    for (key, assignment) in &state.assignments {
        if let Some(keys) = owned.get_mut(&assignment.node) {
            keys.push((key, assignment.epoch));
        }
    }
    let mut counts: BTreeMap<NodeId, usize> =
        owned.iter().map(|(id, keys)| (*id, keys.len())).collect();
    while let Some(((most, high), (least, low))) = extremes(&counts)
        && high > low + 1
        && let Some((key, epoch)) = owned.get_mut(&most).and_then(Vec::pop)
    {
        revocations.push(Revocation {
            key: key.clone(),
            epoch,
        });
        counts.insert(most, high - 1);
        counts.insert(least, low + 1);
    }
    revocations
}

/// The most loaded node (ties to the highest id) and the least loaded (ties to the lowest),
/// with their loads.
fn extremes(counts: &BTreeMap<NodeId, usize>) -> Option<((NodeId, usize), (NodeId, usize))> {
    let (most, high) = counts
        .iter()
        .max_by_key(|(id, count)| (**count, u64::MAX - **id))?;
    let (least, low) = counts.iter().min_by_key(|(id, count)| (**count, **id))?;
    Some(((*most, *high), (*least, *low)))
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
                error_policy: crate::meta::state::ErrorPolicy::Fail,
                options: crate::meta::state::RuntimeOptions::default(),
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

    /// Applies the revocations as their owners would (revoke, confirm), then the placements.
    fn hand_off(state: &mut State, index: &mut u64, revocations: &[Revocation]) {
        for revocation in revocations {
            for command in [
                Command::Revoke {
                    key: revocation.key.clone(),
                    epoch: revocation.epoch,
                },
                Command::ConfirmRevoked {
                    key: revocation.key.clone(),
                    epoch: revocation.epoch,
                },
            ] {
                state.apply(*index, &command).expect("hand-off");
                *index += 1;
            }
        }
        let placements = place(state);
        apply_all(state, index, &placements);
    }

    #[test]
    fn a_joining_node_takes_a_fair_share_with_as_few_moves_as_possible() {
        let (mut state, mut index) = state_with(&[1, 2], &[("a", 5), ("b", 4)]);
        let placements = place(&state);
        apply_all(&mut state, &mut index, &placements);
        assert!(rebalance(&state).is_empty(), "balanced already");
        state
            .apply(
                index,
                &Command::NodeJoin {
                    node: 3,
                    address: "127.0.0.1:7603".to_owned(),
                    labels: BTreeMap::new(),
                },
            )
            .expect("join");
        index += 1;
        let moves = rebalance(&state);
        // 9 instances over 3 nodes: 3 each; nodes 1 and 2 held 5 and 4, so 3 moves.
        assert_eq!(moves.len(), 3, "{moves:?}");
        hand_off(&mut state, &mut index, &moves);
        let counts = per_node(&state);
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            [3, 3, 3],
            "{counts:?}"
        );
        assert!(rebalance(&state).is_empty(), "stable once balanced");
    }

    #[test]
    fn a_draining_node_is_emptied_and_nothing_moves_while_a_move_is_under_way() {
        let (mut state, mut index) = state_with(&[1, 2, 3], &[("a", 6)]);
        let placements = place(&state);
        apply_all(&mut state, &mut index, &placements);
        state
            .apply(index, &Command::NodeDrain { node: 2 })
            .expect("drain");
        index += 1;
        let moves = rebalance(&state);
        assert_eq!(moves.len(), 2, "{moves:?}");
        // While the first is being handed off, nothing more is planned.
        state
            .apply(
                index,
                &Command::Revoke {
                    key: moves[0].key.clone(),
                    epoch: moves[0].epoch,
                },
            )
            .expect("revoke");
        index += 1;
        assert!(rebalance(&state).is_empty());
        state
            .apply(
                index,
                &Command::ConfirmRevoked {
                    key: moves[0].key.clone(),
                    epoch: moves[0].epoch,
                },
            )
            .expect("confirm");
        index += 1;
        let placements = place(&state);
        apply_all(&mut state, &mut index, &placements);
        let rest = rebalance(&state);
        hand_off(&mut state, &mut index, &rest);
        let counts = per_node(&state);
        assert_eq!(counts.get(&2), None, "{counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 6);
    }

    /// A small deterministic generator, so the property runs need no extra crate.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn property_any_cluster_converges_to_every_instance_placed_and_balanced() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for round in 0..300 {
            let nodes: Vec<NodeId> = (1..=1 + next(&mut seed) % 5).collect();
            let connectors: Vec<(String, u32)> = (0..1 + next(&mut seed) % 4)
                .map(|index| (format!("c{index}"), 1 + (next(&mut seed) % 6) as u32))
                .collect();
            let named: Vec<(&str, u32)> = connectors
                .iter()
                .map(|(name, parallelism)| (name.as_str(), *parallelism))
                .collect();
            let (mut state, mut index) = state_with(&nodes, &named);
            let placements = place(&state);
            apply_all(&mut state, &mut index, &placements);
            // Then a random event: a node joins, drains, or goes down.
            let event = next(&mut seed) % 3;
            let victim = nodes[(next(&mut seed) % nodes.len() as u64) as usize];
            let command = match event {
                0 => Command::NodeJoin {
                    node: 100,
                    address: "127.0.0.1:7700".to_owned(),
                    labels: BTreeMap::new(),
                },
                1 if nodes.len() > 1 => Command::NodeDrain { node: victim },
                _ if nodes.len() > 1 => Command::NodeDown { node: victim },
                _ => Command::NodeJoin {
                    node: 101,
                    address: "127.0.0.1:7701".to_owned(),
                    labels: BTreeMap::new(),
                },
            };
            state.apply(index, &command).expect("the event");
            index += 1;
            let mut steps = 0;
            loop {
                let placements = place(&state);
                apply_all(&mut state, &mut index, &placements);
                let moves = rebalance(&state);
                if moves.is_empty() {
                    break;
                }
                hand_off(&mut state, &mut index, &moves);
                steps += 1;
                assert!(steps < 20, "round {round}: no convergence");
            }
            let wanted: u32 = named.iter().map(|(_, parallelism)| parallelism).sum();
            assert_eq!(
                state.assignments.len() as u32,
                wanted,
                "round {round}: unplaced"
            );
            let active: Vec<NodeId> = state
                .nodes
                .iter()
                .filter(|(_, record)| record.state == NodeState::Active)
                .map(|(id, _)| *id)
                .collect();
            let counts = per_node(&state);
            assert!(
                counts.keys().all(|node| active.contains(node)),
                "round {round}: an instance on a node that is not Active: {counts:?}"
            );
            let loads: Vec<usize> = active
                .iter()
                .map(|node| counts.get(node).copied().unwrap_or(0))
                .collect();
            let (min, max) = (
                loads.iter().min().copied().unwrap_or(0),
                loads.iter().max().copied().unwrap_or(0),
            );
            assert!(max - min <= 1, "round {round}: unbalanced {counts:?}");
        }
    }
}
