//! The `file` source and sink and the `blackhole` sink, built through the registry and run
//! against the real file system in temporary directories.
//!
//! Source: lines across files in name order, resuming exactly at any position, partial lines
//! waiting for their newline, new files picked up. Sink: lines appended, a crash after a
//! flush truncated back on reopen so a replay writes each line once. Configs refused naming
//! the field.

use std::path::Path;
use std::time::Duration;

use ferry_actors::api::registry::{self, ConnectorKind};
use ferry_actors::api::{ConnectorError, Position, Source, SourceRead, SourceRecord};
use ferry_test_support::wait;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(10);

fn file_source(path_glob: &Path) -> Box<dyn Source> {
    registry::find(ConnectorKind::Source, "file")
        .expect("the file source is registered")
        .build_source(&json!({"path_glob": path_glob, "poll_interval_ms": 1}))
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
        if let SourceRead::Records(batch) = source.read(3).await.expect("read") {
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
    while let SourceRead::Records(batch) = source.read(2).await.expect("read") {
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
    assert!(source.capabilities().replayable);
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
    assert_eq!(source.read(10).await.expect("read"), SourceRead::Idle);
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
    let file = registry::find(ConnectorKind::Source, "file").expect("registered");
    assert!(file.effectively_once);
    file.validate(&json!({"path_glob": "/tmp/*.log"}))
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
        let error = file.validate(&config).expect_err("invalid");
        assert!(
            matches!(&error, ConnectorError::InvalidConfig { field: named, .. } if named == field),
            "{config}: {error}"
        );
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open to append");
    file.write_all(text.as_bytes()).expect("append");
}
