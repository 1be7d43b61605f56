//! `ferry bench producer`: Ferry's producer session (explicit sequence ids, batching) against
//! pulsar-rs's own batched `Producer`, on the same broker in the same run.
//!
//! Each round publishes the same number of same-size messages through both, each on a fresh
//! topic, alternating which goes first so neither always meets a warmer broker. The best round
//! of each is compared; the last line is `producer ratio=<session / pulsar-rs>`.

use std::time::{Duration, Instant};

use clap::Args;
use ferry_actors::pulsar::{
    BatchingOptions, OutgoingMessage, ProducerSession, ProducerSessionOptions, PulsarSettings,
};
use pulsar::producer::{Message, ProducerOptions};

/// Flags of `ferry bench producer`.
#[derive(Debug, Args)]
pub struct ProducerBenchArgs {
    /// Broker service URL.
    #[arg(
        long,
        env = "FERRY_PULSAR_URL",
        default_value = "pulsar://127.0.0.1:6650"
    )]
    pub pulsar_url: String,
    /// Namespace for the benchmark's fresh topics.
    #[arg(long, default_value = "public/default")]
    pub namespace: String,
    /// Messages per contender per round.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Rounds; the best of each contender counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Most messages per batch, for both contenders.
    #[arg(long, default_value_t = 1000)]
    pub batch_messages: u32,
    /// Most bytes per batch, for both contenders.
    #[arg(long, default_value_t = 128 * 1024)]
    pub batch_bytes: usize,
    /// Longest wait for a batch to fill, in milliseconds, for both contenders.
    #[arg(long, default_value_t = 1)]
    pub batch_delay_ms: u64,
}

/// Which producer a measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    PulsarRs,
    Session,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Self::PulsarRs => "pulsar-rs Producer (batched)",
            Self::Session => "ferry ProducerSession (explicit sequence ids, batched)",
        }
    }
}

/// Runs the benchmark and prints its report.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub async fn run(args: ProducerBenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.size == 0 || args.rounds == 0 {
        anyhow::bail!("--messages, --size and --rounds must be above zero");
    }
    let settings = PulsarSettings::new(args.pulsar_url.clone());
    settings.validate()?;
    println!(
        "producer bench: {} messages of {} bytes per contender per round, {} rounds, batches of up to {} messages / {} bytes / {} ms, broker {}",
        args.messages,
        args.size,
        args.rounds,
        args.batch_messages,
        args.batch_bytes,
        args.batch_delay_ms,
        args.pulsar_url
    );
    let payload = vec![b'x'; args.size];
    let mut best = [Duration::MAX, Duration::MAX];
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Contender::PulsarRs, Contender::Session]
        } else {
            [Contender::Session, Contender::PulsarRs]
        };
        for contender in order {
            let topic = format!(
                "persistent://{}/ferry-bench-{}-{}-{round}",
                args.namespace,
                match contender {
                    Contender::PulsarRs => "pulsar-rs",
                    Contender::Session => "session",
                },
                std::process::id()
            );
            let elapsed = match contender {
                Contender::PulsarRs => run_pulsar_rs(&settings, &topic, &args, &payload).await?,
                Contender::Session => run_session(&settings, &topic, &args, &payload).await?,
            };
            let slot = &mut best[contender as usize];
            *slot = (*slot).min(elapsed);
            println!(
                "round {round}: {:<56} {}",
                contender.label(),
                rates(args.messages, args.size, elapsed)
            );
        }
    }
    for contender in [Contender::PulsarRs, Contender::Session] {
        println!(
            "best:    {:<56} {}",
            contender.label(),
            rates(args.messages, args.size, best[contender as usize])
        );
    }
    let ratio = best[Contender::PulsarRs as usize].as_secs_f64()
        / best[Contender::Session as usize].as_secs_f64();
    println!("producer ratio={ratio:.3}");
    Ok(())
}

fn rates(messages: u64, size: usize, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let per_second = messages as f64 / seconds;
    let megabytes = per_second * size as f64 / 1_000_000.0;
    format!("{per_second:>10.0} msg/s {megabytes:>8.1} MB/s ({seconds:.2} s)")
}

/// Publishes through pulsar-rs's `Producer`; returns the time from the first send to the
/// last receipt.
async fn run_pulsar_rs(
    settings: &PulsarSettings,
    topic: &str,
    args: &ProducerBenchArgs,
    payload: &[u8],
) -> anyhow::Result<Duration> {
    let options = ProducerOptions {
        batch_size: Some(args.batch_messages),
        batch_byte_size: Some(args.batch_bytes),
        batch_timeout: Some(Duration::from_millis(args.batch_delay_ms)),
        block_queue_if_full: true,
        ..Default::default()
    };
    let messages = (0..args.messages).map(|_| Message {
        payload: payload.to_vec(),
        ..Default::default()
    });
    super::publish_pulsar_rs(settings, topic, options, messages).await
}

/// Publishes through Ferry's producer session with sequence ids 1..=messages; returns the time
/// from the first send to the last receipt.
async fn run_session(
    settings: &PulsarSettings,
    topic: &str,
    args: &ProducerBenchArgs,
    payload: &[u8],
) -> anyhow::Result<Duration> {
    let options = ProducerSessionOptions {
        batching: BatchingOptions {
            max_messages: usize::try_from(args.batch_messages).unwrap_or(usize::MAX),
            max_bytes: args.batch_bytes,
            max_delay: Duration::from_millis(args.batch_delay_ms),
        },
        ..ProducerSessionOptions::new(topic, format!("ferry-bench-{}", std::process::id()))
    };
    let mut session = ProducerSession::open(settings.clone(), options).await?;
    let started = Instant::now();
    let mut receipts = Vec::with_capacity(usize::try_from(args.messages).unwrap_or(0));
    for sequence_id in 1..=args.messages {
        receipts.push(
            session
                .send(OutgoingMessage::new(sequence_id, payload.to_vec()))
                .await?,
        );
    }
    for receipt in receipts {
        receipt.await?;
    }
    let elapsed = started.elapsed();
    session.close().await?;
    Ok(elapsed)
}
