//! Checks a connector definition as a user gave it and turns it into the [`ConnectorSpec`] the
//! metadata store keeps: names, type, config (fields known, required ones present, values
//! accepted by the type), topics, parallelism and guarantee, each refusal naming its field.
//!
//! Pure: no I/O. The one check that needs the outside world (broker deduplication for an
//! effectively-once source) is the service's.

use std::collections::{BTreeMap, BTreeSet};

use ferry_actors::api::ConnectorError;
use ferry_actors::api::config::json_kind;
use ferry_actors::api::registry::{self, ConnectorType, InstanceContext};
use ferry_actors::connectors;
use ferry_actors::instance::position;
use ferry_actors::pulsar::admin::TopicName;
use ferry_proto::admin::v1 as proto;
use serde_json::{Map, Value};

use super::convert::kind_word;
use super::error::AdminError;
use crate::meta::state::{ConnectorKind, ConnectorName, ConnectorSpec, Guarantee, Secret};

/// A connector definition before validation: what create gives, or what update makes by
/// laying its changes over the stored definition.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// Source or sink.
    pub(crate) kind: ConnectorKind,
    /// The type's registered name.
    pub(crate) connector_type: String,
    /// The whole config, secrets included.
    pub(crate) config: Map<String, Value>,
    /// Output topic (sources) or input topics (sinks), as given.
    pub(crate) topics: Vec<String>,
    /// The input subscription (sinks).
    pub(crate) subscription: Option<String>,
    /// Instances wanted, as given (may be zero or negative: refused here).
    pub(crate) parallelism: i64,
    /// The guarantee.
    pub(crate) guarantee: Guarantee,
}

/// Returns the connector name of a request, each part checked.
pub(crate) fn connector_name(
    name: Option<&proto::ConnectorName>,
) -> Result<ConnectorName, AdminError> {
    let name = name.ok_or_else(|| AdminError::invalid("name", "is required"))?;
    check_name_part("tenant", &name.tenant)?;
    check_name_part("namespace", &name.namespace)?;
    check_name_part("name", &name.name)?;
    Ok(ConnectorName::new(
        &name.tenant,
        &name.namespace,
        &name.name,
    ))
}

/// Checks a tenant, namespace or connector name: Pulsar's allowed characters, no `/`.
pub(crate) fn check_name_part(field: &str, value: &str) -> Result<(), AdminError> {
    if value.is_empty() {
        return Err(AdminError::invalid(field, "is required"));
    }
    if value.contains('/') {
        return Err(AdminError::invalid(
            field,
            format!("{value:?} must not contain '/'"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | ':'))
    {
        return Err(AdminError::invalid(
            field,
            format!("{value:?} may hold only letters, digits and - _ . = :"),
        ));
    }
    Ok(())
}

/// Parses a config given as JSON text into an object; `field` names the flag it came from.
/// Keys whose value is null are dropped (on update they remove the stored key).
pub(crate) fn parse_config(field: &str, text: &str) -> Result<Map<String, Value>, AdminError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|error| AdminError::invalid(field, format!("is not valid JSON: {error}")))?;
    match value {
        Value::Object(object) => Ok(object),
        other => Err(AdminError::invalid(
            field,
            format!("must be a JSON object, not {}", json_kind(&other)),
        )),
    }
}

/// Returns the registered type `name` (or aliased so) of `kind`, naming the
/// `--source-type`/`--sink-type` field.
pub(crate) fn find_type(
    kind: ConnectorKind,
    name: &str,
) -> Result<&'static ConnectorType, AdminError> {
    if name.is_empty() {
        return Err(AdminError::invalid(type_field(kind), "is required"));
    }
    connectors::registry()
        .find(kind, name)
        .map_err(|error| connector_error(kind, error))
}

/// Checks `config` as the type defines it (unknown, mistyped and missing fields, each named),
/// then the type's own validation and a dry build of instance 0 of `parallelism`. Returns the
/// config with Pulsar IO aliases renamed to the fields' own names.
pub(crate) fn check_config(
    kind: ConnectorKind,
    connector_type: &ConnectorType,
    config: &Map<String, Value>,
    parallelism: u32,
) -> Result<Map<String, Value>, AdminError> {
    let context = InstanceContext {
        connector: "validation".to_owned(),
        index: 0,
        parallelism,
    };
    connector_type
        .validate(config, &context)
        .map_err(|error| connector_error(kind, error))
}

/// Validates a draft into the spec the store keeps (secrets split out, topics normalized).
pub(crate) fn spec(draft: &Draft) -> Result<ConnectorSpec, AdminError> {
    let kind = draft.kind;
    let connector_type = find_type(kind, &draft.connector_type)?;
    if draft.parallelism < 1 {
        return Err(AdminError::invalid(
            "parallelism",
            format!("must be at least 1, not {}", draft.parallelism),
        ));
    }
    let parallelism = u32::try_from(draft.parallelism)
        .map_err(|_| AdminError::invalid("parallelism", "is too large"))?;
    let config = check_config(kind, connector_type, &draft.config, parallelism)?;
    let topics = topics(kind, &draft.topics)?;
    connector_type
        .check_guarantee(draft.guarantee)
        .map_err(|error| connector_error(kind, error))?;
    let subscription = match (&draft.subscription, kind) {
        (Some(_), ConnectorKind::Source) => {
            return Err(AdminError::invalid(
                "subscription_name",
                "only sinks read through a subscription",
            ));
        }
        (Some(subscription), ConnectorKind::Sink) if subscription.is_empty() => None,
        (subscription, _) => subscription.clone(),
    };
    let stored = registry::split_config(&connector_type.definition, &config)
        .map_err(|error| connector_error(kind, error))?;
    Ok(ConnectorSpec {
        kind,
        connector_type: connector_type.name.to_owned(),
        config: stored.plain,
        secrets: stored
            .secrets
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect(),
        topics,
        subscription,
        parallelism,
        guarantee: draft.guarantee,
    })
}

/// Checks and normalizes the topics: one output topic for a source, one or more distinct input
/// topics for a sink, each a valid Pulsar topic name.
fn topics(kind: ConnectorKind, given: &[String]) -> Result<Vec<String>, AdminError> {
    let field = match kind {
        ConnectorKind::Source => "destination_topic_name",
        ConnectorKind::Sink => "inputs",
    };
    match (kind, given.len()) {
        (_, 0) => return Err(AdminError::invalid(field, "is required")),
        (ConnectorKind::Source, 1) | (ConnectorKind::Sink, _) => {}
        (ConnectorKind::Source, _) => {
            return Err(AdminError::invalid(
                field,
                "a source writes to exactly one topic",
            ));
        }
    }
    let mut seen = BTreeSet::new();
    let mut topics = Vec::with_capacity(given.len());
    for topic in given {
        let parsed = TopicName::parse(topic.trim())
            .map_err(|error| AdminError::invalid(field, error.to_string()))?;
        let normalized = parsed.to_string();
        if !seen.insert(normalized.clone()) {
            return Err(AdminError::invalid(
                field,
                format!("topic {normalized} is given twice"),
            ));
        }
        topics.push(normalized);
    }
    Ok(topics)
}

/// Returns the whole config of a stored spec, secrets included (for update's merge).
pub(crate) fn stored_config(spec: &ConnectorSpec) -> Result<Map<String, Value>, AdminError> {
    let secrets: BTreeMap<String, String> = spec
        .secrets
        .iter()
        .map(|(name, secret)| (name.clone(), secret.expose().to_owned()))
        .collect();
    registry::join_config(&spec.config, &secrets)
        .map_err(|error| AdminError::Internal(error.to_string()))
}

/// Lays `changes` over `config`: a null removes the key, anything else replaces it.
pub(crate) fn merge_config(config: &mut Map<String, Value>, changes: Map<String, Value>) {
    for (name, value) in changes {
        if value.is_null() {
            config.remove(&name);
        } else {
            config.insert(name, value);
        }
    }
}

/// Drops null values of a config given on create (null means absent).
pub(crate) fn without_nulls(config: Map<String, Value>) -> Map<String, Value> {
    config
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .collect()
}

/// The CLI flag that names the type of `kind`.
pub(crate) fn type_field(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source_type",
        ConnectorKind::Sink => "sink_type",
    }
}

/// The CLI flag that carries the config of `kind`.
pub(crate) fn config_flag(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source_config",
        ConnectorKind::Sink => "sink_config",
    }
}

fn config_field(kind: ConnectorKind, name: &str) -> String {
    format!("{} field {name:?}", config_flag(kind))
}

/// Parses `text`, a position as `offsets get` shows it, into the checkpoint bytes of an
/// instance of `spec`; a refusal names `position` and the shape the type expects.
pub(crate) fn position_text(spec: &ConnectorSpec, text: &str) -> Result<Vec<u8>, AdminError> {
    let connector_type = registry_type(spec)?;
    position::parse_checkpoint(connector_type, text).map_err(|error| match error {
        ConnectorError::InvalidPosition(reason) => AdminError::invalid(
            "position",
            format!(
                "{reason} (for a {} {})",
                connector_type.name,
                kind_word(spec.kind)
            ),
        ),
        other => AdminError::invalid("position", other.to_string()),
    })
}

fn registry_type(spec: &ConnectorSpec) -> Result<&'static ConnectorType, AdminError> {
    connectors::registry()
        .find(spec.kind, &spec.connector_type)
        .map_err(|_| {
            AdminError::invalid(
                "position",
                format!(
                    "this node's build has no {} type {}, so it cannot read the position as text (give it as bytes)",
                    kind_word(spec.kind),
                    spec.connector_type
                ),
            )
        })
}

/// Names a registry error's field as the user knows it: the type and guarantee flags as they
/// are, config keys as `source_config field "key"`.
fn connector_error(kind: ConnectorKind, error: ConnectorError) -> AdminError {
    match error {
        ConnectorError::InvalidConfig { field, reason } => {
            let field = match field.as_str() {
                "source_type" | "sink_type" | "processing_guarantees" => field,
                "config" => config_flag(kind).to_owned(),
                name => config_field(kind, name),
            };
            AdminError::InvalidArgument { field, reason }
        }
        other => AdminError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            kind: ConnectorKind::Source,
            connector_type: "datagen".to_owned(),
            config: parse_config("source_config", r#"{"count": 10}"#).expect("json"),
            topics: vec!["t".to_owned()],
            subscription: None,
            parallelism: 2,
            guarantee: Guarantee::EffectivelyOnce,
        }
    }

    /// One bad edit of a valid draft.
    type Change = Box<dyn Fn(&mut Draft)>;

    fn refusal(draft: &Draft) -> String {
        let error = spec(draft).expect_err("refused");
        assert!(
            matches!(error, AdminError::InvalidArgument { .. }),
            "{error}"
        );
        error.to_string()
    }

    #[test]
    fn a_valid_draft_becomes_a_normalized_spec() {
        let spec = spec(&draft()).expect("valid");
        assert_eq!(
            spec.topics,
            vec!["persistent://public/default/t".to_owned()]
        );
        assert_eq!(spec.config.get("count").map(String::as_str), Some("10"));
        assert_eq!(spec.parallelism, 2);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|d| d.connector_type = "nope".to_owned()),
                "source_type",
            ),
            (Box::new(|d| d.parallelism = 0), "parallelism"),
            (Box::new(|d| d.parallelism = -3), "parallelism"),
            (Box::new(|d| d.topics = vec![]), "destination_topic_name"),
            (
                Box::new(|d| d.topics = vec!["a//b".to_owned()]),
                "destination_topic_name",
            ),
            (
                Box::new(|d| d.topics = vec!["a".to_owned(), "b".to_owned()]),
                "exactly one",
            ),
            (
                Box::new(|d| {
                    d.config.insert("bogus".to_owned(), Value::from(1));
                }),
                "\"bogus\"",
            ),
            (
                Box::new(|d| {
                    d.config.insert("count".to_owned(), Value::from("many"));
                }),
                "\"count\"",
            ),
            (
                Box::new(|d| d.subscription = Some("s".to_owned())),
                "subscription_name",
            ),
        ];
        for (change, expected) in cases {
            let mut draft = draft();
            change(&mut draft);
            let message = refusal(&draft);
            assert!(
                message.contains(expected),
                "{message} should name {expected}"
            );
        }
    }

    #[test]
    fn names_and_json_are_checked() {
        let name = |tenant: &str, name: &str| proto::ConnectorName {
            tenant: tenant.to_owned(),
            namespace: "default".to_owned(),
            name: name.to_owned(),
        };
        let error = connector_name(Some(&name("public", "a/b"))).expect_err("slash");
        assert!(error.to_string().contains("invalid name"), "{error}");
        let error = connector_name(Some(&name("", "a"))).expect_err("empty");
        assert!(error.to_string().contains("tenant"), "{error}");
        let error = parse_config("source_config", "{oops").expect_err("bad json");
        assert!(error.to_string().contains("source_config"), "{error}");
        let error = parse_config("sink_config", "[1]").expect_err("not an object");
        assert!(error.to_string().contains("an array"), "{error}");
    }

    #[test]
    fn update_merges_and_nulls_remove() {
        let mut config = parse_config("c", r#"{"count": 1, "seed": 2}"#).expect("json");
        merge_config(
            &mut config,
            parse_config("c", r#"{"count": null, "rate": 5}"#).expect("json"),
        );
        assert_eq!(
            Value::Object(config),
            serde_json::json!({"seed": 2, "rate": 5})
        );
    }
}
