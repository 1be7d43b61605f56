//! The `datagen` source's conformance fixture: no external system, the input is the config.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::api::fixture::{FixtureError, Prepared, SourceFixture};

/// Makes `{"count": n}` sources; record ids are the keys.
#[derive(Debug)]
pub struct DatagenFixture;

impl SourceFixture for DatagenFixture {
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
            // Paced, so a crash lands mid-stream.
            config.insert("rate".to_owned(), json!(2_000));
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
        config.insert("rate".to_owned(), json!(0));
        (config, "rate")
    }
}
