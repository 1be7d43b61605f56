//! The `postgres` sink's conformance fixture: a fresh table per test in the test server named
//! by `FERRY_TEST_PG_URL` (default `postgres://ferry:ferry@127.0.0.1:5432/ferry`, the server
//! `deploy/postgres/postgres.sh start` runs), read back in insertion order. The outage goes
//! through a TCP proxy the output owns: taken away, it cuts every connection and closes new
//! ones at once.

use std::net::SocketAddr;
use std::str::FromStr;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use crate::api::fixture::{
    BadConfig, FixtureError, Outage, SinkFixture, SinkOutput, object, unique_name,
};

/// Environment variable naming the test server's URL.
pub const PG_URL_VAR: &str = "FERRY_TEST_PG_URL";
/// The test server's URL when `FERRY_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://ferry:ferry@127.0.0.1:5432/ferry";
/// A password no error may show (the bad configs carry it).
const SECRET: &str = "conformance-secret-7731";

/// The `postgres` sink's fixture.
pub(crate) fn sink() -> Option<Box<dyn SinkFixture>> {
    Some(Box::new(PostgresFixture))
}

/// Makes tables in the test server for the `postgres` sink.
#[derive(Debug)]
pub struct PostgresFixture;

/// The test server: its URL's parts.
#[derive(Debug, Clone)]
struct TestServer {
    /// The URL with its credentials, for the fixture's own connections.
    url: String,
    user: String,
    password: String,
    /// `host:port`.
    host_port: String,
    database: String,
}

impl TestServer {
    /// Reads `FERRY_TEST_PG_URL` (or the default); errors name the variable, never the
    /// password.
    fn from_environment() -> Result<Self, FixtureError> {
        let url = std::env::var(PG_URL_VAR)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_PG_URL.to_owned());
        Self::parse(&url)
    }

    fn parse(url: &str) -> Result<Self, FixtureError> {
        let bad = |reason: &str| format!("{PG_URL_VAR}: {reason}");
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|_| bad("not a postgres://user:password@host:port/database URL"))?;
        let user = config.get_user().ok_or_else(|| bad("names no user"))?;
        let password = config
            .get_password()
            .map(|password| String::from_utf8_lossy(password).into_owned())
            .ok_or_else(|| bad("holds no password"))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => return Err(bad("names no TCP host")),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Ok(Self {
            url: url.to_owned(),
            user: user.to_owned(),
            password,
            host_port: format!("{host}:{port}"),
            database: config.get_dbname().unwrap_or(user).to_owned(),
        })
    }

    /// The server's URL without credentials, as the sink's `url` takes it; through `via`
    /// (`host:port`) when given.
    fn sink_url(&self, via: Option<SocketAddr>) -> String {
        let address = via.map_or_else(|| self.host_port.clone(), |via| via.to_string());
        format!("postgres://{address}/{}", self.database)
    }

    /// A sink config writing `table` as the given user (JSON `id` -> column `id`, `text` ->
    /// column `body`).
    fn sink_config(&self, table: &str, password: &str, via: Option<SocketAddr>) -> Value {
        json!({
            "url": self.sink_url(via),
            "user": self.user,
            "password": password,
            "table": table,
            "columns": {"id": "id", "text": "body"},
        })
    }

    async fn connect(&self) -> Result<Client, FixtureError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|error| {
                format!(
                    "PostgreSQL at {} ({PG_URL_VAR}) does not answer: {error}; start it with \
                     deploy/postgres/postgres.sh start",
                    self.host_port
                )
            })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn execute(&self, sql: &str) -> Result<(), FixtureError> {
        self.connect()
            .await?
            .batch_execute(sql)
            .await
            .map_err(|error| format!("{sql}: {error}"))
    }
}

/// One test's table, and the proxy its sink goes through when the test takes the server away.
#[derive(Debug)]
struct TableOutput {
    server: TestServer,
    table: String,
    proxy: Option<Proxy>,
}

impl SinkOutput for TableOutput {
    fn config(&self) -> Map<String, Value> {
        let via = self.proxy.as_ref().map(|proxy| proxy.address);
        object(
            self.server
                .sink_config(&self.table, &self.server.password, via),
        )
    }

    fn read_back(&self) -> BoxFuture<'_, Result<Option<Vec<u64>>, FixtureError>> {
        Box::pin(async move {
            let sql = format!("SELECT id FROM {} ORDER BY row_id", self.table);
            let rows = self
                .server
                .connect()
                .await?
                .query(&sql, &[])
                .await
                .map_err(|error| format!("{sql}: {error}"))?;
            rows.iter()
                .map(|row| {
                    let id: i64 = row.try_get(0).map_err(|error| format!("{sql}: {error}"))?;
                    u64::try_from(id).map_err(|_| format!("{sql}: a negative id {id}"))
                })
                .collect::<Result<Vec<u64>, FixtureError>>()
                .map(Some)
        })
    }

    fn outage(&self) -> Option<&dyn Outage> {
        self.proxy.as_ref().map(|proxy| proxy as &dyn Outage)
    }

    fn clean_up(self: Box<Self>) -> BoxFuture<'static, Result<(), FixtureError>> {
        Box::pin(async move {
            drop(self.proxy);
            self.server
                .execute(&format!("DROP TABLE IF EXISTS {}", self.table))
                .await
        })
    }
}

impl SinkFixture for PostgresFixture {
    fn output(
        &self,
        test: &str,
        outage: bool,
    ) -> BoxFuture<'_, Result<Box<dyn SinkOutput>, FixtureError>> {
        // Short enough for PostgreSQL's 63-byte identifiers.
        let table = format!("fx_{}", unique_name(&test.chars().take(12).collect::<String>()));
        Box::pin(async move {
            let server = TestServer::from_environment()?;
            server
                .execute(&format!(
                    "CREATE TABLE {table} (row_id bigserial PRIMARY KEY, id bigint NOT NULL, \
                     body text)"
                ))
                .await?;
            let proxy = if outage {
                Some(Proxy::start(&server.host_port).await?)
            } else {
                None
            };
            Ok(Box::new(TableOutput {
                server,
                table,
                proxy,
            }) as Box<dyn SinkOutput>)
        })
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        let server = TestServer::from_environment().unwrap_or_else(|_| {
            TestServer::parse(DEFAULT_PG_URL).unwrap_or_else(|error| panic!("{error}"))
        });
        let base = server.sink_config("conformance_table", SECRET, None);
        let changed = |change: Value| {
            let mut config = object(base.clone());
            for (field, value) in object(change) {
                if value.is_null() {
                    config.remove(&field);
                } else {
                    config.insert(field, value);
                }
            }
            config
        };
        let with_credentials = format!("postgres://{}:{SECRET}@{}/x", server.user, server.host_port);
        // A table that does not exist, reached with the right password: only a write finds out.
        let missing_table = object(server.sink_config(
            &format!("absent_{}", unique_name("t")),
            &server.password,
            None,
        ));
        vec![
            BadConfig::refused(changed(json!({"password": null})), "password"),
            BadConfig::refused(changed(json!({"url": with_credentials})), "url"),
            BadConfig::refused(changed(json!({"url": "mysql:/x"})), "url"),
            BadConfig::refused(changed(json!({"mode": "merge"})), "mode"),
            BadConfig::refused(changed(json!({"mode": "upsert"})), "key_column"),
            BadConfig::refused(changed(json!({"table": "a.b.c"})), "table"),
            BadConfig::refused(changed(json!({"table": "t; drop"})), "table"),
            BadConfig::refused(changed(json!({"columns": {}})), "columns"),
            BadConfig::refused(changed(json!({"batch_size": 0})), "batch_size"),
            BadConfig::found_at_run_time(missing_table, "table"),
            // The wrong password: the server refuses the login.
            BadConfig::found_at_run_time(changed(json!({})), "password"),
        ]
    }
}

/// A TCP proxy to the server that can be switched off: off, it cuts every connection and
/// closes new ones at once; on, it forwards.
#[derive(Debug)]
struct Proxy {
    address: SocketAddr,
    up: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(server: &str) -> Result<Self, FixtureError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("bind the proxy: {error}"))?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("the proxy's address: {error}"))?;
        let (up, watching) = watch::channel(true);
        let server = server.to_owned();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = watching.clone();
                if !*up.borrow() {
                    continue; // Dropped: closed at once.
                }
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(&server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self {
            address,
            up,
            accepting,
        })
    }
}

impl Outage for Proxy {
    fn take_away(&self) -> BoxFuture<'_, Result<(), FixtureError>> {
        self.up.send_replace(false);
        Box::pin(async { Ok(()) })
    }

    fn bring_back(&self) -> BoxFuture<'_, Result<(), FixtureError>> {
        self.up.send_replace(true);
        Box::pin(async { Ok(()) })
    }

    fn named_in_error(&self) -> Vec<String> {
        vec!["postgres unavailable".to_owned()]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.up.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_splits_into_a_sink_config_without_credentials() {
        let server = TestServer::parse("postgres://app:s3cret@db.local:5433/events").expect("a url");
        assert_eq!(
            (server.user.as_str(), server.password.as_str()),
            ("app", "s3cret")
        );
        let config = server.sink_config("t", "p", None);
        assert_eq!(config["url"], "postgres://db.local:5433/events");
        let via = "127.0.0.1:9".parse().expect("an address");
        assert_eq!(
            server.sink_config("t", "p", Some(via))["url"],
            "postgres://127.0.0.1:9/events"
        );
        let error = TestServer::parse("postgres://app@db.local/events").expect_err("no password");
        assert!(error.contains(PG_URL_VAR), "{error}");
    }
}
