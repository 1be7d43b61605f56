//! The `postgres` sink against a real PostgreSQL server (`deploy/postgres/postgres.sh start`;
//! `FERRY_TEST_PG_URL` points elsewhere). Each test writes its own table.
//!
//! - rows: column mapping with Postgres converting the types, the jsonb layout, upsert by key;
//! - effectively-once: a crash between write and flush, then a replay, leaves every row
//!   exactly once, and the position stored with the rows wins;
//! - fencing: after a newer epoch opened, the older owner's flush fails and writes nothing;
//! - rejected records: a refused value or a value that is no object is rejected with its
//!   reason while the rest of the batch commits, upserts applied in order;
//! - errors: bad configs name their field, a wrong password or a server that is down never
//!   shows the password.

use std::str::FromStr;

use ferry_actors::api::registry::InstanceContext;
use ferry_actors::api::{ConnectorError, InputMessageId, Record, Sink, SinkRecord, SinkResume};
use ferry_actors::api::{Guarantee, Kind};
use ferry_actors::connectors::registry;
use ferry_test_support::postgres::pg_url;
use ferry_test_support::unique_name;
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

const TOPIC: &str = "persistent://public/default/pg-input";

/// Connects as the test user, for setting tables up and reading them back.
async fn admin() -> Client {
    let (client, connection) = tokio_postgres::connect(&pg_url(), NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A fresh table name (unique_name's dashes are not identifier characters).
fn table_name(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

/// The sink config for the test server: the URL without credentials, user and password apart.
fn sink_config(extra: Value) -> Value {
    let parsed = tokio_postgres::Config::from_str(&pg_url()).expect("a postgres URL");
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("FERRY_TEST_PG_URL must name a TCP host, got {other:?}"),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let mut config = json!({
        "url": format!("postgres://{host}:{port}/{}", parsed.get_dbname().unwrap_or("ferry")),
        "user": parsed.get_user().unwrap_or("ferry"),
        "password": String::from_utf8_lossy(parsed.get_password().unwrap_or(b"ferry")),
    });
    if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
        base.extend(extra);
    }
    config
}

/// Creates a fresh table with `columns` (SQL column definitions) and returns its name.
async fn create_table(client: &Client, prefix: &str, columns: &str) -> String {
    let table = table_name(prefix);
    client
        .batch_execute(&format!("CREATE TABLE \"{table}\" ({columns})"))
        .await
        .expect("create table");
    table
}

/// Builds a sink from `extra` on top of the server's settings and opens it as a fresh
/// instance with epoch 1.
async fn open_sink(extra: Value) -> Box<dyn Sink> {
    let mut sink = build(&sink_config(extra)).expect("valid config");
    sink.open(&resume(&unique_name("public/default/pg#0"), 1))
        .await
        .expect("open");
    sink
}

fn build(config: &Value) -> Result<Box<dyn Sink>, ConnectorError> {
    let postgres = registry()
        .find(Kind::Sink, "postgres")
        .expect("the postgres sink is registered");
    let Value::Object(config) = config else {
        panic!("a config object");
    };
    let context = InstanceContext::single("public/default/pg");
    postgres.build_sink(
        &postgres.validate(config, &context)?,
        &context,
        Guarantee::EffectivelyOnce,
    )
}

fn resume(instance: &str, epoch: u64) -> SinkResume {
    SinkResume {
        instance: instance.to_owned(),
        input: None,
        sink: None,
        epoch,
    }
}

/// Records with entry ids `entries`, each value made by `value(entry)`.
fn records(entries: std::ops::Range<u64>, value: impl Fn(u64) -> Value) -> Vec<SinkRecord> {
    entries
        .map(|entry| SinkRecord {
            record: Record {
                key: Some(format!("key-{entry}")),
                value: value(entry).to_string().into_bytes(),
                ..Record::default()
            },
            topic: TOPIC.to_owned(),
            message_id: InputMessageId {
                ledger_id: 9,
                entry_id: entry,
                batch_index: -1,
            },
        })
        .collect()
}

/// A row of the insert test's table: id, name, at (Unix seconds), tags (jsonb text),
/// untouched.
type InsertedRow = (
    i32,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

async fn count_rows(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn insert_maps_fields_to_columns_and_postgres_converts_their_types() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_insert",
        "id integer NOT NULL, name text, at timestamptz, \
             tags jsonb, untouched text DEFAULT 'default'",
    )
    .await;
    let mut sink = build(&sink_config(json!({
        "table": table,
        "columns": {"id": "id", "name": "name", "at": "at", "tags": "tags"},
    })))
    .expect("valid config");
    let instance = unique_name("public/default/pg#0");
    assert_eq!(sink.open(&resume(&instance, 1)).await.expect("open"), None);
    sink.write(records(0..3, |entry| {
        json!({
            "id": entry,
            "name": format!("n{entry}"),
            "at": "2026-01-02T03:04:05Z",
            "tags": {"even": entry % 2 == 0},
            "ignored": "not mapped",
        })
    }))
    .await
    .expect("write");
    // A missing field is NULL; a string holding a number converts like SQL input.
    sink.write(records(3..4, |_| json!({"id": "3"})))
        .await
        .expect("write");
    assert_eq!(count_rows(&client, &table).await, 0, "nothing before flush");
    sink.flush(&b"after-4".to_vec()).await.expect("flush");

    let rows = client
        .query(
            &format!(
                "SELECT id, name, extract(epoch FROM at)::bigint, tags::text, untouched \
                 FROM \"{table}\" ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("read back");
    let read: Vec<InsertedRow> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    assert_eq!(read.len(), 4, "{read:?}");
    assert_eq!(
        read[0],
        (
            0,
            Some("n0".to_owned()),
            Some(1_767_323_045),
            Some("{\"even\": true}".to_owned()),
            Some("default".to_owned())
        )
    );
    assert_eq!(read[1].3.as_deref(), Some("{\"even\": false}"));
    assert_eq!(read[3], (3, None, None, None, Some("default".to_owned())));
}

#[tokio::test]
async fn jsonb_layout_stores_each_whole_value() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_jsonb",
        "payload jsonb NOT NULL, written_at timestamptz DEFAULT now()",
    )
    .await;
    let mut sink = open_sink(json!({"table": table})).await;
    sink.write(records(
        0..5,
        |entry| json!({"n": entry, "nested": {"list": [entry]}}),
    ))
    .await
    .expect("write");
    sink.flush(&b"p".to_vec()).await.expect("flush");
    let rows = client
        .query(
            &format!("SELECT payload::text FROM \"{table}\" ORDER BY (payload->>'n')::int"),
            &[],
        )
        .await
        .expect("read back");
    let payloads: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(payloads.len(), 5);
    assert_eq!(payloads[2], r#"{"n": 2, "nested": {"list": [2]}}"#);
}

#[tokio::test]
async fn jsonb_upsert_keys_rows_by_the_message_key() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_jsonb_upsert",
        "message_key text PRIMARY KEY, doc jsonb NOT NULL",
    )
    .await;
    let mut sink = open_sink(json!({
        "table": table,
        "mode": "upsert",
        "key_column": "message_key",
        "json_column": "doc",
    }))
    .await;
    for round in 0..2 {
        sink.write(records(
            0..3,
            |entry| json!({"entry": entry, "round": round}),
        ))
        .await
        .expect("write");
        sink.flush(&format!("round-{round}").into_bytes())
            .await
            .expect("flush");
    }
    let rows = client
        .query(
            &format!("SELECT message_key, doc->>'round' FROM \"{table}\" ORDER BY message_key"),
            &[],
        )
        .await
        .expect("read back");
    let read: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        read,
        [
            ("key-0".to_owned(), "1".to_owned()),
            ("key-1".to_owned(), "1".to_owned()),
            ("key-2".to_owned(), "1".to_owned())
        ]
    );
}

#[tokio::test]
async fn upsert_keeps_one_row_per_key_with_the_latest_values() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_upsert",
        "id text PRIMARY KEY, version integer NOT NULL",
    )
    .await;
    let mut sink = open_sink(json!({
        "table": table,
        "mode": "upsert",
        "key_column": "id",
        "columns": {"user": "id", "version": "version"},
    }))
    .await;
    // Six records over three users; one flush holds two versions of the same user.
    sink.write(records(
        0..6,
        |entry| json!({"user": format!("u{}", entry % 3), "version": entry}),
    ))
    .await
    .expect("write");
    sink.flush(&b"p1".to_vec()).await.expect("flush");
    sink.write(records(6..7, |_| json!({"user": "u0", "version": 60})))
        .await
        .expect("write");
    sink.flush(&b"p2".to_vec()).await.expect("flush");
    let rows = client
        .query(
            &format!("SELECT id, version FROM \"{table}\" ORDER BY id"),
            &[],
        )
        .await
        .expect("read back");
    let read: Vec<(String, i32)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        read,
        [
            ("u0".to_owned(), 60),
            ("u1".to_owned(), 4),
            ("u2".to_owned(), 5)
        ]
    );
}

/// Steps: open (epoch 1), write and flush batch A with position PA, write batch B and crash
/// (drop the sink, no flush); a new owner (epoch 2) opens and gets PA back; it replays B and
/// flushes. Every record is then in the table exactly once.
#[tokio::test]
async fn a_crash_between_write_and_flush_then_a_replay_leaves_every_row_exactly_once() {
    let client = admin().await;
    let table = table_name("pg_crash");
    let offsets = table_name("pg_crash_offsets");
    client
        .batch_execute(&format!("CREATE TABLE \"{table}\" (entry bigint NOT NULL)"))
        .await
        .expect("create table");
    let config = sink_config(json!({
        "table": table,
        "offsets_table": offsets,
        "columns": {"entry": "entry"},
        "batch_size": 2,
    }));
    let instance = unique_name("public/default/pg#0");
    let batch_a = || records(0..5, |entry| json!({"entry": entry}));
    let batch_b = || records(5..9, |entry| json!({"entry": entry}));
    let position_a = b"position-after-A".to_vec();

    let mut first = build(&config).expect("valid config");
    assert_eq!(first.open(&resume(&instance, 1)).await.expect("open"), None);
    first.write(batch_a()).await.expect("write A");
    first.flush(&position_a).await.expect("flush A");
    first.write(batch_b()).await.expect("write B");
    drop(first);
    assert_eq!(count_rows(&client, &table).await, 5, "only A is durable");

    let mut second = build(&config).expect("valid config");
    let mut stale = resume(&instance, 2);
    stale.input = Some(b"an older checkpoint of Ferry's".to_vec());
    assert_eq!(
        second.open(&stale).await.expect("reopen"),
        Some(position_a),
        "the position stored with the rows wins"
    );
    second.write(batch_b()).await.expect("replay B");
    second
        .flush(&b"position-after-B".to_vec())
        .await
        .expect("flush B");

    let rows = client
        .query(
            &format!("SELECT entry, count(*) FROM \"{table}\" GROUP BY entry ORDER BY entry"),
            &[],
        )
        .await
        .expect("read back");
    let counts: Vec<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let expected: Vec<(i64, i64)> = (0..9).map(|entry| (entry, 1)).collect();
    assert_eq!(counts, expected);
    let stored: Vec<u8> = client
        .query_one(
            &format!("SELECT input FROM \"{offsets}\" WHERE instance = $1"),
            &[&instance],
        )
        .await
        .expect("offsets row")
        .get(0);
    assert_eq!(stored, b"position-after-B");
}

/// Steps: the owner with epoch 5 opens and writes; an owner with epoch 7 opens; the epoch-5
/// owner's flush fails as fenced and writes nothing, and it cannot open again either, while
/// the epoch-7 owner flushes.
#[tokio::test]
async fn an_older_owner_cannot_write_after_a_newer_one_opened() {
    let client = admin().await;
    let table = create_table(&client, "pg_fence", "entry bigint NOT NULL").await;
    let config = sink_config(json!({"table": table, "columns": {"entry": "entry"}}));
    let instance = unique_name("public/default/pg#0");

    let mut old_owner = build(&config).expect("valid config");
    old_owner
        .open(&resume(&instance, 5))
        .await
        .expect("epoch 5 opens");
    old_owner
        .write(records(0..3, |entry| json!({"entry": entry})))
        .await
        .expect("write");
    let mut new_owner = build(&config).expect("valid config");
    new_owner
        .open(&resume(&instance, 7))
        .await
        .expect("epoch 7 opens");

    let error = old_owner
        .flush(&b"old".to_vec())
        .await
        .expect_err("epoch 5 is fenced");
    assert_eq!(
        error,
        ConnectorError::Fenced {
            system: "postgres".to_owned(),
            ours: 5,
            current: 7
        }
    );
    assert!(error.to_string().contains("fenced by epoch 7"), "{error}");
    assert_eq!(
        count_rows(&client, &table).await,
        0,
        "the fenced flush wrote nothing"
    );
    let error = old_owner
        .open(&resume(&instance, 5))
        .await
        .expect_err("epoch 5 cannot open again");
    assert!(
        matches!(error, ConnectorError::Fenced { current: 7, .. }),
        "{error}"
    );

    new_owner
        .write(records(0..3, |entry| json!({"entry": entry})))
        .await
        .expect("write");
    new_owner
        .flush(&b"new".to_vec())
        .await
        .expect("epoch 7 flushes");
    assert_eq!(count_rows(&client, &table).await, 3);
}

/// Steps: write batch A (all good), then batch B holding a value the column's type refuses, a
/// value a CHECK constraint refuses and a value that is no object; flush. Only B's bad records
/// are rejected, each with the server's (or the shape's) reason, and every other row of A and B
/// commits once: the refused statement aborted the transaction, which started over with A.
#[tokio::test]
async fn refused_values_are_rejected_with_the_reason_and_the_rest_commits() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_refused",
        "n integer NOT NULL CHECK (n >= 0), entry bigint NOT NULL",
    )
    .await;
    let mut sink = open_sink(json!({
        "table": table,
        "columns": {"n": "n", "entry": "entry"},
        "batch_size": 2,
    }))
    .await;
    let rejected = sink
        .write(records(0..2, |entry| json!({"n": entry, "entry": entry})))
        .await
        .expect("write A");
    assert!(rejected.is_empty(), "{rejected:?}");
    let rejected = sink
        .write(records(2..8, |entry| match entry {
            3 => json!({"n": "not a number", "entry": entry}),
            5 => json!({"n": -1, "entry": entry}),
            6 => json!([1, 2]),
            _ => json!({"n": entry, "entry": entry}),
        }))
        .await
        .expect("write B");
    let indexes: Vec<usize> = rejected.iter().map(|rejection| rejection.index).collect();
    assert_eq!(indexes, [1, 3, 4], "{rejected:?}");
    assert!(
        rejected[0].reason.contains("not a number"),
        "{}",
        rejected[0].reason
    );
    assert!(
        rejected[1].reason.contains("check"),
        "{}",
        rejected[1].reason
    );
    assert!(
        rejected[2].reason.contains("an array"),
        "{}",
        rejected[2].reason
    );
    assert_eq!(
        count_rows(&client, &table).await,
        0,
        "nothing before the flush"
    );
    sink.flush(&b"p".to_vec()).await.expect("flush");
    let rows = client
        .query(
            &format!("SELECT entry, count(*) FROM \"{table}\" GROUP BY entry ORDER BY entry"),
            &[],
        )
        .await
        .expect("read back");
    let counts: Vec<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(counts, [(0, 1), (1, 1), (2, 1), (4, 1), (7, 1)]);
}

/// Upsert applies a batch's records in order even when one is refused: the refused record is
/// rejected and the key keeps the value of the record before it.
#[tokio::test]
async fn an_upsert_whose_latest_value_is_refused_keeps_the_one_before() {
    let client = admin().await;
    let table = create_table(
        &client,
        "pg_refused_upsert",
        "id text PRIMARY KEY, v integer NOT NULL CHECK (v >= 0)",
    )
    .await;
    let mut sink = open_sink(json!({
        "table": table,
        "mode": "upsert",
        "key_column": "id",
        "columns": {"id": "id", "v": "v"},
    }))
    .await;
    let rejected = sink
        .write(records(0..3, |entry| match entry {
            0 => json!({"id": "a", "v": 1}),
            1 => json!({"id": "a", "v": -1}),
            _ => json!({"id": "b", "v": 2}),
        }))
        .await
        .expect("write");
    let indexes: Vec<usize> = rejected.iter().map(|rejection| rejection.index).collect();
    assert_eq!(indexes, [1], "{rejected:?}");
    sink.flush(&b"p".to_vec()).await.expect("flush");
    let rows = client
        .query(&format!("SELECT id, v FROM \"{table}\" ORDER BY id"), &[])
        .await
        .expect("read back");
    let values: Vec<(String, i32)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(values, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
}

#[tokio::test]
async fn bad_configs_are_refused_naming_the_field() {
    let cases = [
        (json!({}), "table"),
        (json!({"table": "t", "colour": "blue"}), "colour"),
        (json!({"table": "t", "mode": "upsert"}), "key_column"),
        (json!({"table": "t\"; DROP TABLE x; --"}), "table"),
        (
            json!({"table": "t", "columns": {"a": "bad column"}}),
            "columns",
        ),
        (
            json!({"table": "t", "offsets_table": "9lives"}),
            "offsets_table",
        ),
    ];
    for (extra, field) in cases {
        let config = sink_config(extra.clone());
        match build(&config) {
            Err(ConnectorError::InvalidConfig { field: named, .. }) => {
                assert_eq!(named, field, "{extra}");
            }
            other => panic!("{extra}: expected InvalidConfig on {field}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let password = "definitely-not-the-password-31337";
    let mut sink =
        build(&sink_config(json!({"table": "t", "password": password}))).expect("valid config");
    assert!(!format!("{sink:?}").contains(password));
    let error = sink
        .open(&resume(&unique_name("public/default/pg#0"), 1))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(&error, ConnectorError::InvalidConfig { field, .. } if field == "password"),
        "{error:?}"
    );
    assert!(!error.to_string().contains(password), "{error}");
    assert!(!format!("{error:?}").contains(password), "{error:?}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_and_open_retries() {
    // Port 1 on loopback never runs PostgreSQL.
    let mut sink = build(&json!({
        "url": "postgres://127.0.0.1:1/ferry",
        "user": "ferry",
        "password": "secret-for-a-down-server",
        "table": "t",
    }))
    .expect("valid config");
    for _ in 0..2 {
        let error = sink
            .open(&resume("public/default/pg#0", 1))
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&error, ConnectorError::Unavailable { system, .. } if system == "postgres"),
            "{error:?}"
        );
        assert!(!error.to_string().contains("secret-for-a-down-server"));
    }
    let error = sink.flush(&b"p".to_vec()).await.expect_err("never opened");
    assert!(
        matches!(error, ConnectorError::Unavailable { .. }),
        "{error:?}"
    );
}
