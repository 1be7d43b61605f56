//! `ferry bench idle`: the CPU one node spends on many slow datagen sources (issue 10).
//!
//! It starts one real `ferry serve` process (bootstrap, its own data directory, logs in a file
//! there, the broker at `--pulsar-url`) and, in the same run:
//!
//! 1. **baseline**: waits `--warmup` seconds, then measures the node's CPU with no connector
//!    over a window of `--window` seconds;
//! 2. **idle**: creates `--instances` datagen sources (`{"rate": 1}`, parallelism 1, the chosen
//!    guarantee, one shared output topic or one each), waits until every one is RUNNING, waits
//!    `--warmup` seconds, and measures again over the same window.
//!
//! CPU is the process's user plus system time from `/proc/<pid>/stat` (in clock ticks,
//! `getconf CLK_TCK`) over the window's wall time; 100 % is one core. Each phase also reports
//! the process's context switches per second (every thread's, a count of wake-ups), and the
//! idle phase the records and checkpoint commits per second its instances made (from their
//! status, read just outside the window). The last line is
//! `idle_cpu instances=N percent=P baseline_percent=B per_instance_percent=(P-B)/N`.
//!
//! `--connector file` runs `file` sources following an empty directory instead: nothing is
//! ever read, sent or committed, so what the node spends is the instances waiting for data.
//!
//! Afterwards it deletes the sources, kills the node by its pid and removes the directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ferry_proto::admin::v1 as proto;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::client::{AccessArgs, AdminApi};

/// How long the node may take to print its address and to join its cluster.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin calls in flight at once while creating, polling and deleting the sources.
const CONCURRENT_CALLS: usize = 8;
/// Pause between two polls of the sources' status while they start.
const STATUS_POLL: Duration = Duration::from_millis(500);
/// Log lines shown when the node fails.
const LOG_TAIL_LINES: usize = 20;

/// Flags of `ferry bench idle`.
#[derive(Debug, Args)]
pub struct IdleBenchArgs {
    /// Broker service URL the node's instances publish to.
    #[arg(
        long,
        env = "FERRY_PULSAR_URL",
        default_value = "pulsar://127.0.0.1:6650"
    )]
    pub pulsar_url: String,
    /// The broker's admin URL, with which the node checks deduplication for effectively-once.
    #[arg(
        long,
        env = "FERRY_PULSAR_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub pulsar_admin_url: String,
    /// Namespace of the sources and of their output topics.
    #[arg(long, default_value = "public/default")]
    pub namespace: String,
    /// Datagen sources to run, one instance each.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub instances: u32,
    /// Records per second of each source (datagen's `rate`).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub rate: u64,
    /// The sources' type: `datagen` at `--rate`, or `file` following an empty directory
    /// (nothing ever to read: what an instance costs while its source has no data).
    #[arg(long, value_enum, default_value_t = IdleConnector::Datagen)]
    pub connector: IdleConnector,
    /// The sources' processing guarantee.
    #[arg(long, value_enum, default_value_t = IdleGuarantee::EffectivelyOnce)]
    pub guarantee: IdleGuarantee,
    /// One output topic shared by every source, or one topic each.
    #[arg(long, value_enum, default_value_t = TopicLayout::Shared)]
    pub topics: TopicLayout,
    /// Length of each measurement window, in seconds.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub window: u64,
    /// Wait before each window, in seconds, so start-up work (connections, first checkpoints)
    /// is not counted.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub warmup: u64,
    /// How long every source may take to be RUNNING, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub start_timeout: u64,
    /// Directory for the node's data and log. Default: the system's temporary directory.
    /// Removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The guarantees the idle bench runs its sources with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleGuarantee {
    /// Stable producer names and sequence ids that follow the position.
    EffectivelyOnce,
    /// Checkpoints after receipts; a replay may repeat records.
    AtLeastOnce,
}

impl IdleGuarantee {
    fn proto(self) -> proto::ProcessingGuarantee {
        match self {
            Self::EffectivelyOnce => proto::ProcessingGuarantee::EffectivelyOnce,
            Self::AtLeastOnce => proto::ProcessingGuarantee::AtLeastOnce,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::EffectivelyOnce => "effectively-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// The connector types the idle bench runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleConnector {
    /// `datagen` with `{"rate": --rate}`.
    Datagen,
    /// `file` following `*.log` in an empty directory.
    File,
}

/// Where the sources write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicLayout {
    /// Every source writes to one topic.
    Shared,
    /// Each source writes to a topic of its own.
    Own,
}

impl IdleBenchArgs {
    fn validate(&self) -> anyhow::Result<(String, String)> {
        anyhow::ensure!(
            self.instances >= 1,
            "invalid --instances: must be at least 1"
        );
        anyhow::ensure!(self.rate >= 1, "invalid --rate: must be at least 1");
        anyhow::ensure!(
            self.window >= 1,
            "invalid --window: must be at least 1 second"
        );
        anyhow::ensure!(
            self.start_timeout >= 1,
            "invalid --start-timeout: must be at least 1 second"
        );
        let Some((tenant, namespace)) = self.namespace.split_once('/') else {
            anyhow::bail!(
                "invalid --namespace {:?}: must be tenant/namespace",
                self.namespace
            );
        };
        anyhow::ensure!(
            !tenant.is_empty() && !namespace.is_empty() && !namespace.contains('/'),
            "invalid --namespace {:?}: must be tenant/namespace",
            self.namespace
        );
        ferry_actors::pulsar::PulsarSettings::new(self.pulsar_url.clone())
            .validate()
            .map_err(|error| anyhow::anyhow!("invalid --pulsar-url: {error}"))?;
        ferry_actors::pulsar::admin::PulsarAdmin::new(&self.pulsar_admin_url, None, None)
            .map_err(|error| anyhow::anyhow!("invalid --pulsar-admin-url: {error}"))?;
        Ok((tenant.to_owned(), namespace.to_owned()))
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: IdleBenchArgs) -> anyhow::Result<()> {
    let (tenant, namespace) = args.validate()?;
    let ticks_per_second = clock_ticks_per_second().await?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "ferry-bench-idle-{}",
            super::source::unique_suffix()
        ));
    let created = root.clone();
    tokio::task::spawn_blocking(move || std::fs::create_dir_all(&created))
        .await?
        .map_err(|error| anyhow::anyhow!("cannot create {} (--dir): {error}", root.display()))?;
    let mut node = None;
    let result = bench(
        &args,
        &root,
        &tenant,
        &namespace,
        ticks_per_second,
        &mut node,
    )
    .await;
    let result = match (result, node.take()) {
        (Err(error), Some(node)) => Err(anyhow::anyhow!("{error:#}\n{}", node.log_tail())),
        (result, node) => {
            drop(node);
            result
        }
    };
    let removed = root.clone();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removed))
        .await?
        .map_err(|error| anyhow::anyhow!("cannot remove {}: {error}", root.display()))?;
    result
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
async fn bench(
    args: &IdleBenchArgs,
    root: &Path,
    tenant: &str,
    namespace: &str,
    ticks_per_second: u64,
    node_slot: &mut Option<NodeProcess>,
) -> anyhow::Result<()> {
    let run_id = super::source::unique_suffix();
    let input = root.join("input");
    let (connector_type, config_json, what) = match args.connector {
        IdleConnector::Datagen => (
            "datagen",
            serde_json::json!({ "rate": args.rate }),
            format!("datagen sources at rate {}", args.rate),
        ),
        IdleConnector::File => {
            std::fs::create_dir_all(&input)
                .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", input.display()))?;
            (
                "file",
                serde_json::json!({ "path_glob": format!("{}/*.log", input.display()) }),
                format!("file sources following the empty {}", input.display()),
            )
        }
    };
    let config_json = config_json.to_string();
    println!(
        "idle bench: one node, {} {what} ({}, {} topic{}), windows of {} s after {} s of \
         warm-up, broker {}",
        args.instances,
        args.guarantee.name(),
        match args.topics {
            TopicLayout::Shared => "one shared",
            TopicLayout::Own => "one own",
        },
        match args.topics {
            TopicLayout::Shared => "",
            TopicLayout::Own => " each",
        },
        args.window,
        args.warmup,
        args.pulsar_url
    );
    let node = node_slot.insert(NodeProcess::start(root, args).await?);
    let pid = node.pid();
    let url = node.admin_url.clone();
    let access = AccessArgs {
        tls_ca: None,
        token: None,
        token_file: None,
    };
    let client = crate::cli::admin_client(&url, &access).await?;
    let window = Duration::from_secs(args.window);
    let warmup = Duration::from_secs(args.warmup);

    tokio::time::sleep(warmup).await;
    let baseline = measure(pid, window, ticks_per_second).await?;
    println!("phase baseline: instances=0 {}", baseline.describe());

    let names: Vec<String> = (0..args.instances)
        .map(|index| format!("bench-idle-{index}"))
        .collect();
    let topic = |index: usize| match args.topics {
        TopicLayout::Shared => {
            format!("persistent://{tenant}/{namespace}/ferry-bench-idle-{run_id}")
        }
        TopicLayout::Own => {
            format!("persistent://{tenant}/{namespace}/ferry-bench-idle-{run_id}-{index}")
        }
    };
    let created_at = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(index, name)| {
            let mut client = client.clone();
            let request = proto::CreateConnectorRequest {
                name: Some(connector_name(tenant, namespace, name)),
                spec: Some(proto::ConnectorSpec {
                    kind: proto::ConnectorKind::Source.into(),
                    connector_type: connector_type.to_owned(),
                    config_json: config_json.clone(),
                    topics: vec![topic(index)],
                    subscription: None,
                    parallelism: Some(1),
                    processing_guarantee: args.guarantee.proto().into(),
                    ..proto::ConnectorSpec::default()
                }),
            };
            async move {
                client
                    .create_connector(request)
                    .await
                    .map_err(|status| crate::client::call_error(&status))
            }
        })
        .buffer_unordered(CONCURRENT_CALLS)
        .try_collect::<Vec<_>>()
        .await?;
    let outcome = run_sources(
        args,
        &client,
        tenant,
        namespace,
        &names,
        pid,
        ticks_per_second,
        created_at,
    )
    .await;
    let deleted = delete_sources(&client, tenant, namespace, &names).await;
    let idle = outcome?;
    deleted?;
    let idle_percent = idle.percent();
    let base_percent = baseline.percent();
    println!(
        "idle_cpu instances={} percent={:.2} baseline_percent={:.2} per_instance_percent={:.4}",
        args.instances,
        idle_percent,
        base_percent,
        (idle_percent - base_percent) / f64::from(args.instances)
    );
    Ok(())
}

/// Waits until every source runs, then measures the idle phase and prints its line.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
async fn run_sources(
    args: &IdleBenchArgs,
    client: &AdminApi,
    tenant: &str,
    namespace: &str,
    names: &[String],
    pid: u32,
    ticks_per_second: u64,
    created_at: Instant,
) -> anyhow::Result<Window> {
    let deadline = created_at + Duration::from_secs(args.start_timeout);
    let mut pending: Vec<&String> = names.iter().collect();
    loop {
        let statuses = statuses(client, tenant, namespace, &pending).await?;
        let mut still = Vec::new();
        let mut example = None;
        for (name, status) in pending.iter().zip(&statuses) {
            if status.running < 1 {
                still.push(*name);
                if example.is_none() {
                    example = status.instances.first().map(|instance| {
                        format!(
                            "{name} is {} {}",
                            proto::InstanceState::try_from(instance.state)
                                .map_or("UNKNOWN", |state| state.as_str_name()),
                            instance.last_error
                        )
                    });
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} of {} sources are not RUNNING after {} s (--start-timeout); {}",
                pending.len(),
                names.len(),
                args.start_timeout,
                example.unwrap_or_default()
            );
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
    println!(
        "all {} sources RUNNING {:.1} s after the first create",
        names.len(),
        created_at.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let all: Vec<&String> = names.iter().collect();
    let before = Progress::sum(&statuses(client, tenant, namespace, &all).await?);
    let counted_from = Instant::now();
    let idle = measure(pid, Duration::from_secs(args.window), ticks_per_second).await?;
    let after = Progress::sum(&statuses(client, tenant, namespace, &all).await?);
    let counted = counted_from.elapsed().as_secs_f64();
    println!(
        "phase idle: instances={} {} records_per_s={:.1} checkpoints_per_s={:.1}",
        names.len(),
        idle.describe(),
        after.records.saturating_sub(before.records) as f64 / counted,
        after.checkpoints.saturating_sub(before.checkpoints) as f64 / counted,
    );
    Ok(idle)
}

fn connector_name(tenant: &str, namespace: &str, name: &str) -> proto::ConnectorName {
    proto::ConnectorName {
        tenant: tenant.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// Returns the status of each of `names`, in order.
async fn statuses(
    client: &AdminApi,
    tenant: &str,
    namespace: &str,
    names: &[&String],
) -> anyhow::Result<Vec<proto::GetConnectorStatusResponse>> {
    futures::stream::iter(names)
        .map(|name| {
            let mut client = client.clone();
            let request = proto::GetConnectorStatusRequest {
                name: Some(connector_name(tenant, namespace, name)),
                kind: proto::ConnectorKind::Source.into(),
                instance_id: None,
            };
            async move {
                client
                    .get_connector_status(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| crate::client::call_error(&status))
            }
        })
        .buffered(CONCURRENT_CALLS)
        .try_collect()
        .await
}

/// Deletes every source; returns the first failure after trying them all.
async fn delete_sources(
    client: &AdminApi,
    tenant: &str,
    namespace: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let failures: Vec<anyhow::Error> = futures::stream::iter(names)
        .map(|name| {
            let mut client = client.clone();
            let request = proto::DeleteConnectorRequest {
                name: Some(connector_name(tenant, namespace, name)),
                kind: proto::ConnectorKind::Source.into(),
            };
            async move {
                client
                    .delete_connector(request)
                    .await
                    .map_err(|status| crate::client::call_error(&status))
            }
        })
        .buffer_unordered(CONCURRENT_CALLS)
        .filter_map(|outcome| async move { outcome.err() })
        .collect()
        .await;
    match failures.into_iter().next() {
        Some(error) => Err(error.context("deleting the benchmark's sources")),
        None => Ok(()),
    }
}

/// Records and checkpoint commits summed over the sources' instances.
#[derive(Debug, Default)]
struct Progress {
    records: u64,
    checkpoints: u64,
}

impl Progress {
    fn sum(statuses: &[proto::GetConnectorStatusResponse]) -> Self {
        let instances = statuses.iter().flat_map(|status| &status.instances);
        let mut progress = Self::default();
        for instance in instances {
            progress.records += instance.records_written;
            progress.checkpoints += instance
                .checkpoint
                .as_ref()
                .map_or(0, |checkpoint| checkpoint.commits);
        }
        progress
    }
}

/// What a process spent over one measurement window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    /// User plus system clock ticks.
    cpu_ticks: u64,
    ticks_per_second: u64,
    /// Context switches of all its threads.
    context_switches: u64,
    threads: usize,
    elapsed: Duration,
}

impl Window {
    /// CPU time over wall time, in percent of one core.
    fn percent(&self) -> f64 {
        cpu_percent(self.cpu_ticks, self.ticks_per_second, self.elapsed)
    }

    fn describe(&self) -> String {
        format!(
            "window={:.1}s cpu_ticks={} percent={:.2} context_switches_per_s={:.0} threads={}",
            self.elapsed.as_secs_f64(),
            self.cpu_ticks,
            self.percent(),
            self.context_switches as f64 / self.elapsed.as_secs_f64(),
            self.threads
        )
    }
}

/// Returns `ticks` of CPU time over `elapsed` of wall time, in percent of one core.
fn cpu_percent(ticks: u64, ticks_per_second: u64, elapsed: Duration) -> f64 {
    let cpu_seconds = ticks as f64 / ticks_per_second.max(1) as f64;
    100.0 * cpu_seconds / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Measures process `pid` over `window`.
async fn measure(pid: u32, window: Duration, ticks_per_second: u64) -> anyhow::Result<Window> {
    let first = sample(pid).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let last = sample(pid).await?;
    let elapsed = started.elapsed();
    Ok(Window {
        cpu_ticks: last.cpu_ticks.saturating_sub(first.cpu_ticks),
        ticks_per_second,
        context_switches: last.context_switches.saturating_sub(first.context_switches),
        threads: last.threads,
        elapsed,
    })
}

/// A process's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu_ticks: u64,
    context_switches: u64,
    threads: usize,
}

/// Reads process `pid`'s CPU ticks and its threads' context switches from `/proc`.
async fn sample(pid: u32) -> anyhow::Result<Sample> {
    tokio::task::spawn_blocking(move || {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(proc.join("stat"))
            .map_err(|error| anyhow::anyhow!("cannot read /proc/{pid}/stat: {error}"))?;
        let cpu_ticks = cpu_ticks(&stat)?;
        let mut context_switches = 0;
        let mut threads = 0;
        // A thread may end between listing and reading: it is skipped.
        for task in std::fs::read_dir(proc.join("task"))?.flatten() {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                context_switches += context_switches_of(&status);
                threads += 1;
            }
        }
        Ok(Sample {
            cpu_ticks,
            context_switches,
            threads,
        })
    })
    .await?
}

/// Returns utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| anyhow::anyhow!("malformed /proc stat line: {stat:?}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let field = |number: usize| -> anyhow::Result<u64> {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no field {number} in /proc stat line: {stat:?}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Returns voluntary plus involuntary context switches of a `/proc/<pid>/task/<tid>/status`.
fn context_switches_of(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            matches!(
                name,
                "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches"
            )
            .then(|| value.trim().parse::<u64>().ok())?
        })
        .sum()
}

/// Returns the kernel's clock ticks per second (`getconf CLK_TCK`).
async fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let output = tokio::task::spawn_blocking(|| Command::new("getconf").arg("CLK_TCK").output())
        .await?
        .map_err(|error| anyhow::anyhow!("cannot run getconf CLK_TCK: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|ticks| output.status.success() && *ticks > 0)
        .ok_or_else(|| anyhow::anyhow!("getconf CLK_TCK answered {text:?}, not a tick rate"))
}

/// The `ferry serve` process under measurement; killed by its pid when dropped.
#[derive(Debug)]
struct NodeProcess {
    child: Child,
    admin_url: String,
    log: PathBuf,
}

impl NodeProcess {
    /// Starts a bootstrapping node with its data and log under `root`, and waits until it is
    /// in its cluster.
    async fn start(root: &Path, args: &IdleBenchArgs) -> anyhow::Result<Self> {
        let data = root.join("data");
        let log = root.join("node.log");
        let program = std::env::current_exe()?;
        let mut command = Command::new(program);
        command
            .arg("serve")
            .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--bootstrap"])
            .arg("--data-dir")
            .arg(&data)
            .args(["--pulsar-url", &args.pulsar_url])
            .args(["--pulsar-admin-url", &args.pulsar_admin_url]);
        // The node takes its settings from the flags above only.
        for (name, _) in std::env::vars_os() {
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("FERRY_") && name != "FERRY_LOG")
            {
                command.env_remove(name);
            }
        }
        let stderr = std::fs::File::create(&log)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|error| anyhow::anyhow!("cannot start ferry serve: {error}"))?;
        let Some(stdout) = child.stdout.take() else {
            anyhow::bail!("ferry serve has no standard output");
        };
        let (sender, mut lines) = mpsc::channel(16);
        std::thread::spawn(move || {
            // Read to the end so the node never blocks on a full pipe; lines beyond the
            // first few are of no interest.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.try_send(line);
            }
        });
        let mut node = Self {
            child,
            admin_url: String::new(),
            log,
        };
        let deadline = tokio::time::Instant::now() + NODE_START_TIMEOUT;
        let mut next_line = async |wanted: &str| -> anyhow::Result<String> {
            loop {
                match tokio::time::timeout_at(deadline, lines.recv()).await {
                    Ok(Some(line)) if line.starts_with(wanted) => return Ok(line),
                    Ok(Some(_)) => {}
                    Ok(None) => anyhow::bail!("ferry serve exited before printing {wanted:?}"),
                    Err(_) => anyhow::bail!(
                        "ferry serve printed no {wanted:?} line within {NODE_START_TIMEOUT:?}"
                    ),
                }
            }
        };
        let started = async {
            let line = next_line("listening on ").await?;
            let address = line["listening on ".len()..].to_owned();
            next_line("node 1 is in its cluster").await?;
            Ok::<_, anyhow::Error>(address)
        };
        match started.await {
            Ok(address) => {
                node.admin_url = format!("http://{address}");
                Ok(node)
            }
            Err(error) => Err(anyhow::anyhow!("{error:#}\n{}", node.log_tail())),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the last lines of the node's log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!("the node's log ends with:\n{tail}")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SIGKILL to the child's pid, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_add_utime_and_stime_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (ferry (x) y) S 1 4242 4242 0 -1 4194560 9 0 0 0 \
                    250 37 0 0 20 0 12 0 300 0 0";
        assert_eq!(cpu_ticks(stat).expect("ticks"), 287);
        assert!(cpu_ticks("4242 ferry S 1").is_err());
        assert!(cpu_ticks("4242 (ferry) S 1 2").is_err());
    }

    #[test]
    fn context_switches_add_both_kinds() {
        let status = "Name:\tferry\nvoluntary_ctxt_switches:\t120\n\
                      nonvoluntary_ctxt_switches:\t7\nThreads:\t3\n";
        assert_eq!(context_switches_of(status), 127);
        assert_eq!(context_switches_of("Name:\tferry\n"), 0);
    }

    #[test]
    fn percent_is_of_one_core() {
        assert!((cpu_percent(50, 100, Duration::from_secs(2)) - 25.0).abs() < 1e-9);
        assert!((cpu_percent(400, 100, Duration::from_secs(2)) - 200.0).abs() < 1e-9);
        assert!(cpu_percent(0, 100, Duration::from_secs(2)).abs() < 1e-9);
    }
}
