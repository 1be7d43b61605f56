//! The real Pulsar broker the tests run against.
//!
//! `deploy/pulsar/standalone.sh start` starts one on 127.0.0.1 (binary port 6650, HTTP 8080),
//! which are the defaults here; `PULSAR_URL` and `PULSAR_ADMIN_URL` point the tests elsewhere.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable naming the broker's service URL.
pub const PULSAR_URL_VAR: &str = "PULSAR_URL";
/// Environment variable naming the broker's admin REST URL.
pub const PULSAR_ADMIN_URL_VAR: &str = "PULSAR_ADMIN_URL";
/// Environment variable naming the broker's TLS service URL.
pub const PULSAR_TLS_URL_VAR: &str = "PULSAR_TLS_URL";
/// Environment variable naming the PEM file of the CA that signed the broker's certificate.
pub const PULSAR_TLS_TRUST_CERTS_VAR: &str = "PULSAR_TLS_TRUST_CERTS";
/// TLS service URL used when `PULSAR_TLS_URL` is not set.
pub const DEFAULT_PULSAR_TLS_URL: &str = "pulsar+ssl://127.0.0.1:6651";
/// Service URL used when `PULSAR_URL` is not set.
pub const DEFAULT_PULSAR_URL: &str = "pulsar://127.0.0.1:6650";
/// Admin REST URL used when `PULSAR_ADMIN_URL` is not set.
pub const DEFAULT_PULSAR_ADMIN_URL: &str = "http://127.0.0.1:8080";

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses of a broker that answered its health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Service URL for clients, `pulsar://host:port`.
    pub url: String,
    /// Admin REST base URL, `http://host:port`.
    pub admin_url: String,
    /// Service URL with TLS, `pulsar+ssl://host:port`.
    pub tls_url: String,
    /// PEM file of the CA that signed the broker's TLS certificate.
    pub tls_trust_certs_file: std::path::PathBuf,
}

/// Returns the test broker, checked once per test process.
///
/// # Panics
/// When the broker's binary port or its admin health check does not answer: a test that needs
/// Pulsar must fail loudly, never pass by skipping.
pub fn broker() -> Broker {
    static CHECKED: OnceLock<Result<Broker, String>> = OnceLock::new();
    match CHECKED.get_or_init(|| {
        let url = env_or(PULSAR_URL_VAR, DEFAULT_PULSAR_URL);
        let admin_url = env_or(PULSAR_ADMIN_URL_VAR, DEFAULT_PULSAR_ADMIN_URL);
        check(&url, &admin_url).map(|()| Broker {
            url,
            admin_url,
            tls_url: env_or(PULSAR_TLS_URL_VAR, DEFAULT_PULSAR_TLS_URL),
            tls_trust_certs_file: std::env::var_os(PULSAR_TLS_TRUST_CERTS_VAR)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(default_trust_certs_file),
        })
    }) {
        Ok(broker) => broker.clone(),
        Err(reason) => panic!(
            "the Pulsar broker is not reachable: {reason}. Start it with \
             `deploy/pulsar/standalone.sh start`, or point {PULSAR_URL_VAR} and \
             {PULSAR_ADMIN_URL_VAR} at a running broker"
        ),
    }
}

/// Where `deploy/pulsar/standalone.sh` keeps its test CA (it honours the same variables).
fn default_trust_certs_file() -> std::path::PathBuf {
    let state_dir = std::env::var_os("FERRY_PULSAR_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("FERRY_CACHE_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/ferry")
                });
            cache.join("pulsar-standalone")
        });
    state_dir.join("tls/ca.cert.pem")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Checks that the binary port accepts TCP and that the admin health check answers `ok`.
fn check(url: &str, admin_url: &str) -> Result<(), String> {
    let service = url
        .strip_prefix("pulsar://")
        .ok_or_else(|| format!("{PULSAR_URL_VAR}={url:?} must start with pulsar://"))?;
    connect(service.trim_end_matches('/'))
        .map_err(|error| format!("{PULSAR_URL_VAR}={url}: {error}"))?;
    let (status, body) = http_get(admin_url, "/admin/v2/brokers/health")
        .map_err(|error| format!("{PULSAR_ADMIN_URL_VAR}={admin_url}: {error}"))?;
    if status != 200 || body.trim() != "ok" {
        return Err(format!(
            "{PULSAR_ADMIN_URL_VAR}={admin_url}: health check answered {status} {:?}",
            body.trim()
        ));
    }
    Ok(())
}

fn connect(host_port: &str) -> Result<TcpStream, String> {
    let addresses = host_port
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host_port}: {error}"))?;
    let mut last_error = format!("{host_port} resolves to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, CHECK_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = format!("cannot connect to {address}: {error}"),
        }
    }
    Err(last_error)
}

/// Issues a plain HTTP/1.1 GET and returns the status code and body. Enough for the broker's
/// admin REST health and policy endpoints in tests; not a general HTTP client.
pub fn http_get(base_url: &str, path: &str) -> Result<(u16, String), String> {
    http_request("GET", base_url, path, None)
}

/// Issues a plain HTTP/1.1 request, with a JSON body when given, and returns the status code
/// and body (tests use it to set up namespaces and policies through the admin REST API).
pub fn http_request(
    method: &str,
    base_url: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<(u16, String), String> {
    let host_port = base_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base_url:?} must start with http://"))?
        .trim_end_matches('/');
    let mut stream = connect(host_port)?;
    stream
        .set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CHECK_TIMEOUT)))
        .map_err(|error| error.to_string())?;
    let body = json_body.unwrap_or_default();
    let content_type = if json_body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("{method} {path}: {error}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| format!("{method} {path}: {error}"))?;
    parse_response(&response)
        .ok_or_else(|| format!("{method} {path}: malformed response {response:?}"))
}

fn parse_response(response: &str) -> Option<(u16, String)> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn decode_chunked(mut body: &str) -> Option<String> {
    let mut decoded = String::new();
    loop {
        let (size_line, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(decoded);
        }
        decoded.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_response() {
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
        assert_eq!(parse_response(response), Some((200, "ok".to_owned())));
    }

    #[test]
    fn parses_a_chunked_response() {
        let response = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nfound\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(response),
            Some((404, "not found".to_owned()))
        );
    }

    #[test]
    fn refuses_a_truncated_response() {
        assert_eq!(parse_response("HTTP/1.1 200 OK\r\n"), None);
        assert_eq!(
            parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc"),
            None
        );
    }

    #[test]
    fn an_unreachable_broker_is_an_error_that_names_the_variable() {
        // Port 1 on loopback is never a Pulsar broker; the check must refuse it.
        let error = check("pulsar://127.0.0.1:1", DEFAULT_PULSAR_ADMIN_URL)
            .expect_err("nothing listens on port 1");
        assert!(
            error.starts_with("PULSAR_URL=pulsar://127.0.0.1:1"),
            "{error}"
        );
        let error =
            check("http://127.0.0.1:6650", DEFAULT_PULSAR_ADMIN_URL).expect_err("wrong scheme");
        assert!(error.contains("must start with pulsar://"), "{error}");
    }
}
