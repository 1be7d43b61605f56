//! Pulsar I/O shared by every connector instance.
//!
//! - [`PulsarSettings`]: where and how to reach the cluster; [`PulsarSettings::connect`] gives a
//!   pulsar-rs client (one per node, cloned into instances).
//! - [`producer_session`]: Ferry's own producer on pulsar-rs's protocol layer, with caller-chosen
//!   sequence ids, for effectively-once sources.
//! - [`batch`]: framing of outgoing messages into SEND commands (pure).
//! - [`connection`]: one broker connection: dial, TLS, CONNECT, lookup with redirects.
//! - [`admin`]: the admin REST calls Ferry needs (is deduplication on for a topic?).
//! - [`sink_consumer`]: the input side of sinks (Exclusive/Failover, acks, seek, close).

pub mod admin;
pub mod batch;
pub mod connection;
pub mod error;
pub mod producer_session;
pub mod sink_consumer;

pub use batch::{BatchingOptions, OutgoingMessage};
pub use error::SessionError;
pub use producer_session::{
    MessageId, PendingReceipt, ProducerSession, ProducerSessionOptions, Receipt, partition_count,
};

use ::pulsar::{Authentication, Pulsar, TokioExecutor};

/// Where and how to reach a Pulsar cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct PulsarSettings {
    /// Service URL, `pulsar://host:port` or `pulsar+ssl://host:port`.
    pub url: String,
    /// JWT for token authentication, if the cluster requires it.
    pub token: Option<String>,
    /// PEM file of extra certificate authorities trusted for `pulsar+ssl://` (beside the
    /// Mozilla roots).
    pub tls_trust_certs_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PulsarSettings {
    /// Formats the settings with the token redacted: settings end up in logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PulsarSettings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_trust_certs_file", &self.tls_trust_certs_file)
            .finish()
    }
}

/// Errors reaching a Pulsar cluster.
#[derive(Debug, thiserror::Error)]
pub enum PulsarConnectError {
    /// The service URL is not a Pulsar URL.
    #[error("invalid pulsar url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The TLS trust file could not be read.
    #[error("cannot read tls_trust_certs_file {}: {reason}", path.display())]
    TrustCertsFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to pulsar at {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What pulsar-rs reported.
        #[source]
        source: ::pulsar::Error,
    },
}

impl PulsarSettings {
    /// Returns settings for an unauthenticated cluster at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            tls_trust_certs_file: None,
        }
    }

    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), PulsarConnectError> {
        let invalid = |reason| PulsarConnectError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let rest = self
            .url
            .strip_prefix("pulsar://")
            .or_else(|| self.url.strip_prefix("pulsar+ssl://"))
            .ok_or_else(|| invalid("must start with pulsar:// or pulsar+ssl://"))?;
        if rest.trim_end_matches('/').is_empty() {
            return Err(invalid("has no host"));
        }
        Ok(())
    }

    /// Connects a client to the cluster (one TCP connection to the service URL's broker; more
    /// are opened on demand as topics are looked up).
    pub async fn connect(&self) -> Result<Pulsar<TokioExecutor>, PulsarConnectError> {
        self.validate()?;
        let mut builder = Pulsar::builder(self.url.clone(), TokioExecutor);
        if let Some(path) = &self.tls_trust_certs_file {
            builder = builder.with_certificate_chain_file(path).map_err(|error| {
                PulsarConnectError::TrustCertsFile {
                    path: path.clone(),
                    reason: error.to_string(),
                }
            })?;
        }
        if let Some(token) = &self.token {
            builder = builder.with_auth(Authentication {
                name: "token".to_owned(),
                data: token.clone().into_bytes(),
            });
        }
        builder
            .build()
            .await
            .map_err(|source| PulsarConnectError::Connect {
                url: self.url.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_pulsar_urls() {
        assert!(
            PulsarSettings::new("pulsar://127.0.0.1:6650")
                .validate()
                .is_ok()
        );
        assert!(
            PulsarSettings::new("pulsar+ssl://broker:6651")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn validate_names_the_problem_with_a_bad_url() {
        let error = PulsarSettings::new("http://127.0.0.1:8080")
            .validate()
            .expect_err("http is not a pulsar url");
        assert_eq!(
            error.to_string(),
            "invalid pulsar url \"http://127.0.0.1:8080\": must start with pulsar:// or pulsar+ssl://"
        );
        let error = PulsarSettings::new("pulsar://")
            .validate()
            .expect_err("no host");
        assert!(error.to_string().ends_with("has no host"), "{error}");
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let settings = PulsarSettings {
            token: Some("very-secret-jwt".to_owned()),
            ..PulsarSettings::new("pulsar://broker:6650")
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("very-secret-jwt"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}
