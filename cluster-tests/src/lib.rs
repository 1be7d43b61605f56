//! Scenario tests that drive Ferry from the outside: real `ferry` processes, the real Pulsar
//! broker started by `deploy/pulsar/standalone.sh`, and real external systems.
//!
//! Scenarios are the files in `tests/`, numbered by theme as ../shared/STYLE.md §11 describes
//! (`t00_` environment, `t10_` basics, `t20_` failover, ...). Each reads like a script: its doc
//! comment lists the steps, every phase logs a line, and every wait has a deadline and a reason
//! ([`ferry_test_support::wait::until`]).
//!
//! - [`TestCluster`]: N `ferry serve` processes on 127.0.0.1 ports, each with its own data
//!   directory, killed (SIGKILL, by pid) and restarted on the same port and data; every process
//!   it started is killed when it is dropped.
//! - [`topic`]: reads a topic back for the checkers.
//! - [`scenario`]: steps the scenarios share (create a datagen source, wait on states, check).

pub mod scenario;
pub mod topic;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to be in its cluster.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Logs one line for a scenario's phase.
pub fn phase(message: &str) {
    eprintln!("[{:>8.3}s] {message}", started().elapsed().as_secs_f64());
}

fn started() -> Instant {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// The `ferry` binary, next to this test binary's directory (`target/<profile>/ferry`); built
/// with cargo when missing.
pub fn ferry_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            // A test runs from target/<profile>/deps/, a binary of this crate from
            // target/<profile>/.
            let beside = exe.parent().expect("the binary's directory");
            let profile_dir = if beside.ends_with("deps") {
                beside.parent().expect("target/<profile>")
            } else {
                beside
            };
            let binary = profile_dir.join("ferry");
            if !binary.exists() {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "ferry-node", "--bin", "ferry"])
                    .status()
                    .expect("run cargo build");
                assert!(
                    status.success(),
                    "cargo build -p ferry-node --bin ferry failed"
                );
            }
            binary
        })
        .clone()
}

/// One `ferry serve` process.
#[derive(Debug)]
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of real `ferry serve` processes.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    addresses: BTreeMap<u64, String>,
    running: BTreeMap<u64, Process>,
    extra: Vec<String>,
}

/// Returns a port free on 127.0.0.1 now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl TestCluster {
    /// Starts `size` nodes: node 1 bootstraps, the others join it, each waited for; every node
    /// gets `extra` flags and the real broker's URLs.
    pub fn start(size: u64, extra: &[&str]) -> Self {
        let broker = ferry_test_support::broker::broker();
        let mut extra: Vec<String> = extra.iter().map(|flag| (*flag).to_owned()).collect();
        extra.extend([
            "--pulsar-url".to_owned(),
            broker.url,
            "--pulsar-admin-url".to_owned(),
            broker.admin_url,
        ]);
        let mut cluster = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            addresses: BTreeMap::new(),
            running: BTreeMap::new(),
            extra,
        };
        for id in 1..=size {
            cluster
                .addresses
                .insert(id, format!("127.0.0.1:{}", free_port()));
            let membership = if id == 1 {
                vec!["--bootstrap".to_owned()]
            } else {
                vec!["--join".to_owned(), cluster.addresses[&1].clone()]
            };
            cluster.spawn(id, &membership);
        }
        phase(&format!("cluster of {size} nodes is up"));
        cluster
    }

    fn spawn(&mut self, id: u64, membership: &[String]) {
        let data = self.dir.path().join(format!("node-{id}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("the node's log file");
        let mut child = Command::new(ferry_binary())
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .args(["--listen", &self.addresses[&id]])
            .arg("--data-dir")
            .arg(&data)
            .args(membership)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ferry serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Process { child };
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = format!("node {id} is in its cluster");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line == ready => break,
                Ok(_) => {}
                Err(_) => panic!(
                    "node {id} was not in its cluster within {START_TIMEOUT:?}; its log: {}",
                    self.log(id)
                ),
            }
        }
        self.running.insert(id, process);
    }

    /// Starts a new node `id` that joins the cluster through a running node.
    pub fn add_node(&mut self, id: u64) {
        let seed = self.running()[0];
        let seed_address = self.addresses[&seed].clone();
        self.addresses
            .insert(id, format!("127.0.0.1:{}", free_port()));
        self.spawn(id, &["--join".to_owned(), seed_address]);
        phase(&format!("node {id} joined"));
    }

    /// Kills node `id` with SIGKILL (no goodbye); its data stays.
    pub fn kill(&mut self, id: u64) {
        let mut process = self.running.remove(&id).expect("a running node");
        process.child.kill().expect("SIGKILL the node");
        let _ = process.child.wait();
        phase(&format!("node {id} killed (SIGKILL)"));
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to node `id`'s process.
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.running[&id].child.id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        phase(&format!("node {id} sent SIG{signal}"));
    }

    /// Starts node `id` again on its address and data directory.
    pub fn restart(&mut self, id: u64) {
        self.spawn(id, &[]);
        phase(&format!("node {id} restarted"));
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    /// The admin URL of node `id`.
    pub fn url(&self, id: u64) -> String {
        format!("http://{}", self.addresses[&id])
    }

    /// What node `id` logged so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Runs the CLI against node `id`.
    pub fn cli(&self, id: u64, args: &[&str]) -> Output {
        Command::new(ferry_binary())
            .args(args)
            .args(["--admin-url", &self.url(id)])
            .output()
            .expect("run ferry")
    }

    /// Runs the CLI with `--output json` against node `id`; panics unless it succeeds.
    pub fn json(&self, id: u64, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.cli(id, &all);
        assert!(
            output.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON output")
    }

    /// Like [`TestCluster::json`], but None when the command fails (a node busy electing).
    pub fn try_json(&self, id: u64, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.cli(id, &all);
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).ok())
            .flatten()
    }

    /// The instances of a connector as status shows them, asked of node `id`.
    pub fn instances(&self, id: u64, kind: &str, name: &str) -> Option<Vec<Value>> {
        let status = self.try_json(id, &[kind, "status", "--name", name])?;
        status["instances"].as_array().cloned()
    }

    /// The current leader's id, asked of node `id`.
    pub fn leader(&self, id: u64) -> Option<u64> {
        self.try_json(id, &["cluster", "leader"])?["node_id"].as_u64()
    }
}
