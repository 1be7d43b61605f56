//! `datagen`: deterministic records from a seed and an index.
//!
//! Record `n` (from 0) has key `"<n>"` and a JSON value `{"index":n,"seed":s,"data":"..."}`
//! padded with characters derived from the seed and the index, so the same (seed, n) always
//! gives the same bytes: replayable, hence effectively-once. The position is the index of the
//! next record, as 8 big-endian bytes.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::time::Instant;

use crate::api::registry::{self, Builder, ConfigField, ConnectorType, FieldType};
use crate::api::{
    ConnectorError, Position, Record, Source, SourceCapabilities, SourceRead, SourceRecord,
};

/// The `datagen` source type in the registry.
pub const CONNECTOR_TYPE: ConnectorType = ConnectorType {
    name: "datagen",
    description: "Deterministic records from a seed and an index (replayable): tests, demos, \
                  benchmarks",
    fields: &[
        ConfigField {
            name: "seed",
            field_type: FieldType::Integer,
            required: false,
            default: Some("0"),
            secret: false,
            description: "Seed of the generated data: the same seed and index give the same record",
        },
        ConfigField {
            name: "count",
            field_type: FieldType::Integer,
            required: false,
            default: None,
            secret: false,
            description: "Stop after this many records; absent means endless",
        },
        ConfigField {
            name: "rate",
            field_type: FieldType::Integer,
            required: false,
            default: None,
            secret: false,
            description: "Records per second; absent means as fast as possible",
        },
        ConfigField {
            name: "payload_size",
            field_type: FieldType::Integer,
            required: false,
            default: Some("100"),
            secret: false,
            description: "Size of each record's value in bytes (at most 4 MiB)",
        },
    ],
    effectively_once: true,
    builder: Builder::Source(build),
};

fn build(config: &serde_json::Value) -> Result<Box<dyn Source>, ConnectorError> {
    // Types first: serde's "invalid type" message names the value, not the field.
    crate::connectors::check_field_types(CONNECTOR_TYPE.fields, config)?;
    let config: DatagenConfig = registry::parse_config(config)?;
    config.validate()?;
    Ok(Box::new(DatagenSource::new(config)))
}

/// Configuration of a `datagen` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    /// Seed of the generated data; the same seed and index always give the same record.
    #[serde(default)]
    pub seed: u64,
    /// Stop after this many records; absent means endless.
    #[serde(default)]
    pub count: Option<u64>,
    /// Records per second; absent means as fast as possible.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Size of each record's value in bytes (at least the JSON skeleton's size).
    #[serde(default = "default_payload_size")]
    pub payload_size: usize,
}

fn default_payload_size() -> usize {
    100
}

impl DatagenConfig {
    /// Parses and validates a JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConnectorError> {
        let config: Self =
            serde_json::from_str(json).map_err(|error| ConnectorError::InvalidConfig {
                field: field_of(&error.to_string()),
                reason: error.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the ranges serde does not.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        let config = self;
        if config.rate == Some(0) {
            return Err(ConnectorError::InvalidConfig {
                field: "rate".to_owned(),
                reason: "must be above zero when given".to_owned(),
            });
        }
        if config.payload_size > 4 * 1024 * 1024 {
            return Err(ConnectorError::InvalidConfig {
                field: "payload_size".to_owned(),
                reason: "must be at most 4 MiB (the broker's frame limit is 5 MiB)".to_owned(),
            });
        }
        Ok(())
    }
}

/// Picks the field name out of a serde error message, for the error's `field`.
fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map_or_else(|| "config".to_owned(), str::to_owned)
}

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

/// The `datagen` source.
#[derive(Debug)]
pub struct DatagenSource {
    config: DatagenConfig,
    next_index: u64,
    opened_at: Instant,
    first_index: u64,
}

impl DatagenSource {
    /// Returns a source for `config`.
    pub fn new(config: DatagenConfig) -> Self {
        Self {
            config,
            next_index: 0,
            opened_at: Instant::now(),
            first_index: 0,
        }
    }
}

impl Source for DatagenSource {
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities { replayable: true }
    }

    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let start = position.map(decode_position).transpose();
        Box::pin(async move {
            self.next_index = start?.unwrap_or(0);
            self.first_index = self.next_index;
            self.opened_at = Instant::now();
            Ok(())
        })
    }

    fn read(&mut self, max_records: usize) -> BoxFuture<'_, Result<SourceRead, ConnectorError>> {
        Box::pin(async move {
            let mut end = self.next_index.saturating_add(max_records.max(1) as u64);
            if let Some(count) = self.config.count {
                if self.next_index >= count {
                    return Ok(SourceRead::End);
                }
                end = end.min(count);
            }
            if let Some(rate) = self.config.rate {
                // Record n is due n/rate seconds after the source opened.
                let due_index = |index: u64| {
                    self.opened_at
                        + Duration::from_secs_f64((index - self.first_index) as f64 / rate as f64)
                };
                tokio::time::sleep_until(due_index(self.next_index)).await;
                let now = Instant::now();
                while end > self.next_index + 1 && due_index(end - 1) > now {
                    end -= 1;
                }
            }
            let records = (self.next_index..end)
                .map(|index| SourceRecord {
                    record: record(self.config.seed, index, self.config.payload_size),
                    position_after: (index + 1).to_be_bytes().to_vec(),
                })
                .collect();
            self.next_index = end;
            Ok(SourceRead::Records(records))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = DatagenConfig::from_json(r#"{"count": 10, "seed": 3}"#).expect("valid");
        assert_eq!(
            (config.count, config.seed, config.payload_size),
            (Some(10), 3, 100)
        );
        let error = DatagenConfig::from_json(r#"{"cuont": 10}"#).expect_err("typo");
        assert!(
            matches!(&error, ConnectorError::InvalidConfig { field, .. } if field == "cuont"),
            "{error}"
        );
        let error = DatagenConfig::from_json(r#"{"rate": 0}"#).expect_err("zero rate");
        assert_eq!(
            error.to_string(),
            "invalid config field rate: must be above zero when given"
        );
        let error = DatagenConfig::from_json(r#"{"count": "many"}"#).expect_err("type");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[tokio::test]
    async fn resumes_at_a_position_and_ends_after_count() {
        let config = DatagenConfig::from_json(r#"{"count": 5}"#).expect("valid");
        let mut source = DatagenSource::new(config);
        source
            .open(Some(&3_u64.to_be_bytes().to_vec()))
            .await
            .expect("open");
        let SourceRead::Records(records) = source.read(10).await.expect("read") else {
            panic!("records expected");
        };
        let keys: Vec<_> = records
            .iter()
            .map(|r| r.record.key.clone().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["3", "4"]);
        assert_eq!(
            decode_position(&records[1].position_after).expect("position"),
            5
        );
        assert_eq!(source.read(10).await.expect("read"), SourceRead::End);
        assert!(source.open(Some(&vec![1, 2])).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_spreads_records_over_time() {
        let config = DatagenConfig::from_json(r#"{"rate": 100}"#).expect("valid");
        let mut source = DatagenSource::new(config);
        source.open(None).await.expect("open");
        let started = Instant::now();
        let mut read = 0;
        while read < 200 {
            if let SourceRead::Records(records) = source.read(50).await.expect("read") {
                read += records.len();
            }
        }
        // 200 records at 100/s: the 200th is due 1.99 s after opening.
        assert!(
            started.elapsed() >= Duration::from_millis(1_990),
            "{:?}",
            started.elapsed()
        );
    }
}
