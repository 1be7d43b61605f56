//! `ferry bench meta`: checkpoint commits through a 3-node metadata store on loopback.
//!
//! In one run: the floor (the median of an fdatasync loop on the disk the stores use, plus the
//! median loopback TCP round trip), then one writer committing a chain of checkpoints, then
//! `--writers` writers at once, each on its own instance. Commits go through the leader's
//! handle; each is durable on a majority (two fsyncs in parallel, one replication round trip)
//! before it is answered. The last line is the summary:
//! `meta p50_ratio=<1-writer commit p50 / floor> commits_per_s_64=<commits/s with the writers>`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::percentile;
use crate::meta::local::LocalNode;
use crate::meta::node::DEFAULT_JOIN_TIMEOUT;
use crate::meta::state::{
    Command, ConnectorKind, ConnectorName, ConnectorSpec, Guarantee, InstanceKey, Outcome,
};
use crate::meta::{Faults, Meta, RaftTuning};

/// Probes of the floor: fdatasyncs and round trips.
const FLOOR_SAMPLES: usize = 1_000;
/// Bytes written before each fdatasync: one page, about what a small commit writes.
const PROBE_WRITE: usize = 4096;
/// The probe rewrites a file of this many pages in turn.
const PROBE_PAGES: u64 = 256;

/// Flags of `ferry bench meta`.
#[derive(Debug, Args)]
pub struct MetaBenchArgs {
    /// Directory for the three stores and the fdatasync probe: the disk under test. Default:
    /// the system's temporary directory. Removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Commits by the single writer.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub single_commits: u64,
    /// Concurrent writers in the second phase, one instance each.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub writers: u32,
    /// Commits by each concurrent writer.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub commits_per_writer: u64,
}

/// Latencies and throughput of one phase.
#[derive(Debug)]
struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Phase {
    fn commits_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: MetaBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.writers >= 1, "invalid --writers: must be at least 1");
    anyhow::ensure!(
        args.single_commits >= 1 && args.commits_per_writer >= 1,
        "invalid --single-commits or --commits-per-writer: must be at least 1"
    );
    let root = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("ferry-bench-meta-{}", std::process::id()));
    let created = root.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&created))
        .await?
        .map_err(|error| anyhow::anyhow!("cannot create {} (--dir): {error}", root.display()))?;
    let result = bench(&args, &root).await;
    let removed = root.clone();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removed)).await??;
    result
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
async fn bench(args: &MetaBenchArgs, root: &Path) -> anyhow::Result<()> {
    println!(
        "meta bench: 3 nodes on loopback, stores in {}",
        root.display()
    );
    let probe = root.join("fdatasync.probe");
    let mut fsyncs = tokio::task::spawn_blocking(move || fdatasync_latencies(&probe)).await??;
    let mut round_trips = tokio::task::spawn_blocking(loopback_round_trips).await??;
    fsyncs.sort();
    round_trips.sort();
    let fsync_p50 = percentile(&fsyncs, 50);
    let round_trip_p50 = percentile(&round_trips, 50);
    let floor = fsync_p50 + round_trip_p50;
    println!(
        "floor: fdatasync p50={} p99={}, loopback round trip p50={}, floor={}",
        micros(fsync_p50),
        micros(percentile(&fsyncs, 99)),
        micros(round_trip_p50),
        micros(floor)
    );

    let nodes = start_cluster(root).await?;
    let outcome = measure(args, &nodes[0].meta).await;
    for node in nodes {
        node.stop().await?;
    }
    let (single, many) = outcome?;

    let single_p50 = percentile(&single.latencies, 50);
    report("1 writer", &single);
    report(&format!("{} writers", args.writers), &many);
    println!(
        "meta p50_ratio={:.2} commits_per_s_64={:.0}",
        single_p50.as_secs_f64() / floor.as_secs_f64(),
        many.commits_per_second()
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
fn report(label: &str, phase: &Phase) {
    println!(
        "{label}: {} commits in {:.2}s, {:.0} commits/s, p50={} p99={}",
        phase.latencies.len(),
        phase.elapsed.as_secs_f64(),
        phase.commits_per_second(),
        micros(percentile(&phase.latencies, 50)),
        micros(percentile(&phase.latencies, 99)),
    );
}

fn micros(duration: Duration) -> String {
    format!("{}us", duration.as_micros())
}

/// Starts node 1 (bootstrapped, so the leader) and nodes 2 and 3 joined through it.
async fn start_cluster(root: &Path) -> anyhow::Result<Vec<LocalNode>> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let mut nodes: Vec<LocalNode> = Vec::new();
    for id in 1..=3 {
        let node = LocalNode::start(
            id,
            loopback,
            &root.join(format!("node-{id}")),
            RaftTuning::default(),
            Faults::default(),
        )
        .await?;
        match nodes.first() {
            None => node.meta.bootstrap().await?,
            Some(first) => {
                node.meta
                    .join(&first.address.to_string(), DEFAULT_JOIN_TIMEOUT)
                    .await?
            }
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// Runs the single-writer phase, then the concurrent one, on `leader`.
async fn measure(args: &MetaBenchArgs, leader: &Meta) -> anyhow::Result<(Phase, Phase)> {
    let connector = ConnectorName::new("public", "default", "bench");
    let reply = leader
        .write(Command::CreateConnector {
            connector: connector.clone(),
            spec: ConnectorSpec {
                kind: ConnectorKind::Source,
                connector_type: "bench".to_owned(),
                config: Default::default(),
                secrets: Default::default(),
                topics: vec!["persistent://public/default/bench".to_owned()],
                subscription: None,
                parallelism: args.writers,
                guarantee: Guarantee::EffectivelyOnce,
                error_policy: crate::meta::state::ErrorPolicy::Fail,
                options: crate::meta::state::RuntimeOptions::default(),
            },
        })
        .await?;
    anyhow::ensure!(reply.is_ok(), "create the bench connector: {reply:?}");
    let mut chains = Vec::new();
    for instance in 0..args.writers {
        let key = InstanceKey {
            connector: connector.clone(),
            instance,
        };
        let reply = leader
            .write(Command::Assign {
                key: key.clone(),
                node: leader.id(),
            })
            .await?;
        let Ok(Outcome::Assigned { epoch }) = reply else {
            anyhow::bail!("assign {key}: {reply:?}");
        };
        chains.push(Chain {
            key,
            epoch,
            position: 0,
        });
    }

    let started = Instant::now();
    let mut latencies = chains[0].commit(leader, args.single_commits).await?;
    let single = Phase {
        elapsed: started.elapsed(),
        latencies: sorted(&mut latencies),
    };

    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for mut chain in chains {
        let leader = leader.clone();
        let commits = args.commits_per_writer;
        writers.spawn(async move { chain.commit(&leader, commits).await });
    }
    let mut latencies = Vec::new();
    while let Some(done) = writers.join_next().await {
        latencies.extend(done??);
    }
    let many = Phase {
        elapsed: started.elapsed(),
        latencies: sorted(&mut latencies),
    };
    Ok((single, many))
}

fn sorted(latencies: &mut Vec<Duration>) -> Vec<Duration> {
    latencies.sort();
    std::mem::take(latencies)
}

/// One instance's checkpoint chain: each commit starts where the previous one ended.
#[derive(Debug)]
struct Chain {
    key: InstanceKey,
    epoch: u64,
    position: u64,
}

impl Chain {
    /// Commits `count` more checkpoints and returns each commit's latency.
    async fn commit(&mut self, leader: &Meta, count: u64) -> anyhow::Result<Vec<Duration>> {
        let mut latencies = Vec::new();
        for _ in 0..count {
            let next = self.position + 1;
            let command = Command::CommitCheckpoint {
                key: self.key.clone(),
                epoch: self.epoch,
                from: (self.position > 0).then(|| self.position.to_be_bytes().to_vec()),
                to: next.to_be_bytes().to_vec(),
                sequence_id: Some(next),
                time_ms: 0,
            };
            let started = Instant::now();
            let reply = leader.write(command).await?;
            latencies.push(started.elapsed());
            anyhow::ensure!(
                reply == Ok(Outcome::CheckpointCommitted { duplicate: false }),
                "commit {next} of {}: {reply:?}",
                self.key
            );
            self.position = next;
        }
        Ok(latencies)
    }
}

/// Times a write of one page and an fdatasync, in turn over a small file on the disk under test.
fn fdatasync_latencies(path: &Path) -> anyhow::Result<Vec<Duration>> {
    let file = std::fs::File::create(path)
        .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", path.display()))?;
    file.set_len(PROBE_PAGES * PROBE_WRITE as u64)?;
    file.sync_all()?;
    let page = [0x5a_u8; PROBE_WRITE];
    let mut latencies = Vec::with_capacity(FLOOR_SAMPLES);
    for index in 0..FLOOR_SAMPLES as u64 {
        let started = Instant::now();
        file.write_all_at(&page, (index % PROBE_PAGES) * PROBE_WRITE as u64)?;
        file.sync_data()?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// Times small request/response round trips over one loopback TCP connection.
fn loopback_round_trips() -> anyhow::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0_u8; 64];
        for _ in 0..FLOOR_SAMPLES {
            stream.read_exact(&mut buffer)?;
            stream.write_all(&buffer)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut buffer = [7_u8; 64];
    let mut latencies = Vec::with_capacity(FLOOR_SAMPLES);
    for _ in 0..FLOOR_SAMPLES {
        let started = Instant::now();
        stream.write_all(&buffer)?;
        stream.read_exact(&mut buffer)?;
        latencies.push(started.elapsed());
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(latencies)
}
