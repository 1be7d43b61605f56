//! Failover of an effectively-once source when its node is killed.
//!
//! 1. Three `ferry serve` nodes on the real broker.
//! 2. A datagen source, parallelism 3, effectively-once, 4,000 records per instance at 800/s.
//! 3. Once every instance runs and wrote some, `kill -9` a node (not the leader) that owns one.
//! 4. The leader marks it Down after its lease; its instance moves to a survivor with a new
//!    epoch and resumes from the checkpoint; every instance finishes.
//! 5. The topic holds, per instance (producer), sequence ids 1..=4000 and keys 0..3999 exactly
//!    once and in order; the time from the kill to the moved instance's next message is logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_cluster_tests::topic::read_by_producer;
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::{unique_name, wait};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const COUNT: u64 = 4_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Asserts that `keys` is exactly `0..count` in order, naming the first difference.
fn check_exactly_once_in_order(producer: &str, keys: &[u64], count: u64) {
    if let Some((position, key)) = keys
        .iter()
        .enumerate()
        .find(|(position, key)| **key != *position as u64)
    {
        panic!(
            "{producer}: at position {position} key {key}, expected {position} (around it: {:?})",
            &keys[position.saturating_sub(3)..(position + 3).min(keys.len())]
        );
    }
    assert_eq!(
        keys.len() as u64,
        count,
        "{producer}: {} records, expected {count}",
        keys.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_killing_an_owner_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(3, &[]);
    let topic = format!("persistent://public/default/{}", unique_name("failover"));
    let config = format!(r#"{{"count": {COUNT}, "rate": 800, "payload_size": 64}}"#);
    cluster.json(
        1,
        &[
            "sources",
            "create",
            "--name",
            "gen",
            "--source-type",
            "datagen",
            "--destination-topic-name",
            &topic,
            "--parallelism",
            "3",
            "--processing-guarantees",
            "EFFECTIVELY_ONCE",
            "--source-config",
            &config,
        ],
    );
    phase("source created");

    let leader = cluster.leader(1).expect("a leader");
    let owners: Vec<Value> = wait::until("every instance runs and wrote some", TIMEOUT, || {
        let instances = cluster.instances(1, "sources", "gen");
        async move {
            let instances = instances?;
            (instances.len() == 3
                && instances.iter().all(|instance| {
                    instance["state"] == "RUNNING"
                        && instance["records_written"].as_u64().unwrap_or(0) >= 400
                }))
            .then_some(instances)
        }
    })
    .await;
    let victim_instance = owners
        .iter()
        .find(|instance| instance["node"].as_u64() != Some(leader))
        .expect("an instance owned by a follower (the scheduler spreads 3 over 3 nodes)");
    let victim = victim_instance["node"].as_u64().expect("a node");
    let moved = victim_instance["instance_id"]
        .as_u64()
        .expect("an instance id");
    let old_epoch = victim_instance["epoch"].as_u64().expect("an epoch");
    phase(&format!(
        "killing node {victim}, owner of instance {moved} (leader is node {leader})"
    ));
    let killed_at = now_ms();
    cluster.kill(victim);

    let survivor = cluster.running()[0];
    wait::until("the instance moved to a survivor", TIMEOUT, || {
        let instances = cluster.instances(survivor, "sources", "gen");
        async move {
            let instance = instances?.into_iter().nth(moved as usize)?;
            (instance["node"].as_u64() != Some(victim)
                && instance["epoch"].as_u64().unwrap_or(0) > old_epoch)
                .then_some(())
        }
    })
    .await;
    phase(&format!("instance {moved} moved"));
    wait::until("every instance finished", TIMEOUT, || {
        let instances = cluster.instances(survivor, "sources", "gen");
        async move {
            let instances = instances?;
            instances
                .iter()
                .all(|instance| instance["state"] == "FINISHED")
                .then_some(())
        }
    })
    .await;
    phase("every instance finished; checking the topic");

    let by_producer = read_by_producer(&topic, 3 * COUNT as usize).await;
    assert_eq!(
        by_producer.len(),
        3,
        "one producer per instance: {:?}",
        by_producer.keys()
    );
    for (producer, reads) in &by_producer {
        // Keys carry each record's index (a batch's messages share one sequence id in the
        // metadata a consumer sees, so the key is the per-record identity).
        let keys: Vec<u64> = reads
            .iter()
            .map(|read| {
                read.key
                    .as_deref()
                    .and_then(|key| key.parse().ok())
                    .unwrap_or(u64::MAX)
            })
            .collect();
        check_exactly_once_in_order(producer, &keys, COUNT);
    }
    let moved_producer = format!("ferry-public-default-gen-{moved}");
    let resumed = by_producer[&moved_producer]
        .iter()
        .map(|read| read.publish_time_ms)
        .find(|time| *time > killed_at + 50)
        .expect("the moved instance published after the kill");
    phase(&format!(
        "failover: instance {moved} published again {:.2} s after node {victim} was killed",
        (resumed - killed_at) as f64 / 1000.0
    ));
}
