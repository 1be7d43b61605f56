//! `ferry bench source` and `ferry bench sink` as a user runs them, shrunk: every contender
//! moves its records through the real broker (and the real PostgreSQL), every one is
//! reported with a positive rate, and the last line holds the ratios.

use std::process::{Command, Output};

use ferry_test_support::broker::broker;
use ferry_test_support::postgres::pg_url;

const RECORDS: &str = "5000";

/// Runs `ferry bench <kind>` small, one round, against the test broker; returns its stdout.
fn run_bench(kind: &str, extra_args: &[&str]) -> String {
    let broker = broker();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bench", kind, "--pulsar-url", &broker.url])
        .args(["--records", RECORDS, "--rounds", "1"])
        .args(extra_args)
        .output()
        .expect("run ferry bench");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

/// Returns the number after `name=` in `line`.
fn figure(line: &str, name: &str) -> f64 {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in: {line}"))
        .parse()
        .unwrap_or_else(|error| panic!("{name} is not a number ({error}) in: {line}"))
}

/// Checks that each label has one `round 1:` line with a positive rate in records/s.
fn assert_rounds_report(stdout: &str, labels: &[&str]) {
    for label in labels {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with("round 1: ") && line.contains(label))
            .collect();
        assert_eq!(lines.len(), 1, "{label} should be reported once:\n{stdout}");
        let rate: f64 = lines[0]
            .split_whitespace()
            .rev()
            .nth(3)
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no rate in: {}", lines[0]));
        assert!(rate > 0.0, "{}", lines[0]);
    }
}

#[test]
fn bench_source_reports_each_path_and_ends_with_the_ratio() {
    let stdout = run_bench("source", &[]);
    assert_rounds_report(
        &stdout,
        &[
            "pulsar-rs Producer (batched)",
            "SourceInstance effectively-once",
            "SourceInstance at-least-once",
        ],
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let [.., checkpoints, last] = lines.as_slice() else {
        panic!("too few lines:\n{stdout}");
    };
    assert!(figure(checkpoints, "ckpt_ratio") > 0.0, "{checkpoints}");
    assert!(last.starts_with("source ratio="), "{last}");
    assert_eq!(last.split_whitespace().count(), 2, "{last}");
    assert!(figure(last, "ratio") > 0.0, "{last}");
}

#[test]
fn bench_sink_reports_each_path_and_ends_with_both_ratios() {
    let stdout = run_bench("sink", &["--pg-url", &pg_url()]);
    assert_rounds_report(
        &stdout,
        &[
            "pulsar-rs Consumer (cumulative acks)",
            "SinkInstance -> blackhole (effectively-once)",
            "pulsar-rs Consumer -> multi-row INSERT",
            "SinkInstance -> postgres (effectively-once)",
            "multi-row INSERT alone",
        ],
    );
    let last = stdout.lines().last().expect("a last line");
    assert!(last.starts_with("sink ratio="), "{last}");
    assert_eq!(last.split_whitespace().count(), 3, "{last}");
    assert!(figure(last, "ratio") > 0.0, "{last}");
    assert!(figure(last, "pg_ratio") > 0.0, "{last}");
}

#[test]
fn bench_source_and_sink_refuse_zero_records() {
    for kind in ["source", "sink"] {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["bench", kind, "--records", "0"])
            .output()
            .expect("run ferry bench");
        assert!(!output.status.success(), "{kind}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("must be above zero"), "{kind}: {stderr}");
    }
}
