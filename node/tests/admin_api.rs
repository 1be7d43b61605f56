//! The admin API through the real `ferry` binary against real `ferry serve` clusters, as a data
//! engineer uses it:
//!
//! - t10: a source and a sink go through create, get, list, status, update, stop, offsets
//!   reset/get, start, restart and delete on a one-node cluster;
//! - t11: a source created from a YAML config file reads back with the same config;
//! - t20: every verb works against a follower of a three-node cluster (writes are forwarded to
//!   the leader; node removal is passed on to the leader's admin API);
//! - t30: bad inputs are each refused with the promised code and a message naming the problem,
//!   nothing of them is stored, and the cluster still serves a create afterwards; the
//!   effectively-once check asks a (stand-in) Pulsar admin API about deduplication;
//! - t40: a secret config value never appears in any command's output nor in the node's logs
//!   (at debug level);
//! - t50: positions read as each connector writes them (`index=50`, a sink's message ids and
//!   file length) in `offsets get` and status, and `offsets reset --position` takes that text;
//! - t60: a sink's error policy, dead-letter topic and runtime options go through create, get
//!   and update (a dead-letter topic alone implies the policy; another policy drops it), and
//!   bad ones are refused naming the flag, an effectively-once dead-letter topic without
//!   deduplication included.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use common::cluster::{Cluster, ok, ok_json, refused, run};
use common::text;
use ferry_test_support::wait;
use serde_json::Value;

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|connector| connector["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Serves the one Pulsar admin call the deduplication check makes first: deduplication is on
/// for topics in namespaces named `dedup`, off elsewhere. Returns its URL.
fn fake_pulsar_admin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                line.clear();
            }
            let path = request_line.split(' ').nth(1).unwrap_or_default();
            let body = if path.contains("/dedup/") {
                "true"
            } else {
                "false"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.flush();
        }
    });
    format!("http://{address}")
}

/// Creates, reads, changes, stops, resets (to `position`, a position of its type as text),
/// starts, restarts and deletes `name` through `url`.
fn crud_cycle(url: &str, kind: &str, name: &str, create: &[&str], position: &str) {
    let mut args = vec![kind, "create", "--name", name];
    args.extend(create);
    let created = ok_json(url, &args);
    assert_eq!(created["name"], name);
    assert_eq!(created["version"], 1);
    assert_eq!(created["desired_state"], "RUNNING");

    let got: Value = serde_json::from_str(&ok(url, &[kind, "get", "--name", name])).expect("json");
    assert_eq!(got, created, "get shows what create answered");
    let listed = ok_json(url, &[kind, "list"]);
    assert!(names(&listed).contains(&name.to_owned()), "{listed}");
    assert!(ok(url, &[kind, "list"]).contains(name));

    let status = ok_json(url, &[kind, "status", "--name", name]);
    let instances = status["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 2, "{status}");
    for (index, instance) in instances.iter().enumerate() {
        assert_eq!(instance["instance_id"], index);
        assert!(instance.get("node").is_some(), "{instance}");
        let state = instance["state"].as_str().expect("a state");
        assert!(
            [
                "PENDING", "ASSIGNED", "STARTING", "RUNNING", "STUCK", "FAILED", "FINISHED"
            ]
            .contains(&state),
            "{instance}"
        );
    }
    let one = ok_json(url, &[kind, "status", "--name", name, "--instance-id", "1"]);
    assert_eq!(one["instances"].as_array().map(Vec::len), Some(1), "{one}");
    assert!(ok(url, &[kind, "status", "--name", name]).contains("INSTANCE"));

    let updated = ok_json(url, &[kind, "update", "--name", name, "--parallelism", "3"]);
    assert_eq!(updated["parallelism"], 3);
    assert_eq!(updated["version"], 2);
    assert_eq!(
        updated["config"], created["config"],
        "update keeps what it is not given"
    );

    ok(url, &[kind, "stop", "--name", name]);
    let stopped = ok_json(url, &[kind, "status", "--name", name]);
    assert_eq!(stopped["desired_state"], "STOPPED");
    ok(
        url,
        &["offsets", "reset", "--name", name, "--position", position],
    );
    let offsets = ok_json(url, &["offsets", "get", "--name", name]);
    let offsets = offsets["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 3);
    for offset in offsets {
        assert_eq!(offset["checkpoint"]["position_text"], position, "{offset}");
    }
    let table = ok(url, &["offsets", "get", "--name", name]);
    assert!(table.contains(position), "{table}");
    ok(
        url,
        &["offsets", "reset", "--name", name, "--instance-id", "2"],
    );
    let last = ok_json(
        url,
        &["offsets", "get", "--name", name, "--instance-id", "2"],
    );
    assert_eq!(last["offsets"][0]["checkpoint"], Value::Null, "{last}");

    ok(url, &[kind, "start", "--name", name]);
    assert_eq!(
        ok_json(url, &[kind, "get", "--name", name])["desired_state"],
        "RUNNING"
    );
    ok(url, &[kind, "restart", "--name", name]);
    ok(
        url,
        &[kind, "restart", "--name", name, "--instance-id", "0"],
    );

    ok(url, &[kind, "delete", "--name", name]);
    let gone = refused(url, &[kind, "get", "--name", name]);
    assert!(gone.starts_with("error: NOT_FOUND:"), "{gone}");
    assert!(!names(&ok_json(url, &[kind, "list"])).contains(&name.to_owned()));
}

/// A datagen position, as `offsets get` shows it.
const SOURCE_POSITION: &str = "index=40";
/// A file sink's position: the last message id written from each input, then the file's
/// length.
const SINK_POSITION: &str =
    "persistent://public/default/t1=7:3:-1 persistent://public/default/t2=9:0:-1 sink=length=0";

fn source_create() -> Vec<&'static str> {
    vec![
        "--source-type",
        "datagen",
        "--destination-topic-name",
        "persistent://public/default/generated",
        "--parallelism",
        "2",
        "--source-config",
        r#"{"count": 1000, "seed": 7}"#,
    ]
}

fn sink_create(config_file: &Path) -> Vec<String> {
    [
        "--sink-type",
        "file",
        "--inputs",
        "t1,persistent://public/default/t2",
        "--parallelism",
        "2",
        "--processing-guarantees",
        "EFFECTIVELY_ONCE",
        "--sink-config-file",
        config_file.to_str().expect("a utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn t10_a_source_and_a_sink_go_through_their_whole_life_on_one_node() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = cluster.url(0);
    assert!(ok(&url, &["sources", "available-sources"]).contains("datagen"));
    let sinks = ok_json(&url, &["sinks", "available-sinks"]);
    assert!(
        sinks
            .as_array()
            .expect("types")
            .iter()
            .any(|t| t["name"] == "file")
    );
    let definition = ok_json(
        &url,
        &["sinks", "config-definition", "--sink-type", "postgres"],
    );
    let password = definition["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|field| field["name"] == "password")
        .expect("a password field");
    assert_eq!(password["secret"], true);
    ok(
        &url,
        &[
            "sources",
            "validate-config",
            "--source-type",
            "datagen",
            "--source-config",
            r#"{"count":1}"#,
        ],
    );

    crud_cycle(&url, "sources", "gen", &source_create(), SOURCE_POSITION);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("sink.json");
    let out = dir.path().join("sink.out");
    std::fs::write(
        &config,
        format!(r#"{{"path": {:?}}}"#, out.display().to_string()),
    )
    .expect("write");
    let create = sink_create(&config);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    crud_cycle(&url, "sinks", "out", &create, SINK_POSITION);
}

#[test]
fn t11_a_source_created_from_a_yaml_file_reads_back_as_written() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = cluster.url(0);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("datagen.yaml");
    std::fs::write(
        &config,
        "# a pulsar-admin style config file, in YAML\ncount: 1000\nseed: 7\nrate: 50\n",
    )
    .expect("write");
    let config = config.to_str().expect("a utf-8 path");
    let created = ok_json(
        &url,
        &[
            "sources",
            "create",
            "--name",
            "from-yaml",
            "--source-type",
            "datagen",
            "--destination-topic-name",
            "generated",
            "--source-config-file",
            config,
        ],
    );
    let got = ok_json(&url, &["sources", "get", "--name", "from-yaml"]);
    assert_eq!(got, created, "get shows what create answered");
    assert_eq!(
        got["config"],
        serde_json::json!({"count": 1000, "seed": 7, "rate": 50}),
        "{got}"
    );

    // A YAML config is checked like a JSON one: the node names the unknown field.
    let bogus = dir.path().join("bogus.yml");
    std::fs::write(&bogus, "count: 1\nbogus: 2\n").expect("write");
    let refused_line = refused(
        &url,
        &[
            "sources",
            "update",
            "--name",
            "from-yaml",
            "--source-config-file",
            bogus.to_str().expect("a utf-8 path"),
        ],
    );
    assert!(
        refused_line.starts_with("error: INVALID_ARGUMENT: ") && refused_line.contains("\"bogus\""),
        "{refused_line}"
    );
}

#[test]
fn t20_every_verb_works_against_a_follower() {
    let cluster = Cluster::start(3, &[], &[]);
    let follower = cluster.follower();
    let url = cluster.url(follower);

    crud_cycle(&url, "sources", "gen", &source_create(), SOURCE_POSITION);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("sink.json");
    let out = dir.path().join("sink.out");
    std::fs::write(
        &config,
        format!(r#"{{"path": {:?}}}"#, out.display().to_string()),
    )
    .expect("write");
    let create = sink_create(&config);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    crud_cycle(&url, "sinks", "out", &create, SINK_POSITION);

    let nodes = ok_json(&url, &["cluster", "nodes"]);
    let nodes = nodes["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert_eq!(
        nodes.iter().filter(|node| node["leader"] == true).count(),
        1
    );
    assert!(ok(&url, &["cluster", "leader"]).starts_with("node "));

    // Drain and remove a follower other than the one asked (removal goes to the leader).
    let leader = ok_json(&url, &["cluster", "leader"])["node_id"]
        .as_u64()
        .expect("id");
    let victim_id = (1..=3)
        .find(|id| *id != leader && *id != follower as u64 + 1)
        .expect("another follower");
    let victim = victim_id.to_string();
    ok(&url, &["cluster", "drain", "--node-id", &victim]);
    let state = |nodes: &Value| {
        nodes["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|node| node["node_id"].as_u64() == Some(victim_id))
            .map(|node| node["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        state(&ok_json(&url, &["cluster", "nodes"])).as_deref(),
        Some("DRAINING")
    );
    ok(&url, &["cluster", "remove", "--node-id", &victim]);
    let after = ok_json(&url, &["cluster", "nodes"]);
    assert_eq!(state(&after).as_deref(), Some("LEFT"), "{after}");
    // Two voters still make a cluster that takes writes.
    ok(
        &url,
        &["sources", "create", "--name", "after-remove"]
            .iter()
            .copied()
            .chain(source_create())
            .collect::<Vec<_>>(),
    );
}

#[test]
fn t30_bad_inputs_are_refused_with_the_right_code_naming_the_problem() {
    let pulsar_admin = fake_pulsar_admin();
    let cluster = Cluster::start(1, &["--pulsar-admin-url", &pulsar_admin], &[]);
    let url = cluster.url(0);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let yaml = dir.path().join("config.yaml");
    std::fs::write(&yaml, "count: 1\n seed: [7\n").expect("write");
    let yaml = yaml.to_str().expect("a utf-8 path");
    let yaml_error = format!("{yaml}:2:6: mapping values are not allowed in this context");

    fn source<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "sources",
            "create",
            "--name",
            name,
            "--source-type",
            "datagen",
            "--destination-topic-name",
            "t",
        ];
        args.extend(extra);
        args
    }
    let postgres = |config: &'static str| {
        vec![
            "sinks",
            "create",
            "--name",
            "pg",
            "--sink-type",
            "postgres",
            "--inputs",
            "t",
            "--sink-config",
            config,
        ]
    };
    ok(&url, &source("existing", &[]));
    ok(&url, &source("stopped", &[]));
    ok(&url, &["sources", "stop", "--name", "stopped"]);
    // Effectively-once where the (stand-in) broker deduplicates: accepted.
    ok(
        &url,
        &[
            "sources",
            "create",
            "--name",
            "deduplicated",
            "--source-type",
            "datagen",
            "--destination-topic-name",
            "persistent://public/dedup/t",
            "--processing-guarantees",
            "EFFECTIVELY_ONCE",
        ],
    );

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec![
                "sources",
                "create",
                "--name",
                "b",
                "--source-type",
                "nope",
                "--destination-topic-name",
                "t",
            ],
            "INVALID_ARGUMENT",
            "source_type",
        ),
        (
            vec![
                "sinks",
                "create",
                "--name",
                "b",
                "--sink-type",
                "nope",
                "--inputs",
                "t",
            ],
            "INVALID_ARGUMENT",
            "sink_type",
        ),
        (
            vec![
                "sinks",
                "create",
                "--name",
                "b",
                "--sink-type",
                "datagen",
                "--inputs",
                "t",
            ],
            "INVALID_ARGUMENT",
            "sink_type",
        ),
        (
            source("b", &["--source-config", r#"{"count": "#]),
            "INVALID_ARGUMENT",
            "not valid JSON",
        ),
        (
            source("b", &["--source-config", "[1, 2]"]),
            "INVALID_ARGUMENT",
            "must be a JSON object",
        ),
        (
            source("b", &["--source-config", r#"{"bogus": 1}"#]),
            "INVALID_ARGUMENT",
            "\"bogus\"",
        ),
        (
            source("b", &["--source-config", r#"{"count": "many"}"#]),
            "INVALID_ARGUMENT",
            "\"count\"",
        ),
        (
            source("b", &["--source-config-file", yaml]),
            "INVALID_ARGUMENT",
            yaml_error.as_str(),
        ),
        (
            postgres(r#"{"url": "postgres://127.0.0.1/db"}"#),
            "INVALID_ARGUMENT",
            "\"password\": is required",
        ),
        (
            postgres(r#"{"url": "postgres://h/db", "user": "u", "password": 5, "table": "t"}"#),
            "INVALID_ARGUMENT",
            "\"password\"",
        ),
        (
            source("b", &["--parallelism", "0"]),
            "INVALID_ARGUMENT",
            "parallelism",
        ),
        (
            source("b", &["--parallelism", "-2"]),
            "INVALID_ARGUMENT",
            "parallelism",
        ),
        (
            vec![
                "sources",
                "create",
                "--name",
                "b",
                "--source-type",
                "datagen",
                "--destination-topic-name",
                "a/b",
            ],
            "INVALID_ARGUMENT",
            "destination_topic_name",
        ),
        (
            vec![
                "sources",
                "create",
                "--name",
                "b",
                "--source-type",
                "datagen",
                "--destination-topic-name",
                "kafka://x/y/z",
            ],
            "INVALID_ARGUMENT",
            "destination_topic_name",
        ),
        (
            vec![
                "sources",
                "create",
                "--name",
                "b",
                "--source-type",
                "datagen",
            ],
            "INVALID_ARGUMENT",
            "destination_topic_name",
        ),
        (
            vec!["sinks", "create", "--name", "b", "--sink-type", "blackhole"],
            "INVALID_ARGUMENT",
            "inputs",
        ),
        (source("x/y", &[]), "INVALID_ARGUMENT", "invalid name"),
        (
            vec![
                "sources",
                "create",
                "--tenant",
                "pub lic",
                "--name",
                "b",
                "--source-type",
                "datagen",
                "--destination-topic-name",
                "t",
            ],
            "INVALID_ARGUMENT",
            "tenant",
        ),
        (
            source("b", &["--processing-guarantees", "TWICE"]),
            "INVALID_ARGUMENT",
            "--processing-guarantees",
        ),
        (
            source("b", &["--processing-guarantees", "EFFECTIVELY_ONCE"]),
            "FAILED_PRECONDITION",
            "deduplication",
        ),
        (
            source("existing", &[]),
            "ALREADY_EXISTS",
            "public/default/existing",
        ),
        (
            vec!["sources", "delete", "--name", "missing"],
            "NOT_FOUND",
            "public/default/missing",
        ),
        (
            vec!["sinks", "get", "--name", "missing"],
            "NOT_FOUND",
            "sink public/default/missing",
        ),
        (
            vec!["sinks", "get", "--name", "existing"],
            "NOT_FOUND",
            "it is a source",
        ),
        (
            vec!["offsets", "reset", "--name", "existing"],
            "FAILED_PRECONDITION",
            "stop it",
        ),
        (
            vec![
                "offsets",
                "reset",
                "--name",
                "stopped",
                "--position",
                "offset=3",
            ],
            "INVALID_ARGUMENT",
            "invalid position: \"offset=3\" is not index=<whole number>",
        ),
        (
            vec!["sources", "restart", "--name", "stopped"],
            "FAILED_PRECONDITION",
            "stopped",
        ),
        (
            vec![
                "sources",
                "status",
                "--name",
                "existing",
                "--instance-id",
                "9",
            ],
            "INVALID_ARGUMENT",
            "instance_id",
        ),
        (
            vec![
                "sources",
                "stop",
                "--name",
                "existing",
                "--instance-id",
                "0",
            ],
            "INVALID_ARGUMENT",
            "instance_id",
        ),
        (
            vec![
                "sources",
                "update",
                "--name",
                "existing",
                "--source-type",
                "file",
            ],
            "INVALID_ARGUMENT",
            "source_type",
        ),
        (
            vec![
                "sources",
                "update",
                "--name",
                "existing",
                "--parallelism",
                "0",
            ],
            "INVALID_ARGUMENT",
            "parallelism",
        ),
        (
            vec!["cluster", "drain", "--node-id", "42"],
            "NOT_FOUND",
            "node 42",
        ),
        (
            vec!["cluster", "remove", "--node-id", "1"],
            "FAILED_PRECONDITION",
            "last voter",
        ),
    ];
    assert!(cases.len() >= 20);
    // Every case runs, and the failure lists every case that went wrong.
    let mut wrong = Vec::new();
    for (args, code, needle) in &cases {
        let line = refused(&url, args);
        if !line.starts_with(&format!("error: {code}: ")) {
            wrong.push(format!("{args:?} should be {code}: {line}"));
        } else if !line.contains(needle) {
            wrong.push(format!("{args:?} should name {needle:?}: {line}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let unreachable = refused("http://127.0.0.1:1", &["sources", "list"]);
    assert!(unreachable.contains("--admin-url"), "{unreachable}");

    // Nothing refused was stored, and the cluster still takes a create.
    ok(&url, &source("after", &[]));
    let listed = names(&ok_json(&url, &["sources", "list"]));
    assert_eq!(listed, ["after", "deduplicated", "existing", "stopped"]);
    assert!(names(&ok_json(&url, &["sinks", "list"])).is_empty());
    assert_eq!(
        ok_json(&url, &["cluster", "nodes"])["nodes"][0]["state"],
        "ACTIVE"
    );
}

#[test]
fn t40_secrets_never_leave_the_node() {
    const SECRET: &str = "pw-S3CRET-value";
    let cluster = Cluster::start(1, &[], &[("FERRY_LOG", "debug")]);
    let url = cluster.url(0);
    let config = format!(
        r#"{{"url": "postgres://127.0.0.1:5/db", "user": "ferry", "password": "{SECRET}", "table": "t"}}"#
    );
    let mut outputs = Vec::new();
    let mut capture = |args: &[&str]| {
        let output = run(&url, args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        outputs.push(format!("{}{}", text(&output.stdout), text(&output.stderr)));
        text(&output.stdout)
    };
    let create = [
        "sinks",
        "create",
        "--name",
        "pg",
        "--sink-type",
        "postgres",
        "--inputs",
        "t",
        "--sink-config",
    ];
    capture(&[&create[..], &[config.as_str(), "--output", "json"]].concat());
    capture(&["sinks", "get", "--name", "pg"]);
    capture(&["sinks", "list", "--output", "json"]);
    capture(&["sinks", "list"]);
    capture(&["sinks", "status", "--name", "pg", "--output", "json"]);
    capture(&["sinks", "status", "--name", "pg"]);
    // An update without the password keeps it; one with a reference replaces it.
    capture(&[
        "sinks",
        "update",
        "--name",
        "pg",
        "--sink-config",
        r#"{"batch_size": 10}"#,
        "-o",
        "json",
    ]);
    let got: Value =
        serde_json::from_str(&capture(&["sinks", "get", "--name", "pg"])).expect("json");
    assert_eq!(got["config"]["password"], "***", "{got}");
    assert_eq!(got["config"]["batch_size"], 10, "{got}");
    capture(&[
        "sinks",
        "update",
        "--name",
        "pg",
        "--sink-config",
        r#"{"password": "env:FERRY_TEST_PG_PASSWORD"}"#,
    ]);
    let got: Value =
        serde_json::from_str(&capture(&["sinks", "get", "--name", "pg"])).expect("json");
    assert_eq!(got["config"]["password"], "***", "{got}");
    capture(&[
        "sinks",
        "create",
        "--name",
        "pg2",
        "--sink-type",
        "postgres",
        "--inputs",
        "t2",
        "--sink-config",
        &config,
    ]);
    capture(&["sinks", "stop", "--name", "pg2"]);
    capture(&["sinks", "delete", "--name", "pg2"]);

    for output in &outputs {
        assert!(
            !output.contains(SECRET),
            "a secret in the output:\n{output}"
        );
        assert!(
            !output.contains("FERRY_TEST_PG_PASSWORD"),
            "a secret reference in the output:\n{output}"
        );
    }
    let logs = cluster.logs();
    assert!(
        logs.contains("connector created"),
        "the node logged at all:\n{logs}"
    );
    assert!(!logs.contains(SECRET), "a secret in the node's logs");
}

/// Waits until `condition` returns `Some`, polling the CLI; fails naming `reason`.
fn wait_until<T>(reason: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(wait::until(reason, WAIT_TIMEOUT, || {
        let value = condition();
        async move { value }
    }))
}

/// How long a connector may take to get somewhere.
const WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Issue 10, item 5: positions read as their connector writes them, and a reset takes that
/// text back.
///
/// 1. A datagen source of 50 records finishes; `offsets get` and `status` (JSON and table)
///    show its position as `index=50`.
/// 2. Stopped and reset with `--position index=40`, started again: it resumes there, so its
///    new run writes exactly the 10 records 40..49 and ends at `index=50` again.
/// 3. A file sink reading that topic shows `<topic>=<message id> sink=length=<file length>`;
///    stopped, reset with the text it showed, it shows the same text back.
/// 4. Text that is no position of the type is refused, naming `position` and the shape.
#[test]
fn t50_positions_read_as_text_and_a_reset_takes_text() {
    let cluster = Cluster::start(1, &[], &[]);
    let url = cluster.url(0);
    let topic = format!(
        "persistent://public/default/{}",
        ferry_test_support::unique_name("positions")
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("positions.out");

    // 1. The finished source's position reads `index=50`.
    ok(
        &url,
        &[
            "sources",
            "create",
            "--name",
            "counted",
            "--source-type",
            "datagen",
            "--destination-topic-name",
            &topic,
            "--source-config",
            r#"{"count": 50}"#,
        ],
    );
    let finished = |commits_above: u64| {
        wait_until("the source finished with its position checkpointed", || {
            let status = ok_json(&url, &["sources", "status", "--name", "counted"]);
            let instance = &status["instances"][0];
            (instance["state"] == "FINISHED"
                && instance["checkpoint"]["commits"].as_u64() > Some(commits_above))
            .then(|| instance.clone())
        })
    };
    let first = finished(0);
    assert_eq!(first["checkpoint"]["position_text"], "index=50", "{first}");
    assert_eq!(first["records_written"], 50, "{first}");
    let offsets = ok_json(&url, &["offsets", "get", "--name", "counted"]);
    assert_eq!(
        offsets["offsets"][0]["checkpoint"]["position_text"], "index=50",
        "{offsets}"
    );
    assert_eq!(
        offsets["offsets"][0]["checkpoint"]["position_hex"],
        "0000000000000032"
    );
    for table in [
        ok(&url, &["offsets", "get", "--name", "counted"]),
        ok(&url, &["sources", "status", "--name", "counted"]),
    ] {
        assert!(table.contains("POSITION"), "{table}");
        assert!(table.contains("index=50"), "{table}");
    }

    // 2. Reset to `index=40` and started again, it writes 40..49 once more.
    ok(&url, &["sources", "stop", "--name", "counted"]);
    ok(
        &url,
        &[
            "offsets",
            "reset",
            "--name",
            "counted",
            "--position",
            "index=40",
        ],
    );
    let reset = ok_json(&url, &["offsets", "get", "--name", "counted"]);
    let reset = &reset["offsets"][0]["checkpoint"];
    assert_eq!(reset["position_text"], "index=40", "{reset}");
    let commits_at_reset = reset["commits"].as_u64().expect("commits");
    ok(&url, &["sources", "start", "--name", "counted"]);
    let resumed = finished(commits_at_reset);
    assert_eq!(
        resumed["records_written"], 10,
        "the run after the reset writes indexes 40..49 only: {resumed}"
    );
    assert_eq!(resumed["checkpoint"]["position_text"], "index=50");

    // 3. A file sink's position: the topic's last message id, then the file's length.
    ok(
        &url,
        &[
            "sinks",
            "create",
            "--name",
            "copy",
            "--sink-type",
            "file",
            "--inputs",
            &topic,
            "--sink-config",
            &format!(r#"{{"path": {:?}}}"#, out.display().to_string()),
        ],
    );
    let prefix = format!("{topic}=");
    let shown = wait_until("the sink checkpointed all it wrote", || {
        let offsets = ok_json(&url, &["offsets", "get", "--name", "copy"]);
        let text = offsets["offsets"][0]["checkpoint"]["position_text"]
            .as_str()?
            .to_owned();
        let length = std::fs::metadata(&out).ok()?.len();
        // 60 records of 100 bytes and a newline each.
        (length == 60 * 101 && text.ends_with(&format!(" sink=length={length}"))).then_some(text)
    });
    let (partition, _) = shown.split_once(' ').expect("two parts");
    let id = partition.strip_prefix(&prefix).expect("the topic first");
    assert_eq!(id.split(':').count(), 3, "{shown}");
    ok(&url, &["sinks", "stop", "--name", "copy"]);
    ok(
        &url,
        &["offsets", "reset", "--name", "copy", "--position", &shown],
    );
    let back = ok_json(&url, &["offsets", "get", "--name", "copy"]);
    assert_eq!(
        back["offsets"][0]["checkpoint"]["position_text"],
        shown.as_str()
    );
    assert!(
        ok(&url, &["sinks", "status", "--name", "copy"]).contains(&shown),
        "the status table shows the sink's position"
    );

    // 4. Text that is no position of the type names the field and the shape.
    for (name, text, needle) in [
        ("counted", "index=forty", "is not index=<whole number>"),
        ("copy", "index=40", "<topic>=<ledger>:<entry>:<batch index>"),
        (
            "copy",
            &format!("{prefix}1:2 sink=length=0"),
            "has no message id",
        ),
        (
            "copy",
            &format!("{prefix}1:2:-1 sink=lines=3"),
            "is not length=<whole number>",
        ),
    ] {
        let kind = if name == "counted" {
            "sources"
        } else {
            "sinks"
        };
        if kind == "sources" {
            ok(&url, &["sources", "stop", "--name", name]);
        }
        let line = refused(
            &url,
            &["offsets", "reset", "--name", name, "--position", text],
        );
        assert!(
            line.starts_with("error: INVALID_ARGUMENT: invalid position: "),
            "{text}: {line}"
        );
        assert!(
            line.contains(needle),
            "{text} should say {needle:?}: {line}"
        );
    }
    // Nothing refused was stored.
    let kept = ok_json(&url, &["offsets", "get", "--name", "copy"]);
    assert_eq!(
        kept["offsets"][0]["checkpoint"]["position_text"],
        shown.as_str()
    );
}

#[test]
fn t60_a_sinks_error_policy_and_runtime_options_round_trip_and_bad_ones_are_refused() {
    let pulsar_admin = fake_pulsar_admin();
    let cluster = Cluster::start(1, &["--pulsar-admin-url", &pulsar_admin], &[]);
    let url = cluster.url(0);
    fn sink<'a>(verb: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["sinks", verb, "--name", "dlq"];
        if verb == "create" {
            args.extend(["--sink-type", "blackhole", "--inputs", "in"]);
        }
        args.extend(extra);
        args
    }
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            sink("create", &["--error-policy", "dead-letter"]),
            "INVALID_ARGUMENT",
            "dead_letter_topic: is required with error policy dead-letter",
        ),
        (
            sink(
                "create",
                &["--error-policy", "skip", "--dead-letter-topic", "d"],
            ),
            "INVALID_ARGUMENT",
            "dead_letter_topic",
        ),
        (
            sink("create", &["--dead-letter-topic", "in"]),
            "INVALID_ARGUMENT",
            "would be read again",
        ),
        (
            sink("create", &["--error-policy", "retry"]),
            "INVALID_ARGUMENT",
            "--error-policy",
        ),
        (
            sink("create", &["--subscription-position", "Middle"]),
            "INVALID_ARGUMENT",
            "--subscription-position",
        ),
        (
            sink("create", &["--batch-size", "0"]),
            "INVALID_ARGUMENT",
            "batch_size",
        ),
        (
            sink("create", &["--receiver-queue-size", "1000000"]),
            "INVALID_ARGUMENT",
            "receiver_queue_size",
        ),
        (
            sink(
                "create",
                &[
                    "--dead-letter-topic",
                    "persistent://public/default/dlq",
                    "--processing-guarantees",
                    "EFFECTIVELY_ONCE",
                ],
            ),
            "FAILED_PRECONDITION",
            "dead_letter_topic: effectively-once needs broker deduplication",
        ),
    ];
    for (args, code, needle) in &cases {
        let line = refused(&url, args);
        assert!(
            line.starts_with(&format!("error: {code}: ")),
            "{args:?} should be {code}: {line}"
        );
        assert!(
            line.contains(needle),
            "{args:?} should name {needle:?}: {line}"
        );
    }
    assert!(names(&ok_json(&url, &["sinks", "list"])).is_empty());

    // A dead-letter topic alone implies the policy; the broker deduplicates it (stand-in).
    let created = ok_json(
        &url,
        &sink(
            "create",
            &[
                "--dead-letter-topic",
                "persistent://public/dedup/dlq",
                "--processing-guarantees",
                "EFFECTIVELY_ONCE",
                "--batch-size",
                "10",
                "--receiver-queue-size",
                "20",
                "--subscription-position",
                "Latest",
            ],
        ),
    );
    assert_eq!(created["error_policy"], "dead-letter", "{created}");
    assert_eq!(
        created["dead_letter_topic"],
        "persistent://public/dedup/dlq"
    );
    assert_eq!(created["batch_size"], 10);
    assert_eq!(created["receiver_queue_size"], 20);
    assert_eq!(created["subscription_position"], "Latest");
    let got = ok_json(&url, &["sinks", "get", "--name", "dlq"]);
    assert_eq!(got, created, "get shows what create answered");
    // Another policy drops the topic and keeps the options.
    let updated = ok_json(&url, &sink("update", &["--error-policy", "skip"]));
    assert_eq!(updated["error_policy"], "skip", "{updated}");
    assert_eq!(updated.get("dead_letter_topic"), None, "{updated}");
    assert_eq!(updated["batch_size"], 10);
    let updated = ok_json(&url, &sink("update", &["--batch-size", "30"]));
    assert_eq!(updated["batch_size"], 30, "{updated}");
    assert_eq!(updated["receiver_queue_size"], 20);
    let status = ok_json(&url, &["sinks", "status", "--name", "dlq"]);
    let instance = &status["instances"][0];
    for counter in ["records_skipped", "records_dead_lettered"] {
        assert!(instance.get(counter).is_some(), "{counter}: {status}");
    }
    assert!(ok(&url, &["sinks", "status", "--name", "dlq"]).contains("DEAD_LETTERED"));
}
