//! A sink's error policy and runtime options through the real runtime (1-node store,
//! supervisor) against the real broker and PostgreSQL. The input of each test is the same: 30 JSON rows `{"id": i, "n": i}`
//! (key `k{i}`, property `app=ferry-test`, batched by the producer), four of them poison: not
//! JSON (5), a value the CHECK constraint refuses (12), a value the integer column refuses
//! (20) and a JSON array (27).
//!
//! - t10: dead-letter, effectively-once: the good rows are in the table once each, the poison
//!   messages in the dead-letter topic once each, with their bytes, key and properties plus
//!   `ferry-error`, `ferry-source-topic`, `ferry-message-id` and `ferry-connector`; the
//!   instance is RUNNING and counts 4 dead letters.
//! - t20: skip: the good rows are in the table, the instance RUNNING and counting 4 skipped.
//! - t30: fail (the default): the instance is FAILED, its error naming the first poison
//!   message's id and why.
//! - t40: a crash between the dead letters' send and the checkpoint, effectively-once: the
//!   test holds the sink's offsets row locked so its flush waits after the dead letters were
//!   stored; the owner's database session is ended (its transaction rolls back) and the
//!   supervisor torn down and started again (every instance killed, no final checkpoint); the
//!   replay writes each good row and each dead letter still once.
//! - t50: the supervisor takes the start position from the spec: a sink whose subscription
//!   starts at Latest reads only what was published after it subscribed.

#[path = "common/runtime.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use ferry_actors::instance::InstanceStatus;
use ferry_actors::instance::dead_letter::{
    CONNECTOR_PROPERTY, ERROR_PROPERTY, MESSAGE_ID_PROPERTY, SOURCE_TOPIC_PROPERTY,
};
use ferry_actors::pulsar::sink_consumer::{InputMessage, StartPosition};
use ferry_actors::pulsar::{
    BatchingOptions, MessageId, OutgoingMessage, ProducerSession, ProducerSessionOptions,
    PulsarSettings, Receipt,
};
use ferry_node::meta::state::{
    ConnectorKind, ConnectorSpec, ErrorPolicy, Guarantee, InstanceKey, RuntimeOptions, Secret,
};
use ferry_node::supervisor::{InstanceReport, ReportedState};
use ferry_test_support::broker::broker;
use ferry_test_support::postgres::pg_url;
use ferry_test_support::{unique_name, wait};
use harness::{Harness, TIMEOUT, json_string, spec, topic};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

/// Records in the input.
const COUNT: u64 = 30;

/// What makes record `i` a poison message, and the words its rejection names.
fn poison(i: u64) -> Option<(Vec<u8>, &'static str)> {
    match i {
        5 => Some((b"not json {".to_vec(), "not JSON")),
        12 => Some((json!({"id": i, "n": -1}).to_string().into_bytes(), "check")),
        20 => Some((
            json!({"id": i, "n": "abc"}).to_string().into_bytes(),
            "integer",
        )),
        27 => Some((json!([i]).to_string().into_bytes(), "an array")),
        _ => None,
    }
}

/// The value of input record `i`.
fn value(i: u64) -> Vec<u8> {
    poison(i).map_or_else(
        || json!({"id": i, "n": i}).to_string().into_bytes(),
        |(bytes, _)| bytes,
    )
}

fn good_ids(range: std::ops::Range<u64>) -> Vec<i64> {
    range
        .filter(|i| poison(*i).is_none())
        .map(|i| i64::try_from(i).expect("small"))
        .collect()
}

/// Publishes records `range` to `topic` (batched unless `unbatched`) and returns their
/// message ids, in order.
async fn produce(topic: &str, range: std::ops::Range<u64>, unbatched: bool) -> Vec<MessageId> {
    let mut options = ProducerSessionOptions::new(topic, unique_name("dlq-test-producer"));
    if unbatched {
        options.batching = BatchingOptions::disabled();
    }
    let mut session = ProducerSession::open(PulsarSettings::new(broker().url), options)
        .await
        .expect("open the input producer");
    let mut receipts = Vec::new();
    for i in range {
        let message = OutgoingMessage {
            sequence_id: i,
            payload: value(i),
            key: Some(format!("k{i}")),
            properties: BTreeMap::from([("app".to_owned(), "ferry-test".to_owned())]),
            event_time_ms: Some(1_700_000_000_000 + i),
        };
        receipts.push(session.send(message).await.expect("send"));
    }
    let mut ids = Vec::new();
    for receipt in receipts {
        match receipt.await.expect("a receipt") {
            Receipt::Persisted { message_id, .. } => ids.push(message_id),
            Receipt::Duplicate { sequence_id } => panic!("{sequence_id} taken for a duplicate"),
        }
    }
    session.close().await.expect("close the input producer");
    ids
}

/// Reads `topic` from the start until `expected` messages arrived, then briefly for more (a
/// repeat would show there).
async fn read_all(topic: &str, expected: usize) -> Vec<InputMessage> {
    harness::read_messages(
        topic,
        &format!("{expected} messages"),
        |messages| messages.len() >= expected,
        Duration::from_millis(1_500),
    )
    .await
}

/// Connects to the test PostgreSQL.
async fn postgres() -> Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(), NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh table of `id bigint, n integer >= 0` and a fresh offsets table; returns their names.
async fn tables(client: &Client) -> (String, String) {
    let table = unique_name("dlq_rows").replace('-', "_");
    let offsets = unique_name("dlq_offsets").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (id bigint NOT NULL, n integer NOT NULL CHECK (n >= 0))"
        ))
        .await
        .expect("create the table");
    (table, offsets)
}

/// The ids in `table`, each with how often it is there.
async fn table_counts(client: &Client, table: &str) -> Vec<(i64, i64)> {
    client
        .query(
            &format!("SELECT id, count(*) FROM \"{table}\" GROUP BY id ORDER BY id"),
            &[],
        )
        .await
        .expect("read the table")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// A postgres sink from `input` into `table` under `guarantee` and `policy`.
fn pg_sink(
    input: &str,
    table: &str,
    offsets: &str,
    guarantee: Guarantee,
    policy: ErrorPolicy,
) -> ConnectorSpec {
    let parsed = tokio_postgres::Config::from_str(&pg_url()).expect("a postgres URL");
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("FERRY_TEST_PG_URL must name a TCP host, got {other:?}"),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let url = format!(
        "postgres://{host}:{port}/{}",
        parsed.get_dbname().unwrap_or("ferry")
    );
    let mut spec = spec(
        ConnectorKind::Sink,
        "postgres",
        &[
            ("url", json_string(&url)),
            ("user", json_string(parsed.get_user().unwrap_or("ferry"))),
            ("table", json_string(table)),
            ("offsets_table", json_string(offsets)),
            ("columns", json!({"id": "id", "n": "n"}).to_string()),
        ],
        input,
        guarantee,
    );
    let password = String::from_utf8_lossy(parsed.get_password().unwrap_or(b"ferry")).into_owned();
    spec.secrets = BTreeMap::from([("password".to_owned(), Secret::new(password))]);
    spec.error_policy = policy;
    spec
}

/// Waits until `key` has read `read` records, handled them all, and its counters satisfy
/// `condition` (named by `reason`), and returns its report. The board is published every tick, so the report
/// `wait_drained` returns may predate the last checkpoint's counters.
async fn counted(
    harness: &Harness,
    key: &InstanceKey,
    read: u64,
    reason: &str,
    condition: impl Fn(&InstanceStatus) -> bool,
) -> InstanceReport {
    harness
        .wait_report(key, reason, |report| {
            report.status.records_read == read
                && report.status.pending() == 0
                && condition(&report.status)
        })
        .await
}

/// Checks the dead letters read from the topic: one per poison record of `range`, each with
/// the original bytes, key, properties and event time, and the properties naming the error,
/// the source topic, the message id (as the input's reader saw it) and the connector.
fn check_dead_letters(
    dead_letters: &[InputMessage],
    input: &[InputMessage],
    input_topic: &str,
    key: &InstanceKey,
) {
    let ids_by_key: BTreeMap<String, String> = input
        .iter()
        .map(|message| (message.key.clone().expect("a key"), message.id.to_string()))
        .collect();
    let keys: Vec<String> = dead_letters
        .iter()
        .map(|message| message.key.clone().expect("the original key"))
        .collect();
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a dead letter twice: {keys:?}");
    let expected: BTreeSet<String> = (0..COUNT)
        .filter(|i| poison(*i).is_some())
        .map(|i| format!("k{i}"))
        .collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    for message in dead_letters {
        let key_text = message.key.clone().unwrap_or_default();
        let i: u64 = key_text[1..].parse().expect("k<i>");
        let (bytes, words) = poison(i).expect("a poison record");
        assert_eq!(message.payload, bytes, "{key_text}");
        assert_eq!(message.event_time_ms, Some(1_700_000_000_000 + i));
        let properties = &message.properties;
        assert_eq!(properties["app"], "ferry-test", "{properties:?}");
        assert!(
            properties[ERROR_PROPERTY].contains(words),
            "{key_text}: {properties:?}"
        );
        assert_eq!(properties[SOURCE_TOPIC_PROPERTY], input_topic);
        assert_eq!(properties[MESSAGE_ID_PROPERTY], ids_by_key[&key_text]);
        assert_eq!(
            properties[CONNECTOR_PROPERTY],
            key.connector.to_string(),
            "{properties:?}"
        );
    }
}

#[test]
fn t10_dead_letter_sends_each_poison_message_once_and_writes_the_rest() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let client = postgres().await;
        let (table, offsets) = tables(&client).await;
        let input = topic("dlq-input");
        let dead_letter_topic = topic("dlq-dead");
        produce(&input, 0..COUNT, false).await;
        let key = harness
            .create(
                &unique_name("dlq"),
                pg_sink(
                    &input,
                    &table,
                    &offsets,
                    Guarantee::EffectivelyOnce,
                    ErrorPolicy::DeadLetter {
                        topic: dead_letter_topic.clone(),
                    },
                ),
            )
            .await;
        harness.wait_drained(&key, &input).await;
        let report = counted(&harness, &key, COUNT, "dead-lettered 4", |status| {
            status.records_dead_lettered == 4
        })
        .await;
        assert_eq!(report.state, ReportedState::Running);
        assert_eq!(report.status.records_skipped, 0, "{report:?}");
        let expected: Vec<(i64, i64)> = good_ids(0..COUNT).into_iter().map(|id| (id, 1)).collect();
        assert_eq!(table_counts(&client, &table).await, expected);
        let dead_letters = read_all(&dead_letter_topic, 4).await;
        let input_messages = read_all(&input, COUNT as usize).await;
        check_dead_letters(&dead_letters, &input_messages, &input, &key);
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t20_skip_counts_the_poison_messages_and_writes_the_rest() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let client = postgres().await;
        let (table, offsets) = tables(&client).await;
        let input = topic("skip-input");
        produce(&input, 0..COUNT, false).await;
        let key = harness
            .create(
                &unique_name("skip"),
                pg_sink(
                    &input,
                    &table,
                    &offsets,
                    Guarantee::AtLeastOnce,
                    ErrorPolicy::Skip,
                ),
            )
            .await;
        harness.wait_drained(&key, &input).await;
        let report = counted(&harness, &key, COUNT, "skipped 4", |status| {
            status.records_skipped == 4
        })
        .await;
        assert_eq!(report.state, ReportedState::Running);
        assert_eq!(report.status.records_dead_lettered, 0, "{report:?}");
        let ids: Vec<i64> = table_counts(&client, &table)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, good_ids(0..COUNT));
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t30_fail_stops_the_instance_naming_the_poison_message() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let client = postgres().await;
        let (table, offsets) = tables(&client).await;
        let input = topic("fail-input");
        let ids = produce(&input, 0..COUNT, true).await;
        let key = harness
            .create(
                &unique_name("fail"),
                pg_sink(
                    &input,
                    &table,
                    &offsets,
                    Guarantee::EffectivelyOnce,
                    ErrorPolicy::Fail,
                ),
            )
            .await;
        let report = harness.wait_state(&key, ReportedState::Failed).await;
        let error = report.status.last_error.unwrap_or_default();
        let first_poison = ids[5];
        let named = format!(
            "message {}:{}:{} of {input}",
            first_poison.ledger_id, first_poison.entry_id, first_poison.batch_index
        );
        assert!(
            error.contains(&named) && error.contains("not JSON"),
            "{error} should name {named}"
        );
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t40_a_crash_between_dead_letter_and_checkpoint_leaves_each_dead_letter_once() {
    ferry_node::runtime::block_on(async {
        let mut harness = Harness::start().await;
        let mut client = postgres().await;
        let (table, offsets) = tables(&client).await;
        let input = topic("crash-input");
        let dead_letter_topic = topic("crash-dead");
        // 1. Records 0..5 (all good) go through: the offsets row exists.
        produce(&input, 0..5, false).await;
        let key = harness
            .create(
                &unique_name("crash"),
                pg_sink(
                    &input,
                    &table,
                    &offsets,
                    Guarantee::EffectivelyOnce,
                    ErrorPolicy::DeadLetter {
                        topic: dead_letter_topic.clone(),
                    },
                ),
            )
            .await;
        harness.wait_drained(&key, &input).await;
        assert_eq!(table_counts(&client, &table).await.len(), 5);
        // 2. Hold the offsets row: the sink's next flush waits for it, after the dead
        //    letters of what it wrote were stored.
        let lock = client.transaction().await.expect("begin");
        lock.query(&format!("SELECT * FROM \"{offsets}\" FOR UPDATE"), &[])
            .await
            .expect("lock the offsets row");
        produce(&input, 5..COUNT, false).await;
        let stored = read_all(&dead_letter_topic, 4).await;
        assert_eq!(stored.len(), 4, "the dead letters are stored");
        let report = harness.board.get(&key).expect("a report");
        assert_eq!(
            report.status.records_dead_lettered, 0,
            "no checkpoint covers them yet: {report:?}"
        );
        // 3. Crash: the owner's database session ends while its flush waits (its transaction
        //    rolls back, so it can commit nothing), every instance is killed without a final
        //    checkpoint and started again; the lock goes, and the new instance replays from
        //    the last checkpoint.
        let watcher = postgres().await;
        let flushing = format!("UPDATE \"{offsets}\"%");
        let owner: i32 = wait::until(
            "the sink's flush waits for the offsets row",
            TIMEOUT,
            || {
                let (watcher, flushing) = (&watcher, &flushing);
                async move {
                    let row = watcher
                        .query_opt(
                            "SELECT pid FROM pg_stat_activity \
                         WHERE wait_event_type = 'Lock' AND query LIKE $1",
                            &[flushing],
                        )
                        .await
                        .expect("read pg_stat_activity")?;
                    Some(row.get(0))
                }
            },
        )
        .await;
        let ended: bool = watcher
            .query_one("SELECT pg_terminate_backend($1)", &[&owner])
            .await
            .expect("end the owner's session")
            .get(0);
        assert!(ended, "the owner's session {owner} ended");
        harness.restart_supervisor().await;
        lock.rollback().await.expect("release the offsets row");
        harness.wait_drained(&key, &input).await;
        counted(
            &harness,
            &key,
            COUNT - 5,
            "replayed 25 and dead-lettered 4 again",
            |status| status.records_dead_lettered == 4,
        )
        .await;
        // 4. Each good row once, each dead letter once.
        let expected: Vec<(i64, i64)> = good_ids(0..COUNT).into_iter().map(|id| (id, 1)).collect();
        assert_eq!(table_counts(&client, &table).await, expected);
        let dead_letters = read_all(&dead_letter_topic, 4).await;
        let input_messages = read_all(&input, COUNT as usize).await;
        check_dead_letters(&dead_letters, &input_messages, &input, &key);
        harness.stop().await;
    })
    .expect("the runtime builds");
}

#[test]
fn t50_a_sink_starting_at_latest_reads_only_what_follows_its_subscription() {
    ferry_node::runtime::block_on(async {
        let harness = Harness::start().await;
        let input = topic("latest-input");
        produce(&input, 0..10, false).await;
        let mut sink = spec(
            ConnectorKind::Sink,
            "blackhole",
            &[],
            &input,
            Guarantee::AtLeastOnce,
        );
        sink.options = RuntimeOptions {
            subscription_position: Some(StartPosition::Latest),
            write_batch_size: Some(3),
            ..RuntimeOptions::default()
        };
        let key = harness.create(&unique_name("latest"), sink).await;
        // Running: the subscription exists, at the end of the topic.
        harness.wait_state(&key, ReportedState::Running).await;
        produce(&input, 10..15, false).await;
        harness.wait_drained(&key, &input).await;
        let report = harness
            .wait_report(&key, "confirmed what followed", |report| {
                report.status.records_confirmed >= 5 && report.status.pending() == 0
            })
            .await;
        assert_eq!(
            report.status.records_read, 5,
            "only the records published after subscribing: {report:?}"
        );
        harness.stop().await;
    })
    .expect("the runtime builds");
}
