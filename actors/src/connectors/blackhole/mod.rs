//! `blackhole`: a sink that counts records and bytes and drops them, to measure the runtime
//! and Pulsar without an external system.
//!
//! Dropping is trivially idempotent, so it offers effectively-once like a real idempotent sink
//! and benchmarks of that guarantee measure the same checkpoint path. Its position is the
//! number of records counted up to the flush (8 bytes big-endian); reopening restores that
//! count, so after a replay it has counted each record once.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::config::ConnectorConfig;
use crate::api::registry::{self, InstanceContext, SinkFactory};
use crate::api::{
    ConnectorError, Position, Rejected, Sink, SinkCapabilities, SinkDelivery, SinkRecord,
    SinkResume,
};

pub mod fixture;

/// Counts records and drops them: benchmarks and tests without an external system.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

impl ConnectorConfig for BlackholeConfig {}

/// The `blackhole` sink type.
#[derive(Debug)]
pub struct Blackhole;

impl SinkFactory for Blackhole {
    type Config = BlackholeConfig;
    const NAME: &'static str = "blackhole";
    const CAPABILITIES: SinkCapabilities = SinkCapabilities {
        delivery: SinkDelivery::Idempotent,
    };

    fn build(
        _config: BlackholeConfig,
        _context: &InstanceContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(BlackholeSink::default()))
    }

    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        registry::render_u64_position("records", position)
    }

    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        registry::parse_u64_position("records", text)
    }

    fn fixture() -> Option<Box<dyn crate::api::fixture::SinkFixture>> {
        fixture::sink()
    }
}

/// The `blackhole` sink.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    records: u64,
    bytes: u64,
}

impl BlackholeSink {
    /// Returns the records counted, from the checkpointed count on.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Returns the value bytes counted since the sink opened.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Sink for BlackholeSink {
    fn open(
        &mut self,
        resume: &SinkResume,
    ) -> BoxFuture<'_, Result<Option<Position>, ConnectorError>> {
        let records = match resume.sink.as_deref() {
            None | Some([]) => Ok(0),
            Some(position) => super::decode_u64_position("blackhole", position),
        };
        Box::pin(async move {
            self.records = records?;
            self.bytes = 0;
            Ok(None)
        })
    }

    fn write(
        &mut self,
        records: Vec<SinkRecord>,
    ) -> BoxFuture<'_, Result<Vec<Rejected>, ConnectorError>> {
        self.records += records.len() as u64;
        self.bytes += records
            .iter()
            .map(|record| record.record.value.len() as u64)
            .sum::<u64>();
        Box::pin(async { Ok(Vec::new()) })
    }

    fn flush(&mut self, _input: &Position) -> BoxFuture<'_, Result<Position, ConnectorError>> {
        let position = self.records.to_be_bytes().to_vec();
        Box::pin(async move { Ok(position) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InputMessageId, Record};

    fn records(values: &[&str]) -> Vec<SinkRecord> {
        values
            .iter()
            .zip(0..)
            .map(|(value, entry_id)| SinkRecord {
                record: Record {
                    value: value.as_bytes().to_vec(),
                    ..Record::default()
                },
                topic: "persistent://public/default/in".to_owned(),
                message_id: InputMessageId {
                    ledger_id: 1,
                    entry_id,
                    batch_index: -1,
                },
            })
            .collect()
    }

    #[tokio::test]
    async fn counts_records_and_bytes_and_resumes_the_count_from_its_position() {
        let mut sink = BlackholeSink::default();
        assert_eq!(sink.open(&SinkResume::default()).await.expect("open"), None);
        sink.write(records(&["ab", "cde"])).await.expect("write");
        sink.write(records(&["f"])).await.expect("write");
        assert_eq!((sink.records(), sink.bytes()), (3, 6));
        let position = sink.flush(&Vec::new()).await.expect("flush");
        assert_eq!(position, 3_u64.to_be_bytes());

        let mut resumed = BlackholeSink::default();
        let resume = SinkResume {
            sink: Some(position),
            ..SinkResume::default()
        };
        resumed.open(&resume).await.expect("open");
        resumed.write(records(&["g"])).await.expect("write");
        assert_eq!(
            resumed.flush(&Vec::new()).await.expect("flush"),
            4_u64.to_be_bytes()
        );
        let bad = SinkResume {
            sink: Some(vec![1]),
            ..SinkResume::default()
        };
        assert!(matches!(
            resumed.open(&bad).await,
            Err(ConnectorError::InvalidPosition(_))
        ));
    }
}
