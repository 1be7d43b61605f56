//! The built-in connector types: their names, documented config definitions and the
//! guarantees they can offer, and how to build one from a config.
//!
//! A connector's config travels as a JSON object. In the metadata store each plain value is
//! kept as its JSON text under its field name, and each field declared `secret` apart from the
//! others ([`split_config`] / [`join_config`]), so read paths can leave secrets out. A secret
//! value may be a reference, `env:NAME` or `file:/path`, resolved on the node that runs the
//! instance ([`resolve_secret`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{ConnectorError, Sink, Source};
use crate::connectors;
use crate::instance::Guarantee;

/// Whether a connector type reads into Pulsar or writes out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    /// External system -> Pulsar.
    Source,
    /// Pulsar -> external system.
    Sink,
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Source => "source",
            Self::Sink => "sink",
        })
    }
}

/// The JSON type of a config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A list of strings.
    StringList,
    /// An object.
    Object,
}

impl fmt::Display for FieldType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::StringList => "list of strings",
            Self::Object => "object",
        })
    }
}

/// One documented config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigField {
    /// The key in the config object.
    pub name: &'static str,
    /// Its JSON type.
    pub field_type: FieldType,
    /// Whether it must be given.
    pub required: bool,
    /// The value used when absent, as JSON text.
    pub default: Option<&'static str>,
    /// A password or token: accepted, never shown back, never logged.
    pub secret: bool,
    /// What it does.
    pub description: &'static str,
}

/// Builds a source from a validated config object.
pub type SourceBuilder = fn(&Value) -> Result<Box<dyn Source>, ConnectorError>;
/// Builds a sink from a validated config object.
pub type SinkBuilder = fn(&Value) -> Result<Box<dyn Sink>, ConnectorError>;

/// How a connector type is built.
#[derive(Debug, Clone, Copy)]
pub enum Builder {
    /// A source.
    Source(SourceBuilder),
    /// A sink.
    Sink(SinkBuilder),
}

/// A built-in connector type.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorType {
    /// Its name (`--source-type` / `--sink-type`).
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// Its config definition.
    pub fields: &'static [ConfigField],
    /// Whether it can run effectively-once (a replayable source; a transactional or
    /// idempotent sink).
    pub effectively_once: bool,
    /// How to build one.
    pub builder: Builder,
}

impl ConnectorType {
    /// Source or sink.
    pub fn kind(&self) -> ConnectorKind {
        match self.builder {
            Builder::Source(_) => ConnectorKind::Source,
            Builder::Sink(_) => ConnectorKind::Sink,
        }
    }

    /// Returns the field named `name`.
    pub fn field(&self, name: &str) -> Option<&'static ConfigField> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Checks that this type can offer `guarantee`.
    pub fn check_guarantee(&self, guarantee: Guarantee) -> Result<(), ConnectorError> {
        if guarantee == Guarantee::EffectivelyOnce && !self.effectively_once {
            return Err(ConnectorError::InvalidConfig {
                field: "processing_guarantees".to_owned(),
                reason: format!(
                    "the {} type {} cannot offer effectively-once (use at-least-once)",
                    self.kind(),
                    self.name
                ),
            });
        }
        Ok(())
    }

    /// Validates `config` (a JSON object) without connecting anywhere: unknown fields, missing
    /// required ones, types and ranges, each named in the error.
    pub fn validate(&self, config: &Value) -> Result<(), ConnectorError> {
        match self.builder {
            Builder::Source(build) => build(config).map(drop),
            Builder::Sink(build) => build(config).map(drop),
        }
    }

    /// Builds a source from `config`; fails for a sink type.
    pub fn build_source(&self, config: &Value) -> Result<Box<dyn Source>, ConnectorError> {
        match self.builder {
            Builder::Source(build) => build(config),
            Builder::Sink(_) => Err(wrong_kind(self, ConnectorKind::Source)),
        }
    }

    /// Builds a sink from `config`; fails for a source type.
    pub fn build_sink(&self, config: &Value) -> Result<Box<dyn Sink>, ConnectorError> {
        match self.builder {
            Builder::Sink(build) => build(config),
            Builder::Source(_) => Err(wrong_kind(self, ConnectorKind::Sink)),
        }
    }
}

fn wrong_kind(connector_type: &ConnectorType, wanted: ConnectorKind) -> ConnectorError {
    ConnectorError::InvalidConfig {
        field: format!("{wanted}_type"),
        reason: format!(
            "{} is a {} type, not a {wanted} type",
            connector_type.name,
            connector_type.kind()
        ),
    }
}

/// Every built-in connector type.
pub fn builtin() -> &'static [ConnectorType] {
    BUILTIN
}

static BUILTIN: &[ConnectorType] = &[
    connectors::datagen::CONNECTOR_TYPE,
    connectors::postgres::CONNECTOR_TYPE,
    connectors::file::SOURCE_TYPE,
    connectors::file::SINK_TYPE,
    connectors::blackhole::CONNECTOR_TYPE,
];

/// Returns the built-in type `name` of `kind`, or an error naming the field and the choices.
pub fn find(kind: ConnectorKind, name: &str) -> Result<&'static ConnectorType, ConnectorError> {
    builtin()
        .iter()
        .find(|candidate| candidate.kind() == kind && candidate.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = builtin()
                .iter()
                .filter(|candidate| candidate.kind() == kind)
                .map(|candidate| candidate.name)
                .collect();
            ConnectorError::InvalidConfig {
                field: format!("{kind}_type"),
                reason: format!(
                    "unknown {kind} type {name:?} (built-in: {})",
                    known.join(", ")
                ),
            }
        })
}

/// A config split for storage: plain values as JSON texts, secret values apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredConfig {
    /// Plain fields: name -> JSON text of the value.
    pub plain: BTreeMap<String, String>,
    /// Secret fields: name -> the value (a string, or an `env:`/`file:` reference).
    pub secrets: BTreeMap<String, String>,
}

/// Splits a config object into plain and secret values by `connector_type`'s definition.
/// Fails unless `config` is an object whose secret fields are strings.
pub fn split_config(
    connector_type: &ConnectorType,
    config: &Value,
) -> Result<StoredConfig, ConnectorError> {
    let object = config
        .as_object()
        .ok_or_else(|| ConnectorError::InvalidConfig {
            field: "config".to_owned(),
            reason: "must be a JSON object".to_owned(),
        })?;
    let mut stored = StoredConfig::default();
    for (name, value) in object {
        if connector_type.field(name).is_some_and(|field| field.secret) {
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

/// Joins stored plain values and (resolved) secret values back into a config object.
pub fn join_config(
    plain: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<Value, ConnectorError> {
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
    Ok(Value::Object(object))
}

/// Resolves a secret value: `env:NAME` reads the environment variable `NAME`, `file:/path`
/// reads the file (without a trailing newline); anything else is the value itself. The error
/// names `field` and the reference, never a value.
pub fn resolve_secret(field: &str, value: &str) -> Result<String, ConnectorError> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| ConnectorError::InvalidConfig {
            field: field.to_owned(),
            reason: format!("environment variable {name} is not set on this node"),
        });
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|error| ConnectorError::InvalidConfig {
                field: field.to_owned(),
                reason: format!("cannot read secret file {path}: {error}"),
            });
    }
    Ok(value.to_owned())
}

/// Parses `config` into `T` (a `deny_unknown_fields` struct), naming the offending field.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, ConnectorError> {
    serde_json::from_value(config.clone()).map_err(|error| {
        let message = error.to_string();
        ConnectorError::InvalidConfig {
            field: message
                .split('`')
                .nth(1)
                .map_or_else(|| "config".to_owned(), str::to_owned),
            reason: message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_type_documents_its_fields_and_validates_its_defaults() {
        for connector_type in builtin() {
            assert!(
                !connector_type.description.is_empty(),
                "{}",
                connector_type.name
            );
            for field in connector_type.fields {
                assert!(
                    !field.description.is_empty(),
                    "{}.{}",
                    connector_type.name,
                    field.name
                );
                if let Some(default) = field.default {
                    serde_json::from_str::<Value>(default).unwrap_or_else(|error| {
                        panic!("{}.{} default: {error}", connector_type.name, field.name)
                    });
                }
            }
        }
        let datagen = find(ConnectorKind::Source, "datagen").expect("datagen");
        datagen
            .validate(&serde_json::json!({"count": 10}))
            .expect("valid");
    }

    #[test]
    fn unknown_types_and_wrong_kinds_name_the_field() {
        let error = find(ConnectorKind::Source, "nope").expect_err("unknown");
        assert!(error.to_string().contains("source_type"), "{error}");
        assert!(error.to_string().contains("datagen"), "{error}");
        let error = find(ConnectorKind::Sink, "datagen").expect_err("a source type");
        assert!(error.to_string().contains("sink_type"), "{error}");
    }

    #[test]
    fn secrets_are_split_out_and_joined_back() {
        static FIELDS: &[ConfigField] = &[ConfigField {
            name: "password",
            field_type: FieldType::String,
            required: true,
            default: None,
            secret: true,
            description: "a password",
        }];
        let connector_type = ConnectorType {
            fields: FIELDS,
            ..connectors::datagen::CONNECTOR_TYPE
        };
        let config = serde_json::json!({"password": "hunter2", "count": 3});
        let stored = split_config(&connector_type, &config).expect("split");
        assert_eq!(stored.plain.get("count").map(String::as_str), Some("3"));
        assert!(!stored.plain.contains_key("password"));
        assert_eq!(
            stored.secrets.get("password").map(String::as_str),
            Some("hunter2")
        );
        assert_eq!(
            join_config(&stored.plain, &stored.secrets).expect("join"),
            config
        );
        let error = split_config(&connector_type, &serde_json::json!({"password": 1}))
            .expect_err("not a string");
        assert!(error.to_string().contains("password"), "{error}");
    }

    #[test]
    fn secret_references_resolve_from_files_and_the_environment() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(
            resolve_secret("password", &format!("file:{}", path.display())).expect("file"),
            "s3cret"
        );
        assert_eq!(resolve_secret("password", "plain").expect("plain"), "plain");
        let error =
            resolve_secret("password", "env:FERRY_SURELY_UNSET_VARIABLE").expect_err("unset");
        assert!(error.to_string().contains("password"), "{error}");
        assert!(
            error.to_string().contains("FERRY_SURELY_UNSET_VARIABLE"),
            "{error}"
        );
    }
}
