//! The cluster under faults of its own: the Raft leader killed, an owner paused past its lease,
//! every node killed and restarted.
//!
//! - t40: kill -9 the leader during steady flow → a new leader; instances keep running (those
//!   on the old leader move); every record exactly once.
//! - t41: SIGSTOP an owner for longer than its lease, then SIGCONT → its instance moved to
//!   another node, and the paused node (self-fenced) publishes nothing after the new owner
//!   started, even under at-least-once (its producer name carries its epoch, so its output is
//!   told apart).
//! - t50: kill -9 every node mid-stream and start them all again → connectors and checkpoints
//!   are intact and the flow resumes; every record exactly once.

use ferry_cluster_tests::scenario::{
    Datagen, TIMEOUT, all_in, check_exactly_once_in_order, keys, producers_of, wait_all_writing,
    wait_sources,
};
use ferry_cluster_tests::topic::read_by_producer;
use ferry_cluster_tests::{TestCluster, phase};
use ferry_test_support::{unique_name, wait};

const COUNT: u64 = 3_000;

fn topic(prefix: &str) -> String {
    format!("persistent://public/default/{}", unique_name(prefix))
}

/// Reads `topic` and checks every producer wrote keys 0..COUNT exactly once in order.
async fn check_exactly_once(topic: &str, instances: usize) {
    let by_producer = read_by_producer(topic, instances * COUNT as usize).await;
    assert_eq!(by_producer.len(), instances, "{:?}", by_producer.keys());
    let parallelism = u32::try_from(instances).expect("a few instances");
    for (producer, reads) in &by_producer {
        check_exactly_once_in_order(producer, &keys(reads, parallelism), COUNT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_killing_the_leader_keeps_the_flow_exactly_once() {
    let mut cluster = TestCluster::start(3, &[]);
    let topic = topic("leader-kill");
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 3,
        guarantee: "EFFECTIVELY_ONCE",
        count: COUNT,
        rate: 600,
    }
    .create(&cluster, 1);
    wait_all_writing(&cluster, "gen", 3, 300).await;
    let leader = cluster.leader(1).expect("a leader");
    phase(&format!("killing the leader, node {leader}"));
    cluster.kill(leader);
    let survivor = cluster.running()[0];
    let old_leader = leader;
    let new_leader = wait::until("a new leader", TIMEOUT, || {
        let leader = cluster.leader(survivor);
        async move { leader.filter(|new| *new != old_leader) }
    })
    .await;
    phase(&format!("node {new_leader} leads"));
    wait_sources(&cluster, "gen", "every instance finished", |all| {
        all_in(all, 3, "FINISHED")
    })
    .await;
    check_exactly_once(&topic, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_a_paused_owner_fences_itself_before_its_instance_moves() {
    let cluster = TestCluster::start(3, &[]);
    let topic = topic("pause");
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 3,
        guarantee: "ATLEAST_ONCE",
        count: COUNT,
        rate: 600,
    }
    .create(&cluster, 1);
    let owners = wait_all_writing(&cluster, "gen", 3, 300).await;
    let leader = cluster.leader(1).expect("a leader");
    let paused_instance = owners
        .iter()
        .find(|instance| instance["node"].as_u64() != Some(leader))
        .expect("an instance on a follower");
    let paused = paused_instance["node"].as_u64().expect("a node");
    let moved = paused_instance["instance_id"].as_u64().expect("an index") as usize;
    let old_epoch = paused_instance["epoch"].as_u64().expect("an epoch");
    cluster.signal(paused, "STOP");
    let new_epoch = wait_sources(&cluster, "gen", "the paused node's instance moved", |all| {
        all.get(moved).is_some_and(|instance| {
            instance["epoch"].as_u64().unwrap_or(0) > old_epoch && instance["state"] == "RUNNING"
        })
    })
    .await[moved]["epoch"]
        .as_u64()
        .expect("an epoch");
    cluster.signal(paused, "CONT");
    phase(&format!(
        "instance {moved} runs under epoch {new_epoch}; node {paused} resumed"
    ));
    wait_sources(&cluster, "gen", "every instance finished", |all| {
        all_in(all, 3, "FINISHED")
    })
    .await;
    // The resumed node renews its lease again and takes an instance back by hand-off (a new
    // epoch again): what matters is that its old epoch wrote nothing after the move.
    let by_producer = read_by_producer(&topic, 3 * COUNT as usize).await;
    let epochs: Vec<(u64, &Vec<_>)> = producers_of(&by_producer, moved as u64)
        .into_iter()
        .filter_map(|(epoch, reads)| Some((epoch?, reads)))
        .collect();
    let last_old = epochs
        .iter()
        .filter(|(epoch, _)| *epoch == old_epoch)
        .flat_map(|(_, reads)| reads.iter().map(|read| read.publish_time_ms))
        .max()
        .expect("the paused owner published before its pause");
    let first_new = epochs
        .iter()
        .filter(|(epoch, _)| *epoch >= new_epoch)
        .flat_map(|(_, reads)| reads.iter().map(|read| read.publish_time_ms))
        .min()
        .expect("the new owner published");
    assert!(
        last_old <= first_new,
        "the paused owner published at {last_old}, after the new owner started at {first_new}"
    );
    // At-least-once: nothing lost across the instance's owners.
    let mut seen: Vec<u64> = epochs
        .iter()
        .flat_map(|(_, reads)| keys(reads, 3))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..COUNT).collect::<Vec<_>>(),
        "records lost across the moves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_every_node_killed_and_restarted_resumes_exactly_once() {
    let mut cluster = TestCluster::start(3, &[]);
    let topic = topic("restart-all");
    Datagen {
        name: "gen",
        topic: &topic,
        parallelism: 2,
        guarantee: "EFFECTIVELY_ONCE",
        count: COUNT,
        rate: 600,
    }
    .create(&cluster, 1);
    wait_all_writing(&cluster, "gen", 2, 300).await;
    for node in 1..=3 {
        cluster.kill(node);
    }
    // A restarted member resumes from its data directory without waiting for a quorum.
    for node in 1..=3 {
        cluster.restart(node);
    }
    wait_sources(&cluster, "gen", "every instance finished", |all| {
        all_in(all, 2, "FINISHED")
    })
    .await;
    check_exactly_once(&topic, 2).await;
}
