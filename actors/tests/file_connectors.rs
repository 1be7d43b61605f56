//! The `file` source and sink and the `blackhole` sink, built through the registry and run
//! against the real file system in temporary directories.
//!
//! Source: lines across files in name order, resuming exactly at any position, partial lines
//! waiting for their newline, new files picked up. Sink: lines appended, a crash after a
//! flush truncated back on reopen so a replay writes each line once. Configs refused naming
//! the field.

use std::path::Path;
use std::time::Duration;

use ferry_actors::api::registry::InstanceContext;
use ferry_actors::api::{
    ConnectorError, InputMessageId, Position, Record, Sink, SinkRecord, SinkResume, Source,
    SourceRead, SourceRecord,
};
use ferry_actors::api::{Guarantee, Kind};
use ferry_actors::connectors::registry;
use ferry_test_support::wait;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(10);

/// Builds and checks connectors from JSON values, as the admin API and supervisor do.
trait FromJson {
    fn source_from(&self, config: serde_json::Value) -> Result<Box<dyn Source>, ConnectorError>;
    fn sink_from(&self, config: serde_json::Value) -> Result<Box<dyn Sink>, ConnectorError>;
    fn check(&self, config: &serde_json::Value) -> Result<(), ConnectorError>;
}

fn object(config: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match config {
        serde_json::Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

impl FromJson for ferry_actors::api::registry::ConnectorType {
    fn source_from(&self, config: serde_json::Value) -> Result<Box<dyn Source>, ConnectorError> {
        self.build_source(
            &self.validate(&object(config), &InstanceContext::single("test/default/c"))?,
            &InstanceContext::single("test/default/c"),
            Guarantee::EffectivelyOnce,
        )
    }

    fn sink_from(&self, config: serde_json::Value) -> Result<Box<dyn Sink>, ConnectorError> {
        self.build_sink(
            &self.validate(&object(config), &InstanceContext::single("test/default/c"))?,
            &InstanceContext::single("test/default/c"),
            Guarantee::EffectivelyOnce,
        )
    }

    fn check(&self, config: &serde_json::Value) -> Result<(), ConnectorError> {
        self.validate(
            &object(config.clone()),
            &InstanceContext::single("test/default/c"),
        )
        .map(drop)
    }
}

/// A read deadline of now: a source returns what it has at once.
fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

fn file_source(path_glob: &Path) -> Box<dyn Source> {
    registry()
        .find(Kind::Source, "file")
        .expect("the file source is registered")
        .source_from(json!({"path_glob": path_glob, "poll_interval_ms": 1}))
        .expect("a valid config")
}

fn value(record: &SourceRecord) -> String {
    String::from_utf8(record.record.value.clone()).expect("utf-8")
}

fn values(records: &[SourceRecord]) -> Vec<String> {
    records.iter().map(value).collect()
}

/// Reads until `count` records arrived (with a deadline); fails on any more right after.
async fn read_exactly(source: &mut dyn Source, count: usize, why: &str) -> Vec<SourceRecord> {
    // Shared by reference with each poll of the condition.
    let state = tokio::sync::Mutex::new((source, Vec::new()));
    wait::until(why, DEADLINE, || async {
        let mut guard = state.lock().await;
        let (source, records) = &mut *guard;
        if let SourceRead::Records(batch) = source.read(3, now()).await.expect("read") {
            records.extend(batch);
        }
        (records.len() >= count).then_some(())
    })
    .await;
    let (_, records) = state.into_inner();
    assert_eq!(records.len(), count, "{:?}", values(&records));
    records
}

/// Returns the records read from `position` until the source has nothing more.
async fn read_until_idle(source: &mut dyn Source) -> Vec<SourceRecord> {
    let mut records = Vec::new();
    while let SourceRead::Records(batch) = source.read(2, now()).await.expect("read") {
        records.extend(batch);
    }
    records
}

#[tokio::test]
async fn source_reads_lines_across_files_in_name_order() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    // Created out of order: the source reads by name, not by creation time.
    std::fs::write(directory.path().join("b.log"), "b1\nb2\n").expect("write");
    std::fs::write(directory.path().join("a.log"), "a1\n\na3\n").expect("write");
    std::fs::write(directory.path().join("c.txt"), "not matching\n").expect("write");
    std::fs::write(directory.path().join(".d.log"), "hidden\n").expect("write");
    let mut source = file_source(&directory.path().join("*.log"));
    source.open(None).await.expect("open");

    let records = read_until_idle(source.as_mut()).await;
    assert_eq!(values(&records), ["a1", "", "a3", "b1", "b2"]);
    let a_path = directory.path().join("a.log").display().to_string();
    let b_path = directory.path().join("b.log").display().to_string();
    let properties: Vec<(&str, &str)> = records
        .iter()
        .map(|record| {
            (
                record.record.properties["file"].as_str(),
                record.record.properties["offset"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        properties,
        [
            (a_path.as_str(), "0"),
            (a_path.as_str(), "3"),
            (a_path.as_str(), "4"),
            (b_path.as_str(), "0"),
            (b_path.as_str(), "3"),
        ]
    );
    assert!(records.iter().all(|record| record.record.key.is_none()));
    assert_eq!(
        source.read(10, now()).await.expect("read"),
        SourceRead::Idle
    );
}

#[tokio::test]
async fn source_resumes_exactly_at_a_position_taken_mid_stream() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    for (name, lines) in [("0001.log", 4), ("0002.log", 3), ("0003.log", 5)] {
        let text: String = (0..lines).map(|line| format!("{name}:{line}\n")).collect();
        std::fs::write(directory.path().join(name), text).expect("write");
    }
    let glob = directory.path().join("*.log");
    let mut source = file_source(&glob);
    source.open(None).await.expect("open");
    let all = read_until_idle(source.as_mut()).await;
    assert_eq!(all.len(), 12);

    // Every position, including the last line of a file (the next file follows) and the very
    // last one (nothing follows), resumes with exactly the records after it.
    for (index, record) in all.iter().enumerate() {
        let mut resumed = file_source(&glob);
        resumed
            .open(Some(&record.position_after))
            .await
            .expect("open at a position");
        let rest = read_until_idle(resumed.as_mut()).await;
        assert_eq!(
            rest,
            all[index + 1..],
            "resuming after record {index} ({})",
            value(record)
        );
    }
}

#[tokio::test]
async fn source_partial_line_waits_for_its_newline() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("in.log");
    std::fs::write(&path, "whole\npar").expect("write");
    let mut source = file_source(&directory.path().join("*.log"));
    source.open(None).await.expect("open");
    let records = read_exactly(source.as_mut(), 1, "the whole line is read").await;
    assert_eq!(values(&records), ["whole"]);
    assert_eq!(read_until_idle(source.as_mut()).await, []);

    append(&path, "tial\nnext");
    let records = read_exactly(source.as_mut(), 1, "the completed line is read").await;
    assert_eq!(values(&records), ["partial"]);
    assert_eq!(records[0].record.properties["offset"], "6");
    // Resuming after it still waits for `next`'s newline.
    let mut resumed = file_source(&directory.path().join("*.log"));
    resumed
        .open(Some(&records[0].position_after))
        .await
        .expect("open");
    assert_eq!(read_until_idle(resumed.as_mut()).await, []);
}

#[tokio::test]
async fn source_picks_up_a_newly_created_matching_file() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(directory.path().join("app-1.log"), "one\n").expect("write");
    let mut source = file_source(&directory.path().join("app-*.log"));
    source.open(None).await.expect("open");
    assert_eq!(
        values(&read_exactly(source.as_mut(), 1, "the first file is read").await),
        ["one"]
    );
    std::fs::write(directory.path().join("other.log"), "not matching\n").expect("write");
    std::fs::write(directory.path().join("app-2.log"), "two\nthree\n").expect("write");
    let records = read_exactly(source.as_mut(), 2, "the new file is read").await;
    assert_eq!(values(&records), ["two", "three"]);
    assert_eq!(read_until_idle(source.as_mut()).await, []);
}

#[tokio::test]
async fn source_in_a_missing_directory_is_unavailable_until_it_exists() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let missing = directory.path().join("later");
    let mut source = file_source(&missing.join("*.log"));
    let error = source.open(None).await.expect_err("no directory");
    assert!(
        matches!(&error, ConnectorError::Unavailable { reason, .. } if reason.contains("later")),
        "{error}"
    );
    std::fs::create_dir(&missing).expect("create");
    std::fs::write(missing.join("x.log"), "x\n").expect("write");
    source
        .open(None)
        .await
        .expect("open once the directory exists");
    assert_eq!(
        values(&read_exactly(source.as_mut(), 1, "the file is read").await),
        ["x"]
    );
}

#[tokio::test]
async fn source_position_past_the_end_of_its_file_is_invalid() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(directory.path().join("a.log"), "a\nb\n").expect("write");
    let glob = directory.path().join("*.log");
    let mut source = file_source(&glob);
    source.open(None).await.expect("open");
    let records = read_until_idle(source.as_mut()).await;
    let position: Position = records[1].position_after.clone();
    std::fs::write(directory.path().join("a.log"), "a\n").expect("truncate");
    let mut resumed = file_source(&glob);
    let error = resumed
        .open(Some(&position))
        .await
        .expect_err("past the end");
    assert!(
        matches!(&error, ConnectorError::InvalidPosition(reason) if reason.contains("is 2 bytes") && reason.contains("offset 4")),
        "{error}"
    );
    let error = resumed.open(Some(&vec![9, 9])).await.expect_err("garbage");
    assert!(
        matches!(error, ConnectorError::InvalidPosition(_)),
        "{error}"
    );
}

#[test]
fn source_configs_are_refused_naming_the_field() {
    let file = registry().find(Kind::Source, "file").expect("registered");
    assert!(file.effectively_once);
    file.check(&json!({"path_glob": "/tmp/*.log"}))
        .expect("valid");
    for (config, field) in [
        (
            json!({"path_glob": "/tmp/*.log", "poll_interval": 5}),
            "poll_interval",
        ),
        (json!({"poll_interval_ms": 5}), "path_glob"),
        (json!({"path_glob": 7}), "path_glob"),
        (
            json!({"path_glob": "/tmp/*.log", "poll_interval_ms": "fast"}),
            "poll_interval_ms",
        ),
        (
            json!({"path_glob": "/tmp/*.log", "poll_interval_ms": 0}),
            "poll_interval_ms",
        ),
        (json!({"path_glob": "/tmp/*/x.log"}), "path_glob"),
    ] {
        let error = file.check(&config).expect_err("invalid");
        assert!(
            matches!(&error, ConnectorError::InvalidConfig { field: named, .. } if named == field),
            "{config}: {error}"
        );
    }
}

fn file_sink(path: &Path) -> Box<dyn Sink> {
    registry()
        .find(Kind::Sink, "file")
        .expect("the file sink is registered")
        .sink_from(json!({ "path": path }))
        .expect("a valid config")
}

/// Input records `line-<first>` .. `line-<end - 1>`, one message each.
fn lines(range: std::ops::Range<u64>) -> Vec<SinkRecord> {
    range
        .map(|entry_id| SinkRecord {
            record: Record {
                value: format!("line-{entry_id}").into_bytes(),
                ..Record::default()
            },
            topic: "persistent://public/default/in".to_owned(),
            message_id: InputMessageId {
                ledger_id: 7,
                entry_id,
                batch_index: -1,
            },
        })
        .collect()
}

fn resume_at(sink: Option<Position>) -> SinkResume {
    SinkResume {
        instance: "public/default/out#0".to_owned(),
        sink,
        ..SinkResume::default()
    }
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read the output")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn expected_lines(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|entry_id| format!("line-{entry_id}")).collect()
}

#[tokio::test]
async fn sink_appends_one_line_per_record_and_flush_returns_the_length() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("new/dir/out.txt");
    let mut sink = file_sink(&path);
    assert_eq!(sink.open(&resume_at(None)).await.expect("open"), None);
    assert!(path.exists(), "open creates the file and its directory");
    sink.write(lines(0..3)).await.expect("write");
    sink.write(lines(3..4)).await.expect("write");
    let position = sink.flush(&vec![1]).await.expect("flush");
    assert_eq!(file_lines(&path), expected_lines(0..4));
    let length = std::fs::metadata(&path).expect("metadata").len();
    assert_eq!(length, 4 * "line-0\n".len() as u64);
    assert_eq!(position, length.to_be_bytes());

    // Reopened without a checkpoint (by a new sink, once this one is gone): appended to, not
    // truncated.
    drop(sink);
    let mut reopened = file_sink(&path);
    reopened.open(&resume_at(None)).await.expect("open");
    reopened.write(lines(4..5)).await.expect("write");
    reopened.flush(&vec![2]).await.expect("flush");
    assert_eq!(file_lines(&path), expected_lines(0..5));
}

/// 1. write 10 lines and flush: position P; 2. write 5 more and crash (drop without flush);
/// 3. reopen at P: the 5 are cut off; 4. the replay writes them again: each line once.
#[tokio::test]
async fn sink_replay_after_a_crash_writes_each_line_once() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("out.txt");
    let mut sink = file_sink(&path);
    sink.open(&resume_at(None)).await.expect("open");
    sink.write(lines(0..10)).await.expect("write");
    let checkpoint = sink.flush(&vec![10]).await.expect("flush");
    sink.write(lines(10..15)).await.expect("write");
    drop(sink);
    assert_eq!(
        file_lines(&path),
        expected_lines(0..15),
        "written, not flushed"
    );

    let mut successor = file_sink(&path);
    assert_eq!(
        successor
            .open(&resume_at(Some(checkpoint.clone())))
            .await
            .expect("open at the checkpoint"),
        None
    );
    assert_eq!(
        file_lines(&path),
        expected_lines(0..10),
        "the unflushed tail is cut"
    );
    successor.write(lines(10..15)).await.expect("replay");
    let position = successor.flush(&vec![15]).await.expect("flush");
    assert_eq!(file_lines(&path), expected_lines(0..15));
    assert!(position > checkpoint);
}

/// A previous owner not gone yet (an instance actor told to stop while a write of its is still
/// running) must not write after its successor cut the file back to the checkpoint, or its
/// lines land after the cut and the replay repeats them: the successor's open is refused while
/// the previous sink holds the file, and succeeds once it is gone.
#[tokio::test]
async fn sink_successor_cannot_open_while_the_previous_owner_still_holds_the_file() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("out.txt");
    let mut previous = file_sink(&path);
    previous.open(&resume_at(None)).await.expect("open");
    previous.write(lines(0..10)).await.expect("write");
    let checkpoint = previous.flush(&vec![10]).await.expect("flush");
    previous.write(lines(10..15)).await.expect("write");

    let mut successor = file_sink(&path);
    let error = successor
        .open(&resume_at(Some(checkpoint.clone())))
        .await
        .expect_err("the previous owner still holds the file");
    assert!(
        matches!(&error, ConnectorError::Unavailable { system, reason }
            if system == "file" && reason.contains("another writer")),
        "{error}"
    );
    assert_eq!(
        file_lines(&path),
        expected_lines(0..15),
        "nothing is cut while the previous owner may still write"
    );
    previous.write(lines(15..20)).await.expect("a late write");
    drop(previous);

    successor
        .open(&resume_at(Some(checkpoint)))
        .await
        .expect("open once the previous owner is gone");
    assert_eq!(
        file_lines(&path),
        expected_lines(0..10),
        "cut to the checkpoint"
    );
    successor.write(lines(10..20)).await.expect("replay");
    successor.flush(&vec![20]).await.expect("flush");
    assert_eq!(file_lines(&path), expected_lines(0..20));
}

#[tokio::test]
async fn sink_position_past_the_end_of_the_file_is_invalid() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("out.txt");
    std::fs::write(&path, "abc\n").expect("write");
    let mut sink = file_sink(&path);
    let error = sink
        .open(&resume_at(Some(100_u64.to_be_bytes().to_vec())))
        .await
        .expect_err("past the end");
    assert!(
        matches!(&error, ConnectorError::InvalidPosition(reason) if reason.contains("100") && reason.contains("(4 bytes)")),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "abc\n");
    let error = sink
        .open(&resume_at(Some(vec![0, 1])))
        .await
        .expect_err("not 8 bytes");
    assert!(
        matches!(error, ConnectorError::InvalidPosition(_)),
        "{error}"
    );
}

#[tokio::test]
async fn blackhole_counts_records_and_flushes_the_count() {
    let blackhole = registry()
        .find(Kind::Sink, "blackhole")
        .expect("registered");
    assert!(blackhole.effectively_once);
    let mut sink = blackhole.sink_from(json!({})).expect("no fields needed");
    sink.open(&resume_at(Some(5_u64.to_be_bytes().to_vec())))
        .await
        .expect("open");
    sink.write(lines(0..3)).await.expect("write");
    assert_eq!(
        sink.flush(&Vec::new()).await.expect("flush"),
        8_u64.to_be_bytes(),
        "5 counted before the checkpoint, 3 since"
    );
}

#[test]
fn sink_configs_are_refused_naming_the_field() {
    let file = registry().find(Kind::Sink, "file").expect("registered");
    assert!(file.effectively_once);
    file.check(&json!({"path": "/tmp/out.txt"})).expect("valid");
    let blackhole = registry()
        .find(Kind::Sink, "blackhole")
        .expect("registered");
    for (connector_type, config, field) in [
        (
            file,
            json!({"path": "/tmp/out.txt", "mode": "append"}),
            "mode",
        ),
        (file, json!({}), "path"),
        (file, json!({"path": ["/tmp/out.txt"]}), "path"),
        (file, json!({"path": ""}), "path"),
        (blackhole, json!({"count": 1}), "count"),
    ] {
        let error = connector_type.check(&config).expect_err("invalid");
        assert!(
            matches!(&error, ConnectorError::InvalidConfig { field: named, .. } if named == field),
            "{config}: {error}"
        );
    }
    let error = registry()
        .find(Kind::Source, "blackhole")
        .expect_err("a sink only");
    assert!(error.to_string().contains("source_type"), "{error}");
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open to append");
    file.write_all(text.as_bytes()).expect("append");
}
