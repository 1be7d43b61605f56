//! The `sequence` source: one instance's share of the numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_actors::api::{ConnectorError, Position, Record, Source, SourceRead, SourceRecord};
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::SequenceConfig;

/// One instance of a `sequence` source.
#[derive(Debug)]
pub struct SequenceSource {
    config: SequenceConfig,
    /// This instance makes the indexes `instance, instance + parallelism, …`.
    instance: u64,
    parallelism: u64,
    /// The next index this instance makes.
    next: u64,
    /// Where pacing counts from: the open, and the index made first after it.
    opened_at: Instant,
    first: u64,
}

impl SequenceSource {
    /// Returns instance `index` of a source with `parallelism` instances.
    pub fn new(config: SequenceConfig, index: u32, parallelism: u32) -> Self {
        Self {
            config,
            instance: u64::from(index),
            parallelism: u64::from(parallelism.max(1)),
            next: u64::from(index),
            opened_at: Instant::now(),
            first: u64::from(index),
        }
    }

    /// Returns record `index`: a pure function of the config and the index (what makes the
    /// source replayable).
    pub fn record(&self, index: u64) -> Record {
        // i128 holds start + index * step for every u64 index and i64 step.
        let number =
            i128::from(self.config.start) + i128::from(index) * i128::from(self.config.step);
        Record {
            key: Some(index.to_string()),
            value: format!("{}{number}", self.config.prefix).into_bytes(),
            properties: BTreeMap::from([("sequence.number".to_owned(), number.to_string())]),
            ..Record::default()
        }
    }

    /// When record `index` is due under `interval_ms`.
    fn due(&self, index: u64) -> Instant {
        let made = (index - self.first) / self.parallelism;
        self.opened_at
            + Duration::from_millis(self.config.interval_ms)
                .saturating_mul(made.try_into().unwrap_or(u32::MAX))
    }
}

/// Reads a position written by [`SequenceSource`]: the next index, 8 bytes big-endian.
fn decode_position(position: &Position) -> Result<u64, ConnectorError> {
    let bytes: [u8; 8] = position.as_slice().try_into().map_err(|_| {
        ConnectorError::InvalidPosition(format!(
            "a sequence position is 8 bytes, got {}",
            position.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl Source for SequenceSource {
    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        // Decode before the future: it must not borrow `position`.
        let start = position.map(decode_position).transpose();
        Box::pin(async move {
            let next = start?.unwrap_or(self.instance);
            // A position of another instance (or parallelism) is not on this instance's
            // stride: go on from the first index of ours at or after it.
            let step = self.parallelism;
            let behind = (next % step + step - self.instance % step) % step;
            self.next = next.checked_add((step - behind) % step).ok_or_else(|| {
                ConnectorError::InvalidPosition(format!("next={next} is past the last index"))
            })?;
            self.first = self.next;
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
            let limit = self.config.count.unwrap_or(u64::MAX);
            if self.next >= limit {
                return Ok(SourceRead::End);
            }
            let step = self.parallelism;
            let left = (limit - self.next).div_ceil(step);
            let mut take = left.min(max_records.max(1) as u64);
            if self.config.interval_ms > 0 {
                // Wait for the next record, but never past the deadline: an idle source
                // sleeps instead of answering Idle at once (no busy loop in the instance).
                let first_due = self.due(self.next);
                if first_due > deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Ok(SourceRead::Idle);
                }
                tokio::time::sleep_until(first_due).await;
                let now = Instant::now();
                while take > 1 && self.due(self.next + (take - 1) * step) > now {
                    take -= 1;
                }
            }
            let records = (0..take)
                .map(|k| {
                    let index = self.next + k * step;
                    SourceRecord {
                        record: self.record(index),
                        // Reopening here reads the records after this one.
                        position_after: index.saturating_add(step).to_be_bytes().to_vec(),
                    }
                })
                .collect();
            self.next = self.next.saturating_add(take * step);
            Ok(SourceRead::Records(records))
        })
    }

    // `committed` keeps its default (nothing to acknowledge upstream): a replayable source
    // holds no state outside its position.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(count: u64) -> SequenceConfig {
        SequenceConfig {
            start: 100,
            step: -3,
            count: Some(count),
            prefix: "n-".to_owned(),
            interval_ms: 0,
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    async fn values(source: &mut SequenceSource, max: usize) -> Vec<String> {
        match source.read(max, far()).await.expect("read") {
            SourceRead::Records(records) => records
                .iter()
                .map(|read| String::from_utf8(read.record.value.clone()).expect("utf-8"))
                .collect(),
            other => panic!("records expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn counts_in_steps_resumes_at_a_position_and_ends_after_count() {
        let mut source = SequenceSource::new(config(5), 0, 1);
        source.open(None).await.expect("open");
        assert_eq!(values(&mut source, 2).await, ["n-100", "n-97"]);
        assert_eq!(values(&mut source, 10).await, ["n-94", "n-91", "n-88"]);
        assert_eq!(source.read(1, far()).await.expect("read"), SourceRead::End);
        // Replayable: reopened at index 3, the same records as before come again.
        source
            .open(Some(&3_u64.to_be_bytes().to_vec()))
            .await
            .expect("open");
        assert_eq!(values(&mut source, 10).await, ["n-91", "n-88"]);
        let error = source.open(Some(&vec![1])).await.expect_err("1 byte");
        assert!(error.to_string().contains("8 bytes"), "{error}");
    }

    #[tokio::test]
    async fn instances_share_the_numbers_and_resume_on_their_own_stride() {
        let mut keys = Vec::new();
        for index in 0..3 {
            let mut source = SequenceSource::new(config(8), index, 3);
            source.open(None).await.expect("open");
            while let SourceRead::Records(records) = source.read(2, far()).await.expect("read") {
                keys.extend(
                    records
                        .into_iter()
                        .map(|read| read.record.key.unwrap_or_default()),
                );
            }
        }
        keys.sort_by_key(|key| key.parse::<u64>().expect("a number"));
        let expected: Vec<String> = (0..8_u64).map(|n| n.to_string()).collect();
        assert_eq!(keys, expected);
        // Instance 1 of 3 given index 5 (another instance's) goes on from 7, its next own.
        let mut source = SequenceSource::new(config(8), 1, 3);
        source
            .open(Some(&5_u64.to_be_bytes().to_vec()))
            .await
            .expect("open");
        assert_eq!(values(&mut source, 10).await, ["n-79"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_paces_records_and_an_idle_read_waits_until_the_deadline() {
        let mut paced = config(100);
        paced.interval_ms = 10;
        let mut source = SequenceSource::new(paced, 0, 1);
        source.open(None).await.expect("open");
        let opened = Instant::now();
        let mut read = 0;
        while read < 20 {
            if let SourceRead::Records(records) = source.read(50, far()).await.expect("read") {
                read += records.len();
            }
        }
        // The 20th record (index 19) is due 190 ms after the open.
        assert!(
            opened.elapsed() >= Duration::from_millis(190),
            "{:?}",
            opened.elapsed()
        );
        let deadline = Instant::now() + Duration::from_millis(1);
        assert_eq!(
            source.read(1, deadline).await.expect("read"),
            SourceRead::Idle
        );
        assert_eq!(Instant::now(), deadline);
    }
}
