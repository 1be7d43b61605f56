//! Checks a connector definition as a user gave it and turns it into the [`ConnectorSpec`] the
//! metadata store keeps: names, type, config (fields known, required ones present, values
//! accepted by the type), topics, parallelism, guarantee, error policy and runtime options,
//! each refusal naming its field.
//!
//! Pure: no I/O. The one check that needs the outside world (broker deduplication for an
//! effectively-once source or dead-letter topic) is the service's.

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
use crate::meta::state::{
    ConnectorKind, ConnectorName, ConnectorSpec, ErrorPolicy, Guarantee, MAX_RUNTIME_SIZE,
    RuntimeOptions, Secret,
};

/// An error policy by name, before its dead-letter topic is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyName {
    /// Stop the instance.
    Fail,
    /// Drop and count the record.
    Skip,
    /// Send the record to the dead-letter topic.
    DeadLetter,
}

impl PolicyName {
    /// The name of a stored policy.
    pub(crate) fn of(policy: &ErrorPolicy) -> Self {
        match policy {
            ErrorPolicy::Fail => Self::Fail,
            ErrorPolicy::Skip => Self::Skip,
            ErrorPolicy::DeadLetter { .. } => Self::DeadLetter,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::DeadLetter => "dead-letter",
        }
    }
}

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
    /// The error policy (sinks).
    pub(crate) error_policy: PolicyName,
    /// The dead-letter topic, as given (sinks, with the dead-letter policy).
    pub(crate) dead_letter_topic: Option<String>,
    /// Batch sizes, receiver queue and start position.
    pub(crate) options: RuntimeOptions,
}

/// Returns the error policy and dead-letter topic of a create or update: what the request gives
/// (None: not given; an empty topic removes it) laid over `stored` (None on create). A topic
/// given without a policy implies dead-letter (pulsar-admin has only `--dead-letter-topic`); a
/// policy other than dead-letter given without a topic drops the stored one.
pub(crate) fn choose_error_policy(
    policy: Option<PolicyName>,
    topic: Option<String>,
    stored: Option<&ErrorPolicy>,
) -> (PolicyName, Option<String>) {
    let topic_given = topic.as_ref().is_some_and(|topic| !topic.is_empty());
    let policy = policy.unwrap_or(if topic_given {
        PolicyName::DeadLetter
    } else {
        stored.map_or(PolicyName::Fail, PolicyName::of)
    });
    let topic = match topic {
        Some(topic) => Some(topic).filter(|topic| !topic.is_empty()),
        None if policy == PolicyName::DeadLetter => stored
            .and_then(ErrorPolicy::dead_letter_topic)
            .map(str::to_owned),
        None => None,
    };
    (policy, topic)
}

/// Lays the runtime options a request gives over `stored`.
pub(crate) fn merge_options(stored: RuntimeOptions, given: RuntimeOptions) -> RuntimeOptions {
    RuntimeOptions {
        read_batch_size: given.read_batch_size.or(stored.read_batch_size),
        write_batch_size: given.write_batch_size.or(stored.write_batch_size),
        receiver_queue_size: given.receiver_queue_size.or(stored.receiver_queue_size),
        subscription_position: given.subscription_position.or(stored.subscription_position),
    }
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
    let error_policy = error_policy(
        kind,
        draft.error_policy,
        draft.dead_letter_topic.as_deref(),
        &topics,
    )?;
    check_options(kind, &draft.options)?;
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
        error_policy,
        options: draft.options,
    })
}

/// Checks an error policy with its dead-letter topic: sinks only; dead-letter needs a topic
/// and a topic needs dead-letter; the topic is valid and none of the sink's `inputs` (its
/// dead letters would be read again).
fn error_policy(
    kind: ConnectorKind,
    policy: PolicyName,
    topic: Option<&str>,
    inputs: &[String],
) -> Result<ErrorPolicy, AdminError> {
    if kind == ConnectorKind::Source {
        if topic.is_some() {
            return Err(AdminError::invalid(
                "dead_letter_topic",
                "only sinks dead-letter records: a source's records are not rejected",
            ));
        }
        if policy != PolicyName::Fail {
            return Err(AdminError::invalid(
                "error_policy",
                format!(
                    "only sinks have an error policy (a source's records are not rejected), not {}",
                    policy.as_str()
                ),
            ));
        }
        return Ok(ErrorPolicy::Fail);
    }
    match (policy, topic) {
        (PolicyName::DeadLetter, None) => Err(AdminError::invalid(
            "dead_letter_topic",
            "is required with error policy dead-letter",
        )),
        (PolicyName::Fail | PolicyName::Skip, Some(_)) => Err(AdminError::invalid(
            "dead_letter_topic",
            format!(
                "is used only with error policy dead-letter, not {}",
                policy.as_str()
            ),
        )),
        (PolicyName::Fail, None) => Ok(ErrorPolicy::Fail),
        (PolicyName::Skip, None) => Ok(ErrorPolicy::Skip),
        (PolicyName::DeadLetter, Some(topic)) => {
            let topic = TopicName::parse(topic.trim())
                .map_err(|error| AdminError::invalid("dead_letter_topic", error.to_string()))?
                .to_string();
            let read_back = inputs.iter().find(|input| {
                **input == topic || is_partition_of(&topic, input) || is_partition_of(input, &topic)
            });
            if let Some(input) = read_back {
                return Err(AdminError::invalid(
                    "dead_letter_topic",
                    format!(
                        "{topic} is the sink's input {input}: its dead letters would be read again"
                    ),
                ));
            }
            Ok(ErrorPolicy::DeadLetter { topic })
        }
    }
}

/// Whether `topic` is one partition (`…-partition-N`) of `partitioned`.
fn is_partition_of(topic: &str, partitioned: &str) -> bool {
    topic
        .strip_prefix(partitioned)
        .and_then(|rest| rest.strip_prefix("-partition-"))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Checks the runtime options: each meant for the connector's kind, sizes from 1 to
/// [`MAX_RUNTIME_SIZE`].
fn check_options(kind: ConnectorKind, options: &RuntimeOptions) -> Result<(), AdminError> {
    let misplaced = match kind {
        ConnectorKind::Source if options.write_batch_size.is_some() => Some((
            "write_batch_size",
            "only sinks write batches; a source's --batch-size is read_batch_size",
        )),
        ConnectorKind::Source if options.receiver_queue_size.is_some() => Some((
            "receiver_queue_size",
            "only sinks read through a subscription",
        )),
        ConnectorKind::Source if options.subscription_position.is_some() => Some((
            "subscription_position",
            "only sinks read through a subscription",
        )),
        ConnectorKind::Sink if options.read_batch_size.is_some() => Some((
            "read_batch_size",
            "only sources read batches; a sink's --batch-size is write_batch_size",
        )),
        ConnectorKind::Source | ConnectorKind::Sink => None,
    };
    if let Some((field, reason)) = misplaced {
        return Err(AdminError::invalid(field, reason));
    }
    let sizes = [
        ("batch_size", options.read_batch_size),
        ("batch_size", options.write_batch_size),
        ("receiver_queue_size", options.receiver_queue_size),
    ];
    for (field, size) in sizes {
        if let Some(size) = size.filter(|size| !(1..=MAX_RUNTIME_SIZE).contains(size)) {
            return Err(AdminError::invalid(
                field,
                format!("must be from 1 to {MAX_RUNTIME_SIZE}, not {size}"),
            ));
        }
    }
    Ok(())
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
    use crate::meta::state::StartPosition;

    fn draft() -> Draft {
        Draft {
            kind: ConnectorKind::Source,
            connector_type: "datagen".to_owned(),
            config: parse_config("source_config", r#"{"count": 10}"#).expect("json"),
            topics: vec!["t".to_owned()],
            subscription: None,
            parallelism: 2,
            guarantee: Guarantee::EffectivelyOnce,
            error_policy: PolicyName::Fail,
            dead_letter_topic: None,
            options: RuntimeOptions::default(),
        }
    }

    fn sink_draft() -> Draft {
        Draft {
            kind: ConnectorKind::Sink,
            connector_type: "blackhole".to_owned(),
            config: Map::new(),
            topics: vec![
                "in".to_owned(),
                "persistent://public/default/parts".to_owned(),
            ],
            subscription: None,
            parallelism: 1,
            guarantee: Guarantee::EffectivelyOnce,
            error_policy: PolicyName::DeadLetter,
            dead_letter_topic: Some("in-dlq".to_owned()),
            options: RuntimeOptions::default(),
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
            (
                Box::new(|d| d.error_policy = PolicyName::Skip),
                "error_policy",
            ),
            (
                Box::new(|d| d.dead_letter_topic = Some("dlq".to_owned())),
                "dead_letter_topic",
            ),
            (
                Box::new(|d| d.options.write_batch_size = Some(10)),
                "write_batch_size",
            ),
            (
                Box::new(|d| d.options.receiver_queue_size = Some(10)),
                "receiver_queue_size",
            ),
            (
                Box::new(|d| d.options.subscription_position = Some(StartPosition::Latest)),
                "subscription_position",
            ),
            (
                Box::new(|d| d.options.read_batch_size = Some(0)),
                "batch_size",
            ),
            (
                Box::new(|d| d.options.read_batch_size = Some(MAX_RUNTIME_SIZE + 1)),
                "batch_size",
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
    fn a_sinks_error_policy_and_options_become_the_spec() {
        let mut draft = sink_draft();
        draft.options = RuntimeOptions {
            read_batch_size: None,
            write_batch_size: Some(500),
            receiver_queue_size: Some(MAX_RUNTIME_SIZE),
            subscription_position: Some(StartPosition::Latest),
        };
        let spec = spec(&draft).expect("valid");
        assert_eq!(
            spec.error_policy,
            ErrorPolicy::DeadLetter {
                topic: "persistent://public/default/in-dlq".to_owned()
            }
        );
        assert_eq!(spec.options, draft.options);
        let mut skip = sink_draft();
        skip.error_policy = PolicyName::Skip;
        skip.dead_letter_topic = None;
        assert_eq!(spec_of(&skip).error_policy, ErrorPolicy::Skip);
    }

    fn spec_of(draft: &Draft) -> ConnectorSpec {
        spec(draft).expect("valid")
    }

    #[test]
    fn each_bad_sink_policy_or_option_is_named() {
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|d| d.dead_letter_topic = None),
                "dead_letter_topic: is required",
            ),
            (
                Box::new(|d| d.error_policy = PolicyName::Skip),
                "only with error policy dead-letter, not skip",
            ),
            (
                Box::new(|d| d.dead_letter_topic = Some("a//b".to_owned())),
                "dead_letter_topic",
            ),
            (
                Box::new(|d| {
                    d.dead_letter_topic = Some("persistent://public/default/in".to_owned())
                }),
                "would be read again",
            ),
            (
                Box::new(|d| d.dead_letter_topic = Some("parts-partition-3".to_owned())),
                "would be read again",
            ),
            (
                Box::new(|d| d.options.read_batch_size = Some(10)),
                "read_batch_size",
            ),
            (
                Box::new(|d| d.options.write_batch_size = Some(0)),
                "batch_size",
            ),
            (
                Box::new(|d| d.options.receiver_queue_size = Some(u32::MAX)),
                "receiver_queue_size",
            ),
        ];
        for (change, expected) in cases {
            let mut draft = sink_draft();
            change(&mut draft);
            let message = refusal(&draft);
            assert!(
                message.contains(expected),
                "{message} should name {expected}"
            );
        }
        // A topic that only starts like an input's partition is another topic.
        let mut draft = sink_draft();
        draft.dead_letter_topic = Some("parts-partition-x".to_owned());
        spec(&draft).expect("not a partition of an input");
    }

    #[test]
    fn a_dead_letter_topic_alone_implies_the_policy_and_other_policies_drop_it() {
        let stored = ErrorPolicy::DeadLetter {
            topic: "dlq".to_owned(),
        };
        let topic = |text: &str| Some(text.to_owned());
        // Create.
        assert_eq!(
            choose_error_policy(None, None, None),
            (PolicyName::Fail, None)
        );
        assert_eq!(
            choose_error_policy(None, topic("d"), None),
            (PolicyName::DeadLetter, topic("d"))
        );
        assert_eq!(
            choose_error_policy(Some(PolicyName::Fail), topic("d"), None),
            (PolicyName::Fail, topic("d")),
            "kept for validation to refuse"
        );
        // Update.
        assert_eq!(
            choose_error_policy(None, None, Some(&stored)),
            (PolicyName::DeadLetter, topic("dlq"))
        );
        assert_eq!(
            choose_error_policy(Some(PolicyName::Skip), None, Some(&stored)),
            (PolicyName::Skip, None)
        );
        assert_eq!(
            choose_error_policy(None, topic("other"), Some(&ErrorPolicy::Skip)),
            (PolicyName::DeadLetter, topic("other"))
        );
        assert_eq!(
            choose_error_policy(None, topic(""), Some(&stored)),
            (PolicyName::DeadLetter, None),
            "removing the topic of a dead-letter sink is refused by validation"
        );
        assert_eq!(
            choose_error_policy(Some(PolicyName::Fail), topic(""), Some(&stored)),
            (PolicyName::Fail, None)
        );
    }

    #[test]
    fn update_lays_given_options_over_stored_ones() {
        let stored = RuntimeOptions {
            write_batch_size: Some(10),
            receiver_queue_size: Some(20),
            ..RuntimeOptions::default()
        };
        let given = RuntimeOptions {
            write_batch_size: Some(30),
            subscription_position: Some(StartPosition::Latest),
            ..RuntimeOptions::default()
        };
        assert_eq!(
            merge_options(stored, given),
            RuntimeOptions {
                read_batch_size: None,
                write_batch_size: Some(30),
                receiver_queue_size: Some(20),
                subscription_position: Some(StartPosition::Latest),
            }
        );
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
