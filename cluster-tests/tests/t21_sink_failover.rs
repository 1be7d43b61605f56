//! Failover of effectively-once sinks when their node is killed.
//!
//! - t21: datagen -> topic -> `postgres` sink (rows and the input position in one transaction,
//!   the epoch as a fencing token): `kill -9` the sink's owner mid-stream; the table ends with
//!   every record once (row count and distinct count checked in PostgreSQL).
//! - t22: datagen -> topic -> `file` sink (truncated back to the checkpointed length by the new
//!   owner): the same kill; the file ends with every record once, in order.

use std::path::Path;
use std::process::Command;

use ferry_cluster_tests::scenario::{
    Datagen, TIMEOUT, all_in, check_exactly_once_in_order, wait_sources,
};
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::{unique_name, wait};
use serde_json::Value;

const COUNT: u64 = 3_000;

/// Runs `sql` with psql against the test PostgreSQL and returns its unaligned output.
fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-d", url, "-c", sql])
        .output()
        .expect("run psql (installed by deploy/postgres/postgres.sh)");
    assert!(
        output.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Creates the sink `name` from `config` and a datagen source into `topic`, kills the node
/// owning the sink's instance once it wrote some, and waits until the source finished and
/// `written()` reaches COUNT.
async fn kill_the_sink_owner(
    cluster: &mut TestCluster,
    sink_type: &str,
    config: &Value,
    written: impl Fn() -> u64,
) {
    let topic = format!(
        "persistent://public/default/{}",
        unique_name("sink-failover")
    );
    // A name no earlier run used: the postgres sink keys its stored position and epoch by it.
    let name = unique_name("out");
    cluster.json(
        1,
        &[
            "sinks",
            "create",
            "--name",
            &name,
            "--sink-type",
            sink_type,
            "--inputs",
            &topic,
            "--processing-guarantees",
            "EFFECTIVELY_ONCE",
            "--sink-config",
            &config.to_string(),
        ],
    );
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 1,
        guarantee: "EFFECTIVELY_ONCE",
        count: COUNT,
        rate: 600,
    }
    .create(cluster, 1);
    let owner = wait::until("the sink wrote some", TIMEOUT, || {
        let instances = cluster.instances(1, "sinks", &name);
        async move {
            let instance = instances?.into_iter().next()?;
            (instance["state"] == "RUNNING"
                && instance["records_written"].as_u64().unwrap_or(0) >= 300)
                .then(|| instance["node"].as_u64())
                .flatten()
        }
    })
    .await;
    phase(&format!("killing node {owner}, the sink's owner"));
    cluster.kill(owner);
    wait_sources(cluster, "gen", "the source finished", |all| {
        all_in(all, 1, "FINISHED")
    })
    .await;
    wait::until("the sink wrote every record", TIMEOUT, || {
        let count = written();
        async move { (count >= COUNT).then_some(()) }
    })
    .await;
    // Anything beyond COUNT would be a duplicate arriving late: let the sink settle (nothing
    // pending, running on a survivor) before the caller counts.
    let survivor = cluster.running()[0];
    wait::until("the sink is settled on a survivor", TIMEOUT, || {
        let instances = cluster.instances(survivor, "sinks", &name);
        async move {
            let instance = instances?.into_iter().next()?;
            (instance["state"] == "RUNNING"
                && instance["node"].as_u64() != Some(owner)
                && instance["records_received"] == instance["records_written"])
                .then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_killing_a_postgres_sink_owner_writes_every_row_once() {
    let url = ferry_test_support::postgres::pg_url();
    let table = unique_name("t21").replace('-', "_");
    psql(
        &url,
        &format!("CREATE TABLE {table} (idx bigint, seed bigint, data text)"),
    );
    // The sink takes the credentials as fields, not in its url.
    let (credentials, location) = url
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split_once('@'))
        .expect("postgres://user:password@host:port/db");
    let (user, password) = credentials.split_once(':').expect("user:password");
    let config = serde_json::json!({
        "url": format!("postgres://{location}"),
        "user": user,
        "password": password,
        "table": table,
        "columns": {"index": "idx", "seed": "seed", "data": "data"},
    });
    let mut cluster = TestCluster::start(3, &[]);
    let count_sql = format!("SELECT count(*) FROM {table}");
    kill_the_sink_owner(&mut cluster, "postgres", &config, || {
        psql(&url, &count_sql).parse().unwrap_or(0)
    })
    .await;
    let counts = psql(
        &url,
        &format!("SELECT count(*), count(DISTINCT idx), min(idx), max(idx) FROM {table}"),
    );
    assert_eq!(
        counts,
        format!("{COUNT}|{COUNT}|0|{}", COUNT - 1),
        "rows|distinct|min|max"
    );
    psql(&url, &format!("DROP TABLE {table}"));
}

/// The datagen indexes of the lines of `path`.
fn file_indexes(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["index"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_killing_a_file_sink_owner_writes_every_line_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("out.jsonl");
    let config = serde_json::json!({ "path": path.display().to_string() });
    let mut cluster = TestCluster::start(3, &[]);
    kill_the_sink_owner(&mut cluster, "file", &config, || {
        file_indexes(&path).len() as u64
    })
    .await;
    check_exactly_once_in_order("the file", &file_indexes(&path), COUNT);
}
