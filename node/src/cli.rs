//! The `ferry` command line: `ferry serve` runs a node; the other commands are gRPC clients of
//! a node's admin API.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_proto::admin::v1::GetVersionRequest;
use ferry_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::Endpoint;
use tracing::info;

use crate::{VERSION, runtime, server};

/// Default address of a node's gRPC port (admin API and cluster traffic).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

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
}

/// Flags of `ferry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the node's gRPC port (admin API, health, cluster traffic); port 0 picks a free
    /// port, printed on standard output.
    #[arg(long, env = "FERRY_LISTEN", value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

/// Flags of `ferry version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// A node's admin URL (http://host:port); when given, that node's version is printed too.
    #[arg(long, env = "FERRY_ADMIN_URL", value_name = "URL")]
    pub admin_url: Option<String>,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging();
            runtime::block_on(serve(args))?
        }
        Command::Version(args) => runtime::block_on(version(args))?,
    }
}

/// Logs go to standard error, filtered by `FERRY_LOG` (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
    let listener = server::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let stop = server::termination_signal()?;
    info!(%address, version = VERSION, "ferry node listening");
    // Scripts and tests read the bound address from this line (useful with port 0).
    println!("listening on {address}");
    server::serve(listener, stop, server::SHUTDOWN_GRACE).await?;
    Ok(())
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
        let mut client = admin_client(&url).await?;
        let answer = client
            .get_version(GetVersionRequest {})
            .await
            .map_err(|status| anyhow::anyhow!("{url}: {}", status.message()))?
            .into_inner();
        println!(
            "node at {url}: ferry {} (admin API {})",
            answer.version, answer.api_version
        );
    }
    Ok(())
}

/// Connects to a node's admin API, naming the flag in the error.
async fn admin_client(url: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid --admin-url {url:?}: {error}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|error| {
        anyhow::Error::new(error)
            .context(format!("cannot reach the admin API at {url} (--admin-url)"))
    })?;
    Ok(AdminClient::new(channel))
}
