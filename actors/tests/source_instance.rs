//! A datagen source instance publishing to the real broker under each guarantee, crashed
//! mid-stream and resumed by a successor with a newer epoch.
//!
//! Effectively-once: 1. run epoch 1 until a few checkpoints are in; 2. stop its actor at once
//! (no final checkpoint); 3. assign epoch 2 and run a successor from the checkpoint to the end;
//! 4. the topic holds every index exactly once, in order; a late commit from epoch 1 is refused.
//! At-least-once: the same crash; every index is there, repeats allowed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use ferry_actors::connectors::datagen::{DatagenConfig, DatagenSource, decode_position};
use ferry_actors::instance::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, MemoryCheckpointStore,
};
use ferry_actors::instance::source::{
    CheckpointPolicy, GetStatus, SourceInstance, SourceInstanceConfig, Stop,
};
use ferry_actors::instance::{Guarantee, InstanceState};
use ferry_actors::pulsar::{BatchingOptions, PulsarSettings};
use ferry_test_support::{broker, unique_name, wait};

const COUNT: u64 = 20_000;

fn config(topic: &str, connector: &str, epoch: u64, guarantee: Guarantee) -> SourceInstanceConfig {
    SourceInstanceConfig {
        connector: connector.to_owned(),
        index: 0,
        epoch,
        topic: topic.to_owned(),
        guarantee,
        checkpoints: CheckpointPolicy {
            every_records: 500,
            every: Duration::from_millis(50),
        },
        pulsar: PulsarSettings::new(broker::broker().url),
        batching: BatchingOptions::default(),
        read_batch: 200,
        fence: None,
        incarnation: 0,
    }
}

fn datagen(rate: Option<u64>) -> Box<DatagenSource> {
    Box::new(DatagenSource::new(DatagenConfig {
        seed: 11,
        count: Some(COUNT),
        rate,
        payload_size: 64,
    }))
}

fn checkpointed_index(store: &MemoryCheckpointStore) -> u64 {
    store.checkpoint().map_or(0, |checkpoint| {
        decode_position(&checkpoint.position).expect("datagen position")
    })
}

/// Reads the topic from the start; returns the datagen indices (record keys) in stored order.
async fn read_indices(topic: &str, at_least: usize) -> Vec<u64> {
    let settings = PulsarSettings::new(broker::broker().url);
    common::read_topic(&settings, topic, at_least, |message| {
        message
            .key()
            .expect("datagen records have keys")
            .parse()
            .expect("an index")
    })
    .await
}

/// Runs epoch 1 until it has checkpointed past a quarter of the stream, then stops it at once.
async fn run_and_crash(
    topic: &str,
    connector: &str,
    guarantee: Guarantee,
    store: &MemoryCheckpointStore,
) {
    store.assign(1);
    let first = SourceInstance::new(
        config(topic, connector, 1, guarantee),
        datagen(Some(5_000)),
        Arc::new(store.clone()),
    )
    .start();
    wait::until(
        "epoch 1 checkpoints past index 5,000",
        Duration::from_secs(60),
        || {
            let index = checkpointed_index(store);
            async move { (index >= 5_000).then_some(()) }
        },
    )
    .await;
    let status = first.send(GetStatus).await.expect("status");
    assert_eq!(status.state, InstanceState::Running);
    first.send(Stop).await.expect("stop");
    let crashed_at = checkpointed_index(store);
    assert!(crashed_at < COUNT, "stopped mid-stream, at {crashed_at}");
    eprintln!(
        "epoch 1 stopped with checkpoint at index {crashed_at}, {} commits",
        store.commits()
    );
}

async fn run_to_end(
    topic: &str,
    connector: &str,
    guarantee: Guarantee,
    store: &MemoryCheckpointStore,
) -> ferry_actors::instance::InstanceStatus {
    store.assign(2);
    let second = SourceInstance::new(
        config(topic, connector, 2, guarantee),
        datagen(None),
        Arc::new(store.clone()),
    );
    let status = second.status();
    second.start();
    wait::until(
        "epoch 2 finishes the stream",
        Duration::from_secs(120),
        || {
            let state = status.lock().expect("status").clone();
            async move {
                assert_ne!(
                    state.state,
                    InstanceState::Failed,
                    "epoch 2 failed: {:?}",
                    state.last_error
                );
                (state.state == InstanceState::Finished).then_some(())
            }
        },
    )
    .await;
    let finished = status.lock().expect("status").clone();
    assert_eq!(
        checkpointed_index(store),
        COUNT,
        "the final checkpoint covers the whole stream"
    );
    finished
}

#[actix_rt::test]
async fn effectively_once_survives_a_crash_without_loss_or_duplicates() {
    let topic = format!("persistent://public/default/{}", unique_name("source-eo"));
    let connector = format!("public/default/{}", unique_name("gen"));
    let store = MemoryCheckpointStore::default();
    run_and_crash(&topic, &connector, Guarantee::EffectivelyOnce, &store).await;
    let status = run_to_end(&topic, &connector, Guarantee::EffectivelyOnce, &store).await;
    eprintln!("epoch 2: {status:?}");

    let indices = read_indices(&topic, COUNT as usize).await;
    assert_eq!(indices.len() as u64, COUNT, "every record exactly once");
    assert!(
        indices.iter().copied().eq(0..COUNT),
        "in order, no gaps, no repeats"
    );

    // The crashed owner's epoch can no longer move the checkpoint.
    let late = store
        .commit(
            1,
            store.checkpoint().map(|c| c.position),
            Checkpoint {
                position: vec![0; 8],
                sequence_id: Some(1),
            },
        )
        .await;
    assert!(
        matches!(
            late,
            Err(CheckpointError::StaleEpoch {
                offered: 1,
                current: Some(2)
            })
        ),
        "{late:?}"
    );
}

#[actix_rt::test]
async fn at_least_once_loses_nothing_across_a_crash() {
    let topic = format!("persistent://public/default/{}", unique_name("source-alo"));
    let connector = format!("public/default/{}", unique_name("gen"));
    let store = MemoryCheckpointStore::default();
    run_and_crash(&topic, &connector, Guarantee::AtLeastOnce, &store).await;
    run_to_end(&topic, &connector, Guarantee::AtLeastOnce, &store).await;

    let indices = read_indices(&topic, COUNT as usize).await;
    let mut seen = vec![false; COUNT as usize];
    for index in &indices {
        seen[*index as usize] = true;
    }
    let missing = seen.iter().filter(|seen| !**seen).count();
    assert_eq!(missing, 0, "at-least-once lost {missing} records");
    eprintln!(
        "at-least-once: {} records for {COUNT} inputs ({} repeats)",
        indices.len(),
        indices.len() as u64 - COUNT
    );
}
