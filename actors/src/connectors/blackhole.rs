//! `blackhole`: a sink that counts records and bytes and drops them, to measure the runtime
//! and Pulsar without an external system.
//!
//! Dropping is trivially idempotent, so it offers effectively-once like a real idempotent sink
//! and benchmarks of that guarantee measure the same checkpoint path. Its position is the
//! number of records counted up to the flush (8 bytes big-endian); reopening restores that
//! count, so after a replay it has counted each record once.

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::api::registry::{self, Builder, ConnectorType};
use crate::api::{
    ConnectorError, Position, Sink, SinkCapabilities, SinkDelivery, SinkRecord, SinkResume,
};
use crate::connectors;

/// The `blackhole` sink type in the registry.
pub const CONNECTOR_TYPE: ConnectorType = ConnectorType {
    name: "blackhole",
    description: "Counts records and drops them: benchmarks and tests without an external \
                  system",
    fields: &[],
    effectively_once: true,
    builder: Builder::Sink(build),
};

fn build(config: &serde_json::Value) -> Result<Box<dyn Sink>, ConnectorError> {
    let BlackholeConfig {} = registry::parse_config(config)?;
    Ok(Box::new(BlackholeSink::default()))
}

/// Configuration of a `blackhole` sink: no fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

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
    fn capabilities(&self) -> SinkCapabilities {
        SinkCapabilities {
            delivery: SinkDelivery::Idempotent,
        }
    }

    fn open(
        &mut self,
        resume: &SinkResume,
    ) -> BoxFuture<'_, Result<Option<Position>, ConnectorError>> {
        let records = match resume.sink.as_deref() {
            None | Some([]) => Ok(0),
            Some(position) => connectors::decode_u64_position("blackhole", position),
        };
        Box::pin(async move {
            self.records = records?;
            self.bytes = 0;
            Ok(None)
        })
    }

    fn write(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        self.records += records.len() as u64;
        self.bytes += records
            .iter()
            .map(|record| record.record.value.len() as u64)
            .sum::<u64>();
        Box::pin(async { Ok(()) })
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
