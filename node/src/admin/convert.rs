//! Between the admin API's messages and the metadata store's and registry's types. Every read
//! path that leaves the node goes through [`connector_info`], which shows secrets as `"***"`.

use std::collections::BTreeMap;

use ferry_actors::api::config::REDACTED;
use ferry_actors::api::registry::{self, ConnectorType};
use ferry_actors::connectors;
use ferry_actors::instance::position;
use ferry_proto::admin::v1 as proto;
use serde_json::Value;

use super::error::AdminError;
use super::validate::PolicyName;
use crate::meta::state::{
    AssignmentPhase, Checkpoint, Connector, ConnectorKind, ConnectorName, ConnectorSpec,
    DesiredState, ErrorPolicy, Guarantee, InstanceKey, NodeState, RuntimeOptions, StartPosition,
    State,
};

/// Returns the store's kind for a request's, or None when the request leaves it unspecified.
pub(crate) fn kind(value: i32) -> Result<Option<ConnectorKind>, AdminError> {
    match proto::ConnectorKind::try_from(value) {
        Ok(proto::ConnectorKind::Unspecified) => Ok(None),
        Ok(proto::ConnectorKind::Source) => Ok(Some(ConnectorKind::Source)),
        Ok(proto::ConnectorKind::Sink) => Ok(Some(ConnectorKind::Sink)),
        Err(_) => Err(AdminError::invalid("kind", format!("unknown kind {value}"))),
    }
}

/// Returns the store's kind for a request that must give one.
pub(crate) fn required_kind(value: i32) -> Result<ConnectorKind, AdminError> {
    kind(value)?.ok_or_else(|| AdminError::invalid("kind", "is required (source or sink)"))
}

/// Returns the API's kind.
pub(crate) fn proto_kind(kind: ConnectorKind) -> proto::ConnectorKind {
    match kind {
        ConnectorKind::Source => proto::ConnectorKind::Source,
        ConnectorKind::Sink => proto::ConnectorKind::Sink,
    }
}

/// Returns "source" or "sink".
pub(crate) fn kind_word(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    }
}

/// Returns the store's guarantee for a request's, or None when unspecified.
pub(crate) fn guarantee(value: i32) -> Result<Option<Guarantee>, AdminError> {
    match proto::ProcessingGuarantee::try_from(value) {
        Ok(proto::ProcessingGuarantee::Unspecified) => Ok(None),
        Ok(proto::ProcessingGuarantee::AtMostOnce) => Ok(Some(Guarantee::AtMostOnce)),
        Ok(proto::ProcessingGuarantee::AtLeastOnce) => Ok(Some(Guarantee::AtLeastOnce)),
        Ok(proto::ProcessingGuarantee::EffectivelyOnce) => Ok(Some(Guarantee::EffectivelyOnce)),
        Err(_) => Err(AdminError::invalid(
            "processing_guarantees",
            format!("unknown guarantee {value}"),
        )),
    }
}

fn proto_guarantee(guarantee: Guarantee) -> proto::ProcessingGuarantee {
    match guarantee {
        Guarantee::AtMostOnce => proto::ProcessingGuarantee::AtMostOnce,
        Guarantee::AtLeastOnce => proto::ProcessingGuarantee::AtLeastOnce,
        Guarantee::EffectivelyOnce => proto::ProcessingGuarantee::EffectivelyOnce,
    }
}

/// Returns the error policy a request names, or None when unspecified.
pub(crate) fn error_policy(value: i32) -> Result<Option<PolicyName>, AdminError> {
    match proto::ErrorPolicy::try_from(value) {
        Ok(proto::ErrorPolicy::Unspecified) => Ok(None),
        Ok(proto::ErrorPolicy::Fail) => Ok(Some(PolicyName::Fail)),
        Ok(proto::ErrorPolicy::Skip) => Ok(Some(PolicyName::Skip)),
        Ok(proto::ErrorPolicy::DeadLetter) => Ok(Some(PolicyName::DeadLetter)),
        Err(_) => Err(AdminError::invalid(
            "error_policy",
            format!("unknown error policy {value}"),
        )),
    }
}

fn proto_error_policy(policy: &ErrorPolicy) -> proto::ErrorPolicy {
    match policy {
        ErrorPolicy::Fail => proto::ErrorPolicy::Fail,
        ErrorPolicy::Skip => proto::ErrorPolicy::Skip,
        ErrorPolicy::DeadLetter { .. } => proto::ErrorPolicy::DeadLetter,
    }
}

/// Returns the runtime options a request gives (absent ones None).
pub(crate) fn runtime_options(
    read_batch_size: Option<u32>,
    write_batch_size: Option<u32>,
    receiver_queue_size: Option<u32>,
    subscription_position: i32,
) -> Result<RuntimeOptions, AdminError> {
    let subscription_position = match proto::SubscriptionPosition::try_from(subscription_position) {
        Ok(proto::SubscriptionPosition::Unspecified) => None,
        Ok(proto::SubscriptionPosition::Earliest) => Some(StartPosition::Earliest),
        Ok(proto::SubscriptionPosition::Latest) => Some(StartPosition::Latest),
        Err(_) => {
            return Err(AdminError::invalid(
                "subscription_position",
                format!("unknown position {subscription_position}"),
            ));
        }
    };
    Ok(RuntimeOptions {
        read_batch_size,
        write_batch_size,
        receiver_queue_size,
        subscription_position,
    })
}

fn proto_subscription_position(position: Option<StartPosition>) -> proto::SubscriptionPosition {
    match position {
        None => proto::SubscriptionPosition::Unspecified,
        Some(StartPosition::Earliest) => proto::SubscriptionPosition::Earliest,
        Some(StartPosition::Latest) => proto::SubscriptionPosition::Latest,
    }
}

fn proto_desired_state(state: DesiredState) -> proto::DesiredState {
    match state {
        DesiredState::Running => proto::DesiredState::Running,
        DesiredState::Stopped => proto::DesiredState::Stopped,
    }
}

/// Returns the API's name.
pub(crate) fn proto_name(name: &ConnectorName) -> proto::ConnectorName {
    proto::ConnectorName {
        tenant: name.tenant.clone(),
        namespace: name.namespace.clone(),
        name: name.name.clone(),
    }
}

/// Returns a stored connector as the API shows it: secret values as `"***"`.
pub(crate) fn connector_info(name: &ConnectorName, connector: &Connector) -> proto::ConnectorInfo {
    let spec = &connector.spec;
    let redacted: BTreeMap<String, String> = spec
        .secrets
        .keys()
        .map(|field| (field.clone(), REDACTED.to_owned()))
        .collect();
    // A stored plain value that is not JSON would be the store's bug; show the text rather
    // than fail the read.
    let config = registry::join_config(&spec.config, &redacted)
        .map(Value::Object)
        .unwrap_or_else(|_| {
            Value::Object(
                spec.config
                    .iter()
                    .map(|(field, text)| (field.clone(), Value::String(text.clone())))
                    .chain(
                        redacted
                            .keys()
                            .map(|field| (field.clone(), Value::from(REDACTED))),
                    )
                    .collect(),
            )
        });
    proto::ConnectorInfo {
        name: Some(proto_name(name)),
        kind: proto_kind(spec.kind).into(),
        connector_type: spec.connector_type.clone(),
        config_json: config.to_string(),
        topics: spec.topics.clone(),
        subscription: spec.subscription.clone(),
        parallelism: i32::try_from(spec.parallelism).unwrap_or(i32::MAX),
        processing_guarantee: proto_guarantee(spec.guarantee).into(),
        desired_state: proto_desired_state(connector.desired_state).into(),
        version: connector.version,
        error_policy: proto_error_policy(&spec.error_policy).into(),
        dead_letter_topic: spec.error_policy.dead_letter_topic().map(str::to_owned),
        read_batch_size: spec.options.read_batch_size,
        write_batch_size: spec.options.write_batch_size,
        receiver_queue_size: spec.options.receiver_queue_size,
        subscription_position: proto_subscription_position(spec.options.subscription_position)
            .into(),
    }
}

/// Returns the registered type of a stored connector; None when this build lacks it (a
/// connector created by a build with more connectors).
pub(crate) fn registered_type(spec: &ConnectorSpec) -> Option<&'static ConnectorType> {
    connectors::registry()
        .find(spec.kind, &spec.connector_type)
        .ok()
}

/// Returns a checkpoint as the API shows it, its position also as the text `connector_type`
/// renders (left out when the type is unknown or the bytes are not its position).
pub(crate) fn checkpoint(
    checkpoint: &Checkpoint,
    connector_type: Option<&ConnectorType>,
) -> proto::Checkpoint {
    proto::Checkpoint {
        epoch: checkpoint.epoch,
        position: checkpoint.position.clone().into(),
        sequence_id: checkpoint.sequence_id,
        time_ms: checkpoint.time_ms,
        commits: checkpoint.commits,
        position_text: connector_type.and_then(|connector_type| {
            position::render_checkpoint(connector_type, &checkpoint.position).ok()
        }),
    }
}

/// Returns the status of one instance as the metadata store alone can tell it: PENDING while
/// unassigned (STOPPED when the connector is stopped), ASSIGNED once a node owns it. The
/// runtime's own report (RUNNING, STUCK, FAILED, counters, last error) is laid over this when
/// it exists.
pub(crate) fn instance_status(
    state: &State,
    key: &InstanceKey,
    desired: DesiredState,
) -> proto::InstanceStatus {
    let assignment = state.assignments.get(key);
    let instance_state = match (assignment, desired) {
        (Some(_), DesiredState::Running) => proto::InstanceState::Assigned,
        // Its owner drains it and runs it no more: nothing left to report.
        (Some(_), DesiredState::Stopped) => proto::InstanceState::Stopped,
        (None, DesiredState::Running) => proto::InstanceState::Pending,
        (None, DesiredState::Stopped) => proto::InstanceState::Stopped,
    };
    proto::InstanceStatus {
        instance_id: key.instance,
        node_id: assignment.map(|assignment| assignment.node),
        node_address: assignment
            .and_then(|assignment| state.nodes.get(&assignment.node))
            .map(|node| node.address.clone())
            .unwrap_or_default(),
        state: instance_state.into(),
        epoch: assignment.map_or(0, |assignment| assignment.epoch),
        revoking: assignment
            .is_some_and(|assignment| assignment.phase == AssignmentPhase::Revoking),
        checkpoint: state.checkpoints.get(key).map(|stored| {
            let connector_type = state
                .connectors
                .get(&key.connector)
                .and_then(|connector| registered_type(&connector.spec));
            checkpoint(stored, connector_type)
        }),
        ..Default::default()
    }
}

/// Returns a node's state as the API shows it.
pub(crate) fn proto_node_state(state: NodeState) -> proto::NodeState {
    match state {
        NodeState::Active => proto::NodeState::Active,
        NodeState::Draining => proto::NodeState::Draining,
        NodeState::Down => proto::NodeState::Down,
        NodeState::Left => proto::NodeState::Left,
    }
}

/// Returns a built-in type with its config definition.
pub(crate) fn connector_type(connector_type: &ConnectorType) -> proto::ConnectorType {
    proto::ConnectorType {
        name: connector_type.name.to_owned(),
        kind: proto_kind(connector_type.kind).into(),
        description: connector_type.description().to_owned(),
        effectively_once: connector_type.effectively_once,
        fields: connector_type
            .definition
            .fields
            .iter()
            .map(|field| proto::ConfigField {
                name: field.name.clone(),
                field_type: field.field_type.to_string(),
                required: field.required,
                default_json: field.default.clone(),
                secret: field.secret,
                description: field.description.clone(),
                aliases: field.aliases.clone(),
            })
            .collect(),
        aliases: connector_type
            .aliases
            .iter()
            .map(|alias| (*alias).to_owned())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::{ConnectorSpec, Secret};

    #[test]
    fn secrets_read_as_stars() {
        let connector = Connector {
            spec: ConnectorSpec {
                kind: ConnectorKind::Sink,
                connector_type: "postgres".to_owned(),
                config: BTreeMap::from([("table".to_owned(), "\"t\"".to_owned())]),
                secrets: BTreeMap::from([("password".to_owned(), Secret::new("hunter2"))]),
                topics: vec!["persistent://public/default/t".to_owned()],
                subscription: None,
                parallelism: 1,
                guarantee: Guarantee::AtLeastOnce,
                error_policy: crate::meta::state::ErrorPolicy::Fail,
                options: crate::meta::state::RuntimeOptions::default(),
            },
            desired_state: DesiredState::Running,
            version: 1,
            created: 7,
        };
        let info = connector_info(&ConnectorName::new("public", "default", "pg"), &connector);
        assert!(!format!("{info:?}").contains("hunter2"));
        let config: Value = serde_json::from_str(&info.config_json).expect("json");
        assert_eq!(config, serde_json::json!({"table": "t", "password": "***"}));
    }
}
