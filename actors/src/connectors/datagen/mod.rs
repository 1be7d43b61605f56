//! `datagen`: deterministic records from a seed and an index.
//!
//! Record `n` (from 0) has key `"<n>"` and a JSON value `{"index":n,"seed":s,"data":"..."}`
//! padded with characters derived from the seed and the index, so the same (seed, n) always
//! gives the same bytes: replayable, hence effectively-once.
//!
//! The instances of one source split the index space: instance `i` of `p` generates indexes
//! `i, i + p, i + 2p, …`, so a topic fed with parallelism 3 holds each record once. `count` and
//! `rate` are for the whole source. The position is the next index the instance generates
//! (8 bytes big-endian, shown as `index=<n>`); an instance resumed under another parallelism
//! goes on from its position in steps of the new parallelism.

use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

use crate::api::config::ConnectorConfig;
use crate::api::registry::{self, InstanceContext, SourceFactory};
use crate::api::{
    ConnectorError, Position, Record, Source, SourceCapabilities, SourceRead, SourceRecord,
};

/// Deterministic records from a seed and an index (replayable): tests, demos, benchmarks.
///
/// The instances of a source generate disjoint indexes (instance i of p: i, i+p, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    /// Seed of the generated data: the same seed and index always give the same record.
    #[serde(default)]
    pub seed: u64,
    /// Records in all, over every instance of the source (indexes 0 to count-1); absent means
    /// endless.
    #[serde(default)]
    pub count: Option<u64>,
    /// Records per second for the whole source, shared by its instances; absent means as fast
    /// as possible.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Size of each record's value in bytes (at most 4 MiB).
    #[serde(default = "default_payload_size")]
    pub payload_size: usize,
}

fn default_payload_size() -> usize {
    100
}

impl Default for DatagenConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            count: None,
            rate: None,
            payload_size: default_payload_size(),
        }
    }
}

impl ConnectorConfig for DatagenConfig {
    fn validate(&self) -> Result<(), ConnectorError> {
        if self.rate == Some(0) {
            return Err(ConnectorError::InvalidConfig {
                field: "rate".to_owned(),
                reason: "must be above zero when given".to_owned(),
            });
        }
        if self.payload_size > 4 * 1024 * 1024 {
            return Err(ConnectorError::InvalidConfig {
                field: "payload_size".to_owned(),
                reason: "must be at most 4 MiB (the broker's frame limit is 5 MiB)".to_owned(),
            });
        }
        Ok(())
    }
}

/// The `datagen` source type.
#[derive(Debug)]
pub struct Datagen;

impl SourceFactory for Datagen {
    type Config = DatagenConfig;
    const NAME: &'static str = "datagen";
    // Pulsar IO's data-generator source.
    const ALIASES: &'static [&'static str] = &["data-generator"];
    const CAPABILITIES: SourceCapabilities = SourceCapabilities { replayable: true };

    fn build(
        config: DatagenConfig,
        context: &InstanceContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(DatagenSource::for_instance(
            config,
            context.index,
            context.parallelism,
        )))
    }

    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        registry::render_u64_position("index", position)
    }

    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        registry::parse_u64_position("index", text)
    }

    fn fixture() -> Option<Box<dyn crate::api::fixture::SourceFixture>> {
        Some(Box::new(fixture::DatagenFixture))
    }
}

pub mod fixture;

/// Returns record `index` of the stream seeded with `seed`.
pub fn record(seed: u64, index: u64, payload_size: usize) -> Record {
    let mut value = format!("{{\"index\":{index},\"seed\":{seed},\"data\":\"");
    let mut state = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while value.len() + 2 < payload_size {
        state = splitmix64(state);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        value.push(char::from(alphabet[(state % 36) as usize]));
    }
    value.push_str("\"}");
    Record {
        key: Some(index.to_string()),
        value: value.into_bytes(),
        ..Record::default()
    }
}

fn splitmix64(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut mixed = state;
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

/// Reads a position written by [`DatagenSource`].
pub fn decode_position(position: &Position) -> Result<u64, ConnectorError> {
    let bytes: [u8; 8] = position.as_slice().try_into().map_err(|_| {
        ConnectorError::InvalidPosition(format!(
            "a datagen position is 8 bytes, got {}",
            position.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The `datagen` source: one instance's share of the index space.
#[derive(Debug)]
pub struct DatagenSource {
    config: DatagenConfig,
    /// This instance's index and the source's parallelism: it generates indexes
    /// `index, index + parallelism, …`.
    instance: u64,
    parallelism: u64,
    next_index: u64,
    opened_at: Instant,
    first_index: u64,
}

impl DatagenSource {
    /// Returns the only instance of a source for `config` (every index).
    pub fn new(config: DatagenConfig) -> Self {
        Self::for_instance(config, 0, 1)
    }

    /// Returns instance `index` of a source with `parallelism` instances for `config`.
    pub fn for_instance(config: DatagenConfig, index: u32, parallelism: u32) -> Self {
        Self {
            config,
            instance: u64::from(index),
            parallelism: u64::from(parallelism.max(1)),
            next_index: u64::from(index),
            opened_at: Instant::now(),
            first_index: u64::from(index),
        }
    }

    /// When the record `index` is due under the configured rate (the source's rate is shared
    /// by its instances: each emits one record per `parallelism / rate` seconds).
    fn due(&self, index: u64, rate: u64) -> Instant {
        let emitted = (index - self.first_index) / self.parallelism;
        self.opened_at
            + Duration::from_secs_f64(emitted as f64 * self.parallelism as f64 / rate as f64)
    }
}

impl Source for DatagenSource {
    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let start = position.map(decode_position).transpose();
        Box::pin(async move {
            self.next_index = start?.unwrap_or(self.instance);
            self.first_index = self.next_index;
            self.opened_at = Instant::now();
            Ok(())
        })
    }

    fn read(
        &mut self,
        max_records: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SourceRead, ConnectorError>> {
        Box::pin(async move {
            let step = self.parallelism;
            let limit = self.config.count.unwrap_or(u64::MAX);
            if self.next_index >= limit {
                return Ok(SourceRead::End);
            }
            // Indexes next, next+step, … below the limit, at most max_records of them.
            let mut take = ((limit - self.next_index).div_ceil(step)).min(max_records.max(1) as u64);
            if let Some(rate) = self.config.rate {
                let first_due = self.due(self.next_index, rate);
                if first_due > deadline {
                    // Nothing due before the deadline: wait it out, idle.
                    tokio::time::sleep_until(deadline).await;
                    return Ok(SourceRead::Idle);
                }
                tokio::time::sleep_until(first_due).await;
                let now = Instant::now();
                while take > 1 && self.due(self.next_index + (take - 1) * step, rate) > now {
                    take -= 1;
                }
            }
            let records = (0..take)
                .map(|k| {
                    let index = self.next_index + k * step;
                    SourceRecord {
                        record: record(self.config.seed, index, self.config.payload_size),
                        position_after: (index + step).to_be_bytes().to_vec(),
                    }
                })
                .collect();
            self.next_index += take * step;
            Ok(SourceRead::Records(records))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::config::ConfigDefinition;

    fn parse(config: serde_json::Value) -> Result<DatagenConfig, ConnectorError> {
        let serde_json::Value::Object(object) = config else {
            panic!("an object");
        };
        ConfigDefinition::of::<DatagenConfig>().parse(&object)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    async fn keys(source: &mut DatagenSource, max: usize) -> Vec<String> {
        match source.read(max, far()).await.expect("read") {
            SourceRead::Records(records) => records
                .iter()
                .map(|r| r.record.key.clone().unwrap_or_default())
                .collect(),
            other => panic!("records expected, got {other:?}"),
        }
    }

    #[test]
    fn records_are_a_pure_function_of_seed_and_index() {
        assert_eq!(record(7, 42, 120), record(7, 42, 120));
        assert_ne!(record(7, 42, 120).value, record(8, 42, 120).value);
        let generated = record(7, 42, 120);
        assert_eq!(generated.key.as_deref(), Some("42"));
        assert_eq!(generated.value.len(), 120);
        let text = String::from_utf8(generated.value).expect("utf-8");
        assert!(
            text.starts_with("{\"index\":42,\"seed\":7,\"data\":\""),
            "{text}"
        );
    }

    #[test]
    fn config_is_validated_naming_the_field() {
        let config = parse(json!({"count": 10, "seed": 3})).expect("valid");
        assert_eq!(
            (config.count, config.seed, config.payload_size),
            (Some(10), 3, 100)
        );
        let field = |config| match parse(config) {
            Err(ConnectorError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"cuont": 10})), "cuont");
        assert_eq!(field(json!({"rate": 0})), "rate");
        assert_eq!(field(json!({"count": "many"})), "count");
        assert_eq!(field(json!({"payload_size": 5_000_000})), "payload_size");
    }

    #[tokio::test]
    async fn resumes_at_a_position_and_ends_after_count() {
        let mut source = DatagenSource::new(parse(json!({"count": 5})).expect("valid"));
        source
            .open(Some(&3_u64.to_be_bytes().to_vec()))
            .await
            .expect("open");
        assert_eq!(keys(&mut source, 10).await, ["3", "4"]);
        assert_eq!(source.read(10, far()).await.expect("read"), SourceRead::End);
        assert!(source.open(Some(&vec![1, 2])).await.is_err());
        assert_eq!(Datagen::render_position(&5_u64.to_be_bytes()).expect("8 bytes"), "index=5");
        assert_eq!(Datagen::parse_position("index=5").expect("text"), 5_u64.to_be_bytes());
    }

    /// Regression (issue 10): every instance generated the same indexes, so parallelism 3
    /// wrote each record three times.
    #[tokio::test]
    async fn instances_of_one_source_generate_disjoint_records_covering_count() {
        let config = parse(json!({"count": 10})).expect("valid");
        let mut all = Vec::new();
        for index in 0..3 {
            let mut source = DatagenSource::for_instance(config.clone(), index, 3);
            source.open(None).await.expect("open");
            let mine = keys(&mut source, 100).await;
            assert_eq!(source.read(10, far()).await.expect("read"), SourceRead::End);
            // Replayable: reopening at a position gives the same records after it.
            let mut again = DatagenSource::for_instance(config.clone(), index, 3);
            again
                .open(Some(&(u64::from(index) + 3).to_be_bytes().to_vec()))
                .await
                .expect("open");
            assert_eq!(keys(&mut again, 100).await, mine[1..]);
            all.extend(mine);
        }
        all.sort_by_key(|key| key.parse::<u64>().expect("a number"));
        let expected: Vec<String> = (0..10).map(|n: u64| n.to_string()).collect();
        assert_eq!(all, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_spreads_records_over_time_and_idles_until_the_deadline() {
        let mut source = DatagenSource::new(parse(json!({"rate": 100})).expect("valid"));
        source.open(None).await.expect("open");
        let started = Instant::now();
        let mut read = 0;
        while read < 200 {
            if let SourceRead::Records(records) = source.read(50, far()).await.expect("read") {
                read += records.len();
            }
        }
        // 200 records at 100/s: the 200th is due 1.99 s after opening.
        assert!(
            started.elapsed() >= Duration::from_millis(1_990),
            "{:?}",
            started.elapsed()
        );
        // Nothing is due within 1 ms: the read waits until the deadline and comes back idle.
        let mut slow = DatagenSource::new(parse(json!({"rate": 1})).expect("valid"));
        slow.open(None).await.expect("open");
        assert!(matches!(slow.read(1, far()).await, Ok(SourceRead::Records(_))));
        let deadline = Instant::now() + Duration::from_millis(1);
        assert_eq!(slow.read(1, deadline).await.expect("read"), SourceRead::Idle);
        assert_eq!(Instant::now(), deadline);
    }
}
