//! The metadata store as a cluster: in-process nodes, each with its own redb store in a
//! temporary directory, talking real tonic over 127.0.0.1. Faults: a node is killed (its server
//! and Raft stop; its data stays), restarted from its data directory on the same address, or
//! isolated from the others through the shared `Faults` knob.
//!
//! Scenarios, by theme:
//! - t10: writes forwarded from followers, linearizable reads, the assignment watch;
//! - t20: leader crash -> a new leader with committed data intact;
//! - t21/t22: an isolated follower catches up after healing, by log and by snapshot;
//! - t30: a killed node, and then the whole cluster, restart from their data directories;
//! - t40: a stale-epoch checkpoint is rejected through Raft;
//! - t50: 1,000 checkpoint commits across a leader change: none lost, none applied twice;
//! - t60: a corrupted or truncated store fails at start with an error naming the file;
//! - t70: a node is removed from the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_node::meta::local::LocalNode;
use ferry_node::meta::node::{DEFAULT_JOIN_TIMEOUT, DEFAULT_WRITE_TIMEOUT};
use ferry_node::meta::state::{
    Command, ConnectorKind, ConnectorName, ConnectorSpec, DesiredState, Guarantee, InstanceKey,
    NodeId, NodeState, Outcome, Rejection, State,
};
use ferry_node::meta::{Faults, Meta, MetaSettings, RaftTuning};
use ferry_test_support::wait;
use tempfile::TempDir;
use tracing::info;

const TIMEOUT: Duration = Duration::from_secs(30);

/// In-process nodes sharing one fault knob, after openraft's test router.
struct TestCluster {
    faults: Faults,
    tuning: RaftTuning,
    dirs: BTreeMap<NodeId, TempDir>,
    addresses: BTreeMap<NodeId, SocketAddr>,
    running: BTreeMap<NodeId, LocalNode>,
}

impl TestCluster {
    /// Starts node 1 with --bootstrap, then nodes 2..=size joining through node 1.
    async fn start(size: u64, tuning: RaftTuning) -> Self {
        init_logging();
        let mut cluster = Self {
            faults: Faults::default(),
            tuning,
            dirs: BTreeMap::new(),
            addresses: BTreeMap::new(),
            running: BTreeMap::new(),
        };
        cluster.add_node(1, None).await;
        for id in 2..=size {
            cluster.add_node(id, Some(1)).await;
        }
        cluster
    }

    /// Starts a new node `id`: bootstraps without a seed, else joins through `seed`.
    async fn add_node(&mut self, id: NodeId, seed: Option<NodeId>) {
        self.dirs
            .insert(id, tempfile::tempdir().expect("a temporary directory"));
        let meta = self.run(id).await;
        match seed {
            None => meta.bootstrap().await.expect("bootstrap"),
            Some(seed) => meta
                .join(&self.addresses[&seed].to_string(), DEFAULT_JOIN_TIMEOUT)
                .await
                .expect("join"),
        }
        info!(node = id, "node is in the cluster");
    }

    /// Opens node `id`'s store and serves it on its address (a fresh port the first time).
    async fn run(&mut self, id: NodeId) -> Meta {
        let address = self
            .addresses
            .get(&id)
            .copied()
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("an address"));
        let node = LocalNode::start(
            id,
            address,
            self.dirs[&id].path(),
            self.tuning.clone(),
            self.faults.clone(),
        )
        .await
        .expect("the node starts");
        self.addresses.insert(id, node.address);
        let meta = node.meta.clone();
        self.running.insert(id, node);
        meta
    }

    /// Stops node `id` as a crash would: no handoff, no goodbye; its data directory stays.
    async fn kill(&mut self, id: NodeId) {
        let node = self.running.remove(&id).expect("a running node");
        node.stop().await.expect("the node stops");
        info!(node = id, "node killed");
    }

    /// Starts node `id` again from its data directory on its old address.
    async fn restart(&mut self, id: NodeId) -> Meta {
        let meta = self.run(id).await;
        info!(node = id, "node restarted");
        meta
    }

    fn meta(&self, id: NodeId) -> &Meta {
        &self.running[&id].meta
    }

    /// Waits until every running node agrees on one running leader, and returns it.
    async fn leader(&self) -> NodeId {
        wait::until(
            "the running nodes agree on a running leader",
            TIMEOUT,
            || {
                let leaders: BTreeSet<Option<NodeId>> = self
                    .running
                    .values()
                    .map(|node| node.meta.leader())
                    .collect();
                let agreed = match leaders.into_iter().collect::<Vec<_>>().as_slice() {
                    [Some(leader)] if self.running.contains_key(leader) => Some(*leader),
                    _ => None,
                };
                async move { agreed }
            },
        )
        .await
    }

    /// Waits until node `id` has applied at least `index`.
    async fn wait_applied(&self, id: NodeId, index: u64) {
        let meta = self.meta(id).clone();
        wait::until(&format!("node {id} applied index {index}"), TIMEOUT, || {
            let applied = meta.applied_index();
            async move { (applied >= index).then_some(()) }
        })
        .await;
    }

    /// Returns a running node other than `not`.
    fn other_than(&self, not: NodeId) -> NodeId {
        *self
            .running
            .keys()
            .find(|id| **id != not)
            .expect("another running node")
    }
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,meta_cluster=info")),
        )
        .with_test_writer()
        .try_init();
}

fn name(connector: &str) -> ConnectorName {
    ConnectorName::new("public", "default", connector)
}

fn spec(parallelism: u32) -> ConnectorSpec {
    ConnectorSpec {
        kind: ConnectorKind::Source,
        connector_type: "datagen".to_owned(),
        config: BTreeMap::new(),
        secrets: BTreeMap::new(),
        topics: vec!["persistent://public/default/out".to_owned()],
        subscription: None,
        parallelism,
        guarantee: Guarantee::AtLeastOnce,
        error_policy: ferry_node::meta::state::ErrorPolicy::Fail,
        options: ferry_node::meta::state::RuntimeOptions::default(),
    }
}

async fn create(meta: &Meta, connector: &str, parallelism: u32) {
    let reply = meta
        .write(Command::CreateConnector {
            connector: name(connector),
            spec: spec(parallelism),
        })
        .await
        .expect("write");
    assert_eq!(reply, Ok(Outcome::ConnectorVersion(1)));
}

async fn assign(meta: &Meta, key: &InstanceKey, node: NodeId) -> u64 {
    match meta
        .write(Command::Assign {
            key: key.clone(),
            node,
        })
        .await
        .expect("write")
    {
        Ok(Outcome::Assigned { epoch }) => epoch,
        other => panic!("assign {key} to {node}: {other:?}"),
    }
}

fn commit(key: &InstanceKey, epoch: u64, from: u64, to: u64) -> Command {
    Command::CommitCheckpoint {
        key: key.clone(),
        epoch,
        from: (from > 0).then(|| from.to_be_bytes().to_vec()),
        to: to.to_be_bytes().to_vec(),
        sequence_id: Some(to),
        time_ms: to,
    }
}

fn key(connector: &str, instance: u32) -> InstanceKey {
    InstanceKey {
        connector: name(connector),
        instance,
    }
}

fn fast_snapshots() -> RaftTuning {
    RaftTuning {
        snapshot_every: 20,
        keep_after_snapshot: 0,
        ..RaftTuning::default()
    }
}

/// 1. Three nodes; 2. a follower creates a connector (forwarded to the leader); 3. another
/// follower reads it linearizably; 4. node 3's assignment watch sees an assignment made through
/// node 2, and its removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_writes_on_followers_are_forwarded_and_reads_are_linearizable() {
    let cluster = TestCluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    info!(leader, follower, "a follower writes");
    create(cluster.meta(follower), "orders", 2).await;

    for id in 1..=3 {
        let found = cluster
            .meta(id)
            .read(|state| state.connectors.contains_key(&name("orders")))
            .await
            .expect("linearizable read");
        assert!(found, "node {id} does not see the connector");
    }
    let nodes = cluster.meta(leader).read_local(|state| state.nodes.clone());
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.values().all(|node| node.state == NodeState::Active));

    info!("node 3 watches its assignments while node 2 assigns");
    let mut watch = cluster.meta(3).watch_assignments(3);
    assert!(watch.borrow().is_empty());
    let epoch = assign(cluster.meta(2), &key("orders", 1), 3).await;
    let seen = wait::until("node 3's watch shows its assignment", TIMEOUT, || {
        let assignments = watch.borrow_and_update().clone();
        async move { (!assignments.is_empty()).then_some(assignments) }
    })
    .await;
    assert_eq!(seen[&key("orders", 1)].epoch, epoch);
    cluster
        .meta(1)
        .write(Command::ConfirmRevoked {
            key: key("orders", 1),
            epoch,
        })
        .await
        .expect("write")
        .expect("confirmed");
    wait::until("node 3's watch shows the removal", TIMEOUT, || {
        let empty = watch.borrow_and_update().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
}

/// 1. Three nodes and some committed data; 2. the leader crashes; 3. the two others elect a
/// new leader; 4. the data is intact there and new writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_a_leader_crash_elects_a_new_leader_with_committed_data_intact() {
    let mut cluster = TestCluster::start(3, RaftTuning::default()).await;
    let old_leader = cluster.leader().await;
    for connector in ["a", "b", "c"] {
        create(cluster.meta(old_leader), connector, 1).await;
    }
    info!(old_leader, "killing the leader");
    cluster.kill(old_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    let survivor = cluster.other_than(new_leader);
    for id in [new_leader, survivor] {
        let names: Vec<String> = cluster
            .meta(id)
            .read(|state| state.connectors.keys().map(|n| n.name.clone()).collect())
            .await
            .expect("read");
        assert_eq!(names, ["a", "b", "c"], "node {id}");
    }
    create(cluster.meta(survivor), "d", 1).await;
}

/// 1. Three nodes; 2. a follower is isolated; 3. writes continue on the majority; 4. heal; 5.
/// the follower catches up (by log: no snapshot purges what it needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_an_isolated_follower_catches_up_after_healing() {
    let cluster = TestCluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    cluster.faults.isolate(follower);
    info!(follower, "isolated; writing on the majority");
    for index in 0..10 {
        create(cluster.meta(leader), &format!("c{index}"), 1).await;
    }
    let target = cluster.meta(leader).applied_index();
    assert!(cluster.meta(follower).applied_index() < target);
    cluster.faults.heal(follower);
    cluster.wait_applied(follower, target).await;
    let on_leader = cluster.meta(leader).read_local(State::clone);
    let on_follower = cluster.meta(follower).read_local(State::clone);
    assert_eq!(on_follower.connectors, on_leader.connectors);
}

/// 1. Three nodes that snapshot every 20 entries and keep no log behind a snapshot; 2. a
/// follower is isolated; 3. 60 writes: the leader snapshots and purges past the follower's
/// log; 4. heal; 5. the follower catches up by installing the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_a_follower_behind_the_purge_point_catches_up_by_snapshot() {
    let cluster = TestCluster::start(3, fast_snapshots()).await;
    let leader = cluster.leader().await;
    let follower = cluster.other_than(leader);
    let follower_last = cluster.meta(follower).applied_index();
    cluster.faults.isolate(follower);
    info!(follower, follower_last, "isolated; writing past a snapshot");
    for index in 0..60 {
        create(cluster.meta(leader), &format!("c{index}"), 1).await;
    }
    let purged = wait::until("the leader purged past the follower's log", TIMEOUT, || {
        let purged = cluster.meta(leader).raft().metrics().borrow().purged;
        async move { purged.filter(|purged| purged.index > follower_last) }
    })
    .await;
    info!(purged = purged.index, "healing");
    cluster.faults.heal(follower);
    let target = cluster.meta(leader).applied_index();
    cluster.wait_applied(follower, target).await;
    let snapshot = cluster.meta(follower).raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|snapshot| snapshot.index > follower_last),
        "the follower caught up without a snapshot: {snapshot:?}"
    );
    let count = cluster
        .meta(follower)
        .read_local(|state| state.connectors.len());
    assert_eq!(count, 60);
}

/// 1. Three nodes; 2. node 3 is killed; 3. writes continue; 4. node 3 restarts from its data
/// directory and catches up; 5. the whole cluster is killed and restarted: nothing committed
/// is lost, and a leader is elected again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_killed_nodes_restart_from_their_data_dirs() {
    let mut cluster = TestCluster::start(3, fast_snapshots()).await;
    let leader = cluster.leader().await;
    create(cluster.meta(leader), "before", 1).await;
    let victim = cluster.other_than(leader);
    cluster.kill(victim).await;
    for index in 0..30 {
        create(cluster.meta(leader), &format!("during{index}"), 1).await;
    }
    cluster.restart(victim).await;
    let target = cluster.meta(leader).applied_index();
    cluster.wait_applied(victim, target).await;
    assert_eq!(
        cluster
            .meta(victim)
            .read_local(|state| state.connectors.len()),
        31
    );

    // A leader restarted with its vote leads again at once, knowing only the committed id it
    // had persisted (written lazily, so it can lag): a read it serves must still see every
    // write acknowledged before the restart. The old leader comes back first and is read from
    // as soon as a quorum answers, while its log is being re-committed.
    let mut leader = leader;
    for (round, expected) in (0..5).zip(31..) {
        info!(round, "killing and restarting every node");
        for id in 1..=3 {
            cluster.kill(id).await;
        }
        let first = cluster.restart(leader).await;
        let reader = tokio::spawn(async move { first.read(|state| state.connectors.len()).await });
        for id in (1..=3).filter(|id| *id != leader) {
            cluster.restart(id).await;
        }
        let count = reader.await.expect("the read task").expect("read");
        assert_eq!(
            count, expected,
            "round {round}: a read missed acknowledged writes"
        );
        leader = cluster.leader().await;
        create(cluster.meta(leader), &format!("after{round}"), 1).await;
    }
}

/// 1. An instance is assigned to node 1; 2. node 1 commits a checkpoint; 3. node 1 goes down
/// and the instance moves to node 2 with a new epoch; 4. node 1's late commit is rejected with
/// StaleEpoch; 5. node 2 continues from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_a_stale_epoch_checkpoint_is_rejected() {
    let cluster = TestCluster::start(3, RaftTuning::default()).await;
    let meta = cluster.meta(2).clone();
    create(&meta, "orders", 1).await;
    let instance = key("orders", 0);
    let old_epoch = assign(&meta, &instance, 1).await;
    let reply = meta
        .write(commit(&instance, old_epoch, 0, 1))
        .await
        .expect("write");
    assert_eq!(reply, Ok(Outcome::CheckpointCommitted { duplicate: false }));
    meta.write(Command::NodeDown { node: 1 })
        .await
        .expect("write")
        .expect("node down");
    let new_epoch = assign(&meta, &instance, 2).await;
    assert!(new_epoch > old_epoch);
    let reply = meta
        .write(commit(&instance, old_epoch, 1, 2))
        .await
        .expect("write");
    assert_eq!(
        reply,
        Err(Rejection::StaleEpoch {
            key: instance.clone(),
            epoch: old_epoch,
            current: Some(new_epoch),
        })
    );
    let reply = meta
        .write(commit(&instance, new_epoch, 1, 2))
        .await
        .expect("write");
    assert_eq!(reply, Ok(Outcome::CheckpointCommitted { duplicate: false }));
    let checkpoint = meta
        .read(|state| state.checkpoints[&instance].clone())
        .await
        .expect("read");
    assert_eq!(checkpoint.epoch, new_epoch);
    assert_eq!(checkpoint.commits, 2);
}

/// 1. Four instances assigned; 2. four writers on a follower each chain 250 checkpoint
/// commits; 3. after 100 commits each, the leader is killed; 4. every writer finishes through
/// the new leader (retrying what the crash cut off); 5. each checkpoint stands at 250 after
/// exactly 250 applied commits: none lost, none applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_a_thousand_checkpoint_commits_across_a_leader_change() {
    const WRITERS: u32 = 4;
    const COMMITS: u64 = 250;
    let mut cluster = TestCluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader().await;
    let writer_node = cluster.other_than(leader);
    let meta = cluster.meta(writer_node).clone();
    create(&meta, "orders", WRITERS).await;
    let mut epochs = Vec::new();
    for instance in 0..WRITERS {
        epochs.push(assign(&meta, &key("orders", instance), writer_node).await);
    }
    let halfway = Arc::new(tokio::sync::Barrier::new(WRITERS as usize + 1));
    let mut writers = Vec::new();
    for instance in 0..WRITERS {
        let meta = meta.clone();
        let halfway = halfway.clone();
        let epoch = epochs[instance as usize];
        writers.push(tokio::spawn(async move {
            let instance_key = key("orders", instance);
            let mut applied = 0u64;
            let mut duplicates = 0u64;
            for position in 1..=COMMITS {
                if position == 100 {
                    halfway.wait().await;
                }
                let reply = meta
                    .write(commit(&instance_key, epoch, position - 1, position))
                    .await
                    .expect("the write succeeds within its timeout");
                match reply {
                    Ok(Outcome::CheckpointCommitted { duplicate: false }) => applied += 1,
                    Ok(Outcome::CheckpointCommitted { duplicate: true }) => duplicates += 1,
                    other => panic!("commit {position} of {instance_key}: {other:?}"),
                }
            }
            (applied, duplicates)
        }));
    }
    halfway.wait().await;
    info!(leader, "every writer is at commit 100; killing the leader");
    cluster.kill(leader).await;
    let mut applied_total = 0;
    for writer in writers {
        let (applied, duplicates) = writer.await.expect("writer task");
        info!(applied, duplicates, "writer done");
        assert_eq!(applied + duplicates, COMMITS);
        applied_total += applied;
    }
    let checkpoints = meta
        .read(|state| state.checkpoints.clone())
        .await
        .expect("read");
    for instance in 0..WRITERS {
        let checkpoint = &checkpoints[&key("orders", instance)];
        assert_eq!(checkpoint.position, COMMITS.to_be_bytes());
        assert_eq!(
            checkpoint.commits, COMMITS,
            "instance {instance}: some commit was lost or applied twice"
        );
    }
    // A commit answered as a duplicate was one whose first answer the crash cut off.
    assert!(applied_total <= u64::from(WRITERS) * COMMITS);
    assert_eq!(
        checkpoints.values().map(|c| c.commits).sum::<u64>(),
        u64::from(WRITERS) * COMMITS
    );
}

/// 1. A one-node cluster writes and stops; 2. its database file is truncated, or overwritten
/// with garbage, or its header is damaged; 3. starting it fails with an error naming the file,
/// without a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_a_corrupted_or_truncated_store_fails_at_start_with_a_clear_error() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        // Down to its first page: whatever the layout, the tables' pages are gone. (Cutting
        // only unused space at the end is not damage, and redb rightly opens such a file.)
        ("truncated", |bytes| bytes.truncate(4096)),
        ("garbage", |bytes| {
            bytes
                .iter_mut()
                .enumerate()
                .for_each(|(index, byte)| *byte = (index * 31 % 251) as u8);
        }),
        ("damaged header", |bytes| {
            bytes[..64].iter_mut().for_each(|byte| *byte = !*byte);
        }),
    ];
    for (what, damage) in damages {
        let mut cluster = TestCluster::start(1, RaftTuning::default()).await;
        create(cluster.meta(1), "orders", 1).await;
        cluster.kill(1).await;
        let file = cluster.dirs[&1].path().join("meta.redb");
        let mut bytes = std::fs::read(&file).expect("read the store");
        damage(&mut bytes);
        std::fs::write(&file, &bytes).expect("damage the store");
        let started = Meta::start(
            MetaSettings {
                node_id: 1,
                advertise: cluster.addresses[&1].to_string(),
                data_dir: cluster.dirs[&1].path().to_owned(),
                tuning: RaftTuning::default(),
                write_timeout: DEFAULT_WRITE_TIMEOUT,
            },
            Faults::default(),
        )
        .await;
        let error = started
            .expect_err("a damaged store must not open")
            .to_string();
        info!(what, %error, "refused");
        assert!(error.contains("meta.redb"), "{what}: {error}");
        assert!(!error.contains('\n'), "{what}: {error}");
    }
}

/// 1. Three nodes; 2. node 3 is removed; 3. it is no longer a voter and is recorded as Left;
/// 4. the two others still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_a_node_is_removed() {
    let cluster = TestCluster::start(3, RaftTuning::default()).await;
    let leader = cluster.leader().await;
    let removed = if leader == 3 { 2 } else { 3 };
    cluster
        .meta(leader)
        .remove_node(removed)
        .await
        .expect("remove");
    let voters: Vec<NodeId> = cluster
        .meta(leader)
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert!(!voters.contains(&removed), "{voters:?}");
    let state = cluster
        .meta(leader)
        .read(|state| state.nodes[&removed].state)
        .await
        .expect("read");
    assert_eq!(state, NodeState::Left);
    create(cluster.meta(leader), "after", 1).await;
    let stopped = cluster
        .meta(leader)
        .write(Command::SetDesiredState {
            connector: name("after"),
            state: DesiredState::Stopped,
        })
        .await
        .expect("write");
    assert_eq!(stopped, Ok(Outcome::Done));
}
