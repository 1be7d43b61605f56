//! The `ferry` client commands: `sources`, `sinks`, `offsets` and `cluster`, gRPC clients of
//! any node's admin API with flags shaped like `pulsar-admin`'s.
//!
//! Each command prints a human table (or, for `get`, pretty JSON as `pulsar-admin` does) by
//! default, and one JSON document with `--output json` for scripts. A failure is one line on
//! standard error, `error: CODE: message`, and a non-zero exit.
//!
//! - [`connectors`]: `ferry sources …` and `ferry sinks …`.
//! - [`config_file`]: connector configs read from JSON or YAML files.
//! - [`cluster`]: `ferry offsets …` and `ferry cluster …`.
//! - [`table`]: plain-text tables.

pub mod cluster;
pub mod config_file;
pub mod connectors;
pub mod table;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ferry_proto::admin::v1 as proto;
use ferry_proto::admin::v1::admin_client::AdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::security::{BearerToken, Token};

/// A client of a node's admin API that sends the bearer token, if one was given.
pub type AdminApi = AdminClient<InterceptedService<Channel, BearerToken>>;

/// The admin URL used without `--admin-url` or `FERRY_ADMIN_URL`.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:7600";

/// Flags every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Any node's admin URL (http://host:port).
    #[arg(
        long,
        env = "FERRY_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL,
        value_name = "URL",
        global = true
    )]
    pub admin_url: String,
    /// How to print the answer: human tables, or JSON for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// TLS and token for reaching the node.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// How a client reaches a node that serves TLS or requires a token.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// PEM file of the CA that signed the nodes' certificates, for an https:// --admin-url
    /// (default: the well-known web CAs).
    #[arg(long, env = "FERRY_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// The bearer token (admin or viewer) sent with every call. Prefer FERRY_TOKEN or
    /// --token-file: a flag shows in the process list.
    #[arg(
        long,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "FERRY_TOKEN_FILE", value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl AccessArgs {
    /// Returns the TLS settings for an https:// URL: trust --tls-ca, else the web CAs.
    pub fn tls_config(&self) -> anyhow::Result<ClientTlsConfig> {
        let config = ClientTlsConfig::new();
        Ok(match &self.tls_ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| {
                    anyhow::anyhow!("invalid --tls-ca: cannot read {}: {error}", path.display())
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    anyhow::bail!(
                        "invalid --tls-ca: {} holds no PEM certificate",
                        path.display()
                    );
                }
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_webpki_roots(),
        })
    }

    /// Returns the token given by --token, FERRY_TOKEN or --token-file, if any. Errors never
    /// show the token.
    pub fn token(&self) -> anyhow::Result<Option<Token>> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(anyhow::anyhow!(
                "invalid --token-file: cannot be combined with --token (or FERRY_TOKEN)"
            )),
            (Some(text), None) => Token::parse(text)
                .map(Some)
                .map_err(|reason| anyhow::anyhow!("invalid --token: the token {reason}")),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    anyhow::anyhow!(
                        "invalid --token-file: cannot read {}: {error}",
                        path.display()
                    )
                })?;
                Token::parse(&text).map(Some).map_err(|reason| {
                    anyhow::anyhow!(
                        "invalid --token-file: the token in {} {reason}",
                        path.display()
                    )
                })
            }
            (None, None) => Ok(None),
        }
    }
}

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and messages for people.
    Table,
    /// One JSON document.
    Json,
}

impl ClientArgs {
    /// Connects to the node at `--admin-url`.
    pub async fn connect(&self) -> anyhow::Result<AdminApi> {
        let url = if self.admin_url.contains("://") {
            self.admin_url.clone()
        } else {
            format!("http://{}", self.admin_url)
        };
        crate::cli::admin_client(&url, &self.access).await
    }
}

/// Returns a failed call as one readable line: the code, then the server's message.
pub fn call_error(status: &tonic::Status) -> anyhow::Error {
    // Plain HTTP/2 to a node that serves TLS fails as the node drops the connection, showing
    // as one of these (which one depends on timing), not as a handshake error.
    const DROPPED: [&str; 3] = [
        "h2 protocol error",
        "operation was canceled",
        "transport error",
    ];
    let hint = if DROPPED
        .iter()
        .any(|dropped| status.message().starts_with(dropped))
    {
        " (if the node serves TLS, use an https:// --admin-url)"
    } else {
        ""
    };
    anyhow::anyhow!("{}: {}{hint}", code_name(status.code()), status.message())
}

/// Returns a request the client refuses before sending it, worded like the server's.
pub fn invalid(flag: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("INVALID_ARGUMENT: invalid {flag}: {reason}")
}

/// Returns the canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Writes a command's answer on standard output.
#[allow(clippy::print_stdout, reason = "the answer is the command's output")]
pub fn emit(text: &str) {
    println!("{}", text.trim_end_matches('\n'));
}

/// Writes `value` as pretty JSON on standard output.
pub fn emit_json(value: &serde_json::Value) {
    emit(&serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}

/// Prints a write's outcome: `message` for people, `{"ok": true}` for scripts.
pub fn acknowledge(output: OutputFormat, message: &str) {
    match output {
        OutputFormat::Json => emit_json(&serde_json::json!({"ok": true})),
        OutputFormat::Table => emit(message),
    }
}

/// Returns an enum value's protobuf name without its type prefix (`INSTANCE_STATE_RUNNING` ->
/// `RUNNING`).
pub fn short_name<'a>(full: &'a str, prefix: &str) -> &'a str {
    full.strip_prefix(prefix).unwrap_or(full)
}

/// Returns a guarantee as `pulsar-admin` spells it.
pub fn guarantee_name(value: i32) -> &'static str {
    match proto::ProcessingGuarantee::try_from(value) {
        Ok(proto::ProcessingGuarantee::AtMostOnce) => "ATMOST_ONCE",
        Ok(proto::ProcessingGuarantee::AtLeastOnce) => "ATLEAST_ONCE",
        Ok(proto::ProcessingGuarantee::EffectivelyOnce) => "EFFECTIVELY_ONCE",
        Ok(proto::ProcessingGuarantee::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

/// Parses `--processing-guarantees` as `pulsar-admin` spells it (ATLEAST_ONCE, ATMOST_ONCE,
/// EFFECTIVELY_ONCE), also accepting AT_LEAST_ONCE, lower case and hyphens.
pub fn parse_guarantee(text: &str) -> anyhow::Result<proto::ProcessingGuarantee> {
    let normalized = text.trim().to_ascii_uppercase().replace('-', "_");
    match normalized.as_str() {
        "ATMOST_ONCE" | "AT_MOST_ONCE" => Ok(proto::ProcessingGuarantee::AtMostOnce),
        "ATLEAST_ONCE" | "AT_LEAST_ONCE" => Ok(proto::ProcessingGuarantee::AtLeastOnce),
        "EFFECTIVELY_ONCE" | "EXACTLY_ONCE" => Ok(proto::ProcessingGuarantee::EffectivelyOnce),
        _ => Err(invalid(
            "--processing-guarantees",
            format!("{text:?} is not ATMOST_ONCE, ATLEAST_ONCE or EFFECTIVELY_ONCE"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantees_parse_as_pulsar_admin_spells_them() {
        for (text, expected) in [
            (
                "EFFECTIVELY_ONCE",
                proto::ProcessingGuarantee::EffectivelyOnce,
            ),
            ("atleast_once", proto::ProcessingGuarantee::AtLeastOnce),
            ("at-most-once", proto::ProcessingGuarantee::AtMostOnce),
        ] {
            assert_eq!(parse_guarantee(text).expect(text), expected);
            assert_eq!(
                parse_guarantee(guarantee_name(expected.into())).expect("round trip"),
                expected
            );
        }
        let error = parse_guarantee("twice").expect_err("unknown");
        assert!(
            error.to_string().contains("--processing-guarantees"),
            "{error}"
        );
    }
}
