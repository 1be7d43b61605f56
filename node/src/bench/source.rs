//! `ferry bench source`: datagen -> Pulsar through the real `SourceInstance` actor against
//! pulsar-rs's own batched `Producer` sending the same datagen records, on the same broker in
//! the same run.
//!
//! Each round runs three contenders, each on a fresh topic, rotating which goes first so none
//! always meets a warmer broker: pulsar-rs's `Producer`, the instance effectively-once and the
//! instance at-least-once, both instances checkpointing every `--checkpoint-ms` into a
//! `MemoryCheckpointStore`. Throughput runs from the first send to the last receipt; for an
//! instance, from the moment it reports Running (producer open) until its confirmed count
//! reaches `--records`. The best round of each counts. The line before last compares the two
//! guarantees (`ckpt_ratio=<effectively-once / at-least-once>`); the last line is
//! `source ratio=<effectively-once instance / pulsar-rs>`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::Actor;
use clap::Args;
use ferry_actors::api::config::ConnectorConfig;
use ferry_actors::connectors::datagen::{self, DatagenConfig, DatagenSource};
use ferry_actors::instance::checkpoint::MemoryCheckpointStore;
use ferry_actors::instance::source::{
    CheckpointPolicy, SharedStatus, SourceInstance, SourceInstanceConfig,
};
use ferry_actors::instance::{Guarantee, InstanceState, InstanceStatus};
use ferry_actors::pulsar::{BatchingOptions, PulsarSettings};
use pulsar::producer::{Message, ProducerOptions};

/// The datagen seed of every benchmark record.
pub(super) const SEED: u64 = 7;

/// How long an instance may go without confirming a record before the benchmark gives up.
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(30);

/// Flags `ferry bench source` and `ferry bench sink` share.
#[derive(Debug, Args)]
pub struct RecordBenchArgs {
    /// Broker service URL.
    #[arg(
        long,
        env = "FERRY_PULSAR_URL",
        default_value = "pulsar://127.0.0.1:6650"
    )]
    pub pulsar_url: String,
    /// Namespace for the benchmark's fresh topics (the broker must deduplicate it).
    #[arg(long, default_value = "public/default")]
    pub namespace: String,
    /// Records per contender per round.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Value bytes per datagen record.
    #[arg(long, default_value_t = 100)]
    pub payload_size: usize,
    /// Rounds; the best of each contender counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
}

impl RecordBenchArgs {
    /// Checks the flags; returns the broker's settings.
    pub(super) fn validate(&self) -> anyhow::Result<PulsarSettings> {
        if self.records == 0 || self.payload_size == 0 || self.rounds == 0 {
            anyhow::bail!("--records, --payload-size and --rounds must be above zero");
        }
        DatagenConfig {
            seed: SEED,
            count: Some(self.records),
            rate: None,
            payload_size: self.payload_size,
        }
        .validate()?;
        let settings = PulsarSettings::new(self.pulsar_url.clone());
        settings.validate()?;
        Ok(settings)
    }
}

/// Flags of `ferry bench source`.
#[derive(Debug, Args)]
pub struct SourceBenchArgs {
    #[command(flatten)]
    pub records: RecordBenchArgs,
    /// Checkpoint interval of both instances, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_ms: u64,
}

/// Which path a measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    PulsarRs,
    EffectivelyOnce,
    AtLeastOnce,
}

impl Contender {
    const ALL: [Self; 3] = [Self::PulsarRs, Self::EffectivelyOnce, Self::AtLeastOnce];

    fn label(self) -> &'static str {
        match self {
            Self::PulsarRs => "pulsar-rs Producer (batched)",
            Self::EffectivelyOnce => "SourceInstance effectively-once",
            Self::AtLeastOnce => "SourceInstance at-least-once",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Self::PulsarRs => "pulsar-rs",
            Self::EffectivelyOnce => "effectively-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// Runs the benchmark and prints its report.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub async fn run(args: SourceBenchArgs) -> anyhow::Result<()> {
    let settings = args.records.validate()?;
    if args.checkpoint_ms == 0 {
        anyhow::bail!("--checkpoint-ms must be above zero");
    }
    let checkpoint_ms = args.checkpoint_ms;
    let args = args.records;
    println!(
        "source bench: {} datagen records of {} bytes per contender per round, {} rounds, \
         checkpoints every {} ms, batches of up to 1000 messages / 128 KiB / 1 ms, broker {}",
        args.records, args.payload_size, args.rounds, checkpoint_ms, args.pulsar_url
    );
    let run_id = unique_suffix();
    let mut best = [Duration::MAX; 3];
    for round in 1..=args.rounds {
        let mut order = Contender::ALL;
        order.rotate_left((round as usize - 1) % Contender::ALL.len());
        for contender in order {
            let topic = format!(
                "persistent://{}/ferry-bench-source-{}-{run_id}-{round}",
                args.namespace,
                contender.slug()
            );
            let elapsed = match contender {
                Contender::PulsarRs => {
                    publish_with_pulsar_rs(&settings, &topic, args.records, args.payload_size)
                        .await?
                }
                Contender::EffectivelyOnce => {
                    let guarantee = Guarantee::EffectivelyOnce;
                    run_instance(&settings, &topic, &args, checkpoint_ms, guarantee).await?
                }
                Contender::AtLeastOnce => {
                    let guarantee = Guarantee::AtLeastOnce;
                    run_instance(&settings, &topic, &args, checkpoint_ms, guarantee).await?
                }
            };
            let slot = &mut best[contender as usize];
            *slot = (*slot).min(elapsed);
            println!(
                "round {round}: {:<40} {}",
                contender.label(),
                rate(args.records, elapsed)
            );
        }
    }
    for contender in Contender::ALL {
        println!(
            "best:    {:<40} {}",
            contender.label(),
            rate(args.records, best[contender as usize])
        );
    }
    let per_second = |contender: Contender| per_second(args.records, best[contender as usize]);
    let effectively_once = per_second(Contender::EffectivelyOnce);
    println!(
        "checkpoints every {} ms: effectively-once {:.0} rec/s vs at-least-once {:.0} rec/s \
         ckpt_ratio={:.3}",
        checkpoint_ms,
        effectively_once,
        per_second(Contender::AtLeastOnce),
        effectively_once / per_second(Contender::AtLeastOnce)
    );
    println!(
        "source ratio={:.3}",
        effectively_once / per_second(Contender::PulsarRs)
    );
    Ok(())
}

/// Returns a suffix no other run shares: the time in nanoseconds and the process id.
pub(super) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{nanos}-{}", std::process::id())
}

/// Returns records per second over `elapsed`.
pub(super) fn per_second(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Formats records per second and the time taken.
pub(super) fn rate(records: u64, elapsed: Duration) -> String {
    format!(
        "{:>10.0} rec/s ({:.2} s)",
        per_second(records, elapsed),
        elapsed.as_secs_f64()
    )
}

/// Returns pulsar-rs producer options batching like the instance's producer session.
pub(super) fn batched_producer_options() -> ProducerOptions {
    let batching = BatchingOptions::default();
    ProducerOptions {
        batch_size: u32::try_from(batching.max_messages).ok(),
        batch_byte_size: Some(batching.max_bytes),
        batch_timeout: Some(batching.max_delay),
        block_queue_if_full: true,
        ..Default::default()
    }
}

/// Publishes datagen records 0..count through pulsar-rs's `Producer`, generating each as the
/// source does; returns the time from the first send to the last receipt.
pub(super) async fn publish_with_pulsar_rs(
    settings: &PulsarSettings,
    topic: &str,
    count: u64,
    payload_size: usize,
) -> anyhow::Result<Duration> {
    let messages = (0..count).map(|index| {
        let record = datagen::record(SEED, index, payload_size);
        Message {
            payload: record.value,
            partition_key: record.key,
            ..Default::default()
        }
    });
    super::publish_pulsar_rs(settings, topic, batched_producer_options(), messages).await
}

/// Runs a datagen source instance to the end of its records under `guarantee`; returns the
/// time from Running to the last confirmed record.
async fn run_instance(
    settings: &PulsarSettings,
    topic: &str,
    args: &RecordBenchArgs,
    checkpoint_ms: u64,
    guarantee: Guarantee,
) -> anyhow::Result<Duration> {
    let store = MemoryCheckpointStore::default();
    let epoch = 1;
    store.assign(epoch);
    let config = SourceInstanceConfig {
        connector: format!("bench/source/{}", topic.rsplit('/').next().unwrap_or(topic)),
        index: 0,
        epoch,
        topic: topic.to_owned(),
        guarantee,
        checkpoints: CheckpointPolicy {
            every_records: u64::MAX,
            every: Duration::from_millis(checkpoint_ms),
        },
        pulsar: settings.clone(),
        batching: BatchingOptions::default(),
        read_batch: 1000,
        fence: None,
        incarnation: 0,
    };
    let source = DatagenSource::new(DatagenConfig {
        seed: SEED,
        count: Some(args.records),
        rate: None,
        payload_size: args.payload_size,
    });
    let instance = SourceInstance::new(config, Box::new(source), Arc::new(store.clone()));
    let status = instance.status();
    let _address = instance.start();
    let elapsed = time_instance(&status, args.records).await?;
    if store.commits() == 0 {
        anyhow::bail!("the source instance confirmed every record but committed no checkpoint");
    }
    Ok(elapsed)
}

fn snapshot(status: &SharedStatus) -> InstanceStatus {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Watches an instance's shared status: waits until it leaves Starting, then until it
/// confirmed `count` records. Returns the time between, to within the 1 ms polling interval.
/// Fails when the instance fails, or goes [`NO_PROGRESS_LIMIT`] without confirming a record.
pub(super) async fn time_instance(status: &SharedStatus, count: u64) -> anyhow::Result<Duration> {
    let poll = Duration::from_millis(1);
    let mut last_change = Instant::now();
    let mut started: Option<Instant> = None;
    let mut confirmed = 0;
    loop {
        let now = snapshot(status);
        if now.state == InstanceState::Failed {
            anyhow::bail!(
                "the instance failed: {}",
                now.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
        if started.is_none() && now.state != InstanceState::Starting {
            started = Some(Instant::now());
        }
        if let Some(started) = started
            && now.records_confirmed >= count
        {
            return Ok(started.elapsed());
        }
        if matches!(now.state, InstanceState::Finished | InstanceState::Stopped) {
            anyhow::bail!(
                "the instance ended after confirming {} of {count} records",
                now.records_confirmed
            );
        }
        if now.records_confirmed != confirmed {
            confirmed = now.records_confirmed;
            last_change = Instant::now();
        }
        if last_change.elapsed() > NO_PROGRESS_LIMIT {
            anyhow::bail!(
                "the instance confirmed nothing for {NO_PROGRESS_LIMIT:?}, stuck at {confirmed} of \
                 {count} records (state {:?})",
                now.state
            );
        }
        tokio::time::sleep(poll).await;
    }
}
