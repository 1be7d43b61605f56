//! `ferry sources …` and `ferry sinks …`: the verbs of `pulsar-admin sources|sinks` over the
//! admin API. Both kinds share one implementation; only their flags differ (`--source-type`
//! and `--destination-topic-name` against `--sink-type`, `--inputs` and `--subscription-name`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ferry_proto::admin::v1 as proto;
use serde_json::{Value, json};

use super::config_file;
use super::{
    ClientArgs, OutputFormat, acknowledge, call_error, emit, emit_json, invalid, short_name, table,
};

/// `ferry sources`.
#[derive(Debug, Args)]
pub struct SourcesArgs {
    /// Where and how to ask.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: SourcesCommand,
}

/// `ferry sinks`.
#[derive(Debug, Args)]
pub struct SinksArgs {
    /// Where and how to ask.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: SinksCommand,
}

/// The verbs of `ferry sources`.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Creates a source; it starts running.
    Create(SourceSpecArgs),
    /// Changes a source: only the flags given change; config keys merge (null removes one).
    Update(SourceSpecArgs),
    /// Deletes a source with its checkpoints.
    Delete(NameArgs),
    /// Prints a source's definition (secrets as "***").
    Get(NameArgs),
    /// Lists the sources of a namespace.
    List(NamespaceArgs),
    /// Prints a source's status per instance.
    Status(InstanceArgs),
    /// Starts a stopped source.
    Start(InstanceArgs),
    /// Stops a source.
    Stop(InstanceArgs),
    /// Restarts a source's instances (or one), each from its last checkpoint.
    Restart(InstanceArgs),
    /// Lists the built-in source types.
    AvailableSources,
    /// Prints a source type's config fields.
    ConfigDefinition(SourceTypeArgs),
    /// Checks a source config without creating anything.
    ValidateConfig(SourceValidateArgs),
}

/// The verbs of `ferry sinks`.
#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Creates a sink; it starts running.
    Create(SinkSpecArgs),
    /// Changes a sink: only the flags given change; config keys merge (null removes one).
    Update(SinkSpecArgs),
    /// Deletes a sink with its checkpoints.
    Delete(NameArgs),
    /// Prints a sink's definition (secrets as "***").
    Get(NameArgs),
    /// Lists the sinks of a namespace.
    List(NamespaceArgs),
    /// Prints a sink's status per instance.
    Status(InstanceArgs),
    /// Starts a stopped sink.
    Start(InstanceArgs),
    /// Stops a sink.
    Stop(InstanceArgs),
    /// Restarts a sink's instances (or one), each from its last checkpoint.
    Restart(InstanceArgs),
    /// Lists the built-in sink types.
    AvailableSinks,
    /// Prints a sink type's config fields.
    ConfigDefinition(SinkTypeArgs),
    /// Checks a sink config without creating anything.
    ValidateConfig(SinkValidateArgs),
}

/// A tenant and namespace, defaulting like `pulsar-admin`.
#[derive(Debug, Clone, Args)]
pub struct NamespaceArgs {
    /// The Pulsar tenant.
    #[arg(long, default_value = "public")]
    pub tenant: String,
    /// The Pulsar namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

/// A connector's name.
#[derive(Debug, Clone, Args)]
pub struct NameArgs {
    /// Tenant and namespace.
    #[command(flatten)]
    pub namespace: NamespaceArgs,
    /// The connector's name.
    #[arg(long)]
    pub name: String,
}

impl NameArgs {
    /// Returns the name as the API takes it.
    pub fn proto(&self) -> proto::ConnectorName {
        proto::ConnectorName {
            tenant: self.namespace.tenant.clone(),
            namespace: self.namespace.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A connector's name and, optionally, one instance.
#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    /// The connector.
    #[command(flatten)]
    pub name: NameArgs,
    /// One instance (0-based); all when absent.
    #[arg(long)]
    pub instance_id: Option<u32>,
}

/// Flags shared by create and update of either kind.
#[derive(Debug, Clone, Args)]
pub struct CommonSpecArgs {
    /// The connector.
    #[command(flatten)]
    pub name: NameArgs,
    /// How many instances run (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub parallelism: Option<i64>,
    /// ATLEAST_ONCE (default), ATMOST_ONCE or EFFECTIVELY_ONCE.
    #[arg(long, value_name = "GUARANTEE")]
    pub processing_guarantees: Option<String>,
    /// Most records per write (sinks) or per read (sources), 1 to 100000 (default 1000).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
}

/// Flags of `ferry sources create|update`.
#[derive(Debug, Clone, Args)]
pub struct SourceSpecArgs {
    /// Name, parallelism, guarantee.
    #[command(flatten)]
    pub common: CommonSpecArgs,
    /// The source type (see `ferry sources available-sources`).
    #[arg(long, value_name = "TYPE")]
    pub source_type: Option<String>,
    /// The topic the source writes to.
    #[arg(long, value_name = "TOPIC")]
    pub destination_topic_name: Option<String>,
    /// The config as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "source_config_file")]
    pub source_config: Option<String>,
    /// A file holding the config: a JSON object or a YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub source_config_file: Option<PathBuf>,
}

/// Flags of `ferry sinks create|update`.
#[derive(Debug, Clone, Args)]
pub struct SinkSpecArgs {
    /// Name, parallelism, guarantee.
    #[command(flatten)]
    pub common: CommonSpecArgs,
    /// The sink type (see `ferry sinks available-sinks`).
    #[arg(long, value_name = "TYPE")]
    pub sink_type: Option<String>,
    /// The topics the sink reads, comma-separated.
    #[arg(long, value_name = "TOPICS", value_delimiter = ',')]
    pub inputs: Vec<String>,
    /// The input subscription (default: chosen by the runtime).
    #[arg(long, value_name = "NAME")]
    pub subscription_name: Option<String>,
    /// Where a new subscription starts: Earliest (default) or Latest.
    #[arg(long, value_name = "POSITION")]
    pub subscription_position: Option<String>,
    /// Messages the broker may push ahead of processing, 1 to 100000 (default 1000).
    #[arg(long, value_name = "N")]
    pub receiver_queue_size: Option<u32>,
    /// What happens to a record the sink rejects (not JSON, wrong shape, a constraint
    /// violation): fail (default; the instance stops naming the message), skip (dropped and
    /// counted) or dead-letter (sent to --dead-letter-topic).
    #[arg(long, value_name = "POLICY")]
    pub error_policy: Option<String>,
    /// Where rejected records go; alone, it implies --error-policy dead-letter (as
    /// pulsar-admin's --dead-letter-topic). On update, --error-policy fail or skip drops it.
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// The config as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "sink_config_file")]
    pub sink_config: Option<String>,
    /// A file holding the config: a JSON object or a YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub sink_config_file: Option<PathBuf>,
}

/// `ferry sources config-definition`.
#[derive(Debug, Clone, Args)]
pub struct SourceTypeArgs {
    /// The source type.
    #[arg(long, value_name = "TYPE")]
    pub source_type: String,
}

/// `ferry sinks config-definition`.
#[derive(Debug, Clone, Args)]
pub struct SinkTypeArgs {
    /// The sink type.
    #[arg(long, value_name = "TYPE")]
    pub sink_type: String,
}

/// `ferry sources validate-config`.
#[derive(Debug, Clone, Args)]
pub struct SourceValidateArgs {
    /// The source type.
    #[arg(long, value_name = "TYPE")]
    pub source_type: String,
    /// The config as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "source_config_file")]
    pub source_config: Option<String>,
    /// A file holding the config: a JSON object or a YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub source_config_file: Option<PathBuf>,
    /// The guarantee to check the type can offer.
    #[arg(long, value_name = "GUARANTEE")]
    pub processing_guarantees: Option<String>,
}

/// `ferry sinks validate-config`.
#[derive(Debug, Clone, Args)]
pub struct SinkValidateArgs {
    /// The sink type.
    #[arg(long, value_name = "TYPE")]
    pub sink_type: String,
    /// The config as a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with = "sink_config_file")]
    pub sink_config: Option<String>,
    /// A file holding the config: a JSON object or a YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub sink_config_file: Option<PathBuf>,
    /// The guarantee to check the type can offer.
    #[arg(long, value_name = "GUARANTEE")]
    pub processing_guarantees: Option<String>,
}

/// A create or update, whichever the kind.
struct SpecFlags {
    common: CommonSpecArgs,
    connector_type: Option<String>,
    topics: Vec<String>,
    subscription: Option<String>,
    config: Option<String>,
    /// Sinks only, as the API takes them.
    sink_options: SinkOptions,
}

/// What only `ferry sinks create|update` take, parsed.
#[derive(Debug, Default)]
struct SinkOptions {
    subscription_position: i32,
    receiver_queue_size: Option<u32>,
    error_policy: i32,
    dead_letter_topic: Option<String>,
}

/// One verb, whichever the kind.
enum Verb {
    Create(SpecFlags),
    Update(SpecFlags),
    Delete(NameArgs),
    Get(NameArgs),
    List(NamespaceArgs),
    Status(InstanceArgs),
    Control(Control, InstanceArgs),
    AvailableTypes,
    ConfigDefinition(String),
    ValidateConfig {
        connector_type: String,
        config: Option<String>,
        guarantee: Option<String>,
    },
}

/// Start, stop or restart.
#[derive(Debug, Clone, Copy)]
enum Control {
    Start,
    Stop,
    Restart,
}

/// Runs `ferry sources …`.
pub async fn run_sources(args: SourcesArgs) -> anyhow::Result<()> {
    let verb = match args.command {
        SourcesCommand::Create(spec) => Verb::Create(source_flags(spec)?),
        SourcesCommand::Update(spec) => Verb::Update(source_flags(spec)?),
        SourcesCommand::Delete(name) => Verb::Delete(name),
        SourcesCommand::Get(name) => Verb::Get(name),
        SourcesCommand::List(namespace) => Verb::List(namespace),
        SourcesCommand::Status(instance) => Verb::Status(instance),
        SourcesCommand::Start(instance) => Verb::Control(Control::Start, instance),
        SourcesCommand::Stop(instance) => Verb::Control(Control::Stop, instance),
        SourcesCommand::Restart(instance) => Verb::Control(Control::Restart, instance),
        SourcesCommand::AvailableSources => Verb::AvailableTypes,
        SourcesCommand::ConfigDefinition(type_args) => {
            Verb::ConfigDefinition(type_args.source_type)
        }
        SourcesCommand::ValidateConfig(validate) => Verb::ValidateConfig {
            connector_type: validate.source_type,
            config: config_text(
                "--source-config-file",
                validate.source_config,
                validate.source_config_file,
            )?,
            guarantee: validate.processing_guarantees,
        },
    };
    run(&args.client, proto::ConnectorKind::Source, verb).await
}

/// Runs `ferry sinks …`.
pub async fn run_sinks(args: SinksArgs) -> anyhow::Result<()> {
    let verb = match args.command {
        SinksCommand::Create(spec) => Verb::Create(sink_flags(spec)?),
        SinksCommand::Update(spec) => Verb::Update(sink_flags(spec)?),
        SinksCommand::Delete(name) => Verb::Delete(name),
        SinksCommand::Get(name) => Verb::Get(name),
        SinksCommand::List(namespace) => Verb::List(namespace),
        SinksCommand::Status(instance) => Verb::Status(instance),
        SinksCommand::Start(instance) => Verb::Control(Control::Start, instance),
        SinksCommand::Stop(instance) => Verb::Control(Control::Stop, instance),
        SinksCommand::Restart(instance) => Verb::Control(Control::Restart, instance),
        SinksCommand::AvailableSinks => Verb::AvailableTypes,
        SinksCommand::ConfigDefinition(type_args) => Verb::ConfigDefinition(type_args.sink_type),
        SinksCommand::ValidateConfig(validate) => Verb::ValidateConfig {
            connector_type: validate.sink_type,
            config: config_text(
                "--sink-config-file",
                validate.sink_config,
                validate.sink_config_file,
            )?,
            guarantee: validate.processing_guarantees,
        },
    };
    run(&args.client, proto::ConnectorKind::Sink, verb).await
}

fn source_flags(spec: SourceSpecArgs) -> anyhow::Result<SpecFlags> {
    Ok(SpecFlags {
        config: config_text(
            "--source-config-file",
            spec.source_config,
            spec.source_config_file,
        )?,
        common: spec.common,
        connector_type: spec.source_type,
        topics: spec.destination_topic_name.into_iter().collect(),
        subscription: None,
        sink_options: SinkOptions::default(),
    })
}

fn sink_flags(spec: SinkSpecArgs) -> anyhow::Result<SpecFlags> {
    Ok(SpecFlags {
        config: config_text(
            "--sink-config-file",
            spec.sink_config,
            spec.sink_config_file,
        )?,
        common: spec.common,
        connector_type: spec.sink_type,
        topics: spec.inputs,
        subscription: spec.subscription_name,
        sink_options: SinkOptions {
            subscription_position: spec
                .subscription_position
                .as_deref()
                .map(parse_subscription_position)
                .transpose()?
                .unwrap_or_default()
                .into(),
            receiver_queue_size: spec.receiver_queue_size,
            error_policy: spec
                .error_policy
                .as_deref()
                .map(parse_error_policy)
                .transpose()?
                .unwrap_or_default()
                .into(),
            dead_letter_topic: spec.dead_letter_topic,
        },
    })
}

/// Parses `--error-policy`: fail, skip or dead-letter (any case, `_` for `-`).
fn parse_error_policy(text: &str) -> anyhow::Result<proto::ErrorPolicy> {
    match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "fail" => Ok(proto::ErrorPolicy::Fail),
        "skip" => Ok(proto::ErrorPolicy::Skip),
        "dead-letter" => Ok(proto::ErrorPolicy::DeadLetter),
        _ => Err(invalid(
            "--error-policy",
            format!("{text:?} is not fail, skip or dead-letter"),
        )),
    }
}

/// Parses `--subscription-position` as pulsar-admin spells it (Earliest, Latest; any case).
fn parse_subscription_position(text: &str) -> anyhow::Result<proto::SubscriptionPosition> {
    match text.trim().to_ascii_lowercase().as_str() {
        "earliest" => Ok(proto::SubscriptionPosition::Earliest),
        "latest" => Ok(proto::SubscriptionPosition::Latest),
        _ => Err(invalid(
            "--subscription-position",
            format!("{text:?} is not Earliest or Latest"),
        )),
    }
}

/// Puts `--batch-size` where `kind` reads it: (read batch, write batch).
fn batch_sizes(kind: proto::ConnectorKind, batch_size: Option<u32>) -> (Option<u32>, Option<u32>) {
    match kind {
        proto::ConnectorKind::Sink => (None, batch_size),
        proto::ConnectorKind::Source | proto::ConnectorKind::Unspecified => (batch_size, None),
    }
}

/// Returns the config given inline or read from a file (JSON or YAML), as JSON text.
fn config_text(
    file_flag: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let Some(path) = file else {
        return Ok(inline);
    };
    config_file::read(&path)
        .map(Some)
        .map_err(|error| invalid(file_flag, error))
}

fn kind_word(kind: proto::ConnectorKind) -> &'static str {
    match kind {
        proto::ConnectorKind::Sink => "sink",
        proto::ConnectorKind::Source | proto::ConnectorKind::Unspecified => "source",
    }
}

fn guarantee(text: Option<&str>) -> anyhow::Result<i32> {
    Ok(text
        .map(super::parse_guarantee)
        .transpose()?
        .unwrap_or(proto::ProcessingGuarantee::Unspecified)
        .into())
}

fn parallelism(given: Option<i64>) -> anyhow::Result<Option<i32>> {
    given
        .map(|value| {
            i32::try_from(value)
                .map_err(|_| invalid("parallelism", format!("{value} is out of range")))
        })
        .transpose()
}

async fn run(
    client_args: &ClientArgs,
    kind: proto::ConnectorKind,
    verb: Verb,
) -> anyhow::Result<()> {
    let output = client_args.output;
    let mut client = client_args.connect().await?;
    let word = kind_word(kind);
    match verb {
        Verb::Create(flags) => {
            let (read_batch_size, write_batch_size) = batch_sizes(kind, flags.common.batch_size);
            let request = proto::CreateConnectorRequest {
                name: Some(flags.common.name.proto()),
                spec: Some(proto::ConnectorSpec {
                    kind: kind.into(),
                    connector_type: flags.connector_type.unwrap_or_default(),
                    config_json: flags.config.unwrap_or_default(),
                    topics: flags.topics,
                    subscription: flags.subscription,
                    parallelism: parallelism(flags.common.parallelism)?,
                    processing_guarantee: guarantee(flags.common.processing_guarantees.as_deref())?,
                    error_policy: flags.sink_options.error_policy,
                    dead_letter_topic: flags.sink_options.dead_letter_topic,
                    read_batch_size,
                    write_batch_size,
                    receiver_queue_size: flags.sink_options.receiver_queue_size,
                    subscription_position: flags.sink_options.subscription_position,
                }),
            };
            let created = client
                .create_connector(request)
                .await
                .map_err(|status| call_error(&status))?
                .into_inner();
            done(
                output,
                &format!("Created {word} {}", flags.common.name.fqn()),
                created.connector.as_ref(),
            );
        }
        Verb::Update(flags) => {
            let (read_batch_size, write_batch_size) = batch_sizes(kind, flags.common.batch_size);
            let request = proto::UpdateConnectorRequest {
                name: Some(flags.common.name.proto()),
                kind: kind.into(),
                connector_type: flags.connector_type,
                config_json: flags.config,
                topics: flags.topics,
                subscription: flags.subscription,
                parallelism: parallelism(flags.common.parallelism)?,
                processing_guarantee: guarantee(flags.common.processing_guarantees.as_deref())?,
                expected_version: None,
                error_policy: flags.sink_options.error_policy,
                dead_letter_topic: flags.sink_options.dead_letter_topic,
                read_batch_size,
                write_batch_size,
                receiver_queue_size: flags.sink_options.receiver_queue_size,
                subscription_position: flags.sink_options.subscription_position,
            };
            let updated = client
                .update_connector(request)
                .await
                .map_err(|status| call_error(&status))?
                .into_inner();
            done(
                output,
                &format!("Updated {word} {}", flags.common.name.fqn()),
                updated.connector.as_ref(),
            );
        }
        Verb::Delete(name) => {
            client
                .delete_connector(proto::DeleteConnectorRequest {
                    name: Some(name.proto()),
                    kind: kind.into(),
                })
                .await
                .map_err(|status| call_error(&status))?;
            done(output, &format!("Deleted {word} {}", name.fqn()), None);
        }
        Verb::Get(name) => {
            let connector = client
                .get_connector(proto::GetConnectorRequest {
                    name: Some(name.proto()),
                    kind: kind.into(),
                })
                .await
                .map_err(|status| call_error(&status))?
                .into_inner()
                .connector
                .unwrap_or_default();
            // Like pulsar-admin, `get` prints the definition as JSON either way.
            emit_json(&connector_json(&connector));
        }
        Verb::List(namespace) => {
            let connectors = client
                .list_connectors(proto::ListConnectorsRequest {
                    tenant: namespace.tenant,
                    namespace: namespace.namespace,
                    kind: kind.into(),
                })
                .await
                .map_err(|status| call_error(&status))?
                .into_inner()
                .connectors;
            match output {
                OutputFormat::Json => emit_json(&Value::Array(
                    connectors.iter().map(connector_json).collect(),
                )),
                OutputFormat::Table => emit(&table::render(
                    &[
                        "NAME",
                        "TYPE",
                        "PARALLELISM",
                        "GUARANTEE",
                        "DESIRED",
                        "VERSION",
                    ],
                    &connectors
                        .iter()
                        .map(|connector| {
                            vec![
                                connector
                                    .name
                                    .as_ref()
                                    .map(|name| name.name.clone())
                                    .unwrap_or_default(),
                                connector.connector_type.clone(),
                                connector.parallelism.to_string(),
                                super::guarantee_name(connector.processing_guarantee).to_owned(),
                                desired_name(connector.desired_state).to_owned(),
                                connector.version.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        Verb::Status(instance) => {
            let status = client
                .get_connector_status(proto::GetConnectorStatusRequest {
                    name: Some(instance.name.proto()),
                    kind: kind.into(),
                    instance_id: instance.instance_id,
                })
                .await
                .map_err(|status| call_error(&status))?
                .into_inner();
            print_status(output, &instance.name, &status);
        }
        Verb::Control(action, instance) => {
            let request = control_request(kind, &instance);
            let (answer, past) = match action {
                Control::Start => (client.start_connector(request).await, "Started"),
                Control::Stop => (client.stop_connector(request).await, "Stopped"),
                Control::Restart => (client.restart_connector(request).await, "Restarted"),
            };
            answer.map_err(|status| call_error(&status))?;
            done(
                output,
                &format!("{past} {word} {}", instance.describe()),
                None,
            );
        }
        Verb::AvailableTypes => {
            let types = list_types(&mut client, kind).await?;
            match output {
                OutputFormat::Json => {
                    emit_json(&Value::Array(types.iter().map(type_json).collect()))
                }
                OutputFormat::Table => emit(&table::render(
                    &["NAME", "ALIASES", "EFFECTIVELY_ONCE", "DESCRIPTION"],
                    &types
                        .iter()
                        .map(|connector_type| {
                            vec![
                                connector_type.name.clone(),
                                connector_type.aliases.join(","),
                                yes_no(connector_type.effectively_once),
                                connector_type.description.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        Verb::ConfigDefinition(type_name) => {
            let types = list_types(&mut client, kind).await?;
            let Some(connector_type) = types.iter().find(|candidate| {
                candidate.name == type_name || candidate.aliases.contains(&type_name)
            }) else {
                let known: Vec<&str> = types
                    .iter()
                    .map(|candidate| candidate.name.as_str())
                    .collect();
                return Err(invalid(
                    &format!("{word}_type"),
                    format!(
                        "unknown {word} type {type_name:?} (built-in: {})",
                        known.join(", ")
                    ),
                ));
            };
            match output {
                OutputFormat::Json => emit_json(&type_json(connector_type)),
                OutputFormat::Table => emit(&table::render(
                    &[
                        "FIELD",
                        "TYPE",
                        "REQUIRED",
                        "DEFAULT",
                        "SECRET",
                        "ALIASES",
                        "DESCRIPTION",
                    ],
                    &connector_type
                        .fields
                        .iter()
                        .map(|field| {
                            vec![
                                field.name.clone(),
                                field.field_type.clone(),
                                yes_no(field.required),
                                field.default_json.clone().unwrap_or_default(),
                                yes_no(field.secret),
                                field.aliases.join(","),
                                field.description.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )),
            }
        }
        Verb::ValidateConfig {
            connector_type,
            config,
            guarantee: given,
        } => {
            client
                .validate_config(proto::ValidateConfigRequest {
                    kind: kind.into(),
                    connector_type,
                    config_json: config.unwrap_or_default(),
                    processing_guarantee: guarantee(given.as_deref())?,
                })
                .await
                .map_err(|status| call_error(&status))?;
            done(output, "The config is valid", None);
        }
    }
    Ok(())
}

async fn list_types(
    client: &mut super::AdminApi,
    kind: proto::ConnectorKind,
) -> anyhow::Result<Vec<proto::ConnectorType>> {
    Ok(client
        .list_connector_types(proto::ListConnectorTypesRequest { kind: kind.into() })
        .await
        .map_err(|status| call_error(&status))?
        .into_inner()
        .types)
}

impl NameArgs {
    fn fqn(&self) -> String {
        format!(
            "{}/{}/{}",
            self.namespace.tenant, self.namespace.namespace, self.name
        )
    }
}

impl InstanceArgs {
    fn describe(&self) -> String {
        match self.instance_id {
            Some(instance) => format!("{} instance {instance}", self.name.fqn()),
            None => self.name.fqn(),
        }
    }
}

fn control_request(
    kind: proto::ConnectorKind,
    instance: &InstanceArgs,
) -> proto::ConnectorControlRequest {
    proto::ConnectorControlRequest {
        name: Some(instance.name.proto()),
        kind: kind.into(),
        instance_id: instance.instance_id,
    }
}

/// Prints a write's outcome: the message for people, the connector (or `{"ok": true}`) as JSON.
fn done(output: OutputFormat, message: &str, connector: Option<&proto::ConnectorInfo>) {
    match (output, connector) {
        (OutputFormat::Json, Some(connector)) => emit_json(&connector_json(connector)),
        _ => acknowledge(output, message),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn desired_name(value: i32) -> &'static str {
    proto::DesiredState::try_from(value).map_or("UNKNOWN", |state| {
        short_name(state.as_str_name(), "DESIRED_STATE_")
    })
}

fn instance_state_name(value: i32) -> &'static str {
    proto::InstanceState::try_from(value).map_or("UNKNOWN", |state| {
        short_name(state.as_str_name(), "INSTANCE_STATE_")
    })
}

/// Returns a connector's definition as JSON, its config as an object.
pub fn connector_json(connector: &proto::ConnectorInfo) -> Value {
    let name = connector.name.clone().unwrap_or_default();
    let kind = proto::ConnectorKind::try_from(connector.kind).unwrap_or_default();
    let config: Value = serde_json::from_str(&connector.config_json)
        .unwrap_or_else(|_| Value::String(connector.config_json.clone()));
    let mut value = json!({
        "tenant": name.tenant,
        "namespace": name.namespace,
        "name": name.name,
        "kind": kind_word(kind),
        "type": connector.connector_type,
        "config": config,
        "parallelism": connector.parallelism,
        "processing_guarantees": super::guarantee_name(connector.processing_guarantee),
        "desired_state": desired_name(connector.desired_state),
        "version": connector.version,
    });
    let topics_key = match kind {
        proto::ConnectorKind::Sink => "inputs",
        proto::ConnectorKind::Source | proto::ConnectorKind::Unspecified => {
            "destination_topic_name"
        }
    };
    value[topics_key] = match kind {
        proto::ConnectorKind::Sink => json!(connector.topics),
        _ => json!(connector.topics.first()),
    };
    if let Some(subscription) = &connector.subscription {
        value["subscription_name"] = json!(subscription);
    }
    let batch_size = match kind {
        proto::ConnectorKind::Sink => connector.write_batch_size,
        _ => connector.read_batch_size,
    };
    if let Some(batch_size) = batch_size {
        value["batch_size"] = json!(batch_size);
    }
    if kind == proto::ConnectorKind::Sink {
        value["error_policy"] = json!(error_policy_name(connector.error_policy));
        if let Some(topic) = &connector.dead_letter_topic {
            value["dead_letter_topic"] = json!(topic);
        }
        if let Some(size) = connector.receiver_queue_size {
            value["receiver_queue_size"] = json!(size);
        }
        match proto::SubscriptionPosition::try_from(connector.subscription_position) {
            Ok(proto::SubscriptionPosition::Earliest) => {
                value["subscription_position"] = json!("Earliest");
            }
            Ok(proto::SubscriptionPosition::Latest) => {
                value["subscription_position"] = json!("Latest");
            }
            Ok(proto::SubscriptionPosition::Unspecified) | Err(_) => {}
        }
    }
    value
}

/// Returns an error policy as users write it (`dead-letter`).
fn error_policy_name(value: i32) -> String {
    proto::ErrorPolicy::try_from(value).map_or_else(
        |_| "unknown".to_owned(),
        |policy| {
            short_name(policy.as_str_name(), "ERROR_POLICY_")
                .to_ascii_lowercase()
                .replace('_', "-")
        },
    )
}

fn type_json(connector_type: &proto::ConnectorType) -> Value {
    json!({
        "name": connector_type.name,
        "aliases": connector_type.aliases,
        "description": connector_type.description,
        "effectively_once": connector_type.effectively_once,
        "fields": connector_type.fields.iter().map(|field| json!({
            "name": field.name,
            "type": field.field_type,
            "required": field.required,
            "default": field.default_json,
            "secret": field.secret,
            "aliases": field.aliases,
            "description": field.description,
        })).collect::<Vec<_>>(),
    })
}

/// Returns a checkpoint as JSON: its position as the connector's text (null when the node
/// cannot render it) and as hex bytes.
pub fn checkpoint_json(checkpoint: &proto::Checkpoint) -> Value {
    json!({
        "position_text": checkpoint.position_text,
        "position_hex": hex(&checkpoint.position),
        "sequence_id": checkpoint.sequence_id,
        "epoch": checkpoint.epoch,
        "time_ms": checkpoint.time_ms,
        "commits": checkpoint.commits,
    })
}

/// Returns a checkpoint's position for a table cell: the connector's text, else the bytes in
/// hex (`0x…`, what `offsets reset --position-hex` takes).
pub fn position_cell(checkpoint: Option<&proto::Checkpoint>) -> String {
    match checkpoint {
        None => "-".to_owned(),
        Some(checkpoint) => match &checkpoint.position_text {
            Some(text) => text.clone(),
            None => format!("0x{}", hex(&checkpoint.position)),
        },
    }
}

/// Summarises a checkpoint for the status table: how many commits, and how long ago the last
/// was.
fn checkpoint_summary(checkpoint: Option<&proto::Checkpoint>) -> String {
    let Some(checkpoint) = checkpoint else {
        return "-".to_owned();
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    if checkpoint.time_ms == 0 {
        return format!("{} (reset)", checkpoint.commits);
    }
    let age = now_ms.saturating_sub(checkpoint.time_ms);
    format!("{}, {:.1}s ago", checkpoint.commits, age as f64 / 1000.0)
}

/// Returns bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn print_status(output: OutputFormat, name: &NameArgs, status: &proto::GetConnectorStatusResponse) {
    match output {
        OutputFormat::Json => {
            let instances: Vec<Value> = status
                .instances
                .iter()
                .map(|instance| {
                    json!({
                        "instance_id": instance.instance_id,
                        "node": instance.node_id,
                        "node_address": instance.node_address,
                        "state": instance_state_name(instance.state),
                        "epoch": instance.epoch,
                        "revoking": instance.revoking,
                        "records_received": instance.records_received,
                        "records_written": instance.records_written,
                        "records_skipped": instance.records_skipped,
                        "records_dead_lettered": instance.records_dead_lettered,
                        "errors": instance.errors,
                        "restarts": instance.restarts,
                        "last_error": instance.last_error,
                        "last_progress_ms": instance.last_progress_ms,
                        "checkpoint": instance.checkpoint.as_ref().map(checkpoint_json),
                    })
                })
                .collect();
            emit_json(&json!({
                "name": name.fqn(),
                "desired_state": desired_name(status.desired_state),
                "parallelism": status.parallelism,
                "running": status.running,
                "instances": instances,
            }));
        }
        OutputFormat::Table => {
            let header = format!(
                "{} desired {}, {} of {} instances running",
                name.fqn(),
                desired_name(status.desired_state),
                status.running,
                status.parallelism
            );
            let rows: Vec<Vec<String>> = status
                .instances
                .iter()
                .map(|instance| {
                    vec![
                        instance.instance_id.to_string(),
                        instance
                            .node_id
                            .map_or_else(|| "-".to_owned(), |node| node.to_string()),
                        instance_state_name(instance.state).to_owned(),
                        instance.records_received.to_string(),
                        instance.records_written.to_string(),
                        position_cell(instance.checkpoint.as_ref()),
                        instance.records_skipped.to_string(),
                        instance.records_dead_lettered.to_string(),
                        checkpoint_summary(instance.checkpoint.as_ref()),
                        instance.last_error.clone(),
                    ]
                })
                .collect();
            emit(&format!(
                "{header}\n{}",
                table::render(
                    &[
                        "INSTANCE",
                        "NODE",
                        "STATE",
                        "RECEIVED",
                        "WRITTEN",
                        "POSITION",
                        "SKIPPED",
                        "DEAD_LETTERED",
                        "CHECKPOINTS",
                        "LAST_ERROR"
                    ],
                    &rows,
                )
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_flags_parse_as_pulsar_admin_spells_them_and_name_the_flag_otherwise() {
        for (text, expected) in [
            ("fail", proto::ErrorPolicy::Fail),
            ("SKIP", proto::ErrorPolicy::Skip),
            ("dead-letter", proto::ErrorPolicy::DeadLetter),
            ("DEAD_LETTER", proto::ErrorPolicy::DeadLetter),
        ] {
            assert_eq!(parse_error_policy(text).expect(text), expected);
        }
        let error = parse_error_policy("retry")
            .expect_err("unknown")
            .to_string();
        assert!(
            error.contains("--error-policy") && error.contains("retry"),
            "{error}"
        );
        for (text, expected) in [
            ("Earliest", proto::SubscriptionPosition::Earliest),
            ("latest", proto::SubscriptionPosition::Latest),
        ] {
            assert_eq!(parse_subscription_position(text).expect(text), expected);
        }
        let error = parse_subscription_position("middle")
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("--subscription-position"), "{error}");
        assert_eq!(
            batch_sizes(proto::ConnectorKind::Sink, Some(5)),
            (None, Some(5))
        );
        assert_eq!(
            batch_sizes(proto::ConnectorKind::Source, Some(5)),
            (Some(5), None)
        );
    }

    #[test]
    fn a_sinks_json_shows_its_policy_and_options() {
        let connector = proto::ConnectorInfo {
            kind: proto::ConnectorKind::Sink.into(),
            error_policy: proto::ErrorPolicy::DeadLetter.into(),
            dead_letter_topic: Some("persistent://public/default/dlq".to_owned()),
            write_batch_size: Some(50),
            subscription_position: proto::SubscriptionPosition::Latest.into(),
            ..proto::ConnectorInfo::default()
        };
        let value = connector_json(&connector);
        assert_eq!(value["error_policy"], "dead-letter");
        assert_eq!(
            value["dead_letter_topic"],
            "persistent://public/default/dlq"
        );
        assert_eq!(value["batch_size"], 50);
        assert_eq!(value["subscription_position"], "Latest");
        assert_eq!(value.get("receiver_queue_size"), None);
    }
}
