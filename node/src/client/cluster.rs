//! `ferry offsets get|reset` and `ferry cluster nodes|leader|drain|remove`.

use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as proto;
use serde_json::json;

use super::connectors::{InstanceArgs, checkpoint_json, position_cell};
use super::{
    ClientArgs, OutputFormat, acknowledge, call_error, emit, emit_json, invalid, short_name, table,
};

/// `ferry offsets`.
#[derive(Debug, Args)]
pub struct OffsetsArgs {
    /// Where and how to ask.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: OffsetsCommand,
}

/// The verbs of `ferry offsets`.
#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Prints the committed checkpoint of each instance of a source or sink.
    Get(InstanceArgs),
    /// Sets or forgets the checkpoints of a stopped source or sink.
    Reset(ResetArgs),
}

/// Flags of `ferry offsets reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The connector, and optionally one instance.
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The new position, as text, as `offsets get` shows it: a source's own (`index=876`,
    /// `file=a.log offset=1234`); a sink's message id per input partition, then its own
    /// position (`persistent://public/default/in-partition-0=12:3:-1 sink=length=4096`).
    /// Absent (with --position-hex) forgets the checkpoint, so instances start at their
    /// configured start.
    #[arg(long, value_name = "TEXT", conflicts_with = "position_hex")]
    pub position: Option<String>,
    /// The new position, as the checkpoint's raw bytes in hex.
    #[arg(long, value_name = "HEX")]
    pub position_hex: Option<String>,
}

/// `ferry cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Where and how to ask.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The verbs of `ferry cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Lists the cluster's nodes.
    Nodes,
    /// Prints the metadata store's leader.
    Leader,
    /// Marks a node Draining: it takes no new instances.
    Drain(NodeArgs),
    /// Removes a node from the cluster for good.
    Remove(NodeArgs),
}

/// One node.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's id.
    #[arg(long)]
    pub node_id: u64,
}

/// Runs `ferry offsets …`.
pub async fn run_offsets(args: OffsetsArgs) -> anyhow::Result<()> {
    let output = args.client.output;
    let mut client = args.client.connect().await?;
    match args.command {
        OffsetsCommand::Get(instance) => {
            let offsets = client
                .get_offsets(proto::GetOffsetsRequest {
                    name: Some(instance.name.proto()),
                    kind: proto::ConnectorKind::Unspecified.into(),
                    instance_id: instance.instance_id,
                })
                .await
                .map_err(|status| call_error(&status))?
                .into_inner()
                .offsets;
            match output {
                OutputFormat::Json => emit_json(&json!({
                    "offsets": offsets.iter().map(|offset| json!({
                        "instance_id": offset.instance_id,
                        "checkpoint": offset.checkpoint.as_ref().map(checkpoint_json),
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => emit(&table::render(
                    &["INSTANCE", "POSITION", "SEQUENCE_ID", "EPOCH", "COMMITS"],
                    &offsets
                        .iter()
                        .map(|offset| {
                            let checkpoint = offset.checkpoint.as_ref();
                            vec![
                                offset.instance_id.to_string(),
                                position_cell(checkpoint),
                                checkpoint
                                    .and_then(|checkpoint| checkpoint.sequence_id)
                                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                                checkpoint.map_or_else(|| "-".to_owned(), |c| c.epoch.to_string()),
                                checkpoint
                                    .map_or_else(|| "-".to_owned(), |c| c.commits.to_string()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        OffsetsCommand::Reset(reset) => {
            let position = reset.position_hex.as_deref().map(parse_hex).transpose()?;
            client
                .reset_offsets(proto::ResetOffsetsRequest {
                    name: Some(reset.instance.name.proto()),
                    kind: proto::ConnectorKind::Unspecified.into(),
                    instance_id: reset.instance.instance_id,
                    position: position.map(Into::into),
                    position_text: reset.position,
                })
                .await
                .map_err(|status| call_error(&status))?;
            acknowledge(output, "Offsets reset");
        }
    }
    Ok(())
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits = text.trim().trim_start_matches("0x");
    if !digits.len().is_multiple_of(2) {
        return Err(invalid("--position-hex", "has an odd number of digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|start| {
            digits
                .get(start..start + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| invalid("--position-hex", format!("{text:?} is not hex")))
        })
        .collect()
}

/// Runs `ferry cluster …`.
pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let output = args.client.output;
    let mut client = args.client.connect().await?;
    match args.command {
        ClusterCommand::Nodes => {
            let nodes = client
                .list_nodes(proto::ListNodesRequest {})
                .await
                .map_err(|status| call_error(&status))?
                .into_inner()
                .nodes;
            let state = |node: &proto::NodeInfo| {
                proto::NodeState::try_from(node.state).map_or("UNKNOWN", |state| {
                    short_name(state.as_str_name(), "NODE_STATE_")
                })
            };
            match output {
                OutputFormat::Json => emit_json(&json!({
                    "nodes": nodes.iter().map(|node| json!({
                        "node_id": node.node_id,
                        "address": node.address,
                        "state": state(node),
                        "leader": node.leader,
                        "voter": node.voter,
                        "instances": node.instances,
                        "labels": node.labels,
                    })).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => emit(&table::render(
                    &["NODE", "ADDRESS", "STATE", "ROLE", "INSTANCES"],
                    &nodes
                        .iter()
                        .map(|node| {
                            let role = match (node.leader, node.voter) {
                                (true, _) => "leader",
                                (false, true) => "voter",
                                (false, false) => "-",
                            };
                            vec![
                                node.node_id.to_string(),
                                node.address.clone(),
                                state(node).to_owned(),
                                role.to_owned(),
                                node.instances.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        ClusterCommand::Leader => {
            let leader = client
                .get_leader(proto::GetLeaderRequest {})
                .await
                .map_err(|status| call_error(&status))?
                .into_inner();
            match output {
                OutputFormat::Json => emit_json(&json!({
                    "node_id": leader.leader_id,
                    "address": leader.address,
                })),
                OutputFormat::Table => emit(&format!(
                    "node {} at {}",
                    leader
                        .leader_id
                        .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                    leader.address
                )),
            }
        }
        ClusterCommand::Drain(node) => {
            client
                .drain_node(proto::DrainNodeRequest {
                    node_id: node.node_id,
                })
                .await
                .map_err(|status| call_error(&status))?;
            acknowledge(output, &format!("Node {} is draining", node.node_id));
        }
        ClusterCommand::Remove(node) => {
            client
                .remove_node(proto::RemoveNodeRequest {
                    node_id: node.node_id,
                })
                .await
                .map_err(|status| call_error(&status))?;
            acknowledge(output, &format!("Node {} removed", node.node_id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_positions_parse_or_name_the_flag() {
        assert_eq!(parse_hex("0x00ff10").expect("hex"), vec![0, 255, 16]);
        let error = parse_hex("abc").expect_err("odd");
        assert!(error.to_string().contains("--position-hex"), "{error}");
        assert!(parse_hex("zz").is_err());
    }
}
