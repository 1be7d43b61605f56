//! `ferry bench meta` as a user runs it, shrunk to a few commits: it builds its 3-node cluster,
//! measures the floor and both phases, cleans up after itself, and ends with the summary line.

use std::process::Command;

#[test]
fn bench_meta_ends_with_its_summary_line_and_cleans_up() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "bench",
            "meta",
            "--dir",
            dir.path().to_str().expect("a utf-8 path"),
            "--single-commits",
            "20",
            "--writers",
            "4",
            "--commits-per-writer",
            "10",
        ])
        .output()
        .expect("run ferry bench meta");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 writer: 20 commits"), "{stdout}");
    assert!(stdout.contains("4 writers: 40 commits"), "{stdout}");
    let last = stdout.lines().last().expect("a last line");
    let fields: Vec<(&str, f64)> = last
        .strip_prefix("meta ")
        .expect("the summary line starts with meta")
        .split(' ')
        .map(|field| {
            let (name, value) = field.split_once('=').expect("name=value");
            (name, value.parse().expect("a number"))
        })
        .collect();
    assert_eq!(fields[0].0, "p50_ratio");
    assert_eq!(fields[1].0, "commits_per_s_64");
    assert!(fields.iter().all(|(_, value)| *value > 0.0), "{last}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the bench dir")
        .collect();
    assert!(left.is_empty(), "the bench left files behind: {left:?}");
}
