//! The `blackhole` sink's conformance fixture: no output to read back, so the suite counts
//! from the sink's committed position (`records=<n>`), the number of records it took in.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::api::fixture::{BadConfig, FixtureError, SinkFixture, SinkOutput, object};

/// The `blackhole` sink's fixture.
#[derive(Debug)]
pub struct BlackholeFixture;

/// A blackhole output: nothing to see.
#[derive(Debug)]
struct Dropped;

impl SinkOutput for Dropped {
    fn config(&self) -> Map<String, Value> {
        Map::new()
    }

    fn read_back(&self) -> BoxFuture<'_, Result<Option<Vec<u64>>, FixtureError>> {
        Box::pin(async { Ok(None) })
    }
}

impl SinkFixture for BlackholeFixture {
    fn output(
        &self,
        _test: &str,
        _outage: bool,
    ) -> BoxFuture<'_, Result<Box<dyn SinkOutput>, FixtureError>> {
        Box::pin(async { Ok(Box::new(Dropped) as Box<dyn SinkOutput>) })
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        vec![BadConfig::refused(
            object(json!({"anything": 1})),
            "anything",
        )]
    }
}

/// The `blackhole` sink's fixture.
pub(crate) fn sink() -> Option<Box<dyn SinkFixture>> {
    Some(Box::new(BlackholeFixture))
}
