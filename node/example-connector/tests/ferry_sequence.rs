//! The `ferry-sequence` build as a real process: a connector written outside `ferry-actors`
//! runs through the same node, admin API and CLI as a built-in one.
//!
//! 1. `ferry-sequence serve --bootstrap` starts a one-node cluster (real Pulsar at
//!    127.0.0.1:6650).
//! 2. `sources available-sources` lists `sequence` beside the built-ins, and
//!    `config-definition` shows the fields its config struct documents.
//! 3. A bad config is refused naming the field; a good one runs: the source writes its 20
//!    records to Pulsar and finishes at `next=20`.
//! 4. Stopped, reset with `--position next=15` and started, it writes the last 5 again; a
//!    position of another shape is refused naming `position` and `next=<whole number>`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferry_test_support::{unique_name, wait};
use serde_json::Value;

const FERRY_SEQUENCE: &str = env!("CARGO_BIN_EXE_ferry-sequence");
const START_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A `ferry-sequence serve` child process, killed when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    /// Starts a one-node cluster in `data_dir` and waits until it is in its cluster.
    fn bootstrap(data_dir: &std::path::Path, log: std::fs::File) -> Self {
        let mut child = Command::new(FERRY_SEQUENCE)
            .args([
                "serve",
                "--bootstrap",
                "--node-id",
                "1",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ferry-sequence serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::sync_channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            child,
            url: String::new(),
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let next_line = |prefix: &str| loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(error) => panic!("ferry-sequence serve printed no {prefix:?} line: {error}"),
            }
        };
        let listening = next_line("listening on ");
        node.url = format!("http://{}", &listening["listening on ".len()..]);
        next_line("node 1 is in its cluster");
        node
    }

    /// Runs `ferry-sequence ARGS --admin-url URL`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(FERRY_SEQUENCE)
            .args(args)
            .args(["--admin-url", &self.url])
            .env_remove("FERRY_TOKEN")
            .env_remove("FERRY_TOKEN_FILE")
            .env_remove("FERRY_TLS_CA")
            .output()
            .expect("run ferry-sequence")
    }

    /// Runs a command that must succeed with `--output json`, and returns its answer.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.run(&all);
        assert!(
            output.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: {error}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs a command that must fail, and returns its one error line.
    fn refused(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(!output.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    }

    /// Waits until instance 0 of source `name` has FINISHED after more than `commits_above`
    /// checkpoint commits, and returns its status.
    fn finished(&self, name: &str, commits_above: u64) -> Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(wait::until(
            "the sequence source finished with its position checkpointed",
            WAIT_TIMEOUT,
            || {
                let status = self.json(&["sources", "status", "--name", name]);
                let instance = status["instances"][0].clone();
                let done = instance["state"] == "FINISHED"
                    && instance["checkpoint"]["commits"].as_u64() > Some(commits_above);
                async move { done.then_some(instance) }
            },
        ))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn t10_an_outside_connector_is_listed_created_run_and_reset_through_the_cli() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = std::fs::File::create(dir.path().join("node.log")).expect("a log file");
    let node = Node::bootstrap(&dir.path().join("data"), log);

    // 2. Listed beside the built-ins, documented by its config struct.
    let types = node.json(&["sources", "available-sources"]);
    let names: Vec<&str> = types
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"sequence"), "{names:?}");
    assert!(names.contains(&"datagen"), "the built-ins stay: {names:?}");
    let definition = node.json(&["sources", "config-definition", "--source-type", "sequence"]);
    let step = definition["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|field| field["name"] == "step")
        .expect("a step field");
    assert_eq!(step["default"], "1", "{step}");
    assert!(
        step["description"]
            .as_str()
            .is_some_and(|d| d.contains("not 0")),
        "{step}"
    );

    // 3. A bad config names its field; a good one runs to its end.
    let topic = format!("persistent://public/default/{}", unique_name("sequence"));
    let create = |name: &str, config: &str| {
        vec![
            "sources".to_owned(),
            "create".to_owned(),
            "--name".to_owned(),
            name.to_owned(),
            "--source-type".to_owned(),
            "sequence".to_owned(),
            "--destination-topic-name".to_owned(),
            topic.clone(),
            "--source-config".to_owned(),
            config.to_owned(),
        ]
    };
    let args = create("bad", r#"{"step": 0}"#);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = node.refused(&args);
    assert!(
        line.starts_with(
            "error: INVALID_ARGUMENT: invalid source_config field \"step\": must not be 0"
        ),
        "{line}"
    );
    let args = create(
        "counter",
        r#"{"start": 100, "step": 5, "count": 20, "prefix": "n-"}"#,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    node.json(&args);
    let first = node.finished("counter", 0);
    assert_eq!(first["records_written"], 20, "{first}");
    assert_eq!(first["checkpoint"]["position_text"], "next=20", "{first}");

    // 4. Reset as text, it goes on from there.
    node.json(&["sources", "stop", "--name", "counter"]);
    let line = node.refused(&[
        "offsets",
        "reset",
        "--name",
        "counter",
        "--position",
        "index=15",
    ]);
    assert!(
        line.starts_with("error: INVALID_ARGUMENT: invalid position: ")
            && line.contains("next=<whole number>"),
        "{line}"
    );
    node.json(&[
        "offsets",
        "reset",
        "--name",
        "counter",
        "--position",
        "next=15",
    ]);
    let offsets = node.json(&["offsets", "get", "--name", "counter"]);
    assert_eq!(
        offsets["offsets"][0]["checkpoint"]["position_text"], "next=15",
        "{offsets}"
    );
    node.json(&["sources", "start", "--name", "counter"]);
    let again = node.finished("counter", 0);
    assert_eq!(
        again["records_written"], 5,
        "the run after the reset writes indexes 15..19: {again}"
    );
    assert_eq!(again["checkpoint"]["position_text"], "next=20");
}
