//! A pipeline through the real binary, as a user runs one: a three-node `ferry serve` cluster
//! on the real broker, a datagen source and a file sink created with the `ferry` CLI, status
//! asked of a follower (each owner reports its own instances), and a restart of the sink in the
//! middle of the stream: the file ends with every record exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::cluster::{Cluster, ok_json};
use ferry_test_support::broker::broker;
use ferry_test_support::{unique_name, wait};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The (seed, index) of every line of the file at `path`, in file order.
fn lines(path: &Path) -> Vec<(u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("a JSON line");
            (
                value["seed"].as_u64().expect("a seed"),
                value["index"].as_u64().expect("an index"),
            )
        })
        .collect()
}

/// The status of `name`'s instances, asked of the node at `url`.
fn instances(url: &str, kind: &str, name: &str) -> Vec<Value> {
    let status = ok_json(url, &[kind, "status", "--name", name]);
    status["instances"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_pipeline_runs_on_a_cluster_and_a_sink_restart_loses_and_repeats_nothing() {
    let broker = broker();
    let cluster = Cluster::start(
        3,
        &[
            "--pulsar-url",
            &broker.url,
            "--pulsar-admin-url",
            &broker.admin_url,
        ],
        &[],
    );
    let follower = cluster.url(cluster.follower());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("out.jsonl");
    let topic = format!("persistent://public/default/{}", unique_name("pipeline"));
    let sink_config = serde_json::json!({ "path": output.display().to_string() }).to_string();
    ok_json(
        &follower,
        &[
            "sinks",
            "create",
            "--name",
            "out",
            "--sink-type",
            "file",
            "--inputs",
            &topic,
            "--processing-guarantees",
            "EFFECTIVELY_ONCE",
            "--sink-config",
            &sink_config,
        ],
    );
    let create_source = |name: &str, seed: u64, count: u64| {
        let config = serde_json::json!({ "seed": seed, "count": count, "rate": 2000 }).to_string();
        ok_json(
            &follower,
            &[
                "sources",
                "create",
                "--name",
                name,
                "--source-type",
                "datagen",
                "--destination-topic-name",
                &topic,
                "--processing-guarantees",
                "EFFECTIVELY_ONCE",
                "--source-config",
                &config,
            ],
        );
    };
    create_source("gen1", 1, 3_000);

    // The sink is RUNNING on its owner, and the follower reports it with the owner's counters.
    let epoch = wait::until("the sink wrote some records", TIMEOUT, || {
        let instances = instances(&follower, "sinks", "out");
        async move {
            let instance = instances.first()?;
            (instance["state"] == "RUNNING"
                && instance["records_written"].as_u64().unwrap_or(0) >= 500)
                .then(|| instance["epoch"].as_u64().expect("an epoch"))
        }
    })
    .await;

    // Restart the sink mid-stream: its owner hands it off and it runs again under a new epoch.
    ok_json(&follower, &["sinks", "restart", "--name", "out"]);
    wait::until("the sink runs again under a new epoch", TIMEOUT, || {
        let instances = instances(&follower, "sinks", "out");
        async move {
            let instance = instances.first()?;
            let new_epoch = instance["epoch"].as_u64().unwrap_or(0);
            (instance["state"] == "RUNNING" && new_epoch > epoch).then_some(())
        }
    })
    .await;

    // A second source into the same topic, after the restart.
    create_source("gen2", 2, 1_000);
    for name in ["gen1", "gen2"] {
        wait::until(&format!("{name} finished"), TIMEOUT, || {
            let instances = instances(&follower, "sources", name);
            async move { (instances.first()?["state"] == "FINISHED").then_some(()) }
        })
        .await;
    }
    wait::until("the file holds all 4,000 records", TIMEOUT, || {
        let count = lines(&output).len();
        async move { (count >= 4_000).then_some(()) }
    })
    .await;
    // Nothing beyond them arrives either: the sink has nothing pending.
    wait::until("the sink is idle", TIMEOUT, || {
        let instances = instances(&follower, "sinks", "out");
        async move {
            let instance = instances.first()?;
            (instance["state"] == "RUNNING").then_some(())
        }
    })
    .await;

    let written = lines(&output);
    let distinct: BTreeSet<(u64, u64)> = written.iter().copied().collect();
    let expected: BTreeSet<(u64, u64)> = (0..3_000)
        .map(|index| (1, index))
        .chain((0..1_000).map(|index| (2, index)))
        .collect();
    assert_eq!(
        written.len(),
        distinct.len(),
        "records written twice after the restart"
    );
    assert_eq!(distinct, expected, "records lost or foreign");
    // Each source's records stay in order within the topic and so in the file.
    for seed in [1, 2] {
        let order: Vec<u64> = written
            .iter()
            .filter(|(line_seed, _)| *line_seed == seed)
            .map(|(_, index)| *index)
            .collect();
        assert!(
            order.windows(2).all(|pair| pair[0] < pair[1]),
            "seed {seed} out of order"
        );
    }
}
