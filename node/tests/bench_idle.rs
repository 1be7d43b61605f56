//! `ferry bench idle` as a user runs it, shrunk to 5 sources and 2 s windows: it starts its own
//! node against the real broker, measures the baseline and the idle phase, ends with the
//! summary line, and cleans up after itself. No timing is asserted: only that the report is
//! complete and its numbers are sane.

use std::process::{Command, Output};

use ferry_test_support::broker::broker;

const INSTANCES: u32 = 5;

/// Returns the number after `name=` in `line`.
fn figure(line: &str, name: &str) -> f64 {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in: {line}"))
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|error| panic!("{name} is not a number ({error}) in: {line}"))
}

/// Runs the bench small with `guarantee`; returns its stdout after checking the run left no
/// files behind.
fn run_bench(guarantee: &str) -> String {
    let broker = broker();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let instances = INSTANCES.to_string();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["bench", "idle", "--pulsar-url", &broker.url])
        .args(["--pulsar-admin-url", &broker.admin_url])
        .args(["--instances", &instances, "--window", "2", "--warmup", "1"])
        .args(["--guarantee", guarantee, "--topics", "own"])
        .args(["--dir", dir.path().to_str().expect("a utf-8 path")])
        .output()
        .expect("run ferry bench idle");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&stderr)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the bench dir")
        .collect();
    assert!(left.is_empty(), "the bench left files behind: {left:?}");
    stdout
}

fn assert_report(stdout: &str) {
    let line = |prefix: &str| {
        let found: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with(prefix))
            .collect();
        assert_eq!(found.len(), 1, "one {prefix:?} line expected:\n{stdout}");
        found[0]
    };
    let baseline = line("phase baseline: ");
    let idle = line("phase idle: ");
    for phase in [baseline, idle] {
        let window = figure(phase, "window");
        assert!((1.9..10.0).contains(&window), "{phase}");
        let percent = figure(phase, "percent");
        // At most every core of the machine, and never negative.
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        assert!((0.0..=100.0 * cores).contains(&percent), "{phase}");
        assert!(figure(phase, "threads") >= 1.0, "{phase}");
    }
    assert_eq!(figure(baseline, "instances"), 0.0, "{baseline}");
    assert_eq!(figure(idle, "instances"), f64::from(INSTANCES), "{idle}");
    // Every source writes about one record a second: over the window the instances moved
    // records and committed checkpoints (a stalled node would show zero).
    assert!(figure(idle, "records_per_s") > 0.0, "{idle}");
    assert!(figure(idle, "checkpoints_per_s") > 0.0, "{idle}");

    let last = stdout.lines().last().expect("a last line");
    let names: Vec<&str> = last
        .strip_prefix("idle_cpu ")
        .unwrap_or_else(|| panic!("the last line starts with idle_cpu: {last}"))
        .split(' ')
        .map(|field| field.split_once('=').expect("name=value").0)
        .collect();
    assert_eq!(
        names,
        [
            "instances",
            "percent",
            "baseline_percent",
            "per_instance_percent"
        ],
        "{last}"
    );
    assert_eq!(figure(last, "instances"), f64::from(INSTANCES), "{last}");
    let percent = figure(last, "percent");
    let baseline_percent = figure(last, "baseline_percent");
    assert!((percent - figure(idle, "percent")).abs() < 0.01, "{last}");
    assert!(
        (baseline_percent - figure(baseline, "percent")).abs() < 0.01,
        "{last}"
    );
    let per_instance = figure(last, "per_instance_percent");
    let expected = (percent - baseline_percent) / f64::from(INSTANCES);
    assert!((per_instance - expected).abs() < 0.001, "{last}");
}

#[test]
fn bench_idle_measures_both_phases_and_ends_with_the_summary_line() {
    assert_report(&run_bench("effectively-once"));
}

#[test]
fn bench_idle_runs_at_least_once_sources_too() {
    assert_report(&run_bench("at-least-once"));
}

#[test]
fn bench_idle_names_the_flag_it_refuses() {
    for (flag, value) in [
        ("--instances", "0"),
        ("--window", "0"),
        ("--namespace", "public"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["bench", "idle", flag, value])
            .output()
            .expect("run ferry bench idle");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value} should be refused");
        assert!(stderr.contains(&format!("invalid {flag}")), "{stderr}");
    }
}
