//! The real PostgreSQL server the `postgres` sink's tests run against.
//!
//! `deploy/postgres/postgres.sh start` starts one on 127.0.0.1:5432 with a user `ferry`
//! (password `ferry`) owning a database `ferry`, which is the default here;
//! `FERRY_TEST_PG_URL` points the tests elsewhere (the script prints the URL it serves, for
//! example on 55432 when 5432 was taken).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// Environment variable naming the server's URL.
pub const PG_URL_VAR: &str = "FERRY_TEST_PG_URL";
/// URL used when `FERRY_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://ferry:ferry@127.0.0.1:5432/ferry";

const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns the test server's URL (`postgres://user:password@host:port/database`), checked
/// once per test process.
///
/// # Panics
/// When nothing that speaks PostgreSQL's protocol answers at its host and port: a test that
/// needs PostgreSQL must fail loudly, never pass by skipping.
pub fn pg_url() -> String {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    match CHECKED.get_or_init(|| {
        let url = std::env::var(PG_URL_VAR)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_PG_URL.to_owned());
        check(&url).map(|()| url)
    }) {
        Ok(url) => url.clone(),
        Err(reason) => panic!(
            "PostgreSQL not reachable at {reason}: run deploy/postgres/postgres.sh start, or \
             point {PG_URL_VAR} at a running server"
        ),
    }
}

/// Returns `host:port` of a `postgres://[user[:password]@]host[:port][/database]` URL.
fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{PG_URL_VAR}={url:?} must start with postgres://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    if host_port.is_empty() {
        return Err(format!("{PG_URL_VAR}={url:?} names no host"));
    }
    Ok(if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    })
}

/// Connects and sends PostgreSQL's SSLRequest: a server answers one byte, `S` or `N`, so this
/// tells a PostgreSQL server from any other listener without logging in. The error names the
/// host and port, never the URL's password.
fn check(url: &str) -> Result<(), String> {
    let host_port = host_port(url)?;
    let address = host_port
        .to_socket_addrs()
        .map_err(|error| format!("{host_port} ({error})"))?
        .next()
        .ok_or_else(|| format!("{host_port} (resolves to no address)"))?;
    let mut stream = TcpStream::connect_timeout(&address, CHECK_TIMEOUT)
        .map_err(|error| format!("{host_port} ({error})"))?;
    stream
        .set_read_timeout(Some(CHECK_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CHECK_TIMEOUT)))
        .map_err(|error| format!("{host_port} ({error})"))?;
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    stream
        .write_all(&SSL_REQUEST)
        .map_err(|error| format!("{host_port} ({error})"))?;
    let mut answer = [0_u8; 1];
    stream
        .read_exact(&mut answer)
        .map_err(|error| format!("{host_port} (no answer to an SSLRequest: {error})"))?;
    match &answer {
        b"S" | b"N" => Ok(()),
        other => Err(format!(
            "{host_port} (answered {other:?} to an SSLRequest: not a PostgreSQL server)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_comes_from_the_url_without_credentials() {
        assert_eq!(
            host_port("postgres://ferry:secret@127.0.0.1:55432/ferry").as_deref(),
            Ok("127.0.0.1:55432")
        );
        assert_eq!(
            host_port("postgresql://db.example/ferry").as_deref(),
            Ok("db.example:5432")
        );
        assert!(host_port("mysql://127.0.0.1/ferry").is_err());
    }

    #[test]
    fn an_unreachable_server_is_an_error_that_names_the_address_and_not_the_password() {
        // Port 1 on loopback is never a PostgreSQL server; the check must refuse it.
        let error = check("postgres://ferry:hunter2@127.0.0.1:1/ferry")
            .expect_err("nothing listens on port 1");
        assert!(error.starts_with("127.0.0.1:1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
