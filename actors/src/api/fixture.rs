//! What a connector gives the conformance suite: how to make a config for a fresh test, feed
//! input into its external system (a source) or read its output back (a sink), and optionally
//! take the system away and bring it back.
//!
//! One generic suite (`node/tests/conformance.rs`) runs every registered type's fixture through
//! the same cases (bad configs, restarts, crashes, outages); a guard test fails when a
//! registered type has none. The code ships in the library so that any test crate can run it;
//! it needs nothing the connectors do not need already.
//!
//! - A source fixture makes an input of records with ids `0..count` that arrive in its system
//!   on their own, paced, from the moment it is made ([`SourceFixture::input`]); the suite
//!   counts what reaches the topic by [`SourceFixture::record_id`].
//! - A sink fixture makes a fresh output ([`SinkFixture::output`]); the suite feeds the input
//!   topic JSON records `{"id": n, "text": "..."}` keyed by `n` (from 0), and the fixture maps
//!   them onto its system and reads the ids back ([`SinkOutput::read_back`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Words the error of an instance cut off from the system must contain: the system's name
    /// as the connector reports it (`postgres unavailable`), and what was taken away when the
    /// error can name it (a directory).
    fn named_in_error(&self) -> Vec<String>;
}

/// A config a type must refuse, and the field the refusal must name.
#[derive(Debug, Clone, PartialEq)]
pub struct BadConfig {
    /// The config.
    pub config: Map<String, Value>,
    /// The field its error must name.
    pub field: &'static str,
    /// Whether validation refuses it (create fails); false when only a running instance can
    /// find out (a table that does not exist, a wrong password), so it must pass validation
    /// and fail the instance instead.
    pub caught_by_validation: bool,
}

impl BadConfig {
    /// A config validation must refuse naming `field`.
    pub fn refused(config: Map<String, Value>, field: &'static str) -> Self {
        Self {
            config,
            field,
            caught_by_validation: true,
        }
    }

    /// A valid-looking config a running instance must fail on, naming `field`.
    pub fn found_at_run_time(config: Map<String, Value>, field: &'static str) -> Self {
        Self {
            config,
            field,
            caught_by_validation: false,
        }
    }
}

/// The records one source test reads: its config, and the system behind it.
pub trait SourceInput: Send + Sync {
    /// The connector config that reads this input.
    fn config(&self) -> Map<String, Value>;

    /// How to take the system away, when the input was asked for with an outage and the type
    /// can make one.
    fn outage(&self) -> Option<&dyn Outage> {
        None
    }

    /// Removes what the fixture made (files, writers still running). The suite awaits it at
    /// the end of the test.
    fn clean_up(self: Box<Self>) -> BoxFuture<'static, Result<(), FixtureError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The output of one sink test: its config, how to read it back, and the system behind it.
pub trait SinkOutput: Send + Sync {
    /// The connector config that writes this output.
    fn config(&self) -> Map<String, Value>;

    /// Reads the output back: the id of every record found, repeats included, in the order
    /// written. `None` when the output cannot be observed (a sink that drops records): the
    /// suite then counts from the sink's committed position, which the type renders as
    /// `records=<n>`.
    fn read_back(&self) -> BoxFuture<'_, Result<Option<Vec<u64>>, FixtureError>>;

    /// Checks the sink's own committed position (what its flush returned), taken once
    /// everything was written and checkpointed, against the output: the file sink's must be
    /// the file's length, so a recovery has nothing to cut. The default accepts any.
    fn check_committed(&self, position: &[u8]) -> BoxFuture<'_, Result<(), FixtureError>> {
        let _ = position;
        Box::pin(async { Ok(()) })
    }

    /// How to take the system away, when the output was asked for with an outage and the type
    /// can make one.
    fn outage(&self) -> Option<&dyn Outage> {
        None
    }

    /// Removes what the fixture made (files, a table). The suite awaits it at the end of the
    /// test.
    fn clean_up(self: Box<Self>) -> BoxFuture<'static, Result<(), FixtureError>> {
        Box::pin(async { Ok(()) })
    }
}

/// How one test's input arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Records with ids `0..count`.
    pub count: u64,
    /// About this many records a second arrive, from the moment the input is made, so that a
    /// crash lands mid-stream.
    pub rate: u64,
    /// Instances of the source reading it (at most [`SourceFixture::max_parallelism`]).
    pub parallelism: u32,
    /// Whether the test takes the system away: the input then comes with an [`Outage`] when
    /// the type can make one.
    pub outage: bool,
}

/// A source type's fixture.
pub trait SourceFixture: Send + Sync {
    /// Makes a fresh input for test `test` (a name unique in its run, for the files or tables
    /// the fixture makes), fed as `feed` says.
    fn input(
        &self,
        test: &str,
        feed: Feed,
    ) -> BoxFuture<'_, Result<Box<dyn SourceInput>, FixtureError>>;

    /// The id of a record the source published (its key and value), to count each once.
    fn record_id(&self, key: Option<&str>, value: &[u8]) -> Option<u64>;

    /// Configs the type must refuse.
    fn bad_configs(&self) -> Vec<BadConfig>;

    /// The most instances a source of this type can share one input between, each record read
    /// by one of them (1: every instance would read all of it).
    fn max_parallelism(&self) -> u32 {
        1
    }
}

/// A sink type's fixture.
pub trait SinkFixture: Send + Sync {
    /// Makes a fresh output for test `test` (a name unique in its run); with `outage`, one
    /// whose system can be taken away when the type can make one.
    fn output(
        &self,
        test: &str,
        outage: bool,
    ) -> BoxFuture<'_, Result<Box<dyn SinkOutput>, FixtureError>>;

    /// Configs the type must refuse.
    fn bad_configs(&self) -> Vec<BadConfig>;
}

/// Returns a name made of `test` (reduced to lowercase letters, digits and `_`) and a suffix
/// no other call of this process or of an earlier run returned: for directories and tables.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let base: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    format!(
        "{base}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes a fresh directory for test `test` under the system's temporary directory.
pub fn temporary_directory(test: &str) -> Result<PathBuf, FixtureError> {
    let path = std::env::temp_dir().join(format!("ferry-fixture-{}", unique_name(test)));
    std::fs::create_dir_all(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    Ok(path)
}

/// Returns the JSON object `value` as a config map (fixtures write configs with `json!`);
/// anything but an object gives an empty map.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The `id` field of a JSON record value (`{"id": n, ...}`).
pub fn json_id(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(value)
        .ok()?
        .get("id")?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_plain_identifiers() {
        let first = unique_name("Resume: file/source");
        let second = unique_name("Resume: file/source");
        assert_ne!(first, second);
        assert!(first.starts_with("resume__file_source_"), "{first}");
        assert!(
            first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{first}"
        );
    }

    #[test]
    fn ids_come_from_json_values() {
        assert_eq!(json_id(br#"{"id": 7, "text": "x"}"#), Some(7));
        assert_eq!(json_id(b"not json"), None);
        assert_eq!(json_id(br#"{"index": 7}"#), None);
    }
}
