//! Optional TLS and bearer tokens on the node's gRPC port (admin API and node-to-node traffic).
//!
//! Without settings a node serves plain HTTP/2 and answers anyone, as before. With
//! `--tls-cert`/`--tls-key` it serves TLS (rustls with ring) and reaches its peers over https,
//! trusting `--tls-ca`. With an admin token (and optionally a viewer token) every admin call
//! needs `authorization: Bearer <token>`: the admin token may call everything, the viewer token
//! only the reads in [`viewer_may_call`]. Node-to-node calls carry the admin token, which the
//! nodes of a cluster share. The gRPC health service stays open, for load balancers and probes.
//!
//! Token values are never logged nor put in an error: [`Token`]'s `Debug` redacts them, and a
//! refused call's message says what was missing, not what was sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use tracing::debug;

/// The message of a call refused for a missing or unknown token (it never echoes the token).
pub const TOKEN_REQUIRED: &str = "a valid bearer token is required";

/// A bearer token. Its `Debug` shows `***`; it compares in time independent of where two
/// tokens of the same length differ.
#[derive(Clone, Eq)]
pub struct Token(String);

impl Token {
    /// Returns the token in `text` (surrounding whitespace, such as a file's final newline, is
    /// dropped), or why it cannot be one. The reason never contains the text.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let token = text.trim();
        if token.is_empty() {
            return Err("is empty");
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("must be one word of visible ASCII characters (it goes in an HTTP header)");
        }
        Ok(Self(token.to_owned()))
    }

    /// Returns the `authorization` header value carrying this token, marked sensitive so
    /// HTTP/2 header compression does not index it.
    fn header(&self) -> MetadataValue<Ascii> {
        let mut value = MetadataValue::try_from(format!("Bearer {}", self.0))
            .unwrap_or_else(|_| MetadataValue::from_static("Bearer"));
        value.set_sensitive(true);
        value
    }

    /// Returns whether `presented` is this token.
    fn matches(&self, presented: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), presented.as_bytes());
        // The length is not secret; the contents are compared without an early exit.
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0_u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token(***)")
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only: get, list, status, offsets, connector types, validation, nodes, leader.
    Viewer,
    /// Everything, including node-to-node traffic.
    Admin,
}

/// The tokens a node accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The token of the admin role, also carried by node-to-node calls.
    pub admin: Token,
    /// The token of the viewer role, if any.
    pub viewer: Option<Token>,
}

impl Tokens {
    /// Returns the role of a presented token, if it is one of ours.
    fn role_of(&self, presented: &str) -> Option<Role> {
        if self.admin.matches(presented) {
            Some(Role::Admin)
        } else if self
            .viewer
            .as_ref()
            .is_some_and(|viewer| viewer.matches(presented))
        {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Checks a call to `path` (`/package.Service/Method`) carrying `headers`.
    fn check(&self, headers: &http::HeaderMap, path: &str) -> Result<(), Status> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let rpc = path.rsplit('/').next().unwrap_or(path);
        let Some(role) = presented.and_then(|token| self.role_of(token)) else {
            debug!(rpc, "refused a call without a valid bearer token");
            return Err(Status::unauthenticated(TOKEN_REQUIRED));
        };
        if role == Role::Viewer && !viewer_may_call(path) {
            debug!(rpc, "refused a write from the viewer role");
            return Err(Status::permission_denied(format!(
                "{rpc} needs the admin role; the viewer token may only get, list and read status"
            )));
        }
        Ok(())
    }
}

/// Returns whether the viewer role may call the RPC at `path`. Anything not listed (every
/// write, every node-to-node call, and any RPC added later) needs the admin role.
pub fn viewer_may_call(path: &str) -> bool {
    const READS: &[&str] = &[
        "GetVersion",
        "GetConnector",
        "ListConnectors",
        "GetConnectorStatus",
        "GetOffsets",
        "ListConnectorTypes",
        "ValidateConfig",
        "ListNodes",
        "GetLeader",
    ];
    path.strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .is_some_and(|(service, method)| {
            service == ferry_proto::ADMIN_SERVICE_NAME && READS.contains(&method)
        })
}

/// The node's TLS certificate, key and trusted CA, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain.
    pub cert: Vec<u8>,
    /// The node's private key.
    pub key: Vec<u8>,
    /// The CA certificates a node trusts when it reaches its peers; None trusts the
    /// certificates in `cert`.
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Returns the server side: this node's identity.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key))
    }

    /// Returns the client side used towards peers: trust `--tls-ca`, else the node's own
    /// certificates.
    pub fn peer_config(&self) -> ClientTlsConfig {
        let trusted = self.ca.as_ref().unwrap_or(&self.cert);
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trusted))
    }
}

/// A node's security settings; the default is none (plain HTTP/2, no tokens).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// TLS for the node's port and its calls to peers.
    pub tls: Option<TlsFiles>,
    /// The tokens callers must present.
    pub tokens: Option<Tokens>,
}

impl Security {
    /// Returns how this node reaches its peers.
    pub fn peer_access(&self) -> PeerAccess {
        PeerAccess {
            tls: self.tls.as_ref().map(TlsFiles::peer_config),
            token: BearerToken::new(self.tokens.as_ref().map(|tokens| tokens.admin.clone())),
        }
    }

    /// Wraps `service` so it answers only callers with a token (when tokens are set).
    pub fn guard<S>(&self, service: S) -> Guarded<S> {
        Guarded {
            inner: service,
            tokens: self.tokens.clone().map(Arc::new),
        }
    }
}

/// How a node reaches its peers: over TLS or not, with the admin token or without.
#[derive(Debug, Clone, Default)]
pub struct PeerAccess {
    /// The TLS client settings; None connects over plain HTTP/2.
    pub tls: Option<ClientTlsConfig>,
    /// The token each call carries.
    pub token: BearerToken,
}

/// Adds `authorization: Bearer <token>` to each outgoing call (nothing without a token).
#[derive(Clone, Default)]
pub struct BearerToken(Option<Arc<MetadataValue<Ascii>>>);

impl BearerToken {
    /// Returns an interceptor sending `token`, if any.
    pub fn new(token: Option<Token>) -> Self {
        Self(token.map(|token| Arc::new(token.header())))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(_) => formatter.write_str("BearerToken(***)"),
            None => formatter.write_str("BearerToken(none)"),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.as_ref().clone());
        }
        Ok(request)
    }
}

/// A gRPC service that refuses calls without a valid token for their RPC before they reach
/// `S`. Without tokens it passes every call through.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Guarded<S>
where
    S: tonic::codegen::Service<
            http::Request<B>,
            Response = http::Response<Body>,
            Error = Infallible,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let checked = match &self.tokens {
            Some(tokens) => tokens.check(request.headers(), request.uri().path()),
            None => Ok(()),
        };
        match checked {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::parse(text).expect("a valid token")
    }

    fn tokens() -> Tokens {
        Tokens {
            admin: token("admin-secret"),
            viewer: Some(token("viewer-secret")),
        }
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    const CREATE: &str = "/ferry.admin.v1.Admin/CreateConnector";
    const LIST: &str = "/ferry.admin.v1.Admin/ListConnectors";
    const APPEND: &str = "/ferry.cluster.v1.Cluster/AppendEntries";

    #[test]
    fn tokens_are_trimmed_and_must_fit_a_header() {
        assert_eq!(token("abc\n"), token("abc"));
        assert!(Token::parse(" \n").is_err());
        assert!(Token::parse("two words").is_err());
        assert!(Token::parse("naïve").is_err());
        assert_eq!(format!("{:?}", token("abc")), "Token(***)");
        assert!(!format!("{:?}", tokens()).contains("secret"));
        assert!(!format!("{:?}", BearerToken::new(Some(token("abc")))).contains("abc"));
    }

    #[test]
    fn the_admin_token_may_call_everything() {
        let tokens = tokens();
        for path in [CREATE, LIST, APPEND] {
            assert!(
                tokens
                    .check(&headers(Some("Bearer admin-secret")), path)
                    .is_ok(),
                "{path}"
            );
        }
        assert!(
            tokens
                .check(&headers(Some("bearer admin-secret")), CREATE)
                .is_ok()
        );
    }

    #[test]
    fn the_viewer_token_may_only_read() {
        let tokens = tokens();
        let viewer = headers(Some("Bearer viewer-secret"));
        assert!(tokens.check(&viewer, LIST).is_ok());
        for path in [CREATE, APPEND, "/ferry.admin.v1.Admin/SomethingNew"] {
            let status = tokens.check(&viewer, path).expect_err(path);
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{path}");
            assert!(!status.message().contains("secret"), "{status:?}");
        }
        let status = tokens.check(&viewer, CREATE).expect_err("a write");
        assert!(status.message().contains("CreateConnector"), "{status:?}");
    }

    #[test]
    fn a_missing_or_unknown_token_is_unauthenticated() {
        let tokens = tokens();
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Bearer admin-secre"),
            Some("Basic admin-secret"),
            Some("admin-secret"),
        ] {
            let status = tokens
                .check(&headers(authorization), LIST)
                .expect_err("refused");
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{authorization:?}"
            );
            assert_eq!(status.message(), TOKEN_REQUIRED);
        }
    }

    #[test]
    fn viewers_read_only_admin_service_reads() {
        assert!(viewer_may_call("/ferry.admin.v1.Admin/GetConnectorStatus"));
        assert!(viewer_may_call("/ferry.admin.v1.Admin/GetVersion"));
        assert!(!viewer_may_call("/ferry.admin.v1.Admin/DeleteConnector"));
        assert!(!viewer_may_call("/ferry.admin.v1.Admin/ResetOffsets"));
        assert!(!viewer_may_call(
            "/ferry.cluster.v1.Cluster/InstanceReports"
        ));
        assert!(!viewer_may_call("/other.Admin/GetConnector"));
    }
}
