//! `ferry serve`'s settings: flags and `FERRY_*` environment variables (through clap), a TOML
//! file (`--config`), and the node identity stored in the data directory, merged and validated
//! into [`NodeSettings`]. Flags and environment win over the file. A bad value stops start-up
//! with one line naming the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::meta::node::DEFAULT_JOIN_TIMEOUT;
use crate::meta::state::NodeId;
use crate::security::{Security, TlsFiles, Token, Tokens};

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE: &str = "node.toml";

/// Settings as given: each may be missing. Also the shape of the `--config` TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenSettings {
    /// This node's id, unique in the cluster (stored in the data directory on first start).
    pub node_id: Option<NodeId>,
    /// The gRPC address to listen on (admin and cluster traffic).
    pub listen: Option<SocketAddr>,
    /// The address other nodes and clients reach this node at, when it differs from `listen`.
    pub advertise: Option<String>,
    /// Where the metadata store and the node identity live.
    pub data_dir: Option<PathBuf>,
    /// The Pulsar service URL (pulsar://host:6650).
    pub pulsar_url: Option<String>,
    /// The Pulsar admin URL (http://host:8080).
    pub pulsar_admin_url: Option<String>,
    /// Start a new one-node cluster.
    pub bootstrap: Option<bool>,
    /// Join the cluster that the node at this address belongs to.
    pub join: Option<String>,
    /// How long, in seconds, a join keeps trying (the seed not listening yet, no leader yet,
    /// other nodes joining) before the node gives up (default 120).
    pub join_timeout_secs: Option<u64>,
    /// PEM file of the node's TLS certificate (chain); with `tls_key`, the node serves TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the node's TLS private key.
    pub tls_key: Option<PathBuf>,
    /// PEM file of the CA the node trusts when it reaches other nodes (default: `tls_cert`).
    pub tls_ca: Option<PathBuf>,
    /// File holding the admin token; with it, every admin and node-to-node call needs a token.
    pub admin_token_file: Option<PathBuf>,
    /// File holding the viewer token (get, list and status only).
    pub viewer_token_file: Option<PathBuf>,
    /// The admin token itself (`FERRY_ADMIN_TOKEN`; never read from the config file).
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// The viewer token itself (`FERRY_VIEWER_TOKEN`; never read from the config file).
    #[serde(skip)]
    pub viewer_token: Option<String>,
}

impl GivenSettings {
    /// Returns these settings with every missing one taken from `fallback`.
    pub fn or(self, fallback: Self) -> Self {
        Self {
            node_id: self.node_id.or(fallback.node_id),
            listen: self.listen.or(fallback.listen),
            advertise: self.advertise.or(fallback.advertise),
            data_dir: self.data_dir.or(fallback.data_dir),
            pulsar_url: self.pulsar_url.or(fallback.pulsar_url),
            pulsar_admin_url: self.pulsar_admin_url.or(fallback.pulsar_admin_url),
            bootstrap: self.bootstrap.or(fallback.bootstrap),
            join: self.join.or(fallback.join),
            join_timeout_secs: self.join_timeout_secs.or(fallback.join_timeout_secs),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
            tls_ca: self.tls_ca.or(fallback.tls_ca),
            admin_token_file: self.admin_token_file.or(fallback.admin_token_file),
            viewer_token_file: self.viewer_token_file.or(fallback.viewer_token_file),
            admin_token: self.admin_token.or(fallback.admin_token),
            viewer_token: self.viewer_token.or(fallback.viewer_token),
        }
    }
}

/// How a node enters its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Starts a new one-node cluster (nothing to do when the store already holds one).
    Bootstrap,
    /// Joins through the node at this address (nothing to do when the store already belongs).
    Join(String),
    /// Resumes the cluster its data directory belongs to.
    Resume,
}

/// The metadata-store part of a node's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: NodeId,
    /// The advertised address, when given or stored (else the bound listen address).
    pub advertise: Option<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// How the node enters its cluster.
    pub membership: Membership,
    /// How long a join keeps trying before the node gives up.
    pub join_timeout: Duration,
}

/// Validated settings of `ferry serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// The Pulsar service URL.
    pub pulsar_url: Option<String>,
    /// The Pulsar admin URL.
    pub pulsar_admin_url: Option<String>,
    /// The metadata store's settings; None runs the admin API alone (no `--data-dir`).
    pub cluster: Option<ClusterSettings>,
    /// TLS and tokens; the default serves plain HTTP/2 to anyone.
    pub security: Security,
}

/// A setting that stops start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The config file cannot be read.
    #[error("cannot read config file {path} (--config): {reason}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config file is not valid.
    #[error("invalid config file {path} (--config): {reason}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        reason: String,
    },
    /// A setting has a bad value.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting, as its flag.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The stored identity cannot be read or written.
    #[error("node identity {path} (--data-dir): {reason}")]
    Identity {
        /// The identity file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Reads a `--config` file.
pub fn read_config_file(path: &Path) -> Result<GivenSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|error| SettingsError::ReadConfig {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    parse_config(path, &text)
}

fn parse_config(path: &Path, text: &str) -> Result<GivenSettings, SettingsError> {
    toml::from_str(text).map_err(|error: toml::de::Error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = error.message().replace('\n', " ");
        SettingsError::ParseConfig {
            path: path.to_owned(),
            reason: match line {
                Some(line) => format!("line {line}: {}", message.trim()),
                None => message.trim().to_owned(),
            },
        }
    })
}

/// The node identity stored in the data directory on first start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The node's id.
    pub node_id: NodeId,
    /// Its advertised address.
    pub advertise: String,
}

/// Reads the identity stored in `data_dir`, if any.
pub fn read_identity(data_dir: &Path) -> Result<Option<Identity>, SettingsError> {
    let path = data_dir.join(IDENTITY_FILE);
    let identity_error = |reason: String| SettingsError::Identity {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|error: toml::de::Error| identity_error(error.message().replace('\n', " "))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(identity_error(error.to_string())),
    }
}

/// Stores `identity` in `data_dir`, durably (write, fsync, rename).
pub fn write_identity(data_dir: &Path, identity: &Identity) -> Result<(), SettingsError> {
    use std::io::Write;
    let path = data_dir.join(IDENTITY_FILE);
    let identity_error = |error: std::io::Error| SettingsError::Identity {
        path: path.clone(),
        reason: error.to_string(),
    };
    std::fs::create_dir_all(data_dir).map_err(identity_error)?;
    let temporary = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(identity_error)?;
    // Written by hand: the address is quoted with Debug, which escapes like a TOML basic string
    // for anything an address holds.
    writeln!(
        file,
        "# Written by ferry on first start; do not edit.\nnode_id = {}\nadvertise = {:?}",
        identity.node_id, identity.advertise
    )
    .map_err(identity_error)?;
    file.sync_all().map_err(identity_error)?;
    std::fs::rename(&temporary, &path).map_err(identity_error)?;
    std::fs::File::open(data_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(identity_error)?;
    Ok(())
}

/// Validates `given` (flags and environment already merged with the config file) against the
/// identity stored in its data directory.
pub fn resolve(
    given: GivenSettings,
    default_listen: SocketAddr,
) -> Result<NodeSettings, SettingsError> {
    let listen = given.listen.unwrap_or(default_listen);
    let security = resolve_security(&given)?;
    if let Some(url) = &given.pulsar_url
        && !(url.starts_with("pulsar://") || url.starts_with("pulsar+ssl://"))
    {
        return Err(invalid(
            "--pulsar-url",
            format!("{url:?} is not a pulsar:// or pulsar+ssl:// url"),
        ));
    }
    if let Some(url) = &given.pulsar_admin_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid(
            "--pulsar-admin-url",
            format!("{url:?} is not an http:// or https:// url"),
        ));
    }
    if let Some(advertise) = &given.advertise {
        validate_address("--advertise", advertise)?;
    }
    if let Some(seed) = &given.join {
        validate_address("--join", seed)?;
    }
    if given.node_id == Some(0) {
        return Err(invalid("--node-id", "must be at least 1"));
    }
    let join_timeout = match given.join_timeout_secs {
        Some(0) => return Err(invalid("--join-timeout-secs", "must be at least 1")),
        Some(seconds) => Duration::from_secs(seconds),
        None => DEFAULT_JOIN_TIMEOUT,
    };
    let bootstrap = given.bootstrap.unwrap_or(false);
    if bootstrap && given.join.is_some() {
        return Err(invalid("--bootstrap", "cannot be combined with --join"));
    }
    let Some(data_dir) = given.data_dir else {
        if bootstrap || given.join.is_some() {
            return Err(invalid(
                "--data-dir",
                "is required with --bootstrap and --join",
            ));
        }
        return Ok(NodeSettings {
            listen,
            pulsar_url: given.pulsar_url,
            pulsar_admin_url: given.pulsar_admin_url,
            cluster: None,
            security,
        });
    };
    let stored = read_identity(&data_dir)?;
    let node_id = match (&stored, given.node_id) {
        (Some(stored), Some(given)) if stored.node_id != given => {
            return Err(invalid(
                "--node-id",
                format!(
                    "{given} does not match node id {} stored in {}",
                    stored.node_id,
                    data_dir.display()
                ),
            ));
        }
        (Some(stored), _) => stored.node_id,
        (None, Some(given)) => given,
        (None, None) => {
            return Err(invalid("--node-id", "is required for a new node"));
        }
    };
    let membership = match (bootstrap, given.join) {
        (true, _) => Membership::Bootstrap,
        (false, Some(seed)) => Membership::Join(seed),
        (false, None) if stored.is_some() => Membership::Resume,
        (false, None) => {
            return Err(invalid(
                "--data-dir",
                format!(
                    "{} holds no node yet: start it with --bootstrap or --join",
                    data_dir.display()
                ),
            ));
        }
    };
    let advertise = given
        .advertise
        .or(stored.map(|identity| identity.advertise));
    Ok(NodeSettings {
        listen,
        pulsar_url: given.pulsar_url,
        pulsar_admin_url: given.pulsar_admin_url,
        cluster: Some(ClusterSettings {
            node_id,
            advertise,
            data_dir,
            membership,
            join_timeout,
        }),
        security,
    })
}

/// Reads and checks the TLS files and tokens. Errors name the setting, never a token's value.
fn resolve_security(given: &GivenSettings) -> Result<Security, SettingsError> {
    let tls = match (&given.tls_cert, &given.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: read_pem("--tls-cert", cert, "CERTIFICATE")?,
            key: read_pem("--tls-key", key, "PRIVATE KEY")?,
            ca: given
                .tls_ca
                .as_deref()
                .map(|ca| read_pem("--tls-ca", ca, "CERTIFICATE"))
                .transpose()?,
        }),
        (Some(_), None) => return Err(invalid("--tls-key", "is required with --tls-cert")),
        (None, Some(_)) => return Err(invalid("--tls-cert", "is required with --tls-key")),
        (None, None) if given.tls_ca.is_some() => {
            return Err(invalid(
                "--tls-ca",
                "needs --tls-cert and --tls-key (a node reaches its peers over TLS only when it serves TLS)",
            ));
        }
        (None, None) => None,
    };
    let admin = token(
        ("--admin-token-file", &given.admin_token_file),
        ("FERRY_ADMIN_TOKEN", &given.admin_token),
    )?;
    let viewer = token(
        ("--viewer-token-file", &given.viewer_token_file),
        ("FERRY_VIEWER_TOKEN", &given.viewer_token),
    )?;
    let tokens = match (admin, viewer) {
        (Some(admin), viewer) => {
            if viewer.as_ref() == Some(&admin) {
                return Err(invalid(
                    "--viewer-token-file",
                    "must differ from the admin token",
                ));
            }
            Some(Tokens { admin, viewer })
        }
        (None, Some(_)) => {
            return Err(invalid(
                "--viewer-token-file",
                "needs an admin token too (--admin-token-file or FERRY_ADMIN_TOKEN)",
            ));
        }
        (None, None) => None,
    };
    Ok(Security { tls, tokens })
}

/// Reads a PEM file that must hold a block whose label ends with `label`.
fn read_pem(setting: &'static str, path: &Path, label: &str) -> Result<Vec<u8>, SettingsError> {
    let pem = std::fs::read(path)
        .map_err(|error| invalid(setting, format!("cannot read {}: {error}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    let holds = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !holds {
        return Err(invalid(
            setting,
            format!("{} holds no PEM {}", path.display(), label.to_lowercase()),
        ));
    }
    Ok(pem)
}

/// Returns the token given by file or by value (not both), checked.
fn token(
    (file_setting, file): (&'static str, &Option<PathBuf>),
    (value_setting, value): (&'static str, &Option<String>),
) -> Result<Option<Token>, SettingsError> {
    match (file, value) {
        (Some(_), Some(_)) => Err(invalid(
            file_setting,
            format!("cannot be combined with {value_setting}"),
        )),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                invalid(
                    file_setting,
                    format!("cannot read {}: {error}", path.display()),
                )
            })?;
            Token::parse(&text).map(Some).map_err(|reason| {
                invalid(
                    file_setting,
                    format!("the token in {} {reason}", path.display()),
                )
            })
        }
        (None, Some(text)) => Token::parse(text)
            .map(Some)
            .map_err(|reason| invalid(value_setting, format!("the token {reason}"))),
        (None, None) => Ok(None),
    }
}

fn validate_address(setting: &'static str, address: &str) -> Result<(), SettingsError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(())
    } else {
        Err(invalid(setting, format!("{address:?} is not host:port")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> SocketAddr {
        "127.0.0.1:7600".parse().unwrap()
    }

    #[test]
    fn without_a_data_dir_the_node_serves_the_admin_api_alone() {
        let settings = resolve(GivenSettings::default(), listen()).unwrap();
        assert_eq!(settings.cluster, None);
        assert_eq!(settings.listen, listen());
    }

    #[test]
    fn a_new_node_needs_an_id_and_a_way_in() {
        let dir = tempfile::tempdir().unwrap();
        let given = GivenSettings {
            data_dir: Some(dir.path().to_owned()),
            bootstrap: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(given.clone(), listen()).unwrap_err().to_string(),
            "invalid --node-id: is required for a new node"
        );
        let no_way_in = GivenSettings {
            node_id: Some(1),
            bootstrap: None,
            ..given
        };
        assert!(
            resolve(no_way_in, listen())
                .unwrap_err()
                .to_string()
                .starts_with("invalid --data-dir:")
        );
    }

    #[test]
    fn a_stored_identity_is_used_and_a_conflicting_id_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_identity(
            dir.path(),
            &Identity {
                node_id: 3,
                advertise: "10.0.0.3:7600".to_owned(),
            },
        )
        .unwrap();
        let resumed = resolve(
            GivenSettings {
                data_dir: Some(dir.path().to_owned()),
                ..Default::default()
            },
            listen(),
        )
        .unwrap();
        let cluster = resumed.cluster.unwrap();
        assert_eq!(cluster.node_id, 3);
        assert_eq!(cluster.advertise.as_deref(), Some("10.0.0.3:7600"));
        assert_eq!(cluster.membership, Membership::Resume);
        assert_eq!(cluster.join_timeout, DEFAULT_JOIN_TIMEOUT);
        let conflicting = GivenSettings {
            data_dir: Some(dir.path().to_owned()),
            node_id: Some(4),
            ..Default::default()
        };
        let error = resolve(conflicting, listen()).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid --node-id: 4 does not match node id 3"),
            "{error}"
        );
    }

    #[test]
    fn a_config_file_error_is_one_line_naming_the_field_and_line() {
        let error = parse_config(
            Path::new("ferry.toml"),
            "node_id = 1\nlisten = \"127.0.0.1:7600\"\ncolour = \"blue\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(
            error.starts_with("invalid config file ferry.toml (--config): line 3:"),
            "{error}"
        );
        assert!(error.contains("colour"), "{error}");
        let error = parse_config(Path::new("ferry.toml"), "listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let file = parse_config(
            Path::new("ferry.toml"),
            "node_id = 1\nlisten = \"127.0.0.1:7601\"\npulsar_url = \"pulsar://file:6650\"\n",
        )
        .unwrap();
        let flags = GivenSettings {
            listen: Some("127.0.0.1:7602".parse().unwrap()),
            ..Default::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.listen, Some("127.0.0.1:7602".parse().unwrap()));
        assert_eq!(merged.node_id, Some(1));
        assert_eq!(merged.pulsar_url.as_deref(), Some("pulsar://file:6650"));
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (given, setting) in [
            (
                GivenSettings {
                    pulsar_url: Some("http://x".to_owned()),
                    ..Default::default()
                },
                "--pulsar-url",
            ),
            (
                GivenSettings {
                    pulsar_admin_url: Some("pulsar://x".to_owned()),
                    ..Default::default()
                },
                "--pulsar-admin-url",
            ),
            (
                GivenSettings {
                    advertise: Some("no-port".to_owned()),
                    ..Default::default()
                },
                "--advertise",
            ),
            (
                GivenSettings {
                    node_id: Some(0),
                    ..Default::default()
                },
                "--node-id",
            ),
            (
                GivenSettings {
                    bootstrap: Some(true),
                    ..Default::default()
                },
                "--data-dir",
            ),
            (
                GivenSettings {
                    join_timeout_secs: Some(0),
                    ..Default::default()
                },
                "--join-timeout-secs",
            ),
        ] {
            let error = resolve(given, listen()).unwrap_err().to_string();
            assert!(error.starts_with(&format!("invalid {setting}:")), "{error}");
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let admin_file = write(dir.path(), "admin", "s3cret-admin\n");
        let settings = resolve(
            GivenSettings {
                admin_token_file: Some(admin_file.clone()),
                viewer_token: Some("s3cret-viewer".to_owned()),
                ..Default::default()
            },
            listen(),
        )
        .unwrap();
        let tokens = settings.security.tokens.clone().unwrap();
        assert_eq!(tokens.admin, Token::parse("s3cret-admin").unwrap());
        assert_eq!(tokens.viewer, Some(Token::parse("s3cret-viewer").unwrap()));
        assert!(!format!("{settings:?}").contains("s3cret"));

        for (given, setting) in [
            (
                GivenSettings {
                    admin_token_file: Some(admin_file),
                    admin_token: Some("s3cret-other".to_owned()),
                    ..Default::default()
                },
                "--admin-token-file",
            ),
            (
                GivenSettings {
                    viewer_token: Some("s3cret-viewer".to_owned()),
                    ..Default::default()
                },
                "--viewer-token-file",
            ),
            (
                GivenSettings {
                    admin_token: Some("s3cret-same".to_owned()),
                    viewer_token: Some("s3cret-same".to_owned()),
                    ..Default::default()
                },
                "--viewer-token-file",
            ),
            (
                GivenSettings {
                    admin_token: Some("s3cret two words".to_owned()),
                    ..Default::default()
                },
                "FERRY_ADMIN_TOKEN",
            ),
            (
                GivenSettings {
                    admin_token_file: Some(write(dir.path(), "empty", "\n")),
                    ..Default::default()
                },
                "--admin-token-file",
            ),
            (
                GivenSettings {
                    admin_token_file: Some(dir.path().join("missing")),
                    ..Default::default()
                },
                "--admin-token-file",
            ),
        ] {
            let error = resolve(given, listen()).unwrap_err().to_string();
            assert!(error.starts_with(&format!("invalid {setting}:")), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(
            dir.path(),
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let key = write(
            dir.path(),
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let settings = resolve(
            GivenSettings {
                tls_cert: Some(cert.clone()),
                tls_key: Some(key.clone()),
                ..Default::default()
            },
            listen(),
        )
        .unwrap();
        let tls = settings.security.tls.unwrap();
        assert_eq!(tls.ca, None);
        for (given, setting) in [
            (
                GivenSettings {
                    tls_cert: Some(cert.clone()),
                    ..Default::default()
                },
                "--tls-key",
            ),
            (
                GivenSettings {
                    tls_key: Some(key.clone()),
                    ..Default::default()
                },
                "--tls-cert",
            ),
            (
                GivenSettings {
                    tls_ca: Some(cert.clone()),
                    ..Default::default()
                },
                "--tls-ca",
            ),
            (
                GivenSettings {
                    tls_cert: Some(key.clone()),
                    tls_key: Some(key),
                    ..Default::default()
                },
                "--tls-cert",
            ),
            (
                GivenSettings {
                    tls_cert: Some(cert),
                    tls_key: Some(dir.path().join("missing.pem")),
                    ..Default::default()
                },
                "--tls-key",
            ),
        ] {
            let error = resolve(given, listen()).unwrap_err().to_string();
            assert!(error.starts_with(&format!("invalid {setting}:")), "{error}");
        }
    }
}
