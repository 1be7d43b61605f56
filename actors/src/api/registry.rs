//! Connector types: the factory traits a connector implements, and the [`Registry`] that maps a
//! type name (or its Pulsar IO alias) to one.
//!
//! A connector is a folder under `connectors/` with a typed config struct
//! ([`super::config::ConnectorConfig`]) and a factory ([`SourceFactory`] and/or
//! [`SinkFactory`]); one line in `connectors/mod.rs` registers it. Everything the runtime and
//! the admin API need comes from the factory: the config definition, validation (the generic
//! check plus a dry build), the guarantees the type can offer, how to build an instance, how
//! its position reads as text, and its conformance fixture.
//!
//! A connector's config travels as a JSON object. In the metadata store each plain value is
//! kept as its JSON text under its field name, and each secret field apart from the others
//! ([`split_config`] / [`join_config`]), so read paths can leave secrets out.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::config::{ConfigDefinition, ConnectorConfig};
use super::fixture::{SinkFixture, SourceFixture};
use super::{
    ConnectorError, Guarantee, Kind, Position, Sink, SinkCapabilities, SinkDelivery, Source,
    SourceCapabilities,
};

/// Which instance a connector is built for: lets instances of one connector split the work
/// (a partition each, disjoint generated records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceContext {
    /// `tenant/namespace/name` of the connector.
    pub connector: String,
    /// This instance's index, from 0.
    pub index: u32,
    /// How many instances the connector runs.
    pub parallelism: u32,
}

impl InstanceContext {
    /// The context of instance 0 of a connector with one instance (validation, tests).
    pub fn single(connector: impl Into<String>) -> Self {
        Self {
            connector: connector.into(),
            index: 0,
            parallelism: 1,
        }
    }
}

/// A source connector type.
pub trait SourceFactory: 'static {
    /// Its config; its doc comments are the config definition.
    type Config: ConnectorConfig;
    /// Its name (`--source-type`).
    const NAME: &'static str;
    /// Other names accepted for it (its Pulsar IO counterpart's).
    const ALIASES: &'static [&'static str] = &[];
    /// What it can promise.
    const CAPABILITIES: SourceCapabilities;

    /// Builds an instance from a validated config without connecting anywhere (connecting is
    /// [`Source::open`]'s job): admin validation runs this as a dry build.
    fn build(
        config: Self::Config,
        context: &InstanceContext,
    ) -> Result<Box<dyn Source>, ConnectorError>;

    /// Renders a position for status and `offsets get` (default: hex bytes).
    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        Ok(hex(position))
    }

    /// Parses what [`Self::render_position`] renders, for `offsets reset --position`.
    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        unhex(text)
    }

    /// Its conformance fixture; every built-in type has one (a guard test checks).
    fn fixture() -> Option<Box<dyn SourceFixture>> {
        None
    }
}

/// A sink connector type.
pub trait SinkFactory: 'static {
    /// Its config; its doc comments are the config definition.
    type Config: ConnectorConfig;
    /// Its name (`--sink-type`).
    const NAME: &'static str;
    /// Other names accepted for it (its Pulsar IO counterpart's).
    const ALIASES: &'static [&'static str] = &[];
    /// What it can promise.
    const CAPABILITIES: SinkCapabilities;

    /// Builds an instance from a validated config without connecting anywhere (connecting is
    /// [`Sink::open`]'s job): admin validation runs this as a dry build.
    fn build(
        config: Self::Config,
        context: &InstanceContext,
    ) -> Result<Box<dyn Sink>, ConnectorError>;

    /// Renders the sink's own position (what [`Sink::flush`] returns) for status and `offsets
    /// get` (default: hex bytes).
    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        Ok(hex(position))
    }

    /// Parses what [`Self::render_position`] renders.
    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        unhex(text)
    }

    /// Its conformance fixture; every built-in type has one (a guard test checks).
    fn fixture() -> Option<Box<dyn SinkFixture>> {
        None
    }
}

type SourceBuilder = fn(
    &ConfigDefinition,
    &Map<String, Value>,
    &InstanceContext,
) -> Result<Box<dyn Source>, ConnectorError>;
type SinkBuilder = fn(
    &ConfigDefinition,
    &Map<String, Value>,
    &InstanceContext,
) -> Result<Box<dyn Sink>, ConnectorError>;

/// How a type builds instances and makes its fixture.
#[derive(Clone, Copy)]
enum Builder {
    Source {
        build: SourceBuilder,
        fixture: fn() -> Option<Box<dyn SourceFixture>>,
    },
    Sink {
        build: SinkBuilder,
        fixture: fn() -> Option<Box<dyn SinkFixture>>,
    },
}

/// A connector type's fixture, of its kind.
pub enum Fixture {
    /// A source's.
    Source(Box<dyn SourceFixture>),
    /// A sink's.
    Sink(Box<dyn SinkFixture>),
}

impl fmt::Debug for Fixture {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Source(_) => "Fixture::Source",
            Self::Sink(_) => "Fixture::Sink",
        })
    }
}

/// A registered connector type.
#[derive(Clone)]
pub struct ConnectorType {
    /// Source or sink.
    pub kind: Kind,
    /// Its name.
    pub name: &'static str,
    /// Other names accepted for it (Pulsar IO's).
    pub aliases: &'static [&'static str],
    /// Its config definition (its description is the type's).
    pub definition: ConfigDefinition,
    /// Whether it can run effectively-once (a replayable source; a transactional or
    /// idempotent sink).
    pub effectively_once: bool,
    builder: Builder,
    render_position: fn(&[u8]) -> Result<String, ConnectorError>,
    parse_position: fn(&str) -> Result<Position, ConnectorError>,
}

impl fmt::Debug for ConnectorType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ConnectorType")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("effectively_once", &self.effectively_once)
            .finish_non_exhaustive()
    }
}

fn build_source<F: SourceFactory>(
    definition: &ConfigDefinition,
    config: &Map<String, Value>,
    context: &InstanceContext,
) -> Result<Box<dyn Source>, ConnectorError> {
    F::build(definition.parse::<F::Config>(config)?, context)
}

fn build_sink<F: SinkFactory>(
    definition: &ConfigDefinition,
    config: &Map<String, Value>,
    context: &InstanceContext,
) -> Result<Box<dyn Sink>, ConnectorError> {
    F::build(definition.parse::<F::Config>(config)?, context)
}

impl ConnectorType {
    /// The type of source factory `F`.
    pub fn source<F: SourceFactory>() -> Self {
        Self {
            kind: Kind::Source,
            name: F::NAME,
            aliases: F::ALIASES,
            definition: ConfigDefinition::of::<F::Config>(),
            effectively_once: F::CAPABILITIES.replayable,
            builder: Builder::Source {
                build: build_source::<F>,
                fixture: F::fixture,
            },
            render_position: F::render_position,
            parse_position: F::parse_position,
        }
    }

    /// The type of sink factory `F`.
    pub fn sink<F: SinkFactory>() -> Self {
        Self {
            kind: Kind::Sink,
            name: F::NAME,
            aliases: F::ALIASES,
            definition: ConfigDefinition::of::<F::Config>(),
            effectively_once: F::CAPABILITIES.delivery != SinkDelivery::Neither,
            builder: Builder::Sink {
                build: build_sink::<F>,
                fixture: F::fixture,
            },
            render_position: F::render_position,
            parse_position: F::parse_position,
        }
    }

    /// One line on what it does (its config struct's doc comment).
    pub fn description(&self) -> &str {
        &self.definition.description
    }

    /// Whether `name` names this type (its name or an alias).
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// Checks that this type can offer `guarantee`.
    pub fn check_guarantee(&self, guarantee: Guarantee) -> Result<(), ConnectorError> {
        if guarantee == Guarantee::EffectivelyOnce && !self.effectively_once {
            return Err(ConnectorError::InvalidConfig {
                field: "processing_guarantees".to_owned(),
                reason: format!(
                    "the {} type {} cannot offer effectively-once (use at-least-once)",
                    self.kind, self.name
                ),
            });
        }
        Ok(())
    }

    /// Validates `config` without connecting anywhere: the generic check (unknown, mistyped
    /// and missing fields), the config's own validation, then a dry build for `context`.
    /// Returns the config with aliases renamed to the fields' own names.
    pub fn validate(
        &self,
        config: &Map<String, Value>,
        context: &InstanceContext,
    ) -> Result<Map<String, Value>, ConnectorError> {
        let canonical = self.definition.check(config)?;
        match self.builder {
            Builder::Source { build, .. } => {
                build(&self.definition, &canonical, context).map(drop)?
            }
            Builder::Sink { build, .. } => {
                build(&self.definition, &canonical, context).map(drop)?
            }
        }
        Ok(canonical)
    }

    /// Builds a source for `guarantee` from `config`; fails for a sink type.
    pub fn build_source(
        &self,
        config: &Map<String, Value>,
        context: &InstanceContext,
        guarantee: Guarantee,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        self.check_guarantee(guarantee)?;
        match self.builder {
            Builder::Source { build, .. } => build(&self.definition, config, context),
            Builder::Sink { .. } => Err(wrong_kind(self, Kind::Source)),
        }
    }

    /// Builds a sink for `guarantee` from `config`; fails for a source type.
    pub fn build_sink(
        &self,
        config: &Map<String, Value>,
        context: &InstanceContext,
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        self.check_guarantee(guarantee)?;
        match self.builder {
            Builder::Sink { build, .. } => build(&self.definition, config, context),
            Builder::Source { .. } => Err(wrong_kind(self, Kind::Sink)),
        }
    }

    /// Renders a position of this type (a source's position, a sink's own) as text.
    pub fn render_position(&self, position: &[u8]) -> Result<String, ConnectorError> {
        (self.render_position)(position)
    }

    /// Parses a position of this type from the text [`Self::render_position`] renders.
    pub fn parse_position(&self, text: &str) -> Result<Position, ConnectorError> {
        (self.parse_position)(text)
    }

    /// Its conformance fixture, when it has one.
    pub fn fixture(&self) -> Option<Fixture> {
        match self.builder {
            Builder::Source { fixture, .. } => fixture().map(Fixture::Source),
            Builder::Sink { fixture, .. } => fixture().map(Fixture::Sink),
        }
    }
}

fn wrong_kind(connector_type: &ConnectorType, wanted: Kind) -> ConnectorError {
    ConnectorError::InvalidConfig {
        field: format!("{wanted}_type"),
        reason: format!(
            "{} is a {} type, not a {wanted} type",
            connector_type.name, connector_type.kind
        ),
    }
}

/// The connector types a node knows.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Vec<ConnectorType>,
}

impl Registry {
    /// Registers source factory `F`.
    pub fn source<F: SourceFactory>(&mut self) -> &mut Self {
        self.add(ConnectorType::source::<F>())
    }

    /// Registers sink factory `F`.
    pub fn sink<F: SinkFactory>(&mut self) -> &mut Self {
        self.add(ConnectorType::sink::<F>())
    }

    /// Registers `connector_type`, replacing one of the same kind and name.
    pub fn add(&mut self, connector_type: ConnectorType) -> &mut Self {
        self.types.retain(|known| {
            !(known.kind == connector_type.kind && known.name == connector_type.name)
        });
        self.types.push(connector_type);
        self
    }

    /// Every type, in registration order.
    pub fn types(&self) -> &[ConnectorType] {
        &self.types
    }

    /// Returns the type `name` (or aliased so) of `kind`, or an error naming the field and
    /// the choices.
    pub fn find(&self, kind: Kind, name: &str) -> Result<&ConnectorType, ConnectorError> {
        self.types
            .iter()
            .find(|candidate| candidate.kind == kind && candidate.is_named(name))
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .types
                    .iter()
                    .filter(|candidate| candidate.kind == kind)
                    .map(|candidate| candidate.name)
                    .collect();
                ConnectorError::InvalidConfig {
                    field: format!("{kind}_type"),
                    reason: format!("unknown {kind} type {name:?} (known: {})", known.join(", ")),
                }
            })
    }
}

/// A config split for storage: plain values as JSON texts, secret values apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredConfig {
    /// Plain fields: name -> JSON text of the value.
    pub plain: BTreeMap<String, String>,
    /// Secret fields: name -> the value (a string, or an `env:`/`file:` reference).
    pub secrets: BTreeMap<String, String>,
}

/// Splits a config object into plain and secret values by `definition`. Fails when a secret
/// field's value is not a string.
pub fn split_config(
    definition: &ConfigDefinition,
    config: &Map<String, Value>,
) -> Result<StoredConfig, ConnectorError> {
    let mut stored = StoredConfig::default();
    for (name, value) in config {
        if definition.field(name).is_some_and(|field| field.secret) {
            let text = value
                .as_str()
                .ok_or_else(|| ConnectorError::InvalidConfig {
                    field: name.clone(),
                    reason: "a secret must be a string".to_owned(),
                })?;
            stored.secrets.insert(name.clone(), text.to_owned());
        } else {
            stored.plain.insert(name.clone(), value.to_string());
        }
    }
    Ok(stored)
}

/// Joins stored plain values and secret values back into a config object.
pub fn join_config(
    plain: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<Map<String, Value>, ConnectorError> {
    let mut object = Map::new();
    for (name, text) in plain {
        let value = serde_json::from_str(text).map_err(|error| ConnectorError::InvalidConfig {
            field: name.clone(),
            reason: format!("stored value is not JSON: {error}"),
        })?;
        object.insert(name.clone(), value);
    }
    for (name, value) in secrets {
        object.insert(name.clone(), Value::String(value.clone()));
    }
    Ok(object)
}

/// Renders bytes as lowercase hex (`hex:` then the digits; empty bytes as `hex:`).
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(4 + bytes.len() * 2);
    text.push_str("hex:");
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Parses what [`hex`] renders.
pub fn unhex(text: &str) -> Result<Position, ConnectorError> {
    let digits = text
        .trim()
        .strip_prefix("hex:")
        .ok_or_else(|| ConnectorError::InvalidPosition(format!("{text:?} is not hex:<digits>")))?;
    if digits.len() % 2 != 0 {
        return Err(ConnectorError::InvalidPosition(format!(
            "{text:?} has an odd number of hex digits"
        )));
    }
    (0..digits.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(&digits[at..at + 2], 16).map_err(|_| {
                ConnectorError::InvalidPosition(format!("{text:?} holds a non-hex digit"))
            })
        })
        .collect()
}

/// Renders a position that is one number (8 bytes big-endian) as `key=<n>`.
pub fn render_u64_position(key: &str, position: &[u8]) -> Result<String, ConnectorError> {
    let bytes: [u8; 8] = position.try_into().map_err(|_| {
        ConnectorError::InvalidPosition(format!(
            "a position of one number is 8 bytes, got {}",
            position.len()
        ))
    })?;
    Ok(format!("{key}={}", u64::from_be_bytes(bytes)))
}

/// Parses `key=<n>` into 8 bytes big-endian.
pub fn parse_u64_position(key: &str, text: &str) -> Result<Position, ConnectorError> {
    let number = text
        .trim()
        .strip_prefix(key)
        .and_then(|rest| rest.strip_prefix('='))
        .and_then(|digits| digits.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ConnectorError::InvalidPosition(format!("{text:?} is not {key}=<whole number>"))
        })?;
    Ok(number.to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_number_positions_read_back() {
        assert_eq!(hex(&[0, 1, 0xab]), "hex:0001ab");
        assert_eq!(unhex("hex:0001ab").expect("hex"), vec![0, 1, 0xab]);
        assert_eq!(unhex("hex:").expect("empty"), Vec::<u8>::new());
        assert!(unhex("0001").is_err());
        assert!(unhex("hex:0g").is_err());
        assert!(unhex("hex:001").is_err());
        let position = 876_u64.to_be_bytes().to_vec();
        assert_eq!(
            render_u64_position("index", &position).expect("8 bytes"),
            "index=876"
        );
        assert_eq!(
            parse_u64_position("index", " index=876 ").expect("text"),
            position
        );
        assert!(parse_u64_position("index", "offset=1").is_err());
        assert!(render_u64_position("index", &[1, 2]).is_err());
    }
}
