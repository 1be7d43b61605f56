//! The admin API's errors: one type for everything a call can refuse or fail with, mapped to
//! the small fixed set of gRPC codes the API promises, each message naming the field or object
//! at fault.

use tonic::{Code, Status};

use crate::meta::MetaError;
use crate::meta::state::Rejection;

/// Why an admin call did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// A request field is wrong; names the field and why.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field, as the CLI flag or config key a user recognises.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request is well formed but the cluster's state refuses it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The cluster cannot answer now; the leader's address when known.
    #[error("unavailable: {reason}{}", leader_hint(.leader.as_ref()))]
    Unavailable {
        /// Why.
        reason: String,
        /// The leader's id and address, when this node knows them.
        leader: Option<(u64, String)>,
    },
    /// Something broke that the caller cannot fix.
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(leader: Option<&(u64, String)>) -> String {
    match leader {
        Some((id, address)) => format!(" (leader: node {id} at {address})"),
        None => String::new(),
    }
}

impl AdminError {
    /// Returns an [`AdminError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Returns the gRPC code this error travels with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// Returns the error of a metadata-store call, with the leader as this node knows it.
    pub fn from_meta(error: MetaError, leader: Option<(u64, String)>) -> Self {
        match error {
            MetaError::Unavailable(reason) | MetaError::Stopped(reason) => {
                Self::Unavailable { reason, leader }
            }
            MetaError::Peer(error) => Self::Unavailable {
                reason: error.to_string(),
                leader,
            },
            error @ MetaError::JoinTimedOut { .. } => Self::Unavailable {
                reason: error.to_string(),
                leader,
            },
            MetaError::Refused(reason) | MetaError::Membership(reason) => {
                Self::FailedPrecondition(reason)
            }
            other @ (MetaError::Store(_) | MetaError::Config(_) | MetaError::Codec(_)) => {
                Self::Internal(other.to_string())
            }
        }
    }
}

impl From<Rejection> for AdminError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::ConnectorExists { connector } => {
                Self::AlreadyExists(format!("connector {connector}"))
            }
            Rejection::ConnectorNotFound { connector } => {
                Self::NotFound(format!("connector {connector}"))
            }
            Rejection::NodeNotFound { node } => Self::NotFound(format!("node {node}")),
            Rejection::InvalidArgument { field, reason } => Self::InvalidArgument { field, reason },
            Rejection::InstanceOutOfRange {
                connector,
                instance,
                parallelism,
            } => Self::invalid(
                "instance_id",
                format!(
                    "{connector} has instances 0 to {}, not {instance}",
                    parallelism.saturating_sub(1)
                ),
            ),
            other @ (Rejection::VersionMismatch { .. }
            | Rejection::InstanceOwned { .. }
            | Rejection::StaleEpoch { .. }
            | Rejection::CheckpointGap { .. }
            | Rejection::NotStopped { .. }
            | Rejection::NodeNotActive { .. }) => Self::FailedPrecondition(other.to_string()),
        }
    }
}

impl From<AdminError> for Status {
    fn from(error: AdminError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::state::ConnectorName;

    #[test]
    fn rejections_map_to_the_promised_codes() {
        let connector = ConnectorName::new("public", "default", "gen");
        let cases = [
            (
                Rejection::ConnectorExists {
                    connector: connector.clone(),
                },
                Code::AlreadyExists,
            ),
            (
                Rejection::ConnectorNotFound {
                    connector: connector.clone(),
                },
                Code::NotFound,
            ),
            (
                Rejection::NotStopped {
                    connector: connector.clone(),
                },
                Code::FailedPrecondition,
            ),
            (
                Rejection::InstanceOutOfRange {
                    connector,
                    instance: 5,
                    parallelism: 2,
                },
                Code::InvalidArgument,
            ),
            (Rejection::NodeNotFound { node: 9 }, Code::NotFound),
        ];
        for (rejection, code) in cases {
            let status = Status::from(AdminError::from(rejection.clone()));
            assert_eq!(status.code(), code, "{rejection}");
        }
    }

    #[test]
    fn unavailable_names_the_leader_when_known() {
        let error = AdminError::from_meta(
            MetaError::Unavailable("not the leader".to_owned()),
            Some((2, "127.0.0.1:7602".to_owned())),
        );
        assert_eq!(error.code(), Code::Unavailable);
        assert!(
            error.to_string().contains("node 2 at 127.0.0.1:7602"),
            "{error}"
        );
    }
}
