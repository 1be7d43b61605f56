//! The `sequence` source's conformance fixture: no external system, so the input is the config
//! itself, and the ids are the record keys.

use ferry_actors::api::fixture::{FixtureError, Prepared, SourceFixture};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

/// Makes `{"count": n}` sources, paced so that a restart lands mid-stream.
#[derive(Debug)]
pub struct SequenceFixture;

impl SourceFixture for SequenceFixture {
    fn input(
        &self,
        _test: &str,
        count: u64,
        _parallelism: u32,
        _outage: bool,
    ) -> BoxFuture<'_, Result<Prepared, FixtureError>> {
        Box::pin(async move {
            let mut config = Map::new();
            config.insert("count".to_owned(), json!(count));
            config.insert("interval_ms".to_owned(), json!(1));
            // Nothing to take away: the suite skips the outage cases for it.
            Ok(Prepared {
                config,
                outage: None,
            })
        })
    }

    fn record_id(&self, key: Option<&str>, _value: &[u8]) -> Option<u64> {
        key?.parse().ok()
    }

    fn bad_config(&self) -> (Map<String, Value>, &'static str) {
        let mut config = Map::new();
        config.insert("step".to_owned(), json!(0));
        (config, "step")
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
        let (bad, field) = fixture.bad_config();
        let context = InstanceContext::single("public/default/bad");
        match sequence.validate(&bad, &context) {
            Err(ferry_actors::api::ConnectorError::InvalidConfig { field: named, .. }) => {
                assert_eq!(named, field);
            }
            other => panic!("{other:?}"),
        }
        let prepared = fixture.input("ids", 25, 3, false).await.expect("input");
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for index in 0..3 {
            let context = InstanceContext {
                connector: "public/default/ids".to_owned(),
                index,
                parallelism: 3,
            };
            let mut source = sequence
                .build_source(&prepared.config, &context, Guarantee::EffectivelyOnce)
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
