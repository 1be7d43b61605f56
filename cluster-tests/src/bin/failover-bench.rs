//! `cargo run -p ferry-cluster-tests --bin failover-bench [-- KILLS]`: the failover benchmark.
//!
//! A three-node cluster runs an endless effectively-once datagen source (parallelism 3, one
//! instance per node, 400 records/s each). `KILLS` times (default 10): `kill -9` a follower that
//! owns an instance, time how long until that instance publishes again on a survivor (the
//! broker's publish time of its first record after the kill), restart the killed node and wait
//! until the cluster is balanced again (one instance per node, by hand-off). At the end the
//! source is stopped and the topic read back: per instance, every record must be there once
//! (`lost` counts gaps, `duplicated` repeats).
//!
//! Last line: `failover median_s=<m> max_s=<x> lost=<n> duplicated=<n>` (goal: median <= 2 s,
//! max <= 5 s, 0 and 0), after the lease the nodes ran with.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports on standard output"
)]

use std::collections::BTreeSet;

use ferry_cluster_tests::scenario::{Datagen, all_in, keys, now_ms, producers_of, wait_sources};
use ferry_cluster_tests::topic::read_by_producer;
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::unique_name;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kills: usize = std::env::args()
        .nth(1)
        .map(|text| text.parse().expect("KILLS is a number"))
        .unwrap_or(10);
    let mut cluster = TestCluster::start(3, &[]);
    let topic = format!(
        "persistent://public/default/{}",
        unique_name("failover-bench")
    );
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 3,
        guarantee: "EFFECTIVELY_ONCE",
        count: 100_000_000,
        rate: 400,
    }
    .create(&cluster, 1);
    let mut kills_at: Vec<(u64, u64)> = Vec::new();
    for round in 1..=kills {
        let owners = wait_sources(&cluster, "gen", "one running instance per node", |all| {
            all_in(all, 3, "RUNNING")
                && all
                    .iter()
                    .filter_map(|instance| instance["node"].as_u64())
                    .collect::<BTreeSet<_>>()
                    .len()
                    == 3
        })
        .await;
        let leader = cluster.leader(cluster.running()[0]).expect("a leader");
        let victim_instance = owners
            .iter()
            .find(|instance| instance["node"].as_u64() != Some(leader))
            .expect("an instance on a follower");
        let victim = victim_instance["node"].as_u64().expect("a node");
        let instance = victim_instance["instance_id"].as_u64().expect("an index");
        let epoch = victim_instance["epoch"].as_u64().expect("an epoch");
        kills_at.push((instance, now_ms()));
        cluster.kill(victim);
        wait_sources(&cluster, "gen", "the instance runs on a survivor", |all| {
            all.get(instance as usize).is_some_and(|moved| {
                moved["epoch"].as_u64().unwrap_or(0) > epoch && moved["state"] == "RUNNING"
            })
        })
        .await;
        phase(&format!(
            "round {round}: instance {instance} moved off node {victim}"
        ));
        cluster.restart(victim);
    }
    let stopped = cluster.cli(cluster.running()[0], &["sources", "stop", "--name", "gen"]);
    assert!(stopped.status.success(), "stop the source");
    wait_sources(&cluster, "gen", "every instance stopped", |all| {
        all.iter().all(|instance| instance["state"] == "STOPPED")
    })
    .await;

    let by_producer = read_by_producer(&topic, 1).await;
    let (mut lost, mut duplicated) = (0_u64, 0_u64);
    for (producer, reads) in &by_producer {
        let keys = keys(reads, 3);
        let distinct: BTreeSet<u64> = keys.iter().copied().collect();
        duplicated += (keys.len() - distinct.len()) as u64;
        let highest = distinct.last().copied().unwrap_or(0);
        lost += highest + 1 - distinct.len() as u64;
        phase(&format!(
            "{producer}: {} records, last index {highest}",
            keys.len()
        ));
    }
    let mut times: Vec<f64> = kills_at
        .iter()
        .map(|(instance, killed)| {
            let resumed = producers_of(&by_producer, *instance)
                .first()
                .expect("the instance's producer")
                .1
                .iter()
                .map(|read| read.publish_time_ms)
                .find(|time| *time > killed + 50)
                .expect("the instance published after the kill");
            (resumed - killed) as f64 / 1000.0
        })
        .collect();
    for (round, time) in times.iter().enumerate() {
        println!("kill {}: resumed after {time:.2} s", round + 1);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let max = times.last().copied().unwrap_or(0.0);
    println!("lease: 1.0 s (ferry serve --lease-ms default), heartbeat 0.17 s, margin 0.33 s");
    println!("failover median_s={median:.2} max_s={max:.2} lost={lost} duplicated={duplicated}");
}
