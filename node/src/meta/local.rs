//! A metadata-store member running in this process on a loopback port: its store, Raft, and a
//! gRPC server carrying its cluster traffic. `ferry bench meta` and the cluster tests build
//! their clusters from these.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::node::DEFAULT_WRITE_TIMEOUT;
use super::service::StoreOnly;
use super::state::NodeId;
use super::{Faults, Meta, MetaError, MetaSettings, RaftTuning};
use crate::server::{self, ServeError};

/// How long a stopping member's server waits for open calls.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped member's store may take to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Errors of starting or stopping a local member.
#[derive(Debug, thiserror::Error)]
pub enum LocalNodeError {
    /// The server could not listen or failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The listener's address could not be read.
    #[error("cannot read the listener's address: {0}")]
    Address(#[source] std::io::Error),
    /// Something still holds the store after the member stopped.
    #[error("the store is still open {0:?} after the node stopped")]
    StillOpen(Duration),
    /// The server task panicked.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One running member.
#[derive(Debug)]
pub struct LocalNode {
    /// The member's metadata store handle.
    pub meta: Meta,
    /// The address its server listens on (and advertises).
    pub address: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServeError>>,
}

impl LocalNode {
    /// Opens the store in `data_dir`, starts Raft and serves it on `address` (port 0 picks a
    /// free one). The member is not in a cluster until its `meta` bootstraps or joins, unless
    /// its data says it already is.
    pub async fn start(
        id: NodeId,
        address: SocketAddr,
        data_dir: &Path,
        tuning: RaftTuning,
        faults: Faults,
    ) -> Result<Self, LocalNodeError> {
        let listener = server::bind(address).await?;
        let address = listener.local_addr().map_err(LocalNodeError::Address)?;
        let meta = Meta::start(
            MetaSettings {
                node_id: id,
                advertise: address.to_string(),
                data_dir: data_dir.to_owned(),
                tuning,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
            },
            faults,
        )
        .await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            async {
                let _ = stopped.await;
                "local stop"
            },
            STOP_GRACE,
            Some(meta.cluster_service(Arc::new(StoreOnly))),
        ));
        Ok(Self {
            meta,
            address,
            stop,
            server,
        })
    }

    /// Stops Raft and the server, as a crash would: no handoff, no goodbye. The data stays,
    /// closed (so it can be reopened or inspected) when this returns.
    pub async fn stop(self) -> Result<(), LocalNodeError> {
        let closed = self.meta.closed_signal();
        self.meta.shutdown().await?;
        let _ = self.stop.send(());
        self.server.await??;
        drop(self.meta);
        if !closed.wait(CLOSE_WAIT).await {
            return Err(LocalNodeError::StillOpen(CLOSE_WAIT));
        }
        Ok(())
    }
}
