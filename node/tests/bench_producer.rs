//! `ferry bench producer` as a user runs it, shrunk: both contenders publish to the real broker,
//! every round is reported, and the last line is the ratio.

use std::process::Command;

use ferry_test_support::broker::broker;

#[test]
fn bench_producer_reports_both_contenders_and_ends_with_the_ratio() {
    let broker = broker();
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "producer",
            "--pulsar-url",
            &broker.url,
            "--messages",
            "2000",
            "--size",
            "256",
            "--rounds",
            "2",
        ])
        .output()
        .expect("run ferry bench producer");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for label in ["pulsar-rs Producer (batched)", "ferry ProducerSession"] {
        let rounds = stdout
            .lines()
            .filter(|line| line.starts_with("round ") && line.contains(label))
            .count();
        assert_eq!(rounds, 2, "{label} should appear once per round:\n{stdout}");
    }
    let last = stdout.lines().last().expect("a last line");
    let ratio: f64 = last
        .strip_prefix("producer ratio=")
        .unwrap_or_else(|| panic!("last line is not the ratio: {last}"))
        .parse()
        .expect("a number");
    assert!(ratio > 0.0, "{last}");
}

#[test]
fn bench_producer_refuses_zero_messages() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bench", "producer", "--messages", "0"])
        .output()
        .expect("run ferry bench producer");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--messages, --size and --rounds must be above zero"),
        "{stderr}"
    );
}
