//! The admin API (`ferry.admin.v1.Admin`) as served by every node.
//!
//! Any node answers any call: reads are linearizable reads of the metadata store (a follower
//! asks the leader for a read index), writes go through [`Meta::write`], which forwards to the
//! leader, and membership changes that only the leader can make are forwarded to the leader's
//! own admin API.
//!
//! - [`error`]: the errors and their gRPC codes.
//! - [`validate`]: connector definitions checked into the stored spec (pure).
//! - [`convert`]: between API messages and stored types; secrets leave as `"***"`.
//!
//! Nothing here logs a config: logs name the connector and what happened, never values.

pub mod convert;
pub mod error;
pub mod validate;

use ferry_actors::pulsar::admin::{DecidedBy, PulsarAdmin, TopicName};
use ferry_proto::admin::v1 as proto;
use ferry_proto::admin::v1::admin_server::Admin;
use tonic::{Request, Response, Status};
use tracing::info;

use self::error::AdminError;
use self::validate::Draft;
use crate::context::NodeContext;
use crate::meta::Meta;
use crate::meta::state::{
    Command, Connector, ConnectorKind, ConnectorName, DesiredState, Guarantee, InstanceKey,
    NodeState, Outcome, State,
};
use crate::supervisor::StatusBoard;

/// Request metadata marking a call one node passed on to the leader (never passed on again).
const FORWARDED_HEADER: &str = "x-ferry-forwarded";

/// Answers admin calls on this node.
#[derive(Debug, Clone, Default)]
pub struct AdminService {
    /// The metadata store; None on a node started without `--data-dir`.
    meta: Option<Meta>,
    /// This node's instance reports (empty without a metadata store).
    board: StatusBoard,
    /// The Pulsar admin API, for the deduplication check; None without `--pulsar-admin-url`.
    pulsar_admin: Option<PulsarAdmin>,
}

type Reply<T> = Result<Response<T>, Status>;

impl AdminService {
    /// Returns a service over this node's metadata store and status board (`node`) and its
    /// Pulsar admin API.
    pub fn new(node: Option<&NodeContext>, pulsar_admin: Option<PulsarAdmin>) -> Self {
        Self {
            meta: node.map(|node| node.meta.clone()),
            board: node.map(|node| node.board.clone()).unwrap_or_default(),
            pulsar_admin,
        }
    }

    fn meta(&self) -> Result<&Meta, AdminError> {
        self.meta.as_ref().ok_or_else(|| {
            AdminError::FailedPrecondition(
                "this node has no metadata store (it was started without --data-dir)".to_owned(),
            )
        })
    }

    fn meta_error(&self, error: crate::meta::MetaError) -> AdminError {
        let leader = self.meta.as_ref().and_then(Meta::leader_address);
        AdminError::from_meta(error, leader)
    }

    /// Runs `read` on linearizable state.
    async fn read<T>(&self, read: impl FnOnce(&State) -> T) -> Result<T, AdminError> {
        let meta = self.meta()?;
        meta.read(read)
            .await
            .map_err(|error| self.meta_error(error))
    }

    /// Commits `command` through the leader; a refusal becomes the matching error.
    async fn write(&self, command: Command) -> Result<Outcome, AdminError> {
        let meta = self.meta()?;
        let reply = meta
            .write(command)
            .await
            .map_err(|error| self.meta_error(error))?;
        Ok(reply?)
    }

    /// Returns the stored connector `name` of `kind` (any kind when None); NotFound names what
    /// was looked for, and what exists instead when the kind differs.
    async fn connector(
        &self,
        name: &ConnectorName,
        kind: Option<ConnectorKind>,
    ) -> Result<Connector, AdminError> {
        let stored = self
            .read(|state| state.connectors.get(name).cloned())
            .await?;
        let wanted = kind.map_or("connector", convert::kind_word);
        match stored {
            None => Err(AdminError::NotFound(format!("{wanted} {name}"))),
            Some(connector) if kind.is_some_and(|kind| kind != connector.spec.kind) => {
                Err(AdminError::NotFound(format!(
                    "{wanted} {name} (it is a {})",
                    convert::kind_word(connector.spec.kind)
                )))
            }
            Some(connector) => Ok(connector),
        }
    }

    /// Refuses effectively-once output the broker would not deduplicate: a source's output
    /// topic, a sink's dead-letter topic.
    async fn check_deduplication(
        &self,
        spec: &crate::meta::state::ConnectorSpec,
    ) -> Result<(), AdminError> {
        if spec.guarantee != Guarantee::EffectivelyOnce {
            return Ok(());
        }
        let (topic_field, topic, what) = match spec.kind {
            ConnectorKind::Source => match spec.topics.first() {
                Some(topic) => (
                    "destination_topic_name",
                    topic.as_str(),
                    "the destination topic",
                ),
                None => return Ok(()),
            },
            ConnectorKind::Sink => match spec.error_policy.dead_letter_topic() {
                Some(topic) => ("dead_letter_topic", topic, "the dead-letter topic"),
                None => return Ok(()),
            },
        };
        let topic = TopicName::parse(topic)
            .map_err(|error| AdminError::invalid(topic_field, error.to_string()))?;
        // A source is refused for its guarantee; a sink for its dead-letter topic.
        let field = match spec.kind {
            ConnectorKind::Source => "processing_guarantees",
            ConnectorKind::Sink => topic_field,
        };
        let Some(pulsar_admin) = &self.pulsar_admin else {
            return Err(AdminError::FailedPrecondition(format!(
                "{field}: effectively-once needs broker deduplication on {what}, which this \
                 node cannot check: it was started without --pulsar-admin-url"
            )));
        };
        let deduplication =
            pulsar_admin
                .deduplication(&topic)
                .await
                .map_err(|error| AdminError::Unavailable {
                    reason: format!(
                        "cannot check deduplication of {topic} (--pulsar-admin-url): {error}"
                    ),
                    leader: None,
                })?;
        if deduplication.enabled {
            return Ok(());
        }
        let decided_by = match deduplication.decided_by {
            DecidedBy::Topic => "the topic's policy",
            DecidedBy::Namespace => "the namespace's policy",
            DecidedBy::Broker => "the broker's brokerDeduplicationEnabled",
            DecidedBy::NonPersistentTopic => "the topic being non-persistent",
        };
        Err(AdminError::FailedPrecondition(format!(
            "{field}: effectively-once needs broker deduplication on {what}, which is off for \
             {topic} (decided by {decided_by}); enable it with `pulsar-admin namespaces \
             set-deduplication {}/{} --enable`",
            topic.tenant, topic.namespace
        )))
    }

    async fn create(
        &self,
        request: proto::CreateConnectorRequest,
    ) -> Result<proto::ConnectorInfo, AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let given = request
            .spec
            .ok_or_else(|| AdminError::invalid("spec", "is required"))?;
        let kind = convert::required_kind(given.kind)?;
        let (error_policy, dead_letter_topic) = validate::choose_error_policy(
            convert::error_policy(given.error_policy)?,
            given.dead_letter_topic,
            None,
        );
        let draft = Draft {
            kind,
            connector_type: given.connector_type,
            config: validate::without_nulls(validate::parse_config(
                validate::config_flag(kind),
                &given.config_json,
            )?),
            topics: given.topics,
            subscription: given.subscription,
            parallelism: given.parallelism.map_or(1, i64::from),
            guarantee: convert::guarantee(given.processing_guarantee)?
                .unwrap_or(Guarantee::AtLeastOnce),
            error_policy,
            dead_letter_topic,
            options: convert::runtime_options(
                given.read_batch_size,
                given.write_batch_size,
                given.receiver_queue_size,
                given.subscription_position,
            )?,
        };
        let spec = validate::spec(&draft)?;
        // The store answers a repeated identical create as a retry; a user creating what
        // exists is told so.
        if let Some(existing) = self
            .read(|state| state.connectors.get(&name).map(|c| c.spec.kind))
            .await?
        {
            return Err(AdminError::AlreadyExists(format!(
                "{} {name}",
                convert::kind_word(existing)
            )));
        }
        self.check_deduplication(&spec).await?;
        self.write(Command::CreateConnector {
            connector: name.clone(),
            spec,
        })
        .await?;
        info!(connector = %name, kind = convert::kind_word(kind), "connector created");
        let stored = self.connector(&name, Some(kind)).await?;
        Ok(convert::connector_info(&name, &stored))
    }

    async fn update(
        &self,
        request: proto::UpdateConnectorRequest,
    ) -> Result<proto::ConnectorInfo, AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::required_kind(request.kind)?;
        let stored = self.connector(&name, Some(kind)).await?;
        if let Some(connector_type) = &request.connector_type
            && !connector_type.is_empty()
            && connector_type != &stored.spec.connector_type
        {
            return Err(AdminError::invalid(
                validate::type_field(kind),
                format!(
                    "cannot change from {} to {connector_type}; delete and create instead",
                    stored.spec.connector_type
                ),
            ));
        }
        let (error_policy, dead_letter_topic) = validate::choose_error_policy(
            convert::error_policy(request.error_policy)?,
            request.dead_letter_topic.clone(),
            Some(&stored.spec.error_policy),
        );
        let mut config = validate::stored_config(&stored.spec)?;
        if let Some(text) = &request.config_json {
            validate::merge_config(
                &mut config,
                validate::parse_config(validate::config_flag(kind), text)?,
            );
        }
        let draft = Draft {
            kind,
            connector_type: stored.spec.connector_type.clone(),
            config,
            topics: if request.topics.is_empty() {
                stored.spec.topics.clone()
            } else {
                request.topics
            },
            subscription: request
                .subscription
                .or_else(|| stored.spec.subscription.clone()),
            parallelism: request
                .parallelism
                .map_or(i64::from(stored.spec.parallelism), i64::from),
            guarantee: convert::guarantee(request.processing_guarantee)?
                .unwrap_or(stored.spec.guarantee),
            error_policy,
            dead_letter_topic,
            options: validate::merge_options(
                stored.spec.options,
                convert::runtime_options(
                    request.read_batch_size,
                    request.write_batch_size,
                    request.receiver_queue_size,
                    request.subscription_position,
                )?,
            ),
        };
        let spec = validate::spec(&draft)?;
        self.check_deduplication(&spec).await?;
        self.write(Command::UpdateConnector {
            connector: name.clone(),
            spec,
            expected_version: request.expected_version,
        })
        .await?;
        info!(connector = %name, kind = convert::kind_word(kind), "connector updated");
        let stored = self.connector(&name, Some(kind)).await?;
        Ok(convert::connector_info(&name, &stored))
    }

    async fn control(
        &self,
        request: proto::ConnectorControlRequest,
        desired: DesiredState,
    ) -> Result<(), AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::kind(request.kind)?;
        let stored = self.connector(&name, kind).await?;
        if let Some(instance) = request.instance_id {
            check_instance(&name, &stored, instance)?;
            return Err(AdminError::invalid(
                "instance_id",
                "starting or stopping one instance is not supported yet; leave out \
                 --instance-id to start or stop every instance",
            ));
        }
        self.write(Command::SetDesiredState {
            connector: name.clone(),
            state: desired,
        })
        .await?;
        info!(connector = %name, state = ?desired, "connector desired state set");
        Ok(())
    }

    /// Asks each owner (or one instance's) to hand its instance off: it stops, commits a final
    /// checkpoint and confirms, and the scheduler starts it again from that checkpoint.
    async fn restart(&self, request: proto::ConnectorControlRequest) -> Result<(), AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::kind(request.kind)?;
        let stored = self.connector(&name, kind).await?;
        if let Some(instance) = request.instance_id {
            check_instance(&name, &stored, instance)?;
        }
        if stored.desired_state == DesiredState::Stopped {
            return Err(AdminError::FailedPrecondition(format!(
                "{} {name} is stopped; start it instead",
                convert::kind_word(stored.spec.kind)
            )));
        }
        let owned = self
            .read(|state| {
                state
                    .assignments
                    .iter()
                    .filter(|(key, _)| {
                        key.connector == name
                            && request
                                .instance_id
                                .is_none_or(|instance| key.instance == instance)
                    })
                    .map(|(key, assignment)| (key.clone(), assignment.epoch))
                    .collect::<Vec<_>>()
            })
            .await?;
        for (key, epoch) in owned {
            match self.write(Command::Revoke { key, epoch }).await {
                // Moved or revoked meanwhile: it restarts anyway.
                Ok(_) | Err(AdminError::FailedPrecondition(_)) => {}
                Err(error) => return Err(error),
            }
        }
        info!(connector = %name, instance = ?request.instance_id, "connector restart asked");
        Ok(())
    }

    async fn status(
        &self,
        request: proto::GetConnectorStatusRequest,
    ) -> Result<proto::GetConnectorStatusResponse, AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::kind(request.kind)?;
        // One read for the connector and its instances, so they agree with each other.
        let found = self
            .read(|state| {
                let connector = state.connectors.get(&name)?.clone();
                let instances: Vec<proto::InstanceStatus> = (0..connector.spec.parallelism)
                    .filter(|instance| request.instance_id.is_none_or(|wanted| wanted == *instance))
                    .map(|instance| {
                        let key = InstanceKey {
                            connector: name.clone(),
                            instance,
                        };
                        convert::instance_status(state, &key, connector.desired_state)
                    })
                    .collect();
                Some((connector, instances))
            })
            .await?;
        let (connector, mut instances) = match found {
            Some(found) => found,
            // Let the lookup word the NotFound (and say what kind it is).
            None => (self.connector(&name, kind).await?, Vec::new()),
        };
        if kind.is_some_and(|kind| kind != connector.spec.kind) {
            self.connector(&name, kind).await?;
        }
        if let Some(instance) = request.instance_id {
            check_instance(&name, &connector, instance)?;
        }
        self.overlay_runtime_reports(&name, &mut instances).await;
        let info = convert::connector_info(&name, &connector);
        let running = instances
            .iter()
            .filter(|instance| instance.state == i32::from(proto::InstanceState::Running))
            .count();
        Ok(proto::GetConnectorStatusResponse {
            name: info.name,
            kind: info.kind,
            desired_state: info.desired_state,
            parallelism: info.parallelism,
            running: u32::try_from(running).unwrap_or(u32::MAX),
            instances,
        })
    }

    /// Lays each owner's own report (RUNNING, STUCK, FAILED, counters, last error) over the
    /// assigned instances, asking each owning node once. An owner that does not answer leaves
    /// its instances ASSIGNED, with the reason in `last_error`.
    async fn overlay_runtime_reports(
        &self,
        name: &ConnectorName,
        instances: &mut [proto::InstanceStatus],
    ) {
        let Some(meta) = &self.meta else {
            return;
        };
        let connector = name.to_string();
        let owners: std::collections::BTreeMap<u64, String> = instances
            .iter()
            .filter_map(|instance| Some((instance.node_id?, instance.node_address.clone())))
            .collect();
        let mut reports = std::collections::BTreeMap::new();
        let mut unreachable = std::collections::BTreeMap::new();
        for (node, address) in owners {
            let fetched = if node == meta.id() {
                Ok(crate::supervisor::proto_reports(&self.board, &connector))
            } else {
                fetch_reports(meta, &address, &connector).await
            };
            match fetched {
                Ok(list) => {
                    reports.extend(list.into_iter().map(|report| (report.instance, report)))
                }
                Err(reason) => {
                    unreachable.insert(node, reason);
                }
            }
        }
        for instance in instances.iter_mut() {
            if instance.state != i32::from(proto::InstanceState::Assigned) {
                continue;
            }
            if let Some(reason) = instance.node_id.and_then(|node| unreachable.get(&node)) {
                instance.last_error = reason.clone();
                continue;
            }
            let Some(report) = reports
                .get(&instance.instance_id)
                .filter(|report| report.epoch == instance.epoch)
            else {
                continue;
            };
            instance.state = match report.state.as_str() {
                "STARTING" => proto::InstanceState::Starting,
                "RUNNING" => proto::InstanceState::Running,
                "STUCK" => proto::InstanceState::Stuck,
                "FAILED" => proto::InstanceState::Failed,
                "FINISHED" => proto::InstanceState::Finished,
                "STOPPED" => proto::InstanceState::Stopped,
                _ => proto::InstanceState::Assigned,
            }
            .into();
            instance.records_received = report.records_read;
            instance.records_written = report.records_done;
            instance.records_skipped = report.records_skipped;
            instance.records_dead_lettered = report.records_dead_lettered;
            instance.restarts = u64::from(report.restarts);
            instance.errors = u64::from(report.restarts);
            instance.last_error.clone_from(&report.last_error);
            instance.last_progress_ms = report.last_progress_ms;
        }
    }

    async fn get_offsets(
        &self,
        request: proto::GetOffsetsRequest,
    ) -> Result<proto::GetOffsetsResponse, AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::kind(request.kind)?;
        let stored = self.connector(&name, kind).await?;
        if let Some(instance) = request.instance_id {
            check_instance(&name, &stored, instance)?;
        }
        let connector_type = convert::registered_type(&stored.spec);
        let offsets = self
            .read(|state| {
                (0..stored.spec.parallelism)
                    .filter(|instance| request.instance_id.is_none_or(|wanted| wanted == *instance))
                    .map(|instance| {
                        let key = InstanceKey {
                            connector: name.clone(),
                            instance,
                        };
                        proto::InstanceOffset {
                            instance_id: instance,
                            checkpoint: state
                                .checkpoints
                                .get(&key)
                                .map(|stored| convert::checkpoint(stored, connector_type)),
                        }
                    })
                    .collect()
            })
            .await?;
        Ok(proto::GetOffsetsResponse { offsets })
    }

    async fn reset_offsets(&self, request: proto::ResetOffsetsRequest) -> Result<(), AdminError> {
        let name = validate::connector_name(request.name.as_ref())?;
        let kind = convert::kind(request.kind)?;
        let stored = self.connector(&name, kind).await?;
        if let Some(instance) = request.instance_id {
            check_instance(&name, &stored, instance)?;
        }
        if stored.desired_state != DesiredState::Stopped {
            return Err(AdminError::FailedPrecondition(format!(
                "{} {name} is running; stop it before resetting its offsets",
                convert::kind_word(stored.spec.kind)
            )));
        }
        let position = match (request.position, request.position_text) {
            (Some(_), Some(_)) => {
                return Err(AdminError::invalid(
                    "position",
                    "give it as text or as bytes, not both",
                ));
            }
            (Some(bytes), None) => Some(bytes.to_vec()),
            (None, Some(text)) => Some(validate::position_text(&stored.spec, &text)?),
            (None, None) => None,
        };
        self.write(Command::ResetOffsets {
            connector: name.clone(),
            instance: request.instance_id,
            position,
        })
        .await?;
        info!(connector = %name, instance = ?request.instance_id, "offsets reset");
        Ok(())
    }

    fn validate_config(&self, request: &proto::ValidateConfigRequest) -> Result<(), AdminError> {
        let kind = convert::required_kind(request.kind)?;
        let connector_type = validate::find_type(kind, &request.connector_type)?;
        let config = validate::without_nulls(validate::parse_config(
            validate::config_flag(kind),
            &request.config_json,
        )?);
        validate::check_config(kind, connector_type, &config, 1)?;
        if let Some(guarantee) = convert::guarantee(request.processing_guarantee)? {
            connector_type
                .check_guarantee(guarantee)
                .map_err(|error| AdminError::invalid("processing_guarantees", error.to_string()))?;
        }
        Ok(())
    }

    async fn list_nodes(&self) -> Result<proto::ListNodesResponse, AdminError> {
        let meta = self.meta()?;
        let leader = meta.leader();
        let voters = voters(meta);
        let nodes = self
            .read(|state| {
                state
                    .nodes
                    .iter()
                    .map(|(id, node)| proto::NodeInfo {
                        node_id: *id,
                        address: node.address.clone(),
                        state: convert::proto_node_state(node.state).into(),
                        leader: leader == Some(*id),
                        voter: voters.contains(id),
                        labels: node.labels.clone().into_iter().collect(),
                        instances: u32::try_from(
                            state.assignments.values().filter(|a| a.node == *id).count(),
                        )
                        .unwrap_or(u32::MAX),
                    })
                    .collect()
            })
            .await?;
        Ok(proto::ListNodesResponse { nodes })
    }

    async fn node_state(&self, node: u64) -> Result<NodeState, AdminError> {
        self.read(|state| state.nodes.get(&node).map(|record| record.state))
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("node {node}")))
    }

    async fn drain(&self, node: u64) -> Result<(), AdminError> {
        if self.node_state(node).await? == NodeState::Left {
            return Err(AdminError::FailedPrecondition(format!(
                "node {node} has left the cluster"
            )));
        }
        self.write(Command::NodeDrain { node }).await?;
        info!(node, "node draining");
        Ok(())
    }

    async fn remove(&self, node: u64, forwarded: bool) -> Result<(), AdminError> {
        let meta = self.meta()?;
        if self.node_state(node).await? == NodeState::Left {
            return Err(AdminError::FailedPrecondition(format!(
                "node {node} has left the cluster already"
            )));
        }
        if voters(meta) == [node] {
            return Err(AdminError::FailedPrecondition(format!(
                "node {node} is the cluster's last voter"
            )));
        }
        let leader = meta.leader_address();
        match leader {
            Some((leader, _)) if leader == meta.id() => {
                meta.remove_node(node)
                    .await
                    .map_err(|error| self.meta_error(error))?;
                info!(node, "node removed");
                Ok(())
            }
            Some((_, address)) if !forwarded => forward_remove(meta, &address, node).await,
            _ => Err(AdminError::Unavailable {
                reason: "only the leader removes nodes".to_owned(),
                leader,
            }),
        }
    }
}

/// Returns the metadata store's voters, as this node knows them.
fn voters(meta: &Meta) -> Vec<u64> {
    meta.raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// How long a node removal passed on to the leader may take.
const FORWARD_REMOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Passes a node removal on to the leader's admin API (membership changes are the leader's),
/// over the node's peer channel (TLS and the cluster's token when the node has them).
async fn forward_remove(meta: &Meta, address: &str, node: u64) -> Result<(), AdminError> {
    let unavailable = |reason: String| AdminError::Unavailable {
        reason,
        leader: None,
    };
    let mut client = meta
        .peers()
        .admin_client(address)
        .map_err(|error| AdminError::Internal(format!("leader address {address}: {error}")))?;
    let mut request = Request::new(proto::RemoveNodeRequest { node_id: node });
    request.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request.set_timeout(FORWARD_REMOVE_TIMEOUT);
    tokio::time::timeout(FORWARD_REMOVE_TIMEOUT, client.remove_node(request))
        .await
        .map_err(|_| {
            unavailable(format!(
                "the leader at {address} did not answer within {FORWARD_REMOVE_TIMEOUT:?}"
            ))
        })?
        .map(drop)
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => AdminError::NotFound(status.message().to_owned()),
            tonic::Code::FailedPrecondition => {
                AdminError::FailedPrecondition(status.message().to_owned())
            }
            tonic::Code::InvalidArgument => AdminError::invalid("node_id", status.message()),
            _ => unavailable(format!("leader at {address}: {}", status.message())),
        })
}

fn check_instance(
    name: &ConnectorName,
    connector: &Connector,
    instance: u32,
) -> Result<(), AdminError> {
    if instance >= connector.spec.parallelism {
        return Err(AdminError::invalid(
            "instance_id",
            format!(
                "{name} has instances 0 to {}, not {instance}",
                connector.spec.parallelism - 1
            ),
        ));
    }
    Ok(())
}

fn answer<T>(result: Result<T, AdminError>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_version(
        &self,
        _request: Request<proto::GetVersionRequest>,
    ) -> Reply<proto::GetVersionResponse> {
        Ok(Response::new(proto::GetVersionResponse {
            version: crate::VERSION.to_owned(),
            api_version: ferry_proto::ADMIN_API_VERSION.to_owned(),
        }))
    }

    async fn create_connector(
        &self,
        request: Request<proto::CreateConnectorRequest>,
    ) -> Reply<proto::CreateConnectorResponse> {
        answer(self.create(request.into_inner()).await.map(|connector| {
            proto::CreateConnectorResponse {
                connector: Some(connector),
            }
        }))
    }

    async fn update_connector(
        &self,
        request: Request<proto::UpdateConnectorRequest>,
    ) -> Reply<proto::UpdateConnectorResponse> {
        answer(self.update(request.into_inner()).await.map(|connector| {
            proto::UpdateConnectorResponse {
                connector: Some(connector),
            }
        }))
    }

    async fn delete_connector(
        &self,
        request: Request<proto::DeleteConnectorRequest>,
    ) -> Reply<proto::DeleteConnectorResponse> {
        let request = request.into_inner();
        answer(
            async {
                let name = validate::connector_name(request.name.as_ref())?;
                let kind = convert::kind(request.kind)?;
                self.connector(&name, kind).await?;
                self.write(Command::DeleteConnector {
                    connector: name.clone(),
                })
                .await?;
                info!(connector = %name, "connector deleted");
                Ok(proto::DeleteConnectorResponse {})
            }
            .await,
        )
    }

    async fn get_connector(
        &self,
        request: Request<proto::GetConnectorRequest>,
    ) -> Reply<proto::GetConnectorResponse> {
        let request = request.into_inner();
        answer(
            async {
                let name = validate::connector_name(request.name.as_ref())?;
                let kind = convert::kind(request.kind)?;
                let stored = self.connector(&name, kind).await?;
                Ok(proto::GetConnectorResponse {
                    connector: Some(convert::connector_info(&name, &stored)),
                })
            }
            .await,
        )
    }

    async fn list_connectors(
        &self,
        request: Request<proto::ListConnectorsRequest>,
    ) -> Reply<proto::ListConnectorsResponse> {
        let request = request.into_inner();
        answer(
            async {
                validate::check_name_part("tenant", &request.tenant)?;
                validate::check_name_part("namespace", &request.namespace)?;
                let kind = convert::kind(request.kind)?;
                let connectors = self
                    .read(|state| {
                        state
                            .connectors
                            .iter()
                            .filter(|(name, connector)| {
                                name.tenant == request.tenant
                                    && name.namespace == request.namespace
                                    && kind.is_none_or(|kind| kind == connector.spec.kind)
                            })
                            .map(|(name, connector)| convert::connector_info(name, connector))
                            .collect()
                    })
                    .await?;
                Ok(proto::ListConnectorsResponse { connectors })
            }
            .await,
        )
    }

    async fn get_connector_status(
        &self,
        request: Request<proto::GetConnectorStatusRequest>,
    ) -> Reply<proto::GetConnectorStatusResponse> {
        answer(self.status(request.into_inner()).await)
    }

    async fn start_connector(
        &self,
        request: Request<proto::ConnectorControlRequest>,
    ) -> Reply<proto::ConnectorControlResponse> {
        answer(
            self.control(request.into_inner(), DesiredState::Running)
                .await
                .map(|()| proto::ConnectorControlResponse {}),
        )
    }

    async fn stop_connector(
        &self,
        request: Request<proto::ConnectorControlRequest>,
    ) -> Reply<proto::ConnectorControlResponse> {
        answer(
            self.control(request.into_inner(), DesiredState::Stopped)
                .await
                .map(|()| proto::ConnectorControlResponse {}),
        )
    }

    async fn restart_connector(
        &self,
        request: Request<proto::ConnectorControlRequest>,
    ) -> Reply<proto::ConnectorControlResponse> {
        answer(
            self.restart(request.into_inner())
                .await
                .map(|()| proto::ConnectorControlResponse {}),
        )
    }

    async fn get_offsets(
        &self,
        request: Request<proto::GetOffsetsRequest>,
    ) -> Reply<proto::GetOffsetsResponse> {
        answer(AdminService::get_offsets(self, request.into_inner()).await)
    }

    async fn reset_offsets(
        &self,
        request: Request<proto::ResetOffsetsRequest>,
    ) -> Reply<proto::ResetOffsetsResponse> {
        answer(
            AdminService::reset_offsets(self, request.into_inner())
                .await
                .map(|()| proto::ResetOffsetsResponse {}),
        )
    }

    async fn list_connector_types(
        &self,
        request: Request<proto::ListConnectorTypesRequest>,
    ) -> Reply<proto::ListConnectorTypesResponse> {
        answer(convert::kind(request.into_inner().kind).map(|kind| {
            proto::ListConnectorTypesResponse {
                types: ferry_actors::connectors::registry()
                    .types()
                    .iter()
                    .filter(|connector_type| kind.is_none_or(|kind| kind == connector_type.kind))
                    .map(convert::connector_type)
                    .collect(),
            }
        }))
    }

    async fn validate_config(
        &self,
        request: Request<proto::ValidateConfigRequest>,
    ) -> Reply<proto::ValidateConfigResponse> {
        answer(
            AdminService::validate_config(self, request.get_ref())
                .map(|()| proto::ValidateConfigResponse {}),
        )
    }

    async fn list_nodes(
        &self,
        _request: Request<proto::ListNodesRequest>,
    ) -> Reply<proto::ListNodesResponse> {
        answer(AdminService::list_nodes(self).await)
    }

    async fn get_leader(
        &self,
        _request: Request<proto::GetLeaderRequest>,
    ) -> Reply<proto::GetLeaderResponse> {
        answer(self.meta().and_then(|meta| match meta.leader_address() {
            Some((leader, address)) => Ok(proto::GetLeaderResponse {
                leader_id: Some(leader),
                address,
            }),
            None => Err(AdminError::Unavailable {
                reason: "no leader is elected".to_owned(),
                leader: None,
            }),
        }))
    }

    async fn drain_node(
        &self,
        request: Request<proto::DrainNodeRequest>,
    ) -> Reply<proto::DrainNodeResponse> {
        answer(
            self.drain(request.into_inner().node_id)
                .await
                .map(|()| proto::DrainNodeResponse {}),
        )
    }

    async fn remove_node(
        &self,
        request: Request<proto::RemoveNodeRequest>,
    ) -> Reply<proto::RemoveNodeResponse> {
        let forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        answer(
            self.remove(request.into_inner().node_id, forwarded)
                .await
                .map(|()| proto::RemoveNodeResponse {}),
        )
    }
}

/// How long status waits for an owning node's report.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks the node at `address` for its reports on `connector`.
async fn fetch_reports(
    meta: &Meta,
    address: &str,
    connector: &str,
) -> Result<Vec<ferry_proto::cluster::v1::InstanceReport>, String> {
    let mut client = meta
        .peers()
        .client(address)
        .map_err(|error| format!("node at {address} is unreachable: {error}"))?;
    let request = ferry_proto::cluster::v1::InstanceReportsRequest {
        connector: connector.to_owned(),
    };
    match tokio::time::timeout(REPORT_TIMEOUT, client.instance_reports(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner().reports),
        Ok(Err(status)) => Err(format!(
            "node at {address} did not report: {}",
            status.message()
        )),
        Err(_) => Err(format!(
            "node at {address} did not report within {REPORT_TIMEOUT:?}"
        )),
    }
}
