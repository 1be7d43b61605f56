//! `sequence`: a source counting from `start` in steps of `step`, one record per number.
//!
//! Replayable, so it offers effectively-once: record `n` (from 0) is a pure function of the
//! config and `n`, and the position is the next `n` an instance makes (8 bytes big-endian,
//! shown as `next=<n>`). The instances of a source share the numbers: instance `i` of `p` makes
//! `n = i, i + p, i + 2p, …`, so a topic fed with parallelism 3 holds each number once.

use ferry_actors::api::config::ConnectorConfig;
use ferry_actors::api::fixture::SourceFixture;
use ferry_actors::api::registry::{self, InstanceContext, SourceFactory};
use ferry_actors::api::{ConnectorError, Position, Source, SourceCapabilities};
use schemars::JsonSchema;
use serde::Deserialize;

pub mod fixture;
pub mod source;

pub use self::source::SequenceSource;

/// Numbers from start in steps of step, one record each: value `<prefix><number>`, key the
/// record's index from 0 (replayable).
///
/// The instances of a source share the numbers (instance i of p: indexes i, i+p, …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// The first number.
    #[serde(default)]
    pub start: i64,
    /// What each number adds to the one before (not 0; negative counts down).
    #[serde(default = "default_step")]
    pub step: i64,
    /// How many numbers in all, over every instance of the source; absent means endless.
    #[serde(default)]
    pub count: Option<u64>,
    /// Text put before each number in a record's value.
    #[serde(default)]
    pub prefix: String,
    /// Milliseconds between two records of one instance; 0 means as fast as possible.
    #[serde(default)]
    pub interval_ms: u64,
}

fn default_step() -> i64 {
    1
}

/// The longest interval accepted: one record an hour.
const MAX_INTERVAL_MS: u64 = 3_600_000;

impl ConnectorConfig for SequenceConfig {
    // What the types cannot say, each error naming its field.
    fn validate(&self) -> Result<(), ConnectorError> {
        if self.step == 0 {
            return Err(ConnectorError::InvalidConfig {
                field: "step".to_owned(),
                reason: "must not be 0 (every record would hold the same number)".to_owned(),
            });
        }
        if self.interval_ms > MAX_INTERVAL_MS {
            return Err(ConnectorError::InvalidConfig {
                field: "interval_ms".to_owned(),
                reason: format!("must be at most {MAX_INTERVAL_MS} (one record an hour)"),
            });
        }
        Ok(())
    }
}

/// The `sequence` source type.
#[derive(Debug)]
pub struct Sequence;

impl SourceFactory for Sequence {
    type Config = SequenceConfig;
    const NAME: &'static str = "sequence";
    // No Pulsar IO counterpart, so no aliases (a port of one would list its type name here,
    // e.g. `&["data-generator"]`).
    const CAPABILITIES: SourceCapabilities = SourceCapabilities { replayable: true };

    fn build(
        config: SequenceConfig,
        context: &InstanceContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        // No I/O here: admin validation runs this as a dry build.
        Ok(Box::new(SequenceSource::new(
            config,
            context.index,
            context.parallelism,
        )))
    }

    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        registry::render_u64_position("next", position)
    }

    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        registry::parse_u64_position("next", text)
    }

    fn fixture() -> Option<Box<dyn SourceFixture>> {
        Some(Box::new(fixture::SequenceFixture))
    }
}

#[cfg(test)]
mod tests {
    use ferry_actors::api::Kind;
    use ferry_actors::api::config::ConfigDefinition;
    use serde_json::{Map, Value, json};

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(object) = value else {
            panic!("an object");
        };
        object
    }

    #[test]
    fn the_config_struct_is_the_definition_and_the_validation() {
        let definition = ConfigDefinition::of::<SequenceConfig>();
        assert!(definition.description.starts_with("Numbers from start"));
        let step = definition.field("step").expect("a step field");
        assert_eq!(step.default.as_deref(), Some("1"));
        assert!(!step.required);
        assert!(step.description.contains("not 0"), "{step:?}");
        let field = |config: Value| match definition.parse::<SequenceConfig>(&object(config)) {
            Err(ConnectorError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"step": 0})), "step");
        assert_eq!(field(json!({"stpe": 2})), "stpe");
        assert_eq!(field(json!({"count": -1})), "count");
        assert_eq!(field(json!({"interval_ms": 3_600_001})), "interval_ms");
        let config: SequenceConfig = definition
            .parse(&object(json!({"start": -5, "count": 3})))
            .expect("valid");
        assert_eq!((config.start, config.step, config.count), (-5, 1, Some(3)));
    }

    #[test]
    fn the_registry_of_this_build_holds_the_builtins_and_sequence() {
        let registry = crate::registry();
        let sequence = registry.find(Kind::Source, "sequence").expect("sequence");
        assert!(sequence.effectively_once);
        assert!(registry.find(Kind::Source, "datagen").is_ok());
        assert!(registry.find(Kind::Sink, "file").is_ok());
        assert_eq!(
            sequence
                .render_position(&7_u64.to_be_bytes())
                .expect("8 bytes"),
            "next=7"
        );
        assert_eq!(
            sequence.parse_position("next=7").expect("text"),
            7_u64.to_be_bytes()
        );
        let error = sequence.parse_position("index=7").expect_err("not ours");
        assert!(error.to_string().contains("next=<whole number>"), "{error}");
    }
}
