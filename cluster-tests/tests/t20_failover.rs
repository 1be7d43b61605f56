//! Failover of an effectively-once source when its node is killed.
//!
//! 1. Three `ferry serve` nodes on the real broker.
//! 2. A datagen source, parallelism 3, effectively-once, 4,000 records per instance at 800/s.
//! 3. Once every instance runs and wrote some, `kill -9` a node (not the leader) that owns one.
//! 4. The leader marks it Down after its lease; its instance moves to a survivor with a new
//!    epoch and resumes from the checkpoint; every instance finishes.
//! 5. The topic holds, per instance (producer), keys 0..3999 exactly once and in order; the
//!    time from the kill to the moved instance's next message is logged.

use ferry_cluster_tests::scenario::{
    Datagen, all_in, check_exactly_once_in_order, keys, now_ms, producers_of, wait_all_writing,
    wait_sources,
};
use ferry_cluster_tests::topic::read_by_producer;
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::unique_name;

const COUNT: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_killing_an_owner_loses_and_duplicates_nothing() {
    let mut cluster = TestCluster::start(3, &[]);
    let topic = format!("persistent://public/default/{}", unique_name("failover"));
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 3,
        guarantee: "EFFECTIVELY_ONCE",
        count: COUNT,
        rate: 800,
    }
    .create(&cluster, 1);
    phase("source created");

    let leader = cluster.leader(1).expect("a leader");
    let owners = wait_all_writing(&cluster, "gen", 3, 400).await;
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

    wait_sources(&cluster, "gen", "the instance moved to a survivor", |all| {
        all.get(moved as usize).is_some_and(|instance| {
            instance["node"].as_u64() != Some(victim)
                && instance["epoch"].as_u64().unwrap_or(0) > old_epoch
        })
    })
    .await;
    phase(&format!("instance {moved} moved"));
    wait_sources(&cluster, "gen", "every instance finished", |all| {
        all_in(all, 3, "FINISHED")
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
        check_exactly_once_in_order(producer, &keys(reads, 3), COUNT);
    }
    let resumed = producers_of(&by_producer, moved)
        .first()
        .expect("the moved instance's producer")
        .1
        .iter()
        .map(|read| read.publish_time_ms)
        .find(|time| *time > killed_at + 50)
        .expect("the moved instance published after the kill");
    phase(&format!(
        "failover: instance {moved} published again {:.2} s after node {victim} was killed",
        (resumed - killed_at) as f64 / 1000.0
    ));
}
