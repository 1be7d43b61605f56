//! Scaling by adding a node: instances rebalance by hand-off, and a hand-off repeats nothing
//! even under at-least-once (the old owner drains and commits a final checkpoint before the new
//! owner starts from it).
//!
//! 1. Three nodes; an at-least-once datagen source with parallelism 4 (2 + 1 + 1 instances).
//! 2. Mid-stream a fourth node joins: the scheduler hands one instance off to it (4 x 1).
//! 3. Every instance finishes; per instance, the records of its owners (one producer per epoch)
//!    together hold every key exactly once, in order.

use ferry_cluster_tests::scenario::{
    Datagen, all_in, check_exactly_once_in_order, keys, producers_of, wait_all_writing,
    wait_sources,
};
use ferry_cluster_tests::topic::read_by_producer;
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::unique_name;

const COUNT: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_joining_node_takes_its_share_by_hand_off_without_repeats() {
    let mut cluster = TestCluster::start(3, &[]);
    let topic = format!("persistent://public/default/{}", unique_name("rebalance"));
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 4,
        guarantee: "ATLEAST_ONCE",
        count: COUNT,
        rate: 500,
    }
    .create(&cluster, 1);
    wait_all_writing(&cluster, "gen", 4, 300).await;
    cluster.add_node(4);
    let balanced = wait_sources(&cluster, "gen", "node 4 runs an instance", |all| {
        all.iter()
            .any(|instance| instance["node"].as_u64() == Some(4) && instance["state"] == "RUNNING")
    })
    .await;
    let owners: std::collections::BTreeSet<u64> = balanced
        .iter()
        .filter_map(|instance| instance["node"].as_u64())
        .collect();
    assert_eq!(owners.len(), 4, "one instance per node: {balanced:?}");
    phase("rebalanced: one instance per node");
    wait_sources(&cluster, "gen", "every instance finished", |all| {
        all_in(all, 4, "FINISHED")
    })
    .await;

    let by_producer = read_by_producer(&topic, 4 * COUNT as usize).await;
    for instance in 0..4 {
        // At-least-once producers are named per epoch: join this instance's owners in order.
        let owners = producers_of(&by_producer, instance);
        let joined: Vec<u64> = owners
            .iter()
            .flat_map(|(_, reads)| keys(reads, 4))
            .collect();
        check_exactly_once_in_order(&format!("instance {instance}"), &joined, COUNT);
        if owners.len() > 1 {
            phase(&format!(
                "instance {instance} was handed off across {} owners with no repeat",
                owners.len()
            ));
        }
    }
}
