//! The connector runtime on a node: connectors written to the metadata store are placed by the
//! control loop, run by the supervisor against the real broker, and survive the supervisor
//! being torn down mid-stream (every instance actor killed, no final checkpoint) and started
//! again: the output is compared record by record with what went in.
//!
//! - t10: a datagen source under each guarantee: effectively-once gives every record once and
//!   in order; at-least-once loses none; at-most-once repeats none.
//! - t20: datagen -> topic -> file sink under each guarantee, the same comparison on the file.
//! - t30: a connector that cannot start (a secret reference that does not resolve) is FAILED
//!   with the reason, restarts with backoff, and the node keeps running other connectors.
//! - t40: a connector deleted and created again under the same name writes everything again:
//!   the broker does not take the new records for the old connector's duplicates.
//! - t50: a connector updated mid-stream drains and resumes from its final checkpoint:
//!   nothing repeated, even under at-least-once.

#[path = "common/runtime.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_node::meta::state::{Guarantee, Secret};
use ferry_node::supervisor::ReportedState;
use ferry_test_support::unique_name;

use harness::{GUARANTEES, Harness, check, datagen, file_indexes, file_sink, read_indexes, topic};

#[test]
fn t10_a_source_survives_its_supervisor_restarting_under_each_guarantee() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        for guarantee in GUARANTEES {
            let count = 3_000;
            let output = topic("runtime-source");
            let key = harness
                .create(
                    &unique_name("gen"),
                    datagen(&output, guarantee, count, 3_000),
                )
                .await;
            harness.wait_confirmed(&key, 600).await;
            harness.restart_supervisor().await;
            harness.wait_state(&key, ReportedState::Finished).await;
            let indexes = read_indexes(&output, 1).await;
            check(guarantee, &indexes, count);
            if guarantee == Guarantee::EffectivelyOnce {
                let report = harness.board.get(&key).expect("a report");
                assert!(
                    report.status.records_read < count,
                    "the restarted instance resumed from its checkpoint, not from the start"
                );
            }
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t20_a_file_sink_survives_its_supervisor_restarting_under_each_guarantee() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        for guarantee in GUARANTEES {
            let count = 3_000;
            let input = topic("runtime-sink");
            let path: PathBuf = dir.path().join(unique_name("out"));
            let source = harness
                .create(
                    &unique_name("gen"),
                    // Slow enough that the sink is restarted mid-stream.
                    datagen(&input, Guarantee::EffectivelyOnce, count, 1_000),
                )
                .await;
            let sink = harness
                .create(&unique_name("file"), file_sink(&input, &path, guarantee))
                .await;
            harness.wait_confirmed(&sink, 600).await;
            harness.restart_supervisor().await;
            harness.wait_state(&source, ReportedState::Finished).await;
            harness.wait_drained(&sink, &input).await;
            check(guarantee, &file_indexes(&path), count);
        }
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t30_an_instance_that_cannot_start_is_failed_with_its_reason_and_retried() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        // A postgres sink whose password is a reference to a variable this node lacks: it is
        // resolved only on the node that runs the instance, when the sink opens.
        let input = topic("runtime-bad");
        let mut spec = harness::spec(
            ferry_node::meta::state::ConnectorKind::Sink,
            "postgres",
            &[
                (
                    "url",
                    harness::json_string("postgres://127.0.0.1:5432/ferry"),
                ),
                ("user", harness::json_string("ferry")),
                ("table", harness::json_string("runtime_bad")),
            ],
            &input,
            Guarantee::AtLeastOnce,
        );
        spec.secrets = BTreeMap::from([(
            "password".to_owned(),
            Secret::new("env:FERRY_TEST_SURELY_UNSET"),
        )]);
        let bad = harness.create(&unique_name("bad"), spec).await;
        harness.wait_state(&bad, ReportedState::Failed).await;
        let retried = harness
            .wait_report(&bad, "is retried", |report| report.restarts >= 2)
            .await;
        let error = retried.status.last_error.unwrap_or_default();
        assert!(
            error.contains("password") && error.contains("FERRY_TEST_SURELY_UNSET"),
            "{error}"
        );
        // The node still runs other connectors.
        let good = harness
            .create(
                &unique_name("good"),
                datagen(&topic("runtime-good"), Guarantee::AtLeastOnce, 10, 1_000),
            )
            .await;
        harness.wait_state(&good, ReportedState::Finished).await;
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t40_a_connector_created_again_under_a_deleted_ones_name_loses_nothing() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let output = topic("runtime-again");
        let name = unique_name("again");
        let count = 300;
        let first = harness
            .create(
                &name,
                datagen(&output, Guarantee::EffectivelyOnce, count, 3_000),
            )
            .await;
        harness.wait_state(&first, ReportedState::Finished).await;
        harness
            .meta()
            .write(ferry_node::meta::state::Command::DeleteConnector {
                connector: first.connector.clone(),
            })
            .await
            .expect("write")
            .expect("deleted");
        // The same name, the same topic, the same records: a new connector, whose records
        // the broker must not take for the old one's (its producer name carries the
        // incarnation).
        let second = harness
            .create(
                &name,
                datagen(&output, Guarantee::EffectivelyOnce, count, 3_000),
            )
            .await;
        harness.wait_state(&second, ReportedState::Finished).await;
        let indexes = read_indexes(&output, count as usize).await;
        let expected: Vec<u64> = (0..count).chain(0..count).collect();
        assert_eq!(
            indexes.len(),
            expected.len(),
            "both connectors' records are in the topic, once each"
        );
        assert!(
            indexes == expected,
            "in order, the first connector's then the second's"
        );
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t50_updating_a_running_connector_repeats_nothing_even_at_least_once() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let output = topic("runtime-update");
        let count = 3_000;
        let spec = datagen(&output, Guarantee::AtLeastOnce, count, 1_500);
        let key = harness.create(&unique_name("update"), spec.clone()).await;
        harness.wait_confirmed(&key, 600).await;
        // A new spec (larger records): the instance drains, commits a final checkpoint, and
        // the new version starts from it.
        let mut updated = spec;
        updated
            .config
            .insert("payload_size".to_owned(), "90".to_owned());
        harness
            .meta()
            .write(ferry_node::meta::state::Command::UpdateConnector {
                connector: key.connector.clone(),
                spec: updated,
                expected_version: None,
            })
            .await
            .expect("write")
            .expect("updated");
        harness.wait_state(&key, ReportedState::Finished).await;
        let indexes = read_indexes(&output, count as usize).await;
        check(Guarantee::EffectivelyOnce, &indexes, count);
        harness.stop().await;
    })
    .expect("the runtime builds");
}
