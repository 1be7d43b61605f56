//! The `sequence` source's conformance fixture: no external system, so the input is the config
//! itself, and the ids are the record keys.

use ferry_actors::api::fixture::{
    BadConfig, Feed, FixtureError, SourceFixture, SourceInput, object,
};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// Makes `{"count": n}` sources paced at the feed's rate, so that a restart lands mid-stream.
#[derive(Debug)]
pub struct SequenceFixture;

/// A sequence input: nothing but its config (no system to take away).
#[derive(Debug)]
struct SequenceInput {
    config: Map<String, Value>,
}

impl SourceInput for SequenceInput {
    fn config(&self) -> Map<String, Value> {
        self.config.clone()
    }
}

impl SourceFixture for SequenceFixture {
    fn input(
        &self,
        _test: &str,
        feed: Feed,
    ) -> BoxFuture<'_, Result<Box<dyn SourceInput>, FixtureError>> {
        Box::pin(async move {
            // Each instance waits interval_ms between its numbers: spread the feed's rate
            // over them.
            let per_instance = (feed.rate.max(1) / u64::from(feed.parallelism.max(1))).max(1);
            let config = object(json!({
                "count": feed.count,
                "interval_ms": (1_000 / per_instance).max(1),
            }));
            Ok(Box::new(SequenceInput { config }) as Box<dyn SourceInput>)
        })
    }

    fn record_id(&self, key: Option<&str>, _value: &[u8]) -> Option<u64> {
        key?.parse().ok()
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        vec![
            BadConfig::refused(object(json!({"step": 0})), "step"),
            BadConfig::refused(object(json!({"count": "ten"})), "count"),
        ]
    }

    fn max_parallelism(&self) -> u32 {
        // Instances split the numbers between them.
        u32::MAX
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use ferry_actors::api::registry::{Fixture, InstanceContext};
    use ferry_actors::api::{Guarantee, Kind, SourceRead};
    use tokio::time::Instant;

    /// What the conformance suite relies on, without a broker: the fixture's input read by
    /// every instance of a source built through the registry holds each id once, and its bad
    /// config is refused naming the field it says.
    #[tokio::test]
    async fn the_fixtures_input_holds_each_id_once_over_the_instances() {
        let registry = crate::registry();
        let sequence = registry.find(Kind::Source, "sequence").expect("registered");
        let Some(Fixture::Source(fixture)) = sequence.fixture() else {
            panic!("sequence has a source fixture");
        };
        let context = InstanceContext::single("public/default/bad");
        for bad in fixture.bad_configs() {
            match sequence.validate(&bad.config, &context) {
                Err(ferry_actors::api::ConnectorError::InvalidConfig { field: named, .. }) => {
                    assert_eq!(named, bad.field);
                }
                other => panic!("{other:?}"),
            }
        }
        let feed = ferry_actors::api::fixture::Feed {
            count: 25,
            rate: 1_000,
            parallelism: 3,
            outage: false,
        };
        let prepared = fixture.input("ids", feed).await.expect("input");
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for index in 0..3 {
            let context = InstanceContext {
                connector: "public/default/ids".to_owned(),
                index,
                parallelism: 3,
            };
            let mut source = sequence
                .build_source(&prepared.config(), &context, Guarantee::EffectivelyOnce)
                .expect("builds");
            source.open(None).await.expect("open");
            loop {
                let deadline = Instant::now() + Duration::from_secs(5);
                match source.read(10, deadline).await.expect("read") {
                    SourceRead::Records(records) => {
                        for read in records {
                            let id = fixture
                                .record_id(read.record.key.as_deref(), &read.record.value)
                                .expect("an id");
                            *seen.entry(id).or_default() += 1;
                        }
                    }
                    SourceRead::Idle => {}
                    SourceRead::End => break,
                }
            }
        }
        let expected: BTreeMap<u64, u32> = (0..25).map(|id| (id, 1)).collect();
        assert_eq!(seen, expected);
    }
}
