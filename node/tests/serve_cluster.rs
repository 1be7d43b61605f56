//! `ferry serve` with a metadata store, as a user runs it: real processes, real data
//! directories, `kill -9`.
//!
//! - `--bootstrap` starts a one-node cluster that answers a read index; killed with SIGKILL and
//!   restarted with the same flags less --node-id, it leads again with its log intact;
//! - a second process `--join`s it; both killed with SIGKILL and restarted from their data
//!   directories alone (no --node-id, --bootstrap or --join), they elect a leader again;
//! - a bad config file, a bad environment value, and a truncated store stop start-up with one
//!   line naming the culprit.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Node, ferry, text};
use ferry_proto::cluster::v1::ReadIndexRequest;
use ferry_proto::cluster::v1::cluster_client::ClusterClient;
use ferry_test_support::wait;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the node at `url` serves a linearizable read index of at least `at_least`, and
/// returns it.
async fn read_index(url: &str, at_least: u64) -> u64 {
    wait::until(
        &format!("{url} serves a read index of at least {at_least}"),
        TIMEOUT,
        || async {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
                .ok()?
                .connect()
                .await
                .ok()?;
            let response = ClusterClient::new(channel)
                .read_index(ReadIndexRequest { forwarded: false })
                .await
                .ok()?;
            Some(response.into_inner().index).filter(|index| *index >= at_least)
        },
    )
    .await
}

/// Starts node 1 with --bootstrap on a free port.
fn bootstrap_node(data_dir: &Path) -> Node {
    Node::start(&[
        "--bootstrap",
        "--node-id",
        "1",
        "--data-dir",
        path(data_dir),
        "--listen",
        "127.0.0.1:0",
    ])
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a utf-8 path")
}

/// The single line a failed start-up printed, after checking it is one line.
fn one_line_error(output: &std::process::Output) -> String {
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn a_bootstrapped_node_restarts_after_sigkill_from_its_data_dir() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let mut node = bootstrap_node(data.path());
    // Entries 0 to 2: the initial membership, the leader's blank entry, node 1's NodeJoin.
    let before = read_index(&node.url(), 2).await;
    let address = node.address.to_string();
    node.signal("KILL");
    node.wait_for_exit().await;

    // The same unit file again, less --node-id: the id comes from the stored identity, and
    // --bootstrap on a store that holds a cluster only records the node (one more entry). A
    // store that had lost its log would bootstrap afresh and stop at index 2 again.
    let restarted = Node::start(&[
        "--bootstrap",
        "--data-dir",
        path(data.path()),
        "--listen",
        &address,
    ]);
    read_index(&restarted.url(), before + 1).await;
}

#[tokio::test]
async fn a_joined_cluster_restarts_after_sigkill_from_its_data_dirs_alone() {
    let first_data = tempfile::tempdir().expect("a temporary directory");
    let second_data = tempfile::tempdir().expect("a temporary directory");
    let mut first = bootstrap_node(first_data.path());
    read_index(&first.url(), 0).await;
    let seed = first.address.to_string();
    let mut second = Node::start(&[
        "--join",
        &seed,
        "--node-id",
        "2",
        "--data-dir",
        path(second_data.path()),
        "--listen",
        "127.0.0.1:0",
    ]);
    second.wait_for_line("node 2 is in its cluster");
    // A follower's read index comes from the leader: it knows the cluster.
    let joined = read_index(&second.url(), 1).await;
    let second_address = second.address.to_string();
    for node in [&mut first, &mut second] {
        node.signal("KILL");
        node.wait_for_exit().await;
    }

    // Two voters, restarted with nothing but their data directories: they start only if each
    // kept its identity, and serve a read index (node 1 leads again, in its stored term) only
    // if node 1 kept its membership and log.
    let first = Node::start(&["--data-dir", path(first_data.path()), "--listen", &seed]);
    let second = Node::start(&[
        "--data-dir",
        path(second_data.path()),
        "--listen",
        &second_address,
    ]);
    read_index(&first.url(), joined).await;
    read_index(&second.url(), joined).await;
}

#[test]
fn a_bad_config_file_stops_start_up_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        "node_id = 1\nlisten = \"127.0.0.1:0\"\nlisen = \"oops\"\n",
    )
    .expect("write the config");
    let output = ferry(&["serve", "--config", path(&config)]);
    assert_eq!(output.status.code(), Some(1));
    let error = one_line_error(&output);
    assert!(error.contains("(--config): line 3"), "{error}");
    assert!(error.contains("lisen"), "{error}");
}

#[test]
fn a_config_file_sets_what_the_flags_leave_out() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("ferry.toml");
    // The file asks for a bootstrap without a data directory: the refusal proves it was read.
    std::fs::write(&config, "node_id = 1\nbootstrap = true\n").expect("write the config");
    let output = ferry(&[
        "serve",
        "--config",
        path(&config),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let error = one_line_error(&output);
    assert!(
        error.contains("invalid --data-dir: is required with --bootstrap"),
        "{error}"
    );
}

#[test]
fn a_bad_environment_value_stops_start_up_naming_it() {
    let output = std::process::Command::new(common::FERRY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FERRY_NODE_ID", "one")
        .output()
        .expect("run ferry");
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("--node-id"), "{error}");
    assert!(error.contains("one"), "{error}");
}

#[tokio::test]
async fn a_truncated_store_stops_start_up_naming_the_file() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let mut node = bootstrap_node(data.path());
    read_index(&node.url(), 0).await;
    node.signal("KILL");
    node.wait_for_exit().await;
    let file = data.path().join("meta.redb");
    let length = std::fs::metadata(&file).expect("the store exists").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|handle| handle.set_len(length / 3))
        .expect("truncate the store");
    let output = ferry(&[
        "serve",
        "--data-dir",
        path(data.path()),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let error = one_line_error(&output);
    assert!(error.contains("meta.redb"), "{error}");
}
