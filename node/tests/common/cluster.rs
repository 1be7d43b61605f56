//! A `ferry serve` cluster of child processes, and the `ferry` CLI run against it.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::Value;

use super::{FERRY, Node, text};

/// The nodes of one test's cluster, their data directories and log files.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` nodes (node 1 bootstraps, the others join it), each logging to a file,
    /// and waits until each is in the cluster.
    pub(crate) fn start(size: u64, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes: Vec<Node> = Vec::new();
        let mut logs = Vec::new();
        for id in 1..=size {
            let data = dir.path().join(format!("node-{id}"));
            let log = dir.path().join(format!("node-{id}.log"));
            let id_text = id.to_string();
            let seed = nodes.first().map(|first| first.address.to_string());
            let mut args = vec![
                "--node-id",
                &id_text,
                "--data-dir",
                data.to_str().expect("a utf-8 path"),
                "--listen",
                "127.0.0.1:0",
            ];
            match &seed {
                None => args.push("--bootstrap"),
                Some(seed) => args.extend(["--join", seed.as_str()]),
            }
            args.extend(extra);
            let stderr = Stdio::from(File::create(&log).expect("create the log file"));
            let mut node = Node::start_with(&args, env, stderr);
            node.wait_for_line(&format!("node {id} is in its cluster"));
            nodes.push(node);
            logs.push(log);
        }
        Self {
            nodes,
            logs,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    /// Returns the index of a node that does not lead.
    pub(crate) fn follower(&self) -> usize {
        let leader = ok_json(&self.url(0), &["cluster", "leader"]);
        let leader = leader["node_id"].as_u64().expect("a leader id");
        (0..self.nodes.len())
            .find(|index| *index as u64 + 1 != leader)
            .expect("a follower")
    }

    /// Returns everything the nodes logged so far.
    pub(crate) fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("read a node log"))
            .collect()
    }
}

/// Runs `ferry ARGS --admin-url URL`.
pub(crate) fn run(url: &str, args: &[&str]) -> Output {
    run_with(url, args, &[])
}

/// Runs `ferry ARGS --admin-url URL` with the environment variables `env` added, and without
/// inherited `FERRY_*` access settings (token, CA).
pub(crate) fn run_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(FERRY)
        .args(args)
        .args(["--admin-url", url])
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_TOKEN_FILE")
        .env_remove("FERRY_TLS_CA")
        .envs(env.iter().copied())
        .output()
        .expect("run ferry")
}

/// Runs a command that must succeed, and returns its standard output.
pub(crate) fn ok(url: &str, args: &[&str]) -> String {
    ok_with(url, args, &[])
}

/// Runs a command with the environment variables `env` that must succeed, and returns its
/// standard output.
pub(crate) fn ok_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_with(url, args, env);
    assert!(
        output.status.success(),
        "ferry {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs a command with `--output json` that must succeed, and returns its answer.
pub(crate) fn ok_json(url: &str, args: &[&str]) -> Value {
    ok_json_with(url, args, &[])
}

/// Runs a command with `--output json` and the environment variables `env` that must succeed,
/// and returns its answer.
pub(crate) fn ok_json_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let stdout = ok_with(url, &all, env);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: {error}: {stdout}"))
}

/// Runs a command that must fail, and returns its one error line, `error: CODE: message`.
pub(crate) fn refused(url: &str, args: &[&str]) -> String {
    refused_with(url, args, &[])
}

/// Runs a command with the environment variables `env` that must fail, and returns its one
/// error line.
pub(crate) fn refused_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_with(url, args, env);
    let stderr = text(&output.stderr);
    assert!(
        !output.status.success(),
        "ferry {args:?} should fail: {}",
        text(&output.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one error line expected for {args:?}:\n{stderr}"
    );
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}
