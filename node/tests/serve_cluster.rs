//! `ferry serve` with a metadata store, as a user runs it: real processes, real data
//! directories, `kill -9`.
//!
//! - `--bootstrap` starts a one-node cluster that answers a read index; killed with SIGKILL and
//!   restarted with the same flags less --node-id, it leads again with its log intact;
//! - a second process `--join`s it; both killed with SIGKILL and restarted from their data
//!   directories alone (no --node-id, --bootstrap or --join), they elect a leader again;
//! - a bad config file, a bad environment value, and a truncated store stop start-up with one
//!   line naming the culprit;
//! - t90 (issue 10): nodes that join at the same moment (a StatefulSet with parallel pod
//!   management) all get in, even when the node they join is not listening yet; a join that
//!   finds no cluster gives up at its deadline with one line naming what it waited for.

mod common;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
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
    one_error_line(&text(&output.stderr))
}

/// The single `error:` line among a failed process's standard error (its logs included).
fn one_error_line(stderr: &str) -> String {
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

/// How long nodes joining together may take to all get in (each waits its turn).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A `ferry serve` node of a membership scenario, logging to a file that a failure shows.
struct LoggedNode {
    id: u64,
    node: Node,
    log: PathBuf,
}

impl LoggedNode {
    /// Starts node `id` in `dir` (its data directory and log file) with the membership flags
    /// `membership` (`--bootstrap` or `--join ADDR`, and their settings), listening on `listen`.
    fn start(dir: &Path, id: u64, listen: &str, membership: &[&str]) -> Self {
        let data = dir.join(format!("node-{id}"));
        let log = dir.join(format!("node-{id}.log"));
        let id_text = id.to_string();
        let mut args = vec![
            "--node-id",
            &id_text,
            "--data-dir",
            path(&data),
            "--listen",
            listen,
        ];
        args.extend(membership);
        let stderr = Stdio::from(File::create(&log).expect("create the log file"));
        let node = Node::start_with(&args, &[], stderr);
        Self { id, node, log }
    }

    /// Starts the nodes `ids` at the same moment (one thread each), all joining `seed`.
    fn start_joining(dir: &Path, ids: &[u64], seed: &str) -> Vec<Self> {
        std::thread::scope(|scope| {
            let starting: Vec<_> = ids
                .iter()
                .map(|id| {
                    scope.spawn(move || Self::start(dir, *id, "127.0.0.1:0", &["--join", seed]))
                })
                .collect();
            starting
                .into_iter()
                .map(|thread| thread.join().expect("a node starts"))
                .collect()
        })
    }

    /// Returns what the node logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read the node's log")
    }

    /// Waits until the node says it is in its cluster; fails with its log (the reason it
    /// exited, if it did) otherwise.
    fn wait_until_in_cluster(&mut self) {
        let line = format!("node {} is in its cluster", self.id);
        if let Err(error) = self.node.wait_for_line_within(&line, JOIN_TIMEOUT) {
            let exit = self.node.child.try_wait();
            panic!(
                "node {}: {error} (exit: {exit:?}); its log:\n{}",
                self.id,
                self.log()
            );
        }
    }
}

/// Returns a loopback address nothing listens on (a port the kernel just handed out, released
/// again), for a node the test starts later or never.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// Waits until the node at `url` lists exactly the nodes `ids`, each an Active voter.
async fn wait_for_active_voters(url: &str, ids: &[u64]) {
    wait::until(
        &format!("{url} lists nodes {ids:?}, each an active voter"),
        TIMEOUT,
        || async {
            let nodes = common::cluster::run(url, &["cluster", "nodes", "--output", "json"]);
            let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).ok()?;
            let listed: Vec<u64> = nodes["nodes"]
                .as_array()?
                .iter()
                .filter(|node| node["voter"] == true && node["state"] == "ACTIVE")
                .filter_map(|node| node["node_id"].as_u64())
                .collect();
            (listed == ids).then_some(())
        },
    )
    .await;
}

/// Issue 10: nodes 2, 3 and 4 join node 1 at the same moment, as a StatefulSet with parallel
/// pod management starts them. openraft takes one membership change at a time; a join that
/// meets another must wait its turn instead of failing, and all four end up voters.
#[tokio::test]
async fn t90_issue_10_nodes_joining_at_the_same_moment_all_become_voters() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut first = LoggedNode::start(dir.path(), 1, "127.0.0.1:0", &["--bootstrap"]);
    first.wait_until_in_cluster();
    let seed = first.node.address.to_string();

    let mut joiners = LoggedNode::start_joining(dir.path(), &[2, 3, 4], &seed);
    for joiner in &mut joiners {
        joiner.wait_until_in_cluster();
    }
    wait_for_active_voters(&first.node.url(), &[1, 2, 3, 4]).await;
}

/// Issue 10: three nodes launched at the same instant, node 1 with --bootstrap, nodes 2 and 3
/// with --join node 1. Nodes 2 and 3 start first, so node 1 is not listening yet when they
/// first try: they keep trying, saying what they wait for, and all three form a cluster.
#[tokio::test]
async fn t90_issue_10_three_nodes_started_at_the_same_moment_form_a_cluster() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let seed = free_address().to_string();
    let mut joiners = LoggedNode::start_joining(dir.path(), &[2, 3], &seed);
    let mut first = LoggedNode::start(dir.path(), 1, &seed, &["--bootstrap"]);

    first.wait_until_in_cluster();
    for joiner in &mut joiners {
        joiner.wait_until_in_cluster();
    }
    wait_for_active_voters(&first.node.url(), &[1, 2, 3]).await;
    for joiner in &joiners {
        let log = joiner.log();
        assert!(
            log.lines()
                .any(|line| line.contains("waiting to join") && line.contains(&seed)),
            "node {} never said it was waiting to join through {seed}:\n{log}",
            joiner.id
        );
    }
}

/// A join that finds no cluster at its seed gives up once --join-timeout-secs has passed, with
/// one error line naming the seed, the flag and the deadline.
#[tokio::test]
async fn t90_issue_10_a_join_gives_up_at_its_deadline_naming_what_it_waited_for() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let seed = free_address().to_string();
    let mut joiner = LoggedNode::start(
        dir.path(),
        2,
        "127.0.0.1:0",
        &["--join", &seed, "--join-timeout-secs", "1"],
    );
    let exit = joiner.node.wait_for_exit().await;
    let log = joiner.log();
    assert_eq!(exit.code(), Some(1), "{log}");
    let error = one_error_line(&log);
    for wanted in [seed.as_str(), "(--join)", "1s (--join-timeout-secs)"] {
        assert!(error.contains(wanted), "{wanted:?} missing from: {error}");
    }
}
