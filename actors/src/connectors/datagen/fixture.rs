//! The `datagen` source's conformance fixture: no external system, the input is the config
//! (`count` records at `rate` a second, split between the instances by datagen itself).

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::api::fixture::{
    BadConfig, Feed, FixtureError, SourceFixture, SourceInput, object,
};

/// Makes `{"count": n, "rate": r}` sources; record ids are the keys.
#[derive(Debug)]
pub struct DatagenFixture;

/// A datagen input: nothing but its config.
#[derive(Debug)]
struct DatagenInput {
    config: Map<String, Value>,
}

impl SourceInput for DatagenInput {
    fn config(&self) -> Map<String, Value> {
        self.config.clone()
    }
}

impl SourceFixture for DatagenFixture {
    fn input(
        &self,
        _test: &str,
        feed: Feed,
    ) -> BoxFuture<'_, Result<Box<dyn SourceInput>, FixtureError>> {
        Box::pin(async move {
            let config = object(json!({
                "count": feed.count,
                "rate": feed.rate.max(1),
                "payload_size": 60,
            }));
            Ok(Box::new(DatagenInput { config }) as Box<dyn SourceInput>)
        })
    }

    fn record_id(&self, key: Option<&str>, _value: &[u8]) -> Option<u64> {
        key?.parse().ok()
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        vec![
            BadConfig::refused(object(json!({"rate": 0})), "rate"),
            BadConfig::refused(object(json!({"payload_size": 5_000_000})), "payload_size"),
            BadConfig::refused(object(json!({"count": "ten"})), "count"),
            BadConfig::refused(object(json!({"colour": "red"})), "colour"),
        ]
    }

    fn max_parallelism(&self) -> u32 {
        // Instance i of p generates indexes i, i+p, …: any parallelism splits the input.
        u32::MAX
    }
}
