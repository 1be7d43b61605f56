//! `ferry bench`: measurements that print ratios against a floor measured in the same run
//! (../shared/DESIGN.md §9), never absolute pass/fail times.
//!
//! - [`idle`]: the CPU of one `ferry serve` node running many slow datagen sources, against
//!   the same node with none.
//! - [`meta`]: checkpoint commits through a 3-node metadata store on loopback.
//! - [`producer`]: Ferry's producer session against pulsar-rs's batched producer.
//! - [`source`]: datagen -> Pulsar through the source instance actor against pulsar-rs.
//! - [`sink`]: Pulsar -> blackhole and Pulsar -> PostgreSQL through the sink instance actor
//!   against a raw pulsar-rs consumer, alone and writing the rows with a bare batched INSERT.

pub mod idle;
pub mod meta;
pub mod producer;
pub mod sink;
pub mod source;

use clap::Subcommand;

/// The `ferry bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// CPU of one `ferry serve` node running many datagen sources at 1 record/s, against the
    /// same node with none, in the same run.
    Idle(idle::IdleBenchArgs),
    /// Checkpoint commits/s and latency through a 3-node metadata store on loopback, against
    /// the floor of one fdatasync plus one loopback round trip.
    Meta(meta::MetaBenchArgs),
    /// Messages/s and MB/s through Ferry's producer session (explicit sequence ids, batching)
    /// and through pulsar-rs's own batched producer, on the same broker in the same run.
    Producer(producer::ProducerBenchArgs),
    /// Records/s from datagen to Pulsar through the source instance actor (effectively-once
    /// and at-least-once) and through pulsar-rs's batched producer, in the same run.
    Source(source::SourceBenchArgs),
    /// Records/s from Pulsar through the sink instance actor (effectively-once) into the
    /// blackhole sink and into PostgreSQL, against a raw pulsar-rs consumer alone and writing
    /// the same rows with a bare batched INSERT, in the same run.
    Sink(sink::SinkBenchArgs),
}

/// Runs a `ferry bench` subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Idle(args) => idle::run(args).await,
        BenchCommand::Meta(args) => meta::run(args).await,
        BenchCommand::Producer(args) => producer::run(args).await,
        BenchCommand::Source(args) => source::run(args).await,
        BenchCommand::Sink(args) => sink::run(args).await,
    }
}

/// Returns the value at `percent` of sorted `samples` (nearest rank), or zero when empty.
pub fn percentile(sorted: &[std::time::Duration], percent: usize) -> std::time::Duration {
    if sorted.is_empty() {
        return std::time::Duration::ZERO;
    }
    let rank = (sorted.len() * percent)
        .div_ceil(100)
        .clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Publishes `messages` through pulsar-rs's `Producer` with `options`; returns the time from
/// the first send to the last receipt (the baseline the benches measure against).
pub(crate) async fn publish_pulsar_rs(
    settings: &ferry_actors::pulsar::PulsarSettings,
    topic: &str,
    options: pulsar::ProducerOptions,
    messages: impl Iterator<Item = pulsar::producer::Message>,
) -> anyhow::Result<std::time::Duration> {
    let client = settings.connect().await?;
    let mut producer = client
        .producer()
        .with_topic(topic)
        .with_options(options)
        .build()
        .await?;
    let started = std::time::Instant::now();
    let mut receipts = Vec::with_capacity(messages.size_hint().0);
    for message in messages {
        receipts.push(producer.send_non_blocking(message).await?);
    }
    for receipt in receipts {
        receipt.await?;
    }
    let elapsed = started.elapsed();
    producer.close().await?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
