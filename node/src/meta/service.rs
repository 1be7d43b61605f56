//! The server side of `ferry.cluster.v1.Cluster`: Raft RPCs handed to openraft, writes and read
//! indexes served for followers, and joins; heartbeats and instance reports are answered by
//! the node around the store ([`NodeCalls`]), so the store knows nothing of leases or the
//! supervisor.

use std::sync::Arc;

use ferry_proto::cluster::v1::cluster_server::Cluster;
use ferry_proto::cluster::v1::{
    HeartbeatRequest, HeartbeatResponse, InstanceReport, InstanceReportsRequest,
    InstanceReportsResponse, JoinRequest, JoinResponse, RaftMessage, ReadIndexRequest,
    ReadIndexResponse,
};
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::codec;
use super::node::{LeaderWriteError, Meta, MetaError};
use super::state::{Command, NodeId};

/// The cluster calls answered by what runs around the store on this node: the leader's record
/// of heartbeats (leases) and this node's instance reports (its supervisor's board).
pub trait NodeCalls: Send + Sync + 'static {
    /// Records that `node` renewed its lease with this node, the leader, now.
    fn heard_from(&self, node: NodeId);

    /// Returns the reports of this node's instances, only those of `connector`
    /// (`tenant/namespace/name`) unless it is empty.
    fn instance_reports(&self, connector: &str) -> Vec<InstanceReport>;
}

/// A store with nothing around it (benchmarks, store tests): heartbeats are not recorded and
/// no instance runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOnly;

impl NodeCalls for StoreOnly {
    fn heard_from(&self, _: NodeId) {}

    fn instance_reports(&self, _: &str) -> Vec<InstanceReport> {
        Vec::new()
    }
}

/// Answers cluster calls on this node.
#[derive(Clone)]
pub struct ClusterService {
    meta: Meta,
    node: Arc<dyn NodeCalls>,
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClusterService")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl ClusterService {
    /// Returns the service of `meta`, answering heartbeats and instance reports through `node`.
    pub(crate) fn new(meta: Meta, node: Arc<dyn NodeCalls>) -> Self {
        Self { meta, node }
    }
}

fn decode_request<T: serde::de::DeserializeOwned>(
    what: &'static str,
    request: Request<RaftMessage>,
) -> Result<T, Status> {
    codec::decode(what, &request.into_inner().payload)
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

fn encode_response<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Response<RaftMessage>, Status> {
    let payload =
        codec::encode(what, value).map_err(|error| Status::internal(error.to_string()))?;
    Ok(Response::new(RaftMessage {
        payload: payload.into(),
    }))
}

fn status(error: &MetaError) -> Status {
    match error {
        MetaError::Unavailable(_) | MetaError::Stopped(_) | MetaError::JoinTimedOut { .. } => {
            Status::unavailable(error.to_string())
        }
        MetaError::Membership(_) | MetaError::Refused(_) => {
            Status::failed_precondition(error.to_string())
        }
        MetaError::Codec(_) | MetaError::Peer(_) => Status::invalid_argument(error.to_string()),
        MetaError::Store(_) | MetaError::Config(_) => Status::internal(error.to_string()),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let request = decode_request("append entries request", request)?;
        let answer = self.meta.raft().append_entries(request).await;
        encode_response("append entries response", &answer)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let request = decode_request("vote request", request)?;
        let answer = self.meta.raft().vote(request).await;
        encode_response("vote response", &answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let request = decode_request("install snapshot request", request)?;
        let answer = self.meta.raft().install_snapshot(request).await;
        encode_response("install snapshot response", &answer)
    }

    async fn forward_write(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let command: Command = decode_request("command", request)?;
        let reply = match self.meta.write_as_leader(command).await {
            Ok(reply) => reply,
            Err(LeaderWriteError::NotLeader(leader)) => {
                return Err(Status::unavailable(format!(
                    "node {} is not the leader (leader: {:?})",
                    self.meta.id(),
                    leader.map(|(id, _)| id)
                )));
            }
            Err(LeaderWriteError::Failed(error)) => return Err(status(&error)),
        };
        encode_response("reply", &reply)
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let forwarded = request.into_inner().forwarded;
        match self.meta.leader_address() {
            Some((leader, _)) if leader == self.meta.id() => {
                let index = self
                    .meta
                    .read_index_as_leader()
                    .await
                    .map_err(|error| status(&error))?;
                Ok(Response::new(ReadIndexResponse { index }))
            }
            Some((_, address)) if !forwarded => {
                self.leader_client(&address)?
                    .read_index(ReadIndexRequest { forwarded: true })
                    .await
            }
            _ => Err(self.not_the_leader()),
        }
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let JoinRequest {
            node_id,
            address,
            forwarded,
        } = request.into_inner();
        if address.is_empty() {
            return Err(Status::invalid_argument("address must not be empty"));
        }
        match self.meta.leader_address() {
            Some((leader, _)) if leader == self.meta.id() => {
                self.meta
                    .add_voter(node_id, &address)
                    .await
                    .map_err(|error| status(&error))?;
                Ok(Response::new(JoinResponse { leader_id: leader }))
            }
            Some((_, leader_address)) if !forwarded => {
                self.leader_client(&leader_address)?
                    .join(JoinRequest {
                        node_id,
                        address,
                        forwarded: true,
                    })
                    .await
            }
            // A node started with --bootstrap at the same moment as those joining it is
            // listening before it leads: the joiners wait.
            None => Err(Status::unavailable(format!(
                "node {} has no leader yet (not bootstrapped yet, or electing one)",
                self.meta.id()
            ))),
            _ => Err(self.not_the_leader()),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let node = request.into_inner().node_id;
        if self.meta.leader() != Some(self.meta.id()) {
            return Err(self.not_the_leader());
        }
        // Renew only as a leader a quorum still follows: a deposed leader must not keep a node
        // believing it holds its lease.
        let read_index = self
            .meta
            .read_index_as_leader()
            .await
            .map_err(|error| status(&error))?;
        self.node.heard_from(node);
        Ok(Response::new(HeartbeatResponse {
            leader_id: self.meta.id(),
            read_index,
        }))
    }

    async fn instance_reports(
        &self,
        request: Request<InstanceReportsRequest>,
    ) -> Result<Response<InstanceReportsResponse>, Status> {
        let connector = request.into_inner().connector;
        let reports = self.node.instance_reports(&connector);
        Ok(Response::new(InstanceReportsResponse { reports }))
    }
}

impl ClusterService {
    /// Returns a client of the leader, for the one hop a follower passes a request on.
    fn leader_client(&self, address: &str) -> Result<super::network::PeerClient, Status> {
        self.meta
            .peers()
            .client(address)
            .map_err(|error| Status::unavailable(error.to_string()))
    }

    fn not_the_leader(&self) -> Status {
        Status::unavailable(format!(
            "node {} is not the leader and cannot pass the request on (leader: {:?})",
            self.meta.id(),
            self.meta.leader()
        ))
    }
}
