//! The `ferry` command line: `ferry serve` runs a node; the other commands are gRPC clients of
//! a node's admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix::Actor;
use clap::{Args, Parser, Subcommand};
use ferry_actors::pulsar::admin::PulsarAdmin;
use ferry_proto::admin::v1::GetVersionRequest;
use ferry_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::Endpoint;
use tracing::info;

use crate::admin::AdminService;
use crate::bench::{self, BenchCommand};
use crate::context::NodeContext;
use crate::control::lease::{self, LeaseClock, LeaseSettings};
use crate::meta::network::Peers;
use crate::meta::node::DEFAULT_WRITE_TIMEOUT;
use crate::meta::{Faults, Meta, MetaSettings, RaftTuning};
use crate::security::Security;
use crate::settings::{self, ClusterSettings, GivenSettings, Identity, Membership, SettingsError};
use crate::supervisor::{StopSupervisor, Supervisor, SupervisorSettings};
use crate::{VERSION, client, control, runtime, server};

/// Default address of a node's gRPC port (admin API and cluster traffic).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// The Pulsar service URL instances use without --pulsar-url.
pub const DEFAULT_PULSAR_URL: &str = "pulsar://127.0.0.1:6650";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs Apache Pulsar IO connectors as a fault-tolerant cluster.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `ferry` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a Ferry node until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Prints this binary's version, and a node's with --admin-url.
    Version(VersionArgs),
    /// Measures parts of Ferry against a floor measured in the same run.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Manages sources (external system -> Pulsar), like `pulsar-admin sources`.
    Sources(client::connectors::SourcesArgs),
    /// Manages sinks (Pulsar -> external system), like `pulsar-admin sinks`.
    Sinks(client::connectors::SinksArgs),
    /// Reads and resets the committed checkpoints of sources and sinks.
    Offsets(client::cluster::OffsetsArgs),
    /// Lists, drains and removes the cluster's nodes.
    Cluster(client::cluster::ClusterArgs),
}

/// Flags of `ferry serve`. Each may also be set by its `FERRY_*` environment variable or in the
/// `--config` file (flags and environment win).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of node settings (keys: node_id, listen, advertise, data_dir, pulsar_url,
    /// pulsar_admin_url, bootstrap, join, join_timeout_secs, tls_cert, tls_key, tls_ca,
    /// admin_token_file, viewer_token_file).
    #[arg(long, env = "FERRY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster; stored in the data directory on first start.
    #[arg(long, env = "FERRY_NODE_ID", value_name = "ID")]
    pub node_id: Option<u64>,
    /// Address of the node's gRPC port (admin API, health, cluster traffic); port 0 picks a free
    /// port, printed on standard output. Default: 127.0.0.1:7600.
    #[arg(long, env = "FERRY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// The address other nodes reach this node at, when it differs from --listen.
    #[arg(long, env = "FERRY_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Where the metadata store and the node identity live. Without it the node serves the
    /// admin API alone.
    #[arg(long, env = "FERRY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Pulsar service URL (pulsar://host:6650).
    #[arg(long, env = "FERRY_PULSAR_URL", value_name = "URL")]
    pub pulsar_url: Option<String>,
    /// The Pulsar admin URL (http://host:8080).
    #[arg(long, env = "FERRY_PULSAR_ADMIN_URL", value_name = "URL")]
    pub pulsar_admin_url: Option<String>,
    /// Starts a new one-node cluster (nothing happens if the data directory already holds one).
    #[arg(long, env = "FERRY_BOOTSTRAP", conflicts_with = "join")]
    pub bootstrap: bool,
    /// Joins the cluster of the node at this address: as a learner first, then as a voter once
    /// caught up.
    #[arg(long, env = "FERRY_JOIN", value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// How long --join keeps trying, in seconds, while the node it names is not listening yet,
    /// has no leader yet, or is adding other nodes (which take turns); then the node gives up
    /// and exits. Default: 120.
    #[arg(long, env = "FERRY_JOIN_TIMEOUT_SECS", value_name = "SECONDS")]
    pub join_timeout_secs: Option<u64>,
    /// PEM file of this node's TLS certificate (chain). With --tls-key the node serves the
    /// admin API and cluster traffic over TLS, and reaches the other nodes over https.
    #[arg(long, env = "FERRY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this node's TLS private key.
    #[arg(long, env = "FERRY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA this node trusts when it reaches the other nodes (default: the
    /// certificates in --tls-cert).
    #[arg(long, env = "FERRY_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// File holding the admin token (or set FERRY_ADMIN_TOKEN). With it every admin call needs
    /// `authorization: Bearer <token>`, and node-to-node calls carry it: give every node of a
    /// cluster the same one.
    #[arg(long, env = "FERRY_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the viewer token (or set FERRY_VIEWER_TOKEN): it may get, list and read
    /// status only.
    #[arg(long, env = "FERRY_VIEWER_TOKEN_FILE", value_name = "FILE")]
    pub viewer_token_file: Option<PathBuf>,
    /// How long a node's lease lasts, in milliseconds: a node that cannot renew it for this
    /// long stops its instances, and the leader moves them a third of a lease later.
    /// Heartbeats go every sixth of it. Every node of a cluster must use the same value.
    #[arg(long, env = "FERRY_LEASE_MS", value_name = "MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ms: u64,
}

impl ServeArgs {
    /// Returns the settings given by flags and environment, merged over the config file's.
    fn given(&self) -> Result<GivenSettings, SettingsError> {
        let flags = GivenSettings {
            node_id: self.node_id,
            listen: self.listen,
            advertise: self.advertise.clone(),
            data_dir: self.data_dir.clone(),
            pulsar_url: self.pulsar_url.clone(),
            pulsar_admin_url: self.pulsar_admin_url.clone(),
            bootstrap: self.bootstrap.then_some(true),
            join: self.join.clone(),
            join_timeout_secs: self.join_timeout_secs,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_ca: self.tls_ca.clone(),
            admin_token_file: self.admin_token_file.clone(),
            viewer_token_file: self.viewer_token_file.clone(),
            // Token values only come from the environment: a flag would show them in `ps`.
            admin_token: std::env::var("FERRY_ADMIN_TOKEN").ok(),
            viewer_token: std::env::var("FERRY_VIEWER_TOKEN").ok(),
        };
        Ok(match &self.config {
            Some(path) => flags.or(settings::read_config_file(path)?),
            None => flags,
        })
    }
}

/// Flags of `ferry version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// A node's admin URL (http://host:port); when given, that node's version is printed too.
    #[arg(long, env = "FERRY_ADMIN_URL", value_name = "URL")]
    pub admin_url: Option<String>,
    /// TLS and token for reaching the node.
    #[command(flatten)]
    pub access: client::AccessArgs,
}

/// Runs the `ferry` command line of this process: parses the arguments, runs the command and
/// reports a failure as one line on standard error (`error: CODE: message`).
///
/// A `ferry` build with connectors of its own calls this after
/// [`ferry_actors::connectors::install`]ing its registry (see `node/example-connector/`):
///
/// ```no_run
/// # use std::process::ExitCode;
/// fn main() -> ExitCode {
///     let registry = ferry_actors::connectors::builtin();
///     // registry.source::<MySource>();
///     ferry_actors::connectors::install(registry).expect("installed before any use");
///     ferry_node::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            runtime::block_on(serve(args))?
        }
        Command::Version(args) => runtime::block_on(version(args))?,
        Command::Bench { command } => {
            init_logging_at("warn");
            runtime::block_on(bench::run(command))?
        }
        Command::Sources(args) => runtime::block_on(client::connectors::run_sources(args))?,
        Command::Sinks(args) => runtime::block_on(client::connectors::run_sinks(args))?,
        Command::Offsets(args) => runtime::block_on(client::cluster::run_offsets(args))?,
        Command::Cluster(args) => runtime::block_on(client::cluster::run_cluster(args))?,
    }
}

/// Logs go to standard error, filtered by `FERRY_LOG` (default `info`).
fn init_logging() {
    init_logging_at("info");
}

/// Logs go to standard error, filtered by `FERRY_LOG` (default `level`).
fn init_logging_at(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[allow(
    clippy::print_stdout,
    reason = "the address line is the command's output"
)]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let default_listen: SocketAddr = DEFAULT_LISTEN.parse()?;
    let settings = settings::resolve(args.given()?, default_listen)?;
    let lease_ms = args.lease_ms;
    let listener = server::bind(settings.listen).await?;
    let address = listener.local_addr()?;
    let stop = server::termination_signal()?;
    let security = settings.security.clone();
    let node = match &settings.cluster {
        Some(cluster) => Some(NodeContext::new(
            start_meta(cluster, address, &security).await?,
        )),
        None => None,
    };
    info!(
        %address,
        version = VERSION,
        tls = security.tls.is_some(),
        tokens = security.tokens.is_some(),
        "ferry node listening"
    );
    // Scripts and tests read the bound address from this line (useful with port 0).
    println!("listening on {address}");
    let admin = AdminService::new(
        node.as_ref(),
        pulsar_admin(settings.pulsar_admin_url.as_deref())?,
    );
    let serving = server::serve_with_security(
        listener,
        stop,
        server::SHUTDOWN_GRACE,
        node.as_ref().map(NodeContext::cluster_service),
        admin,
        &security,
    );
    let Some((node, cluster)) = node.zip(settings.cluster) else {
        serving.await?;
        return Ok(());
    };
    tokio::pin!(serving);
    let meta = node.meta.clone();
    let entered = async {
        match &cluster.membership {
            Membership::Bootstrap => meta.bootstrap().await,
            Membership::Join(seed) if !meta.is_initialized().await? => {
                meta.join(seed, cluster.join_timeout).await
            }
            Membership::Join(_) | Membership::Resume => Ok(()),
        }
    };
    tokio::select! {
        ended = &mut serving => {
            meta.shutdown().await?;
            ended?;
            return Ok(());
        }
        entered = entered => entered?,
    }
    info!(node = meta.id(), leader = ?meta.leader(), "node is in its cluster");
    // Scripts and tests wait for this line before they count on the node as a member.
    println!("node {} is in its cluster", meta.id());
    let pulsar = ferry_actors::pulsar::PulsarSettings::new(
        settings
            .pulsar_url
            .clone()
            .unwrap_or_else(|| DEFAULT_PULSAR_URL.to_owned()),
    );
    let leases = LeaseSettings::with_lease(Duration::from_millis(lease_ms));
    let clock = LeaseClock::new(leases.lease);
    let mut supervisor_settings = SupervisorSettings::new(pulsar);
    supervisor_settings.lease = Some(clock.clone());
    let supervisor = Supervisor::new(meta.clone(), supervisor_settings, node.board.clone()).start();
    let (stop_control, control_stopped) = tokio::sync::watch::channel(());
    let renewing = tokio::spawn(lease::renew(
        meta.clone(),
        leases,
        clock,
        control_stopped.clone(),
    ));
    let control = tokio::spawn(control::run_with_leases(
        meta.clone(),
        control::DEFAULT_INTERVAL,
        Some((leases, node.heartbeats.clone())),
        control_stopped,
    ));
    let ended = serving.await;
    let _ = stop_control.send(());
    let _ = control.await;
    let _ = renewing.await;
    // Instances stop before the store: their last commits fail fast instead of hanging.
    let _ = supervisor.send(StopSupervisor).await;
    meta.shutdown().await?;
    ended?;
    Ok(())
}

/// Returns the Pulsar admin client the admin API checks deduplication with.
fn pulsar_admin(url: Option<&str>) -> anyhow::Result<Option<PulsarAdmin>> {
    url.map(|url| PulsarAdmin::new(url, None, None))
        .transpose()
        .map_err(|error| anyhow::anyhow!("invalid --pulsar-admin-url: {error}"))
}

/// Opens the metadata store and starts Raft, storing the node identity on first start.
async fn start_meta(
    cluster: &ClusterSettings,
    bound: SocketAddr,
    security: &Security,
) -> anyhow::Result<Meta> {
    let advertise = match &cluster.advertise {
        Some(advertise) => advertise.clone(),
        None if bound.ip().is_unspecified() => {
            anyhow::bail!("invalid --advertise: is required when --listen is {bound}")
        }
        None => bound.to_string(),
    };
    let identity = Identity {
        node_id: cluster.node_id,
        advertise: advertise.clone(),
    };
    let data_dir = cluster.data_dir.clone();
    let stored = data_dir.clone();
    tokio::task::spawn_blocking(move || {
        if settings::read_identity(&stored)?.as_ref() != Some(&identity) {
            settings::write_identity(&stored, &identity)?;
        }
        Ok::<_, SettingsError>(())
    })
    .await??;
    let meta = Meta::start_with_peers(
        MetaSettings {
            node_id: cluster.node_id,
            advertise,
            data_dir,
            tuning: RaftTuning::default(),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        },
        Faults::default(),
        Peers::new(security.peer_access()),
    )
    .await?;
    Ok(meta)
}

#[allow(
    clippy::print_stdout,
    reason = "printing the version is the command's output"
)]
async fn version(args: VersionArgs) -> anyhow::Result<()> {
    println!(
        "ferry {VERSION} (admin API {})",
        ferry_proto::ADMIN_API_VERSION
    );
    if let Some(url) = args.admin_url {
        let mut client = admin_client(&url, &args.access).await?;
        let answer = client
            .get_version(GetVersionRequest {})
            .await
            .map_err(|status| client::call_error(&status).context(format!("node at {url}")))?
            .into_inner();
        println!(
            "node at {url}: ferry {} (admin API {})",
            answer.version, answer.api_version
        );
    }
    Ok(())
}

/// Returns an error and its sources as one line, without the repeats tonic's transport errors
/// carry (`transport error: X: X`).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
        source = cause.source();
    }
    line
}

/// Connects to a node's admin API (over TLS for an https:// URL, sending the token if one is
/// given), naming the flag in the error.
pub(crate) async fn admin_client(
    url: &str,
    access: &client::AccessArgs,
) -> anyhow::Result<client::AdminApi> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid --admin-url {url:?}: {error}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let https = url.starts_with("https://");
    if https {
        endpoint = endpoint
            .tls_config(access.tls_config()?)
            .map_err(|error| anyhow::anyhow!("invalid --admin-url {url:?}: {error}"))?;
    } else if access.tls_ca.is_some() {
        anyhow::bail!("invalid --tls-ca: needs an https:// --admin-url (got {url})");
    }
    let token = access.token()?;
    let channel = endpoint.connect().await.map_err(|error| {
        let reason = error_chain(&error);
        let hint = match &access.tls_ca {
            _ if !reason.contains("certificate") => "--admin-url",
            None => "--admin-url; pass --tls-ca with the CA that signed the node's certificate",
            Some(_) => "--admin-url; --tls-ca is not the CA that signed the node's certificate",
        };
        anyhow::anyhow!("cannot reach the admin API at {url} ({hint}): {reason}")
    })?;
    Ok(AdminClient::with_interceptor(
        channel,
        crate::security::BearerToken::new(token),
    ))
}
