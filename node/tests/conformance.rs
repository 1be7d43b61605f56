//! The connector conformance suite (../shared/STYLE.md 9): every built-in source and sink,
//! run by the supervisor against the real broker and its real external system, passes the
//! same checks.
//!
//! - t10: bad config -> clear error. Each type's bad configs fail validation with
//!   `InvalidConfig` naming the field; the same configs written to the store (and those only a
//!   running instance can find out: a missing table, a wrong password) leave their instances
//!   FAILED with that reason, retried with backoff, while the node keeps running others.
//! - t20: sources (datagen, file) under each guarantee, their supervisor restarted mid-stream:
//!   the restarted instance starts at its checkpoint (it reads less than everything) and the
//!   topic holds the input as declared (effectively-once: record by record; at-least-once: no
//!   loss; at-most-once: no repeat).
//! - t30: sinks (file, postgres, blackhole), the same through a restart: the file and the
//!   table read back, the blackhole's checkpointed count.
//! - t40: the external system goes away mid-stream and comes back: PostgreSQL behind a proxy
//!   that cuts and refuses connections, the file sink's directory replaced by a file, the file
//!   source's directory missing. The instance is FAILED naming the system, its restarts grow,
//!   and once the system is back it recovers with every record exactly once.
//!
//! datagen and blackhole have no external system, so t40 has nothing to take away from them.
//!
//! Needs the shared broker (`deploy/pulsar/standalone.sh start`) and PostgreSQL
//! (`deploy/postgres/postgres.sh start`, whose packages bring the `psql` the tables are read
//! back with).

#[path = "common/runtime.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_actors::api::ConnectorError;
use ferry_actors::api::registry::{self, InstanceContext};
use ferry_actors::connectors::registry as types;
use ferry_node::meta::state::{ConnectorKind, ConnectorSpec, Guarantee, InstanceKey, Secret};
use ferry_node::supervisor::ReportedState;
use ferry_test_support::postgres::pg_url;
use ferry_test_support::unique_name;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use harness::{
    GUARANTEES, Harness, check, datagen, file_indexes, file_sink, json_string, read_indexes, spec,
    topic,
};

/// A password no error may show.
const SECRET: &str = "conformance-secret-7731";
/// Records per scenario: small, so the whole file runs in seconds.
const COUNT: u64 = 1_000;
/// Records/s of the inputs: the restart lands mid-stream.
const RATE: u64 = 1_000;

// ---------------------------------------------------------------------------------------
// t10: bad config -> clear error

/// A config a connector type refuses, and the field its error must name.
struct BadConfig {
    kind: ConnectorKind,
    connector_type: &'static str,
    config: Value,
    field: &'static str,
}

fn bad(
    kind: ConnectorKind,
    connector_type: &'static str,
    config: Value,
    field: &'static str,
) -> BadConfig {
    BadConfig {
        kind,
        connector_type,
        config,
        field,
    }
}

/// A PostgreSQL sink config for `table` (at `url`, the test server's by default), valid
/// unless changed.
fn postgres_config(url: &PgUrl, table: &str) -> Value {
    json!({
        "url": url.without_credentials(),
        "user": url.user,
        "password": url.password,
        "table": table,
        "columns": {"index": "idx"},
    })
}

/// Bad configs of every built-in type that validation alone refuses.
fn bad_configs() -> Vec<BadConfig> {
    let pg = PgUrl::parse(&pg_url());
    let postgres = |change: Value| {
        let mut config = postgres_config(&pg, "conformance_table");
        config["password"] = json!(SECRET);
        for (field, value) in change.as_object().expect("an object") {
            if value.is_null() {
                config.as_object_mut().expect("an object").remove(field);
            } else {
                config[field] = value.clone();
            }
        }
        config
    };
    use ConnectorKind::{Sink, Source};
    vec![
        bad(Source, "datagen", json!({"rate": 0}), "rate"),
        bad(
            Source,
            "datagen",
            json!({"payload_size": 5_000_000}),
            "payload_size",
        ),
        bad(Source, "datagen", json!({"count": "ten"}), "count"),
        bad(Source, "datagen", json!({"colour": "red"}), "colour"),
        bad(Source, "file", json!({}), "path_glob"),
        bad(Source, "file", json!({"path_glob": 3}), "path_glob"),
        bad(
            Source,
            "file",
            json!({"path_glob": "/tmp/*/in-*.log"}),
            "path_glob",
        ),
        bad(
            Source,
            "file",
            json!({"path_glob": "/tmp/in-*.log", "poll_interval_ms": 0}),
            "poll_interval_ms",
        ),
        bad(Sink, "file", json!({}), "path"),
        bad(Sink, "file", json!({"path": "/tmp/out/"}), "path"),
        bad(Sink, "file", json!({"path": 7}), "path"),
        bad(
            Sink,
            "file",
            json!({"path": "/tmp/out", "mode": "append"}),
            "mode",
        ),
        bad(
            Sink,
            "postgres",
            postgres(json!({"password": null})),
            "password",
        ),
        bad(Sink, "postgres", postgres(json!({"url": pg_url()})), "url"),
        bad(
            Sink,
            "postgres",
            postgres(json!({"url": "mysql:/x"})),
            "url",
        ),
        bad(Sink, "postgres", postgres(json!({"mode": "merge"})), "mode"),
        bad(
            Sink,
            "postgres",
            postgres(json!({"mode": "upsert"})),
            "key_column",
        ),
        bad(
            Sink,
            "postgres",
            postgres(json!({"table": "a.b.c"})),
            "table",
        ),
        bad(
            Sink,
            "postgres",
            postgres(json!({"table": "t; drop"})),
            "table",
        ),
        bad(
            Sink,
            "postgres",
            postgres(json!({"columns": {}})),
            "columns",
        ),
        bad(
            Sink,
            "postgres",
            postgres(json!({"batch_size": 0})),
            "batch_size",
        ),
        bad(Sink, "blackhole", json!({"anything": 1}), "anything"),
    ]
}

/// Returns the spec storing `config` as the admin API would: plain values as JSON texts,
/// secret fields apart.
fn stored_spec(
    kind: ConnectorKind,
    connector_type: &str,
    config: &Value,
    topic: &str,
) -> ConnectorSpec {
    let definition = types().find(kind, connector_type).expect("a built-in type");
    let stored = registry::split_config(
        &definition.definition,
        config.as_object().expect("a config object"),
    )
    .expect("a config object");
    let mut spec = spec(kind, connector_type, &[], topic, Guarantee::AtLeastOnce);
    spec.config = stored.plain;
    spec.secrets = stored
        .secrets
        .into_iter()
        .map(|(field, value)| (field, Secret::new(value)))
        .collect();
    spec
}

#[test]
fn t10_every_type_refuses_bad_configs_naming_the_field() {
    let cases = bad_configs();
    for connector_type in types().types() {
        assert!(
            cases.iter().any(|case| case.kind == connector_type.kind
                && case.connector_type == connector_type.name),
            "the {} type {} has no bad-config case",
            connector_type.kind,
            connector_type.name
        );
    }
    let mut problems = Vec::new();
    for case in cases {
        let what = format!("{} {} {}", case.kind, case.connector_type, case.config);
        let outcome = types()
            .find(case.kind, case.connector_type)
            .expect("a built-in type")
            .validate(
                case.config.as_object().expect("a config object"),
                &InstanceContext::single("conformance"),
            );
        match outcome {
            Err(ConnectorError::InvalidConfig { field, reason })
                if field == case.field && !reason.is_empty() && !reason.contains(SECRET) => {}
            other => problems.push(format!("{what}: {other:?}, not one naming {}", case.field)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn t11_an_instance_with_a_bad_config_is_failed_with_the_reason_and_retried() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let pg = PgUrl::parse(&pg_url());
        // Some input, so that a sink that only fails on its first write gets to write.
        let input = topic("conformance-bad-input");
        harness
            .create(
                &unique_name("input"),
                datagen(&input, Guarantee::EffectivelyOnce, 10, RATE),
            )
            .await;
        let mut cases = bad_configs();
        // What validation cannot know and a running instance finds out.
        let missing_table = postgres_config(&pg, &unique_name("absent").replace('-', "_"));
        cases.push(bad(ConnectorKind::Sink, "postgres", missing_table, "table"));
        let mut wrong_password = postgres_config(&pg, "conformance_table");
        wrong_password["password"] = json!(SECRET);
        cases.push(bad(
            ConnectorKind::Sink,
            "postgres",
            wrong_password,
            "password",
        ));

        let mut created = Vec::new();
        for case in &cases {
            let output = topic("conformance-bad-output");
            let topic = match case.kind {
                ConnectorKind::Source => &output,
                ConnectorKind::Sink => &input,
            };
            let spec = stored_spec(case.kind, case.connector_type, &case.config, topic);
            let key = harness.create(&unique_name("bad"), spec).await;
            created.push((key, case));
        }
        let mut problems = Vec::new();
        for (key, case) in &created {
            let what = format!("{} {} {}", case.kind, case.connector_type, case.config);
            let report = harness
                .wait_report(key, "is FAILED and retried", |report| {
                    report.state == ReportedState::Failed && report.restarts >= 2
                })
                .await;
            let error = report.status.last_error.unwrap_or_default();
            if !error.contains(&format!("field {}", case.field)) || error.contains(SECRET) {
                problems.push(format!("{what}: {error:?} does not name {}", case.field));
            }
            assert!(report.retry_at.is_some(), "{what}: no retry due");
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        // Retried again and again, with backoff (the delay doubles up to 400 ms here).
        let (key, _) = &created[0];
        let first = harness.board.get(key).expect("a report").restarts;
        harness
            .wait_report(key, "is retried twice more", |report| {
                report.restarts >= first + 2
            })
            .await;
        // The node keeps running other connectors.
        let good = harness
            .create(
                &unique_name("good"),
                datagen(&topic("conformance-good"), Guarantee::AtLeastOnce, 10, RATE),
            )
            .await;
        harness.wait_state(&good, ReportedState::Finished).await;
        harness.stop().await;
    })
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// t20: sources

/// Runs the source `make` builds (for an output topic and a guarantee) under each guarantee
/// while `feed` supplies its input, restarts the supervisor once every instance has
/// checkpointed a quarter of `COUNT`, and checks each topic and that each restarted instance
/// resumed from its checkpoint.
async fn source_survives_a_restart(
    make: impl Fn(&str, Guarantee) -> ConnectorSpec,
    feed: tokio::task::JoinHandle<()>,
) {
    let mut harness = Harness::start().await;
    let mut instances = Vec::new();
    for guarantee in GUARANTEES {
        let output = topic("conformance-source");
        let key = harness
            .create(&unique_name("source"), make(&output, guarantee))
            .await;
        instances.push((guarantee, key, output));
    }
    for (_, key, _) in &instances {
        harness.wait_confirmed(key, COUNT / 4).await;
    }
    harness.restart_supervisor().await;
    feed.await.expect("the input was written");
    for (guarantee, key, output) in &instances {
        let distinct = if *guarantee == Guarantee::AtMostOnce {
            1
        } else {
            COUNT as usize
        };
        let indexes = read_indexes(output, distinct).await;
        check(*guarantee, &indexes, COUNT);
        let report = harness.board.get(key).expect("a report");
        assert!(
            report.status.records_read < COUNT,
            "{guarantee:?}: the restarted instance read {} records: it did not resume from its \
             checkpoint",
            report.status.records_read
        );
    }
    harness.stop().await;
}

#[test]
fn t20_datagen_source_resumes_from_its_checkpoint() {
    ferry_node::runtime::block_on(async {
        let feed = tokio::spawn(async {}); // It generates its own input.
        source_survives_a_restart(
            |output, guarantee| datagen(output, guarantee, COUNT, RATE),
            feed,
        )
        .await;
    })
    .expect("the runtime builds");
}

/// Appends `{"index":n}` lines for `indexes` to `dir/in-000.log` and, from the middle on,
/// `dir/in-001.log` (a rotation), about `RATE` lines a second.
fn write_lines(dir: PathBuf, indexes: std::ops::Range<u64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (RATE / 100).max(1);
        let mut next = indexes.start;
        while next < indexes.end {
            ticks.tick().await;
            let end = (next + per_tick).min(indexes.end);
            let file = if next < COUNT / 2 {
                "in-000.log"
            } else {
                "in-001.log"
            };
            let lines: String = (next..end)
                .map(|index| format!("{{\"index\":{index}}}\n"))
                .collect();
            append(&dir.join(file), lines.as_bytes());
            next = end;
        }
    })
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .unwrap_or_else(|error| panic!("append to {}: {error}", path.display()));
}

fn file_source(dir: &Path, output: &str, guarantee: Guarantee) -> ConnectorSpec {
    spec(
        ConnectorKind::Source,
        "file",
        &[
            (
                "path_glob",
                json_string(&dir.join("in-*.log").display().to_string()),
            ),
            ("poll_interval_ms", "20".to_owned()),
        ],
        output,
        guarantee,
    )
}

#[test]
fn t21_file_source_resumes_from_its_checkpoint() {
    ferry_node::runtime::block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let feed = write_lines(dir.path().to_owned(), 0..COUNT);
        let input = dir.path().to_owned();
        source_survives_a_restart(
            move |output, guarantee| file_source(&input, output, guarantee),
            feed,
        )
        .await;
    })
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// t30: sinks

/// Runs the sink `make` builds (for an input topic and a guarantee) under each guarantee
/// behind an effectively-once datagen source of `COUNT` records, restarts the supervisor once
/// every sink has checkpointed a quarter of them, waits until each took in the whole input,
/// and returns them. Each restarted instance must have resumed from its checkpoint.
async fn sinks_survive_a_restart(
    harness: &mut Harness,
    make: impl Fn(&str, Guarantee) -> ConnectorSpec,
) -> Vec<(Guarantee, InstanceKey)> {
    let input = topic("conformance-sink");
    let source = harness
        .create(
            &unique_name("gen"),
            datagen(&input, Guarantee::EffectivelyOnce, COUNT, RATE),
        )
        .await;
    let mut sinks = Vec::new();
    for guarantee in GUARANTEES {
        let key = harness
            .create(&unique_name("sink"), make(&input, guarantee))
            .await;
        sinks.push((guarantee, key));
    }
    for (_, key) in &sinks {
        harness.wait_confirmed(key, COUNT / 4).await;
    }
    harness.restart_supervisor().await;
    harness.wait_state(&source, ReportedState::Finished).await;
    for (guarantee, key) in &sinks {
        let report = harness.wait_drained(key, &input).await;
        assert!(
            report.status.records_read < COUNT,
            "{guarantee:?}: the restarted sink read {} records: it did not resume from its \
             checkpoint",
            report.status.records_read
        );
    }
    sinks
}

#[test]
fn t30_file_sink_resumes_from_its_checkpoint() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path_of = |guarantee: Guarantee| dir.path().join(format!("{guarantee:?}.jsonl"));
        let sinks = sinks_survive_a_restart(&mut harness, |input, guarantee| {
            file_sink(input, &path_of(guarantee), guarantee)
        })
        .await;
        for (guarantee, key) in sinks {
            let path = path_of(guarantee);
            check(guarantee, &file_indexes(&path), COUNT);
            // The checkpoint covers the whole file: nothing past it to cut on a recovery.
            let checkpoint = harness.sink_checkpoint(&key).expect("a checkpoint");
            let length = std::fs::metadata(&path).expect("the output").len();
            assert_eq!(
                checkpoint.sink,
                length.to_be_bytes().to_vec(),
                "{guarantee:?}"
            );
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t31_postgres_sink_resumes_from_its_checkpoint() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let pg = PgUrl::parse(&pg_url());
        let mut tables = BTreeMap::new();
        for guarantee in GUARANTEES {
            tables.insert(format!("{guarantee:?}"), create_table().await);
        }
        let sinks = sinks_survive_a_restart(&mut harness, |input, guarantee| {
            let config = postgres_config(&pg, &tables[&format!("{guarantee:?}")]);
            stored_sink(&config, input, guarantee)
        })
        .await;
        for (guarantee, _) in sinks {
            let indexes = table_indexes(&tables[&format!("{guarantee:?}")]).await;
            check(guarantee, &indexes, COUNT);
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t32_blackhole_sink_resumes_from_its_checkpoint() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let sinks = sinks_survive_a_restart(&mut harness, |input, guarantee| {
            spec(ConnectorKind::Sink, "blackhole", &[], input, guarantee)
        })
        .await;
        for (guarantee, key) in sinks {
            // Its counter, restored from the checkpoint and counted on: every record once.
            let checkpoint = harness.sink_checkpoint(&key).expect("a checkpoint");
            let counted =
                u64::from_be_bytes(checkpoint.sink.as_slice().try_into().expect("8 bytes"));
            match guarantee {
                Guarantee::EffectivelyOnce => assert_eq!(counted, COUNT, "{guarantee:?}"),
                Guarantee::AtLeastOnce => assert!(counted >= COUNT, "{guarantee:?}: {counted}"),
                Guarantee::AtMostOnce => assert!(counted <= COUNT, "{guarantee:?}: {counted}"),
            }
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// t40: the external system goes away and comes back

/// Waits until `key` is FAILED with an error containing every one of `words` and its
/// restarts grew by two more (retried with backoff, still failing); returns the error.
async fn wait_failing(harness: &Harness, key: &InstanceKey, words: &[&str]) -> String {
    let names = |report: &ferry_node::supervisor::InstanceReport| {
        report.state == ReportedState::Failed
            && report
                .status
                .last_error
                .as_deref()
                .is_some_and(|error| words.iter().all(|word| error.contains(word)))
    };
    let first = harness
        .wait_report(key, &format!("is FAILED naming {words:?}"), names)
        .await;
    let report = harness
        .wait_report(key, "is retried twice more, still failing", |report| {
            names(report) && report.restarts >= first.restarts + 2
        })
        .await;
    assert!(report.retry_at.is_some(), "no retry due");
    let error = report.status.last_error.unwrap_or_default();
    eprintln!(
        "{key} is FAILED after {} restarts: {error}",
        report.restarts
    );
    error
}

/// Records an outage scenario sends: enough that the outage lands mid-stream.
const OUTAGE_COUNT: u64 = COUNT * 2;

/// Runs the effectively-once sink `make` builds (for an input topic) behind a datagen source
/// of `OUTAGE_COUNT` records. Once the sink checkpointed a fifth of them, `cut` takes its
/// external system away: the sink must be FAILED with an error naming each of `words`, and
/// retried; then `restore` brings the system back and the sink must take in the whole input.
async fn sink_recovers_from_an_outage(
    make: impl FnOnce(&str) -> ConnectorSpec,
    cut: impl FnOnce(),
    words: &[&str],
    restore: impl FnOnce(),
) {
    let harness = Harness::start().await;
    let input = topic("conformance-outage");
    let source = harness
        .create(
            &unique_name("gen"),
            datagen(&input, Guarantee::EffectivelyOnce, OUTAGE_COUNT, RATE),
        )
        .await;
    let sink = harness.create(&unique_name("sink"), make(&input)).await;
    harness.wait_confirmed(&sink, OUTAGE_COUNT / 5).await;
    cut();
    wait_failing(&harness, &sink, words).await;
    restore();
    harness.wait_state(&source, ReportedState::Finished).await;
    harness.wait_drained(&sink, &input).await;
    harness.stop().await;
}

#[test]
fn t40_postgres_sink_retries_while_the_server_is_unreachable_then_recovers() {
    ferry_node::runtime::block_on(async {
        let pg = PgUrl::parse(&pg_url());
        let proxy = Proxy::start(pg.address()).await;
        let table = create_table().await;
        let mut config = postgres_config(&pg, &table);
        config["url"] = json!(format!("postgres://{}/{}", proxy.address, pg.database));
        sink_recovers_from_an_outage(
            |input| stored_sink(&config, input, Guarantee::EffectivelyOnce),
            // Connections cut mid-stream, new ones refused.
            || proxy.set_up(false),
            &["postgres"],
            || proxy.set_up(true),
        )
        .await;
        let indexes = table_indexes(&table).await;
        check(Guarantee::EffectivelyOnce, &indexes, OUTAGE_COUNT);
    })
    .expect("the runtime builds");
}

#[test]
fn t41_file_sink_retries_while_its_directory_is_gone_then_recovers() {
    ferry_node::runtime::block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = dir.path().join("out");
        let away = dir.path().join("away");
        let path = out.join("out.jsonl");
        sink_recovers_from_an_outage(
            |input| file_sink(input, &path, Guarantee::EffectivelyOnce),
            // The directory goes away mid-stream, and a file takes its name so that it
            // cannot be created again.
            || {
                std::fs::rename(&out, &away).expect("move the directory away");
                std::fs::write(&out, b"not a directory").expect("block the directory's name");
            },
            &["file", &out.display().to_string()],
            || {
                std::fs::remove_file(&out).expect("unblock");
                std::fs::rename(&away, &out).expect("move the directory back");
            },
        )
        .await;
        check(
            Guarantee::EffectivelyOnce,
            &file_indexes(&path),
            OUTAGE_COUNT,
        );
    })
    .expect("the runtime builds");
}

#[test]
fn t42_file_source_retries_while_its_directory_is_missing_then_recovers() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let missing = dir.path().join("later");
        let output = topic("conformance-file-source-down");
        let source = harness
            .create(
                &unique_name("files"),
                file_source(&missing, &output, Guarantee::EffectivelyOnce),
            )
            .await;
        wait_failing(
            &harness,
            &source,
            &["file unavailable", &missing.display().to_string()],
        )
        .await;

        // The directory appears: the source recovers and reads every line once.
        std::fs::create_dir(&missing).expect("create the directory");
        write_lines(missing, 0..COUNT)
            .await
            .expect("the input was written");
        check(
            Guarantee::EffectivelyOnce,
            &read_indexes(&output, COUNT as usize).await,
            COUNT,
        );
        let report = harness.wait_state(&source, ReportedState::Running).await;
        assert!(report.restarts >= 2, "{report:?}");
        harness.stop().await;
    })
    .expect("the runtime builds");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: the server's URL, tables read back with psql, and a proxy that can be cut

/// The parts of the test server's URL `postgres://user:password@host:port/database`.
struct PgUrl {
    user: String,
    password: String,
    host_port: String,
    database: String,
}

impl PgUrl {
    fn parse(url: &str) -> Self {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .expect("a postgres:// URL");
        let (credentials, rest) = rest.rsplit_once('@').expect("credentials in the URL");
        let (user, password) = credentials.split_once(':').expect("user:password");
        let (host_port, database) = rest.split_once('/').expect("a database");
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
            host_port: host_port.to_owned(),
            database: database.split('?').next().unwrap_or_default().to_owned(),
        }
    }

    fn without_credentials(&self) -> String {
        format!("postgres://{}/{}", self.host_port, self.database)
    }

    fn address(&self) -> SocketAddr {
        use std::net::ToSocketAddrs;
        self.host_port
            .to_socket_addrs()
            .expect("resolve the server")
            .next()
            .expect("an address")
    }
}

/// A `postgres` sink spec for `config` (its password kept as a secret).
fn stored_sink(config: &Value, input: &str, guarantee: Guarantee) -> ConnectorSpec {
    let mut spec = stored_spec(ConnectorKind::Sink, "postgres", config, input);
    spec.guarantee = guarantee;
    spec
}

/// Runs `sql` with psql against the test server and returns its unaligned output.
async fn psql(sql: &str) -> String {
    let url = pg_url();
    let sql = sql.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("psql")
            .arg(&url)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", &sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    })
    .await
    .expect("the psql task")
}

/// Creates a new table with an `idx` column (rows keep their insertion order in `id`).
async fn create_table() -> String {
    let table = unique_name("conformance").replace('-', "_");
    psql(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, idx bigint NOT NULL)"
    ))
    .await;
    table
}

/// The `idx` values of `table` in insertion order.
async fn table_indexes(table: &str) -> Vec<u64> {
    psql(&format!("SELECT idx FROM {table} ORDER BY id"))
        .await
        .lines()
        .map(|line| line.trim().parse().expect("a number"))
        .collect()
}

/// A TCP proxy to a server that can be switched off: off, it cuts every connection and
/// closes new ones at once; on, it forwards.
struct Proxy {
    address: SocketAddr,
    up: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("an address");
        let (up, watching) = watch::channel(true);
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = watching.clone();
                if !*up.borrow() {
                    continue; // Dropped: closed at once.
                }
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            address,
            up,
            accepting,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.set_up(false);
    }
}
