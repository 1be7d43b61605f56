//! What a connector gives the conformance suite: how to make a config for a fresh test, feed
//! input into its external system (a source) or read its output back (a sink), and optionally
//! take the system away and bring it back.
//!
//! One generic suite (`node/tests/conformance.rs`) runs every registered type's fixture through
//! the same cases; a guard test fails when a registered type has none. Sinks are fed JSON
//! records `{"id": n, "text": "..."}` keyed by `n` (from 0); the fixture maps them onto its
//! system and reads the ids back.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

/// A fixture's failure: what went wrong, in words (a test prints it).
pub type FixtureError = String;

/// A way to take an external system away from an instance and bring it back (a proxy cut, a
/// directory moved away).
pub trait Outage: Send + Sync {
    /// Makes the system unreachable for the instance.
    fn take_away(&self) -> BoxFuture<'_, Result<(), FixtureError>>;
    /// Makes it reachable again.
    fn bring_back(&self) -> BoxFuture<'_, Result<(), FixtureError>>;
}

/// A config for one test, with the outage that test may use.
pub struct Prepared {
    /// The connector config.
    pub config: Map<String, Value>,
    /// How to take its system away, when the fixture can (asked for with `outage: true`).
    pub outage: Option<Box<dyn Outage>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Prepared")
            .field("config", &self.config)
            .field("outage", &self.outage.is_some())
            .finish()
    }
}

/// A source type's fixture.
pub trait SourceFixture: Send + Sync {
    /// Makes a fresh input for test `test` holding records with ids `0..count`, read by a
    /// source with `parallelism` instances, and returns the config that reads it. With
    /// `outage`, the config reaches the system through something the returned outage can cut.
    fn input(
        &self,
        test: &str,
        count: u64,
        parallelism: u32,
        outage: bool,
    ) -> BoxFuture<'_, Result<Prepared, FixtureError>>;

    /// The id of a record the source published (its key and value), to count each once.
    fn record_id(&self, key: Option<&str>, value: &[u8]) -> Option<u64>;

    /// A config that must be refused, with the field the refusal must name.
    fn bad_config(&self) -> (Map<String, Value>, &'static str);
}

/// A sink type's fixture.
pub trait SinkFixture: Send + Sync {
    /// Returns the config of a sink writing to a fresh output for test `test`. With `outage`,
    /// the config reaches the system through something the returned outage can cut.
    fn output(&self, test: &str, outage: bool) -> BoxFuture<'_, Result<Prepared, FixtureError>>;

    /// Reads the output of test `test` back: the id of every record found, repeats included.
    /// `None` when the output cannot be observed (a sink that drops records): the suite then
    /// counts from the sink's committed position.
    fn read_back(&self, test: &str) -> BoxFuture<'_, Result<Option<Vec<u64>>, FixtureError>>;

    /// A config that must be refused, with the field the refusal must name.
    fn bad_config(&self) -> (Map<String, Value>, &'static str);
}
