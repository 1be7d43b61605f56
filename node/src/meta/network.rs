//! Raft traffic over tonic (`ferry.cluster.v1.Cluster`): one cached channel per peer address,
//! a deadline on every call, and errors sorted the way openraft needs them. A peer that cannot
//! be reached (connection refused or reset, the call's deadline passed) is `Unreachable`, so
//! openraft backs off instead of retrying at once; a peer that answered with a Raft error is a
//! `RemoteError`; anything else is a `Network` error.
//!
//! [`Faults`] is the test knob, after the router of openraft's own tests: a node marked isolated
//! neither reaches nor is reached by any other node sharing the same `Faults`.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_proto::admin::v1::admin_client::AdminClient;
use ferry_proto::cluster::v1::RaftMessage;
use ferry_proto::cluster::v1::cluster_client::ClusterClient;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::TypeConfig;
use super::codec;
use super::state::NodeId;
use crate::security::{BearerToken, PeerAccess};

/// A client of a peer's cluster service; each call carries the cluster's admin token, if any.
pub type PeerClient = ClusterClient<InterceptedService<Channel, BearerToken>>;

/// A client of a peer's admin API (for the calls a follower passes on to the leader).
pub type PeerAdminClient = AdminClient<InterceptedService<Channel, BearerToken>>;

/// How long a peer connection may take to establish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest gRPC message a node sends or accepts (snapshot chunks, entry batches).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long openraft waits before retrying an unreachable peer.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(200);

/// Network faults injected by tests: which nodes are cut off from all others.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    isolated: Arc<Mutex<BTreeSet<NodeId>>>,
}

impl Faults {
    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: NodeId) {
        self.lock().insert(node);
    }

    /// Reconnects `node`.
    pub fn heal(&self, node: NodeId) {
        self.lock().remove(&node);
    }

    /// Returns whether traffic between `from` and `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        let isolated = self.lock();
        isolated.contains(&from) || isolated.contains(&to)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeId>> {
        self.isolated.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Errors of reaching a peer outside openraft's interfaces.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer's address is not a valid URI authority.
    #[error("invalid peer address {address:?}: {source}")]
    Address {
        /// The address.
        address: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings do not fit the peer's address.
    #[error("cannot set up tls to peer {address}: {source}")]
    Tls {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A test cut the link.
    #[error("link from node {from} to node {to} is cut")]
    Cut {
        /// The caller.
        from: NodeId,
        /// The callee.
        to: NodeId,
    },
}

/// One lazily connected channel per peer address, shared by every user on this node, over TLS
/// and with the admin token when the node has them.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    access: PeerAccess,
}

impl Peers {
    /// Returns peers reached with `access` (TLS settings and token).
    pub fn new(access: PeerAccess) -> Self {
        Self {
            channels: Arc::default(),
            access,
        }
    }

    /// Returns a client of the peer at `address` (host:port) over its cached channel.
    pub fn client(&self, address: &str) -> Result<PeerClient, PeerError> {
        Ok(
            ClusterClient::with_interceptor(self.channel(address)?, self.access.token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// Returns a client of the admin API of the peer at `address`, over the same channel.
    pub fn admin_client(&self, address: &str) -> Result<PeerAdminClient, PeerError> {
        Ok(AdminClient::with_interceptor(
            self.channel(address)?,
            self.access.token.clone(),
        ))
    }

    fn channel(&self, address: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let scheme = if self.access.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|source| PeerError::Address {
                address: address.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.access.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|source| PeerError::Tls {
                    address: address.to_owned(),
                    source,
                })?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Makes openraft's per-peer connections from this node's [`Peers`].
#[derive(Debug, Clone)]
pub struct NetworkFactory {
    id: NodeId,
    peers: Peers,
    faults: Faults,
}

impl NetworkFactory {
    /// Returns a factory for node `id`.
    pub fn new(id: NodeId, peers: Peers, faults: Faults) -> Self {
        Self { id, peers, faults }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            id: self.id,
            target,
            client: self.peers.client(&node.addr),
            faults: self.faults.clone(),
        }
    }
}

/// openraft's view of one peer.
#[derive(Debug)]
pub struct Connection {
    id: NodeId,
    target: NodeId,
    client: Result<PeerClient, PeerError>,
    faults: Faults,
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn openraft_type(self) -> RPCTypes {
        match self {
            Self::AppendEntries => RPCTypes::AppendEntries,
            Self::Vote => RPCTypes::Vote,
            Self::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

type CallError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// Sorts a failed gRPC call: a peer that is down or unreachable is `Unreachable`.
fn status_error<E: Error>(status: &tonic::Status) -> CallError<E> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl Connection {
    async fn call<Request, Response, E>(
        &mut self,
        rpc: Rpc,
        request: &Request,
        option: &RPCOption,
    ) -> Result<Response, CallError<E>>
    where
        Request: Serialize,
        Response: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        if self.faults.is_cut(self.id, self.target) {
            let cut = PeerError::Cut {
                from: self.id,
                to: self.target,
            };
            return Err(RPCError::Unreachable(Unreachable::new(&cut)));
        }
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return Err(RPCError::Unreachable(Unreachable::new(error))),
        };
        let payload = codec::encode("raft request", request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        let message = RaftMessage {
            payload: payload.into(),
        };
        let call = async move {
            match rpc {
                Rpc::AppendEntries => client.append_entries(message).await,
                Rpc::Vote => client.vote(message).await,
                Rpc::InstallSnapshot => client.install_snapshot(message).await,
            }
        };
        let response = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: rpc.openraft_type(),
                    id: self.id,
                    target: self.target,
                    timeout: option.hard_ttl(),
                }));
            }
            Ok(Err(status)) => return Err(status_error(&status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        let answer: Result<Response, RaftError<NodeId, E>> =
            codec::decode("raft response", &response.payload)
                .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        answer.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, CallError<openraft::error::Infallible>> {
        self.call(Rpc::AppendEntries, &request, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, CallError<InstallSnapshotError>> {
        self.call(Rpc::InstallSnapshot, &request, &option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, CallError<openraft::error::Infallible>> {
        self.call(Rpc::Vote, &request, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
