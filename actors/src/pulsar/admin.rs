//! The slice of Pulsar's admin REST API Ferry needs, starting with the deduplication check that
//! decides whether a source may run effectively-once.
//!
//! Deduplication is decided, most specific first, by the topic's policy, the namespace's
//! policy, then the broker's `brokerDeduplicationEnabled`. [`PulsarAdmin::deduplication`] walks
//! the same chain and says which level decided, so a refusal can tell the user what to change.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connection::tls_connect;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes read from one admin response.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Errors of admin REST calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The admin URL is malformed.
    #[error("invalid pulsar admin url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A topic name is malformed.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The topic as given.
        topic: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request could not be made or answered.
    #[error("pulsar admin {path}: {reason}")]
    Request {
        /// The request path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// The broker answered with an error status.
    #[error("pulsar admin {path}: http {status}: {body}")]
    Status {
        /// The request path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The broker's explanation.
        body: String,
    },
}

/// A topic name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName {
    /// True for `persistent://` (the default when no domain is given).
    pub persistent: bool,
    /// Tenant.
    pub tenant: String,
    /// Namespace within the tenant.
    pub namespace: String,
    /// Local name.
    pub local: String,
}

impl TopicName {
    /// Parses `persistent://tenant/ns/topic`, `non-persistent://tenant/ns/topic`,
    /// `tenant/ns/topic` or a bare `topic` (in `public/default`), like Pulsar's clients do.
    pub fn parse(topic: &str) -> Result<Self, AdminError> {
        let invalid = |reason| AdminError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        };
        let (persistent, rest) = if let Some(rest) = topic.strip_prefix("persistent://") {
            (true, rest)
        } else if let Some(rest) = topic.strip_prefix("non-persistent://") {
            (false, rest)
        } else if topic.contains("://") {
            return Err(invalid("domain must be persistent:// or non-persistent://"));
        } else {
            (true, topic)
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (tenant, namespace, local) = match parts.as_slice() {
            [local] => ("public", "default", *local),
            [tenant, namespace, local] => (*tenant, *namespace, *local),
            _ => return Err(invalid("expected tenant/namespace/topic")),
        };
        if [tenant, namespace, local]
            .iter()
            .any(|part| part.is_empty())
        {
            return Err(invalid("tenant, namespace and topic must not be empty"));
        }
        let allowed = |part: &str| {
            part.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | ':'))
        };
        if ![tenant, namespace, local].iter().all(|part| allowed(part)) {
            return Err(invalid("only letters, digits and - _ . = : are allowed"));
        }
        Ok(Self {
            persistent,
            tenant: tenant.to_owned(),
            namespace: namespace.to_owned(),
            local: local.to_owned(),
        })
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.persistent {
            "persistent"
        } else {
            "non-persistent"
        };
        write!(
            formatter,
            "{domain}://{}/{}/{}",
            self.tenant, self.namespace, self.local
        )
    }
}

/// Which level's setting decided deduplication for a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// The topic's own policy.
    Topic,
    /// The namespace's policy.
    Namespace,
    /// The broker's `brokerDeduplicationEnabled`.
    Broker,
    /// Non-persistent topics never deduplicate.
    NonPersistentTopic,
}

/// Whether the broker deduplicates a topic's messages, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deduplication {
    /// True when duplicates by (producer name, sequence id) are dropped.
    pub enabled: bool,
    /// The level whose setting applies.
    pub decided_by: DecidedBy,
}

/// A client of one Pulsar cluster's admin REST API.
#[derive(Clone)]
pub struct PulsarAdmin {
    tls: bool,
    host: String,
    port: u16,
    token: Option<String>,
    trust_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for PulsarAdmin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PulsarAdmin")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl PulsarAdmin {
    /// Returns a client for `http://host:port` or `https://host:port`, authenticating with
    /// `token` when given; HTTPS trusts the Mozilla roots plus the CAs in `trust_file`.
    pub fn new(
        admin_url: &str,
        token: Option<String>,
        trust_file: Option<std::path::PathBuf>,
    ) -> Result<Self, AdminError> {
        let invalid = |reason| AdminError::InvalidUrl {
            url: admin_url.to_owned(),
            reason,
        };
        let (tls, rest, default_port) = if let Some(rest) = admin_url.strip_prefix("https://") {
            (true, rest, 443)
        } else if let Some(rest) = admin_url.strip_prefix("http://") {
            (false, rest, 80)
        } else {
            return Err(invalid("must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(invalid("must not have a path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| invalid("has a port that is not a number"))?,
            ),
            None => (authority, default_port),
        };
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            token,
            trust_file,
        })
    }

    /// Says whether the broker deduplicates `topic`, walking topic, namespace and broker
    /// settings. A topic that does not exist yet is decided by its namespace and the broker.
    pub async fn deduplication(&self, topic: &TopicName) -> Result<Deduplication, AdminError> {
        if !topic.persistent {
            return Ok(Deduplication {
                enabled: false,
                decided_by: DecidedBy::NonPersistentTopic,
            });
        }
        let topic_path = format!(
            "/admin/v2/persistent/{}/{}/{}/deduplicationEnabled",
            topic.tenant, topic.namespace, topic.local
        );
        match self.get(&topic_path).await? {
            (StatusCode::OK, body) => {
                if let Some(enabled) = parse_optional_bool(&topic_path, &body)? {
                    return Ok(Deduplication {
                        enabled,
                        decided_by: DecidedBy::Topic,
                    });
                }
            }
            // Not created yet (a source's output topic before its first message).
            (StatusCode::NOT_FOUND, body) if body.contains("Topic") => {}
            (status, body) => return Err(status_error(&topic_path, status, &body)),
        }
        let namespace_path = format!(
            "/admin/v2/namespaces/{}/{}/deduplication",
            topic.tenant, topic.namespace
        );
        match self.get(&namespace_path).await? {
            (StatusCode::OK | StatusCode::NO_CONTENT, body) => {
                if let Some(enabled) = parse_optional_bool(&namespace_path, &body)? {
                    return Ok(Deduplication {
                        enabled,
                        decided_by: DecidedBy::Namespace,
                    });
                }
            }
            (status, body) => return Err(status_error(&namespace_path, status, &body)),
        }
        let broker_path = "/admin/v2/brokers/configuration/runtime";
        match self.get(broker_path).await? {
            (StatusCode::OK, body) => {
                let enabled =
                    runtime_setting(&body, "brokerDeduplicationEnabled").ok_or_else(|| {
                        AdminError::Request {
                            path: broker_path.to_owned(),
                            reason:
                                "brokerDeduplicationEnabled missing from the runtime configuration"
                                    .to_owned(),
                        }
                    })?;
                Ok(Deduplication {
                    enabled: enabled == "true",
                    decided_by: DecidedBy::Broker,
                })
            }
            (status, body) => Err(status_error(broker_path, status, &body)),
        }
    }

    /// Moves `subscription` on `topic` (one partition, or a non-partitioned topic) so that the
    /// next message its consumers read is `position` itself. Connected consumers of the
    /// subscription are disconnected by the broker.
    pub async fn reset_cursor(
        &self,
        topic: &TopicName,
        subscription: &str,
        position: CursorPosition,
    ) -> Result<(), AdminError> {
        let path = format!(
            "/admin/v2/{}/{}/{}/{}/subscription/{}/resetcursor",
            if topic.persistent {
                "persistent"
            } else {
                "non-persistent"
            },
            topic.tenant,
            topic.namespace,
            topic.local,
            encode_path_segment(subscription)
        );
        let body = format!(
            r#"{{"ledgerId":{},"entryId":{},"batchIndex":{},"isExcluded":false,"partitionIndex":-1}}"#,
            position.ledger_id, position.entry_id, position.batch_index
        );
        match self.request("POST", &path, Some(body)).await? {
            (status, _) if status.is_success() => Ok(()),
            (status, body) => Err(status_error(&path, status, &body)),
        }
    }

    /// Issues a GET and returns the status and body.
    async fn get(&self, path: &str) -> Result<(StatusCode, String), AdminError> {
        self.request("GET", path, None).await
    }

    /// Issues a request, with a JSON body when given, and returns the status and body.
    async fn request(
        &self,
        method: &'static str,
        path: &str,
        json_body: Option<String>,
    ) -> Result<(StatusCode, String), AdminError> {
        let request_error = |reason: String| AdminError::Request {
            path: path.to_owned(),
            reason,
        };
        let exchange = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| {
                    format!("cannot connect to {}:{}: {error}", self.host, self.port)
                })?;
            if self.tls {
                let tls = tls_connect(self.trust_file.as_deref(), &self.host, tcp).await?;
                self.exchange(TokioIo::new(tls), method, path, json_body)
                    .await
            } else {
                self.exchange(TokioIo::new(tcp), method, path, json_body)
                    .await
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| request_error(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(request_error)
    }

    async fn exchange<T>(
        &self,
        io: T,
        method: &'static str,
        path: &str,
        json_body: Option<String>,
    ) -> Result<(StatusCode, String), String>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|error| error.to_string())?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::ACCEPT, "application/json");
        if json_body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| error.to_string())?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A message position to move a subscription to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorPosition {
    /// Ledger.
    pub ledger_id: u64,
    /// Entry within the ledger.
    pub entry_id: u64,
    /// Index within a batched entry, -1 when not batched.
    pub batch_index: i32,
}

/// Percent-encodes a path segment (subscription names may hold any character).
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn status_error(path: &str, status: StatusCode, body: &str) -> AdminError {
    AdminError::Status {
        path: path.to_owned(),
        status: status.as_u16(),
        body: body.trim().chars().take(500).collect(),
    }
}

/// Reads `true`, `false`, or nothing (the policy is not set) from a response body.
fn parse_optional_bool(path: &str, body: &str) -> Result<Option<bool>, AdminError> {
    match body.trim() {
        "" | "null" => Ok(None),
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        other => Err(AdminError::Request {
            path: path.to_owned(),
            reason: format!("expected true, false or nothing, got {other:?}"),
        }),
    }
}

/// Reads one value from the broker's runtime configuration (a flat JSON object of strings).
fn runtime_setting(configuration: &str, key: &str) -> Option<String> {
    let marker = format!("\"{key}\":\"");
    let start = configuration.find(&marker)? + marker.len();
    let length = configuration[start..].find('"')?;
    Some(configuration[start..start + length].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topic_names_like_pulsar_clients() {
        let full = TopicName::parse("persistent://acme/orders/out").expect("valid");
        assert_eq!(
            (
                full.persistent,
                full.tenant.as_str(),
                full.namespace.as_str(),
                full.local.as_str()
            ),
            (true, "acme", "orders", "out")
        );
        assert_eq!(full.to_string(), "persistent://acme/orders/out");
        assert_eq!(
            TopicName::parse("out").expect("valid").to_string(),
            "persistent://public/default/out"
        );
        assert!(
            !TopicName::parse("non-persistent://a/b/c")
                .expect("valid")
                .persistent
        );
    }

    #[test]
    fn refuses_malformed_topic_names_naming_the_reason() {
        for (topic, reason) in [
            (
                "kafka://a/b/c",
                "domain must be persistent:// or non-persistent://",
            ),
            ("a/b", "expected tenant/namespace/topic"),
            (
                "persistent://a//c",
                "tenant, namespace and topic must not be empty",
            ),
            (
                "persistent://a/b/c d",
                "only letters, digits and - _ . = : are allowed",
            ),
        ] {
            let error = TopicName::parse(topic).expect_err(topic);
            assert_eq!(
                error.to_string(),
                format!("invalid topic {topic:?}: {reason}")
            );
        }
    }

    #[test]
    fn refuses_malformed_admin_urls() {
        assert!(PulsarAdmin::new("http://127.0.0.1:8080/", None, None).is_ok());
        let error = PulsarAdmin::new("pulsar://127.0.0.1:6650", None, None).expect_err("scheme");
        assert!(
            error
                .to_string()
                .contains("must start with http:// or https://")
        );
        assert!(PulsarAdmin::new("http://host:x", None, None).is_err());
        assert!(PulsarAdmin::new("http://host/admin", None, None).is_err());
    }

    #[test]
    fn reads_optional_booleans_and_runtime_settings() {
        assert_eq!(parse_optional_bool("p", "").expect("ok"), None);
        assert_eq!(parse_optional_bool("p", "true\n").expect("ok"), Some(true));
        assert!(parse_optional_bool("p", "{}").is_err());
        let runtime = r#"{"a":"1","brokerDeduplicationEnabled":"false"}"#;
        assert_eq!(
            runtime_setting(runtime, "brokerDeduplicationEnabled").as_deref(),
            Some("false")
        );
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode_path_segment("sub-1_a.b"), "sub-1_a.b");
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let admin =
            PulsarAdmin::new("http://h:1", Some("secret-token".to_owned()), None).expect("valid");
        assert!(!format!("{admin:?}").contains("secret-token"));
    }
}
