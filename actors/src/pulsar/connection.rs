//! One connection to one Pulsar broker on pulsar-rs's protocol layer: dial (TCP, optionally
//! TLS), CONNECT with authentication, request/response by request id, and topic lookup that
//! follows redirects to the owning broker.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use pulsar::message::proto::{
    self, BaseCommand, CommandConnect, CommandLookupTopic, CommandPong,
    base_command::Type as CommandType, command_lookup_topic_response::LookupType,
};
use pulsar::message::{Codec, Message as Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_util::codec::Framed;

use super::PulsarSettings;
use super::error::SessionError;

/// Pulsar's protocol version spoken here (v12 and later carry producer_ready, highest
/// sequence id and the other fields the session uses).
const PROTOCOL_VERSION: i32 = 12;
/// The broker's frame limit when it does not announce one (Pulsar's default, 5 MiB).
const DEFAULT_MAX_MESSAGE_SIZE: usize = 5 * 1024 * 1024;
/// Most lookup redirects followed before giving up.
const MAX_REDIRECTS: usize = 8;

/// Opens the TCP connections of sessions: the default dials directly; tests wrap it to keep a
/// handle on each socket and cut it.
pub trait Dialer: Send + Sync + fmt::Debug {
    /// Connects to `host:port`.
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<TcpStream>>;
}

/// Dials plain TCP with `TCP_NODELAY`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// A broker address from a `pulsar://` or `pulsar+ssl://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// True for `pulsar+ssl://`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `pulsar://host:port` or `pulsar+ssl://host:port` (a trailing slash is allowed).
    pub fn parse(url: &str) -> Result<Self, SessionError> {
        let invalid = |reason: &str| SessionError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("pulsar+ssl://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("pulsar://") {
            (false, rest)
        } else {
            return Err(invalid("must start with pulsar:// or pulsar+ssl://"));
        };
        let rest = rest.trim_end_matches('/');
        // A service URL may list several hosts; the first is used.
        let first = rest.split(',').next().unwrap_or_default();
        let (host, port) = first
            .rsplit_once(':')
            .ok_or_else(|| invalid("has no port"))?;
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        let port = port
            .parse()
            .map_err(|_| invalid("has a port that is not a number"))?;
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "pulsar+ssl" } else { "pulsar" };
        write!(formatter, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Anything a framed connection can run over (TCP or TLS over TCP).
trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An open, handshaken connection to one broker.
pub(crate) struct BrokerConnection {
    frames: Framed<Box<dyn Transport>, Codec>,
    next_request_id: u64,
    /// The broker's frame limit, from CONNECTED.
    pub(crate) max_message_size: usize,
    /// Where this connection goes.
    pub(crate) url: BrokerUrl,
}

impl fmt::Debug for BrokerConnection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BrokerConnection")
            .field("url", &self.url)
            .field("max_message_size", &self.max_message_size)
            .finish_non_exhaustive()
    }
}

impl BrokerConnection {
    /// Dials `url` and performs the CONNECT handshake, within `timeout`.
    pub(crate) async fn open(
        settings: &PulsarSettings,
        dialer: &dyn Dialer,
        url: &BrokerUrl,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let attempt =
            async {
                let tcp = dialer.dial(&url.host, url.port).await.map_err(|error| {
                    SessionError::Connect {
                        url: url.to_string(),
                        reason: error.to_string(),
                    }
                })?;
                let transport: Box<dyn Transport> = if url.tls {
                    Box::new(tls_handshake(settings, url, tcp).await?)
                } else {
                    Box::new(tcp)
                };
                let mut connection = Self {
                    frames: Framed::new(transport, Codec),
                    next_request_id: 0,
                    max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                    url: url.clone(),
                };
                connection.handshake(settings).await?;
                Ok(connection)
            };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| SessionError::Timeout {
                operation: format!("connecting to {url}"),
                after: timeout,
            })?
    }

    async fn handshake(&mut self, settings: &PulsarSettings) -> Result<(), SessionError> {
        let (auth_method_name, auth_data) = match &settings.token {
            Some(token) => (Some("token".to_owned()), Some(token.clone().into_bytes())),
            None => (None, None),
        };
        self.send(Frame {
            command: BaseCommand {
                r#type: CommandType::Connect as i32,
                connect: Some(CommandConnect {
                    client_version: format!("ferry-{}", env!("CARGO_PKG_VERSION")),
                    auth_method_name,
                    auth_data,
                    protocol_version: Some(PROTOCOL_VERSION),
                    ..Default::default()
                }),
                ..Default::default()
            },
            payload: None,
        })
        .await?;
        loop {
            let command = self.receive().await?;
            match command.r#type() {
                CommandType::Connected => {
                    if let Some(size) = command
                        .connected
                        .and_then(|connected| connected.max_message_size)
                        .and_then(|size| usize::try_from(size).ok())
                    {
                        self.max_message_size = size;
                    }
                    return Ok(());
                }
                CommandType::Error => {
                    let error = command.error.unwrap_or_default();
                    return Err(SessionError::Broker {
                        operation: format!("connecting to {}", self.url),
                        error: error.error(),
                        message: error.message,
                    });
                }
                CommandType::Ping => self.pong().await?,
                other => {
                    return Err(SessionError::Protocol(format!(
                        "expected CONNECTED from {}, got {other:?}",
                        self.url
                    )));
                }
            }
        }
    }

    /// Returns a fresh request id for this connection.
    pub(crate) fn next_request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// Writes one frame.
    pub(crate) async fn send(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.frames
            .send(frame)
            .await
            .map_err(|error| SessionError::ConnectionLost(format!("{}: {error}", self.url)))
    }

    /// Queues one frame without flushing (callers flush once after a burst).
    pub(crate) async fn feed(&mut self, frame: Frame) -> Result<(), SessionError> {
        self.frames
            .feed(frame)
            .await
            .map_err(|error| SessionError::ConnectionLost(format!("{}: {error}", self.url)))
    }

    /// Flushes queued frames.
    pub(crate) async fn flush(&mut self) -> Result<(), SessionError> {
        self.frames
            .flush()
            .await
            .map_err(|error| SessionError::ConnectionLost(format!("{}: {error}", self.url)))
    }

    /// Reads the next frame's command; a closed connection is `ConnectionLost`.
    pub(crate) async fn receive(&mut self) -> Result<BaseCommand, SessionError> {
        match self.frames.next().await {
            Some(Ok(frame)) => Ok(frame.command),
            Some(Err(error)) => Err(SessionError::ConnectionLost(format!(
                "{}: {error}",
                self.url
            ))),
            None => Err(SessionError::ConnectionLost(format!(
                "{}: closed by the broker",
                self.url
            ))),
        }
    }

    /// Answers a broker PING.
    pub(crate) async fn pong(&mut self) -> Result<(), SessionError> {
        self.send(Frame {
            command: BaseCommand {
                r#type: CommandType::Pong as i32,
                pong: Some(CommandPong {}),
                ..Default::default()
            },
            payload: None,
        })
        .await
    }

    /// Sends a PING (liveness probe).
    pub(crate) async fn ping(&mut self) -> Result<(), SessionError> {
        self.send(Frame {
            command: BaseCommand {
                r#type: CommandType::Ping as i32,
                ping: Some(proto::CommandPing {}),
                ..Default::default()
            },
            payload: None,
        })
        .await
    }

    /// Sends `frame` and waits for the response carrying `request_id`, answering pings on the
    /// way. Only for set-up requests, when nothing else is in flight on this connection.
    pub(crate) async fn request(
        &mut self,
        frame: Frame,
        request_id: u64,
        operation: &str,
        timeout: Duration,
    ) -> Result<BaseCommand, SessionError> {
        tokio::time::timeout(timeout, self.send(frame))
            .await
            .map_err(|_| SessionError::Timeout {
                operation: operation.to_owned(),
                after: timeout,
            })??;
        self.request_more(request_id, operation, timeout).await
    }

    /// Waits for the (next) response to `request_id`, answering pings on the way; a broker may
    /// answer one request twice, as with a producer that is queued and then ready.
    pub(crate) async fn request_more(
        &mut self,
        request_id: u64,
        operation: &str,
        timeout: Duration,
    ) -> Result<BaseCommand, SessionError> {
        let wait = async {
            loop {
                let command = self.receive().await?;
                if command.r#type() == CommandType::Ping {
                    self.pong().await?;
                } else if response_request_id(&command) == Some(request_id) {
                    return Ok(command);
                } else {
                    tracing::debug!(
                        operation,
                        command = ?command.r#type(),
                        "ignoring an unrelated frame while waiting for a response"
                    );
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SessionError::Timeout {
                operation: operation.to_owned(),
                after: timeout,
            })?
    }

    /// Looks `topic` up from this connection's broker, following redirects (each on a new
    /// connection), and returns a connection to the broker that owns the topic: this one when
    /// it already is the owner.
    pub(crate) async fn lookup_owner(
        mut self,
        settings: &PulsarSettings,
        dialer: &dyn Dialer,
        topic: &str,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let mut authoritative = false;
        for _ in 0..MAX_REDIRECTS {
            let request_id = self.next_request_id();
            let lookup = Frame {
                command: BaseCommand {
                    r#type: CommandType::Lookup as i32,
                    lookup_topic: Some(CommandLookupTopic {
                        topic: topic.to_owned(),
                        request_id,
                        authoritative: Some(authoritative),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                payload: None,
            };
            let operation = format!("looking up {topic}");
            let response = self
                .request(lookup, request_id, &operation, timeout)
                .await?;
            let Some(answer) = response.lookup_topic_response else {
                return Err(SessionError::Protocol(format!(
                    "lookup of {topic} answered with {:?}",
                    response.r#type()
                )));
            };
            let target_url = if self.url.tls {
                answer.broker_service_url_tls.clone()
            } else {
                answer.broker_service_url.clone()
            };
            match answer.response() {
                LookupType::Failed => {
                    return Err(SessionError::Broker {
                        operation,
                        error: answer.error(),
                        message: answer.message.unwrap_or_default(),
                    });
                }
                LookupType::Connect if answer.proxy_through_service_url() => return Ok(self),
                LookupType::Connect | LookupType::Redirect => {
                    let target = BrokerUrl::parse(&target_url.ok_or_else(|| {
                        SessionError::Protocol(format!("lookup of {topic} named no broker"))
                    })?)?;
                    let connect = answer.response() == LookupType::Connect;
                    authoritative = answer.authoritative();
                    if target != self.url {
                        self = Self::open(settings, dialer, &target, timeout).await?;
                    }
                    if connect {
                        return Ok(self);
                    }
                }
            }
        }
        Err(SessionError::Protocol(format!(
            "lookup of {topic} redirected more than {MAX_REDIRECTS} times"
        )))
    }
}

/// The request id a response frame answers, if it is a response.
pub(crate) fn response_request_id(command: &BaseCommand) -> Option<u64> {
    match command.r#type() {
        CommandType::Success => command.success.as_ref().map(|c| c.request_id),
        CommandType::Error => command.error.as_ref().map(|c| c.request_id),
        CommandType::ProducerSuccess => command.producer_success.as_ref().map(|c| c.request_id),
        CommandType::LookupResponse => command.lookup_topic_response.as_ref().map(|c| c.request_id),
        CommandType::PartitionedMetadataResponse => command
            .partition_metadata_response
            .as_ref()
            .map(|c| c.request_id),
        _ => None,
    }
}

async fn tls_handshake(
    settings: &PulsarSettings,
    url: &BrokerUrl,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SessionError> {
    tls_connect(settings.tls_trust_certs_file.as_deref(), &url.host, tcp)
        .await
        .map_err(|reason| SessionError::Tls {
            url: url.to_string(),
            reason,
        })
}

/// Wraps `tcp` in TLS to `host`, trusting the Mozilla roots plus the CAs in `trust_file`.
pub(crate) async fn tls_connect(
    trust_file: Option<&std::path::Path>,
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = trust_file {
        use rustls_pki_types::pem::PemObject as _;
        let shown = path.display();
        let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|error| format!("cannot read {shown}: {error}"))?;
        for certificate in certificates {
            let certificate =
                certificate.map_err(|error| format!("bad certificate in {shown}: {error}"))?;
            roots
                .add(certificate)
                .map_err(|error| format!("unusable certificate in {shown}: {error}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|error| format!("invalid server name: {error}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            BrokerUrl::parse("pulsar://127.0.0.1:6650/").expect("valid"),
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".to_owned(),
                port: 6650
            }
        );
        let tls = BrokerUrl::parse("pulsar+ssl://broker-1.example:6651").expect("valid");
        assert!(tls.tls);
        assert_eq!(tls.to_string(), "pulsar+ssl://broker-1.example:6651");
        let first = BrokerUrl::parse("pulsar://a:1,b:2").expect("valid");
        assert_eq!((first.host.as_str(), first.port), ("a", 1));
    }

    #[test]
    fn refuses_malformed_broker_urls_naming_the_reason() {
        for (url, reason) in [
            ("http://x:1", "must start with pulsar:// or pulsar+ssl://"),
            ("pulsar://host", "has no port"),
            ("pulsar://:6650", "has no host"),
            ("pulsar://host:port", "has a port that is not a number"),
        ] {
            let error = BrokerUrl::parse(url).expect_err(url);
            assert_eq!(
                error.to_string(),
                format!("invalid pulsar url {url:?}: {reason}")
            );
        }
    }
}
