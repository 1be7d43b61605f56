//! `ferry serve`: the node's gRPC server.
//!
//! One port carries the admin API and the standard gRPC health service (and, as they land,
//! node-to-node Raft traffic). The listener and the stop signal are passed in, so tests bind
//! `127.0.0.1:0` and stop the server when they choose.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::admin::v1::admin_server::AdminServer;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::meta::service::ClusterService;
use crate::security::Security;
use ferry_proto::cluster::v1::cluster_server::ClusterServer;

/// How long a stopping server waits for open calls and connections before it quits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors of the node's gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address} (--listen): {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why binding failed (in use, not a local address, no permission).
        #[source]
        source: std::io::Error,
    },
    /// The process could not subscribe to SIGTERM/SIGINT.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The TLS certificate or key cannot be used.
    #[error("invalid --tls-cert/--tls-key: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The gRPC server stopped with an error.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked or was cancelled.
    #[error("grpc server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Binds the node's gRPC listener.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

/// Returns a future that resolves with the signal's name on the first SIGTERM or SIGINT.
///
/// The handlers are installed before this returns, so a signal that arrives right after is
/// not lost (unlike `tokio::signal::ctrl_c`, which registers on first poll).
pub fn termination_signal() -> Result<impl Future<Output = &'static str>, ServeError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    })
}

/// Serves the admin API and gRPC health (and, when given, the metadata store's cluster
/// traffic) on `listener` until `shutdown` resolves, then reports NOT_SERVING, stops accepting,
/// and waits up to `grace` for open connections to finish.
pub async fn serve<S>(
    listener: TcpListener,
    shutdown: S,
    grace: Duration,
    cluster: Option<ClusterServer<ClusterService>>,
) -> Result<(), ServeError>
where
    S: Future<Output = &'static str>,
{
    serve_with_admin(listener, shutdown, grace, cluster, AdminService::default()).await
}

/// Serves like [`serve`], with `admin` answering the admin API (over the node's metadata store
/// and Pulsar admin API).
pub async fn serve_with_admin<S>(
    listener: TcpListener,
    shutdown: S,
    grace: Duration,
    cluster: Option<ClusterServer<ClusterService>>,
    admin: AdminService,
) -> Result<(), ServeError>
where
    S: Future<Output = &'static str>,
{
    serve_with_security(
        listener,
        shutdown,
        grace,
        cluster,
        admin,
        &Security::default(),
    )
    .await
}

/// Serves like [`serve_with_admin`], over TLS and answering only callers with a valid token
/// when `security` says so (the health service stays open).
pub async fn serve_with_security<S>(
    listener: TcpListener,
    shutdown: S,
    grace: Duration,
    cluster: Option<ClusterServer<ClusterService>>,
    admin: AdminService,
    security: &Security,
) -> Result<(), ServeError>
where
    S: Future<Output = &'static str>,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;

    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(ServeError::Tls)?;
    }
    let server = builder
        .add_service(health_service)
        .add_service(security.guard(AdminServer::new(admin)))
        .add_optional_service(cluster.map(|cluster| security.guard(cluster)))
        .serve_with_incoming_shutdown(incoming, async {
            // A dropped sender also stops the server: nobody is left to keep it running.
            let _ = stop_receiver.await;
        });
    let mut server = tokio::spawn(server);

    tokio::select! {
        ended = &mut server => {
            // The server never stops on its own unless something failed.
            ended??;
            return Ok(());
        }
        reason = shutdown => info!(signal = reason, "stopping"),
    }

    for service in ["", ferry_proto::ADMIN_SERVICE_NAME] {
        health_reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    let _ = stop_sender.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(ended) => ended??,
        Err(_) => {
            warn!(grace = ?grace, "connections still open after the grace period; closing them");
            server.abort();
        }
    }
    info!("stopped");
    Ok(())
}
