//! The node context: what one node holds around its metadata store — its supervisor's status
//! board and, while it leads, its record of the other nodes' heartbeats — wired into the
//! store's cluster service from here, so `meta` knows nothing of the supervisor or leases
//! (../shared/DESIGN.md §2: lower layers never import higher ones).

use std::sync::Arc;

use ferry_proto::cluster::v1::InstanceReport;
use ferry_proto::cluster::v1::cluster_server::ClusterServer;

use crate::control::lease::Heartbeats;
use crate::meta::Meta;
use crate::meta::service::{ClusterService, NodeCalls};
use crate::meta::state::NodeId;
use crate::supervisor::{self, StatusBoard};

/// One node's metadata store and what the other parts of the node share around it. Clones
/// share it.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// The metadata store.
    pub meta: Meta,
    /// Where this node's supervisor publishes its instances' states (served to the admin API
    /// and, for status, to the other nodes).
    pub board: StatusBoard,
    /// When this node, while leading, last heard from each node (read by the control loop).
    pub heartbeats: Heartbeats,
}

impl NodeContext {
    /// Returns the context of a node around `meta`, with an empty board and no heartbeats yet.
    pub fn new(meta: Meta) -> Self {
        Self {
            meta,
            board: StatusBoard::default(),
            heartbeats: Heartbeats::default(),
        }
    }

    /// Returns the gRPC service carrying this node's cluster traffic: Raft, forwarded writes,
    /// joins, heartbeats and instance reports.
    pub fn cluster_service(&self) -> ClusterServer<ClusterService> {
        self.meta.cluster_service(Arc::new(ClusterCalls {
            board: self.board.clone(),
            heartbeats: self.heartbeats.clone(),
        }))
    }
}

/// The cluster calls this node answers from its board and heartbeats.
#[derive(Debug)]
struct ClusterCalls {
    board: StatusBoard,
    heartbeats: Heartbeats,
}

impl NodeCalls for ClusterCalls {
    fn heard_from(&self, node: NodeId) {
        self.heartbeats.heard(node);
    }

    fn instance_reports(&self, connector: &str) -> Vec<InstanceReport> {
        supervisor::proto_reports(&self.board, connector)
    }
}
