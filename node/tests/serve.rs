//! `ferry` as a user runs it: the real binary in a child process.
//!
//! - `--help` and `version` answer without a server;
//! - `serve` on a free port answers gRPC health SERVING for the node and the admin API, and its
//!   admin API answers `ferry version --admin-url`;
//! - SIGTERM stops it with exit code 0 and the port closes;
//! - a bad or busy `--listen` fails at once with a line naming the flag.

mod common;

use std::time::{Duration, Instant};

use common::{Node, START_TIMEOUT, ferry, text};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health_client(url: &str) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("a valid url")
        .connect()
        .await
        .expect("connect to the node");
    HealthClient::new(channel)
}

async fn health(url: &str, service: &str) -> ServingStatus {
    let response = health_client(url)
        .await
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check");
    response.into_inner().status()
}

#[test]
fn help_lists_the_commands() {
    let output = ferry(&["--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for command in ["serve", "version"] {
        assert!(
            help.contains(command),
            "--help does not list {command}:\n{help}"
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    let output = ferry(&["version"]);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout).trim(),
        format!("ferry {} (admin API v1)", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_malformed_listen_address_is_refused_naming_the_flag() {
    let output = ferry(&["serve", "--listen", "not-an-address"]);
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("--listen"), "{error}");
    assert!(error.contains("not-an-address"), "{error}");
}

#[test]
fn a_busy_port_is_refused_naming_the_flag_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let address = taken.local_addr().expect("local address").to_string();
    let started = Instant::now();
    let output = ferry(&["serve", "--listen", &address]);
    assert_eq!(output.status.code(), Some(1));
    let error = text(&output.stderr);
    assert!(
        error.contains(&format!("cannot listen on {address} (--listen)")),
        "{error}"
    );
    assert!(
        started.elapsed() < START_TIMEOUT,
        "refusal took {:?}",
        started.elapsed()
    );
}

#[test]
fn version_against_an_unreachable_node_fails_naming_the_url() {
    let output = ferry(&["version", "--admin-url", "http://127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(1));
    let error = text(&output.stderr);
    assert!(
        error.contains("cannot reach the admin API at http://127.0.0.1:1 (--admin-url)"),
        "{error}"
    );
}

#[tokio::test]
async fn serve_answers_health_and_admin_then_stops_on_sigterm() {
    let mut node = Node::start(&["--listen", "127.0.0.1:0"]);
    let url = node.url();

    assert_eq!(health(&url, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&url, "ferry.admin.v1.Admin").await,
        ServingStatus::Serving
    );

    let output = ferry(&["version", "--admin-url", &url]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains(&format!(
            "node at {url}: ferry {} (admin API v1)",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        text(&output.stdout)
    );

    // A client that keeps its connection open must not hold the node up past the grace period:
    // the server closes idle connections when it stops.
    let mut open_client = health_client(&url).await;
    open_client
        .check(HealthCheckRequest::default())
        .await
        .expect("health over the open connection");
    node.signal("TERM");
    let stopping = Instant::now();
    let status = node.wait_for_exit().await;
    assert!(status.success(), "ferry serve exited with {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?} with an idle client connected",
        stopping.elapsed()
    );
    drop(open_client);
    assert!(
        std::net::TcpStream::connect(node.address).is_err(),
        "the port still accepts connections after exit"
    );
}

#[tokio::test]
async fn serve_stops_on_ctrl_c() {
    let mut node = Node::start(&["--listen", "127.0.0.1:0"]);
    assert_eq!(health(&node.url(), "").await, ServingStatus::Serving);
    node.signal("INT");
    let status = node.wait_for_exit().await;
    assert!(status.success(), "ferry serve exited with {status}");
}
