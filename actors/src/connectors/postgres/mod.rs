//! `postgres`: a sink writing JSON records as rows of a PostgreSQL table, effectively-once.
//!
//! **Rows.** Each record's value must be a JSON object. With `columns` (JSON field -> column),
//! each mapped field goes to its column and a missing field is NULL; without it, the whole
//! object goes to one `jsonb` column (`json_column`). Postgres itself converts the values: the
//! rows travel as one JSON array parameter and `jsonb_populate_recordset(NULL::table, …)`
//! turns it into rows of the table's own row type, so a JSON string or number lands in an
//! `integer`, `text`, `timestamptz` or `jsonb` column by the server's input rules, with no
//! type mapping here and no limit on parameters per statement.
//!
//! **Rejected records.** A record that is not a JSON object (or has no key for a jsonb
//! upsert) is rejected by `write` before anything is written. A value the table refuses (a
//! constraint violation, a value the column's type refuses: SQLSTATE classes 22 and 23) is
//! rejected too, with the server's reason: `write` inserts the batch into the open transaction
//! at once, and when the server refuses it the transaction starts over with the rows written
//! before and the batch is written again under a savepoint, halving any refused group until
//! the refused records are alone. The instance's error policy then decides (fail, skip,
//! dead-letter). A constraint checked only at commit (`DEFERRABLE INITIALLY DEFERRED`) fails
//! the flush instead, a failure the instance retries.
//!
//! **Modes.** `insert` appends rows; `upsert` is `INSERT … ON CONFLICT (key_column) DO
//! UPDATE`, so the key column needs a unique index. With `columns` the key comes from the
//! record's mapped field; in the jsonb layout it is the message key. Within one write the last
//! record of a key wins (a statement may not update a row twice): an earlier record of that key
//! never reaches the table, so it is not checked either.
//!
//! **Effectively-once** ([`SinkDelivery::Transactional`], ../shared/DESIGN.md §6). The first
//! `write` after a flush begins a transaction and every write inserts into it; `flush(input)`
//! then updates the instance's row in `offsets_table` (input position and epoch) *only if the
//! stored epoch is still ours* — which also locks that row until commit — and commits, rows and
//! position together; when the epoch is no longer ours, nothing of it commits. `open` creates the
//! offsets table if missing and, in one transaction, locks the instance's row, refuses to run
//! when a newer epoch is stored there ([`ConnectorError::Fenced`]), records its own epoch and
//! returns the stored input position, which wins over Ferry's checkpoint. So after a crash the
//! rows and the position agree, and an older owner that wakes up cannot write after a newer
//! one opened.
//!
//! Connection failures are [`ConnectorError::Unavailable`] (the instance retries; `open`
//! reconnects). The password never reaches `Debug` output, logs or errors. No TLS yet (NoTls).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tracing::warn;

use crate::api::config::{ConnectorConfig, Secret};
use crate::api::registry::{InstanceContext, SinkFactory};
use crate::api::{
    ConnectorError, Position, Rejected, Sink, SinkCapabilities, SinkDelivery,
    SinkRecord, SinkResume,
};

pub mod fixture;

const SYSTEM: &str = "postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL's identifier limit (NAMEDATALEN - 1) in bytes.
const MAX_IDENTIFIER_LEN: usize = 63;

/// Rows in a PostgreSQL table from JSON records, written with the input position in one
/// transaction (effectively-once).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Server and database, postgres://host:port/database (credentials go in user and
    /// password, not here); Pulsar's jdbc:postgresql://… is accepted too.
    #[schemars(extend("x-aliases" = ["jdbcUrl"]))]
    pub url: String,
    /// User to log in as.
    #[schemars(extend("x-aliases" = ["userName"]))]
    pub user: String,
    /// Password of the user (or env:NAME / file:/path, read on the node that runs the
    /// instance).
    pub password: Secret,
    /// Table to write, `name` or `schema.name` (used as given: case matters).
    #[schemars(extend("x-aliases" = ["tableName"]))]
    pub table: String,
    /// insert (append rows) or upsert (insert, or update the row with the same key_column).
    #[serde(default)]
    #[schemars(extend("x-aliases" = ["insertMode"]))]
    pub mode: WriteMode,
    /// Upsert key, a column with a unique index; required for upsert. With columns it must be
    /// a mapped column; otherwise it gets the message key.
    #[serde(default)]
    #[schemars(extend("x-aliases" = ["key"]))]
    pub key_column: Option<String>,
    /// JSON field -> column; Postgres converts each value to the column's type. Absent: the
    /// whole value goes to json_column.
    #[serde(default)]
    pub columns: Option<BTreeMap<String, String>>,
    /// The jsonb column receiving the whole value when columns is absent.
    #[serde(default = "default_json_column")]
    pub json_column: String,
    /// Table holding each instance's input position and epoch, written in the same
    /// transaction as the rows (created if missing).
    #[serde(default = "default_offsets_table")]
    pub offsets_table: String,
    /// Most rows per INSERT statement inside a flush's transaction.
    #[serde(default = "default_batch_size")]
    #[schemars(extend("x-aliases" = ["batchSize"]))]
    pub batch_size: usize,
}

fn default_json_column() -> String {
    "payload".to_owned()
}

fn default_offsets_table() -> String {
    "ferry_offsets".to_owned()
}

fn default_batch_size() -> usize {
    1000
}

impl ConnectorConfig for PostgresSinkConfig {
    fn validate(&self) -> Result<(), ConnectorError> {
        self.clone().settings().map(drop)
    }
}

/// The `postgres` sink type.
#[derive(Debug)]
pub struct Postgres;

impl SinkFactory for Postgres {
    type Config = PostgresSinkConfig;
    const NAME: &'static str = "postgres";
    const ALIASES: &'static [&'static str] = &["jdbc-postgres"];
    const CAPABILITIES: SinkCapabilities = SinkCapabilities {
        delivery: SinkDelivery::Transactional,
    };

    fn build(
        config: PostgresSinkConfig,
        _context: &InstanceContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(PostgresSink::new(config.settings()?)))
    }

    fn fixture() -> Option<Box<dyn crate::api::fixture::SinkFixture>> {
        fixture::sink()
    }
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Append rows.
    #[default]
    Insert,
    /// Insert, or update the row with the same key.
    Upsert,
}

/// Where a record's fields go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// JSON field -> column (a quoted-safe identifier).
    Columns(BTreeMap<String, String>),
    /// The whole value into one jsonb column.
    Json(String),
}

/// A validated config: identifiers checked, SQL prepared as text.
#[derive(Debug, Clone)]
struct Settings {
    /// Connection settings, without the password (resolved on open, on the node that runs
    /// the instance).
    connect: tokio_postgres::Config,
    password: Secret,
    layout: Layout,
    mode: WriteMode,
    key_column: Option<String>,
    batch_size: usize,
    insert_sql: String,
    create_offsets_sql: String,
    claim_offsets_sql: String,
    lock_offsets_sql: String,
    set_epoch_sql: String,
    store_position_if_epoch_matches_sql: String,
    read_epoch_sql: String,
}

impl PostgresSinkConfig {
    /// Checks names, modes and the URL, each error naming its field, and prepares the SQL.
    fn settings(self) -> Result<Settings, ConnectorError> {
        let connect = self.connect_config()?;
        let mode = self.mode;
        let table = qualified_name("table", &self.table)?;
        let offsets_table = qualified_name("offsets_table", &self.offsets_table)?;
        let layout = match &self.columns {
            Some(columns) => {
                if columns.is_empty() {
                    return Err(invalid("columns", "maps no field: give at least one"));
                }
                let mut seen = BTreeMap::new();
                for (field, column) in columns {
                    check_identifier("columns", column)?;
                    if let Some(other) = seen.insert(column.as_str(), field.as_str()) {
                        return Err(invalid(
                            "columns",
                            format!("fields {other:?} and {field:?} both map to column {column:?}"),
                        ));
                    }
                }
                Layout::Columns(columns.clone())
            }
            None => {
                check_identifier("json_column", &self.json_column)?;
                Layout::Json(self.json_column.clone())
            }
        };
        let key_column = match (mode, &self.key_column) {
            (WriteMode::Upsert, None) => {
                return Err(invalid("key_column", "is required for mode upsert"));
            }
            (_, Some(key)) => {
                check_identifier("key_column", key)?;
                match &layout {
                    Layout::Columns(columns) if !columns.values().any(|column| column == key) => {
                        return Err(invalid(
                            "key_column",
                            format!("{key:?} is not one of the mapped columns"),
                        ));
                    }
                    Layout::Json(json_column) if json_column == key => {
                        return Err(invalid(
                            "key_column",
                            "must differ from json_column (it receives the message key)",
                        ));
                    }
                    _ => {}
                }
                Some(key.clone())
            }
            (WriteMode::Insert, None) => None,
        };
        let batch_size = match self.batch_size {
            0 => return Err(invalid("batch_size", "must be above zero")),
            size => size,
        };
        let mut target_columns: Vec<&str> = match &layout {
            Layout::Columns(columns) => columns.values().map(String::as_str).collect(),
            Layout::Json(json_column) => vec![json_column.as_str()],
        };
        if let (Layout::Json(_), Some(key)) = (&layout, &key_column) {
            target_columns.push(key);
        }
        let insert_sql = insert_statement(&table, &target_columns, mode, key_column.as_deref());
        Ok(Settings {
            connect,
            password: self.password,
            layout,
            mode,
            key_column,
            batch_size,
            insert_sql,
            create_offsets_sql: format!(
                "CREATE TABLE IF NOT EXISTS {offsets_table} (instance text PRIMARY KEY, \
                 epoch bigint NOT NULL, input bytea, updated_at timestamptz NOT NULL DEFAULT now())"
            ),
            claim_offsets_sql: format!(
                "INSERT INTO {offsets_table} (instance, epoch) VALUES ($1, $2) \
                 ON CONFLICT (instance) DO NOTHING"
            ),
            lock_offsets_sql: format!(
                "SELECT epoch, input FROM {offsets_table} WHERE instance = $1 FOR UPDATE"
            ),
            set_epoch_sql: format!(
                "UPDATE {offsets_table} SET epoch = $2, updated_at = now() WHERE instance = $1"
            ),
            store_position_if_epoch_matches_sql: format!(
                "UPDATE {offsets_table} SET input = $2, updated_at = now() \
                 WHERE instance = $1 AND epoch = $3"
            ),
            read_epoch_sql: format!("SELECT epoch FROM {offsets_table} WHERE instance = $1"),
        })
    }

    /// Parses `url` and adds the credentials. Errors never echo the URL or the password.
    fn connect_config(&self) -> Result<tokio_postgres::Config, ConnectorError> {
        // Pulsar's JDBC sink takes jdbc:postgresql://…; tokio-postgres takes postgresql://….
        let url = self.url.strip_prefix("jdbc:").unwrap_or(&self.url);
        let authority = url.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?']).next().unwrap_or_default()
        });
        if authority.contains('@') {
            return Err(invalid(
                "url",
                "must not carry credentials: give them as user and password",
            ));
        }
        let mut connect = tokio_postgres::Config::from_str(url).map_err(|error| {
            invalid(
                "url",
                format!("not a postgres://host:port/database URL: {error}"),
            )
        })?;
        if connect.get_user().is_some() || connect.get_password().is_some() {
            return Err(invalid(
                "url",
                "must not carry credentials: give them as user and password",
            ));
        }
        if connect.get_hosts().is_empty() {
            return Err(invalid("url", "names no host"));
        }
        if self.user.is_empty() {
            return Err(invalid("user", "must not be empty"));
        }
        connect
            .user(&self.user)
            .application_name("ferry")
            .connect_timeout(CONNECT_TIMEOUT);
        Ok(connect)
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidConfig {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Accepts plain SQL identifiers only (letters, digits, `_`, not starting with a digit), so
/// quoting them is enough to make any SQL built from them safe.
fn check_identifier(field: &str, name: &str) -> Result<(), ConnectorError> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    if !valid_start
        || !chars.all(|next| next.is_ascii_alphanumeric() || next == '_')
        || name.len() > MAX_IDENTIFIER_LEN
    {
        return Err(invalid(
            field,
            format!(
                "{name:?} is not a plain SQL identifier (letters, digits and _, not starting \
                 with a digit, at most {MAX_IDENTIFIER_LEN} bytes)"
            ),
        ));
    }
    Ok(())
}

/// Checks `name` or `schema.name` and returns it quoted.
fn qualified_name(field: &str, name: &str) -> Result<String, ConnectorError> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 {
        return Err(invalid(
            field,
            format!("{name:?} has more than one dot: give name or schema.name"),
        ));
    }
    for part in &parts {
        check_identifier(field, part)?;
    }
    Ok(parts
        .iter()
        .map(|part| quote(part))
        .collect::<Vec<_>>()
        .join("."))
}

fn quote(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// The statement writing a JSON array of row objects (`$1`, as text) into `table`.
fn insert_statement(
    table: &str,
    columns: &[&str],
    mode: WriteMode,
    key_column: Option<&str>,
) -> String {
    let column_list = columns
        .iter()
        .map(|column| quote(column))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!(
        "INSERT INTO {table} ({column_list}) SELECT {column_list} \
         FROM jsonb_populate_recordset(NULL::{table}, $1::text::jsonb)"
    );
    if let (WriteMode::Upsert, Some(key)) = (mode, key_column) {
        let updates: Vec<String> = columns
            .iter()
            .filter(|column| **column != key)
            .map(|column| format!("{0} = EXCLUDED.{0}", quote(column)))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", quote(key)));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                quote(key),
                updates.join(", ")
            ));
        }
    }
    sql
}

/// A row of the table: column -> JSON value.
type Row = Map<String, Value>;

/// A record turned into a row, with its index in the batch [`Sink::write`] was given.
#[derive(Debug, Clone)]
struct Candidate {
    index: usize,
    row: Row,
}

/// How an INSERT statement ended.
#[derive(Debug)]
enum Inserted {
    /// Every row is in (inside the open transaction).
    Written,
    /// The server refused a value (a data exception or a constraint: SQLSTATE classes 22 and
    /// 23), which aborts the transaction (or the savepoint).
    Refused(tokio_postgres::Error),
}

/// The savepoint isolating a group of rows while the sink looks for the ones the table refuses.
const SAVEPOINT: &str = "ferry_rows";

/// The sink. Holds one connection, made by [`Sink::open`].
pub struct PostgresSink {
    settings: Settings,
    client: Option<Client>,
    /// The instance key and epoch this owner claimed in `open`.
    owner: Option<(String, i64)>,
    /// Whether a transaction is open on `client`: the first write since a flush begins one,
    /// the flush commits it.
    in_transaction: bool,
    /// The rows written in the open transaction, in order: written again when the
    /// transaction has to start over (a refused value aborts it).
    pending: Vec<Row>,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PostgresSink")
            .field("settings", &self.settings)
            .field("connected", &self.client.is_some())
            .field("owner", &self.owner)
            .field("in_transaction", &self.in_transaction)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl PostgresSink {
    fn new(settings: Settings) -> Self {
        Self {
            settings,
            client: None,
            owner: None,
            in_transaction: false,
            pending: Vec::new(),
        }
    }

    /// Builds a sink from a JSON config (as the registry does).
    pub fn from_config(config: &Value) -> Result<Self, ConnectorError> {
        let object = config
            .as_object()
            .ok_or_else(|| invalid("config", "must be a JSON object"))?;
        let config: PostgresSinkConfig =
            crate::api::config::ConfigDefinition::of::<PostgresSinkConfig>().parse(object)?;
        Ok(Self::new(config.settings()?))
    }

    async fn connect(&self) -> Result<Client, ConnectorError> {
        let mut connect = self.settings.connect.clone();
        connect.password(self.settings.password.resolve("password")?);
        let (client, connection) = connect
            .connect(NoTls)
            .await
            .map_err(|error| classify(&error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                warn!(error = %error, "postgres connection closed");
            }
        });
        Ok(client)
    }

    /// Drops the connection after a failure: the server rolls the open transaction back, and
    /// the sink writes nothing more until it is opened again.
    fn abandon(&mut self) {
        self.client = None;
        self.in_transaction = false;
        self.pending.clear();
    }

    fn client(&self) -> Result<&Client, ConnectorError> {
        self.client
            .as_ref()
            .ok_or_else(|| ConnectorError::Unavailable {
                system: SYSTEM.to_owned(),
                reason: "not connected: open again".to_owned(),
            })
    }

    async fn open_inner(
        &mut self,
        resume: &SinkResume,
    ) -> Result<Option<Position>, ConnectorError> {
        self.abandon();
        self.owner = None;
        let epoch = i64::try_from(resume.epoch).map_err(|_| {
            ConnectorError::InvalidPosition(format!(
                "epoch {} does not fit PostgreSQL's bigint",
                resume.epoch
            ))
        })?;
        let mut client = self.connect().await?;
        if let Err(error) = client
            .batch_execute(&self.settings.create_offsets_sql)
            .await
        {
            // Two instances creating the table at once: one of them loses the race on the
            // catalog's unique index; the table exists either way.
            let raced = error.code().is_some_and(|code| {
                *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::DUPLICATE_TABLE
            });
            if !raced {
                return Err(classify(&error));
            }
        }
        let transaction = client
            .transaction()
            .await
            .map_err(|error| classify(&error))?;
        transaction
            .execute(
                &self.settings.claim_offsets_sql,
                &[&resume.instance, &epoch],
            )
            .await
            .map_err(|error| classify(&error))?;
        let row = transaction
            .query_one(&self.settings.lock_offsets_sql, &[&resume.instance])
            .await
            .map_err(|error| classify(&error))?;
        let stored_epoch: i64 = row.get(0);
        let stored_input: Option<Vec<u8>> = row.get(1);
        if stored_epoch > epoch {
            return Err(ConnectorError::Fenced {
                system: SYSTEM.to_owned(),
                ours: resume.epoch,
                current: stored_epoch.unsigned_abs(),
            });
        }
        transaction
            .execute(&self.settings.set_epoch_sql, &[&resume.instance, &epoch])
            .await
            .map_err(|error| classify(&error))?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(&error))?;
        self.client = Some(client);
        self.owner = Some((resume.instance.clone(), epoch));
        Ok(stored_input)
    }

    /// Turns records into rows. A record that is not a JSON object (or, in the jsonb layout
    /// with upsert, has no key) is rejected, naming why; the others become candidates.
    fn rows(&self, records: Vec<SinkRecord>) -> (Vec<Candidate>, Vec<Rejected>) {
        let mut candidates = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            match self.row(record) {
                Ok(row) => candidates.push(Candidate { index, row }),
                Err(reason) => rejected.push(Rejected { index, reason }),
            }
        }
        (candidates, rejected)
    }

    /// Turns one record into a row, or says why it cannot be one.
    fn row(&self, record: SinkRecord) -> Result<Row, String> {
        let value: Value = serde_json::from_slice(&record.record.value)
            .map_err(|error| format!("the value is not JSON: {error}"))?;
        let Value::Object(mut object) = value else {
            return Err(format!(
                "the value is JSON {}, not an object",
                json_kind(&value)
            ));
        };
        let mut row = Map::new();
        match &self.settings.layout {
            Layout::Columns(columns) => {
                for (field, column) in columns {
                    let value = object.remove(field).unwrap_or(Value::Null);
                    row.insert(column.clone(), value);
                }
            }
            Layout::Json(json_column) => {
                row.insert(json_column.clone(), Value::Object(object));
                if let Some(key_column) = &self.settings.key_column {
                    let key = record.record.key.ok_or_else(|| {
                        format!("upsert into {key_column} needs a message key, and it has none")
                    })?;
                    row.insert(key_column.clone(), Value::String(key));
                }
            }
        }
        Ok(row)
    }

    /// The rows of `rows` to write: all of them for insert; for upsert, the last row of each
    /// key (one statement may not update a row twice). Keys compare as the text Postgres
    /// would read. Returns indexes into `rows`, in order.
    fn rows_to_write(&self, rows: &[&Row]) -> Vec<usize> {
        let Some(key_column) = self
            .settings
            .key_column
            .as_deref()
            .filter(|_| self.settings.mode == WriteMode::Upsert)
        else {
            return (0..rows.len()).collect();
        };
        let mut last_of_key: HashMap<String, usize> = HashMap::new();
        for (index, row) in rows.iter().enumerate() {
            let key = match row.get(key_column) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            last_of_key.insert(key, index);
        }
        let mut keep: Vec<usize> = last_of_key.into_values().collect();
        keep.sort_unstable();
        keep
    }

    /// Inserts `rows` into the table in the open transaction, in statements of at most
    /// `batch_size` rows. A value the server refuses is [`Inserted::Refused`]; any other
    /// failure is an error.
    async fn insert(&self, rows: &[&Row]) -> Result<Inserted, ConnectorError> {
        let keep = self.rows_to_write(rows);
        let client = self.client()?;
        for chunk in keep.chunks(self.settings.batch_size) {
            let array: Vec<&Row> = chunk.iter().map(|index| rows[*index]).collect();
            let json =
                serde_json::to_string(&array).map_err(|error| ConnectorError::Unavailable {
                    system: SYSTEM.to_owned(),
                    reason: format!("cannot encode rows: {error}"),
                })?;
            match client.execute(&self.settings.insert_sql, &[&json]).await {
                Ok(_) => {}
                Err(error) if is_data_error(&error) => return Ok(Inserted::Refused(error)),
                Err(error) => return Err(classify(&error)),
            }
        }
        Ok(Inserted::Written)
    }

    async fn execute(&self, sql: &str) -> Result<(), ConnectorError> {
        self.client()?
            .batch_execute(sql)
            .await
            .map_err(|error| classify(&error))
    }

    /// Begins a transaction unless one is open.
    async fn begin(&mut self) -> Result<(), ConnectorError> {
        if !self.in_transaction {
            self.execute("BEGIN").await?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Writes a batch in the open transaction and returns the records the table refuses.
    ///
    /// The whole batch goes in one statement (per `batch_size` rows). When the server refuses
    /// a value, that aborts the transaction: it starts over with the rows written before, and
    /// the batch is written again in groups under a savepoint, a refused group halved until
    /// the refused records are alone. Subtransactions are only spent on that path.
    async fn write_inner(&mut self, records: Vec<SinkRecord>) -> Result<Vec<Rejected>, ConnectorError> {
        let (candidates, mut rejected) = self.rows(records);
        if candidates.is_empty() {
            return Ok(rejected);
        }
        self.begin().await?;
        let rows: Vec<&Row> = candidates.iter().map(|candidate| &candidate.row).collect();
        match self.insert(&rows).await? {
            Inserted::Written => {
                self.pending
                    .extend(candidates.into_iter().map(|candidate| candidate.row));
            }
            Inserted::Refused(_) => {
                self.start_over().await?;
                rejected.extend(self.isolate(candidates).await?);
                rejected.sort_by_key(|rejection| rejection.index);
            }
        }
        Ok(rejected)
    }

    /// Rolls the aborted transaction back and begins another holding the rows written before.
    async fn start_over(&mut self) -> Result<(), ConnectorError> {
        self.execute("ROLLBACK").await?;
        self.in_transaction = false;
        self.begin().await?;
        let earlier: Vec<&Row> = self.pending.iter().collect();
        if earlier.is_empty() {
            return Ok(());
        }
        match self.insert(&earlier).await? {
            Inserted::Written => Ok(()),
            // Accepted a moment ago, refused now: another writer changed the table. The
            // instance starts again from its checkpoint and finds the records to blame then.
            Inserted::Refused(error) => Err(ConnectorError::Unavailable {
                system: SYSTEM.to_owned(),
                reason: format!(
                    "rows accepted earlier in this transaction are refused when written again \
                     (the table changed meanwhile): {}",
                    describe(&error)
                ),
            }),
        }
    }

    /// Writes `candidates` in order, each group under a savepoint; a refused group is rolled
    /// back to it and halved, down to single rows, which are rejected with the server's reason.
    async fn isolate(&mut self, candidates: Vec<Candidate>) -> Result<Vec<Rejected>, ConnectorError> {
        let mut rejected = Vec::new();
        let mut groups: VecDeque<Vec<Candidate>> = VecDeque::from([candidates]);
        while let Some(mut group) = groups.pop_front() {
            self.execute(&format!("SAVEPOINT {SAVEPOINT}")).await?;
            let rows: Vec<&Row> = group.iter().map(|candidate| &candidate.row).collect();
            match self.insert(&rows).await? {
                Inserted::Written => {
                    self.execute(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                        .await?;
                    self.pending
                        .extend(group.into_iter().map(|candidate| candidate.row));
                }
                Inserted::Refused(error) => {
                    self.execute(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"))
                        .await?;
                    self.execute(&format!("RELEASE SAVEPOINT {SAVEPOINT}"))
                        .await?;
                    if group.len() == 1 {
                        rejected.extend(group.into_iter().map(|candidate| Rejected {
                            index: candidate.index,
                            reason: format!("the table refuses it: {}", describe(&error)),
                        }));
                    } else {
                        let second = group.split_off(group.len() / 2);
                        groups.push_front(second);
                        groups.push_front(group);
                    }
                }
            }
        }
        Ok(rejected)
    }

    /// Stores `input` with the owner's epoch, if still ours, and commits the transaction that
    /// holds the rows written since the last flush.
    async fn flush_inner(&mut self, input: &Position) -> Result<Position, ConnectorError> {
        let (instance, epoch) = self
            .owner
            .clone()
            .ok_or_else(|| ConnectorError::Unavailable {
                system: SYSTEM.to_owned(),
                reason: "flush before a successful open".to_owned(),
            })?;
        self.begin().await?;
        let client = self.client()?;
        // The fence: this update also locks the offsets row until commit, so a newer owner's
        // open waits for this transaction and then sees its position; after a newer owner
        // opened, it matches no row and the transaction is abandoned, rows and all.
        let updated = client
            .execute(
                &self.settings.store_position_if_epoch_matches_sql,
                &[&instance, &input.as_slice(), &epoch],
            )
            .await
            .map_err(|error| classify(&error))?;
        if updated != 1 {
            let current = client
                .query_opt(&self.settings.read_epoch_sql, &[&instance])
                .await
                .map_err(|error| classify(&error))?;
            return Err(match current {
                Some(row) => ConnectorError::Fenced {
                    system: SYSTEM.to_owned(),
                    ours: epoch.unsigned_abs(),
                    current: row.get::<_, i64>(0).unsigned_abs(),
                },
                None => ConnectorError::Unavailable {
                    system: SYSTEM.to_owned(),
                    reason: format!("the offsets row of {instance} disappeared: open again"),
                },
            });
        }
        self.execute("COMMIT").await?;
        self.in_transaction = false;
        self.pending.clear();
        Ok(Vec::new())
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether the server refused a value (a data exception or a constraint), as opposed to the
/// statement or the connection failing.
fn is_data_error(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
}

/// The server's message for a database error, else the client's.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => error.to_string(),
    }
}

/// Maps a client error: a refusal caused by the config names the field; anything else is
/// the server being unavailable, which the instance retries. The server's messages never
/// contain the password.
fn classify(error: &tokio_postgres::Error) -> ConnectorError {
    let field = error.code().and_then(|code| {
        Some(match code {
            code if *code == SqlState::INVALID_PASSWORD => "password",
            code if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => "user",
            code if *code == SqlState::INSUFFICIENT_PRIVILEGE => "user",
            code if *code == SqlState::INVALID_CATALOG_NAME => "url",
            code if *code == SqlState::UNDEFINED_TABLE => "table",
            code if *code == SqlState::UNDEFINED_COLUMN => "columns",
            code if *code == SqlState::INVALID_COLUMN_REFERENCE => "key_column",
            _ => return None,
        })
    });
    match field {
        Some(field) => invalid(field, describe(error)),
        None => ConnectorError::Unavailable {
            system: SYSTEM.to_owned(),
            reason: describe(error),
        },
    }
}

impl Sink for PostgresSink {
    fn open(
        &mut self,
        resume: &SinkResume,
    ) -> BoxFuture<'_, Result<Option<Position>, ConnectorError>> {
        let resume = resume.clone();
        Box::pin(async move { self.open_inner(&resume).await })
    }

    fn write(
        &mut self,
        records: Vec<SinkRecord>,
    ) -> BoxFuture<'_, Result<Vec<Rejected>, ConnectorError>> {
        Box::pin(async move {
            let written = self.write_inner(records).await;
            if written.is_err() {
                self.abandon();
            }
            written
        })
    }

    fn flush(&mut self, input: &Position) -> BoxFuture<'_, Result<Position, ConnectorError>> {
        let input = input.clone();
        Box::pin(async move {
            let flushed = self.flush_inner(&input).await;
            if flushed.is_err() {
                self.abandon();
            }
            flushed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InputMessageId;

    fn config(extra: Value) -> Value {
        let mut config = serde_json::json!({
            "url": "postgres://127.0.0.1:5432/ferry",
            "user": "ferry",
            "password": "hunter2",
            "table": "events",
        });
        if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
            base.extend(extra);
        }
        config
    }

    fn field_of(result: Result<PostgresSink, ConnectorError>) -> String {
        match result {
            Err(ConnectorError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn sql_quotes_every_identifier_and_upserts_on_the_key() {
        let sink = PostgresSink::from_config(&config(serde_json::json!({
            "table": "app.events",
            "mode": "upsert",
            "key_column": "id",
            "columns": {"id": "id", "name": "name"},
        })))
        .expect("valid");
        assert_eq!(
            sink.settings.insert_sql,
            "INSERT INTO \"app\".\"events\" (\"id\", \"name\") SELECT \"id\", \"name\" FROM \
             jsonb_populate_recordset(NULL::\"app\".\"events\", $1::text::jsonb) \
             ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
        );
    }

    #[test]
    fn bad_configs_name_their_field() {
        let cases = [
            (serde_json::json!({"mode": "upsert"}), "key_column"),
            (
                serde_json::json!({"table": "events; drop table x"}),
                "table",
            ),
            (serde_json::json!({"table": "a.b.c"}), "table"),
            (
                serde_json::json!({"offsets_table": "1abc"}),
                "offsets_table",
            ),
            (
                serde_json::json!({"json_column": "pay load"}),
                "json_column",
            ),
            (serde_json::json!({"columns": {"a": "x\"y"}}), "columns"),
            (
                serde_json::json!({"columns": {"a": "x", "b": "x"}}),
                "columns",
            ),
            (
                serde_json::json!({"mode": "upsert", "key_column": "id", "columns": {"a": "x"}}),
                "key_column",
            ),
            (serde_json::json!({"batch_size": 0}), "batch_size"),
            (serde_json::json!({"batch_size": "ten"}), "batch_size"),
            (serde_json::json!({"columns": ["a"]}), "columns"),
            (serde_json::json!({"mode": "merge"}), "mode"),
            (serde_json::json!({"url": "mysql://127.0.0.1/ferry"}), "url"),
            (
                serde_json::json!({"url": "postgres://ferry:hunter2@127.0.0.1/ferry"}),
                "url",
            ),
            (serde_json::json!({"tabel": "events"}), "tabel"),
        ];
        for (extra, field) in cases {
            assert_eq!(
                field_of(PostgresSink::from_config(&config(extra.clone()))),
                field,
                "{extra}"
            );
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let error = PostgresSink::from_config(&config(
            serde_json::json!({"url": "postgres://ferry:hunter2@127.0.0.1/ferry"}),
        ))
        .expect_err("credentials in the url");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let Value::Object(object) = config(serde_json::json!({})) else {
            panic!("an object");
        };
        let parsed: PostgresSinkConfig = crate::api::config::ConfigDefinition::of::<
            PostgresSinkConfig,
        >()
        .parse(&object)
        .expect("valid");
        let sink = PostgresSink::new(parsed.clone().settings().expect("valid"));
        for text in [format!("{parsed:?}"), format!("{sink:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("events"), "{text}");
        }
    }

    #[test]
    fn upsert_keeps_the_last_row_of_each_key() {
        let sink = PostgresSink::from_config(&config(serde_json::json!({
            "mode": "upsert", "key_column": "id", "columns": {"id": "id", "v": "v"},
        })))
        .expect("valid");
        let records = [
            r#"{"id":1,"v":"a"}"#,
            r#"{"id":"2","v":"b"}"#,
            r#"{"id":"1","v":"c"}"#,
        ]
        .iter()
        .enumerate()
        .map(|(entry, value)| SinkRecord {
            record: crate::api::Record {
                value: value.as_bytes().to_vec(),
                ..crate::api::Record::default()
            },
            topic: "t".to_owned(),
            message_id: InputMessageId {
                ledger_id: 1,
                entry_id: entry as u64,
                batch_index: -1,
            },
        })
        .collect();
        let (candidates, rejected) = sink.rows(records);
        assert!(rejected.is_empty(), "{rejected:?}");
        let rows: Vec<&Row> = candidates.iter().map(|candidate| &candidate.row).collect();
        let kept: Vec<String> = sink
            .rows_to_write(&rows)
            .iter()
            .map(|index| rows[*index]["v"].to_string())
            .collect();
        assert_eq!(kept, ["\"b\"", "\"c\""]);
    }

    #[test]
    fn records_that_cannot_be_rows_are_rejected_with_the_reason_and_the_rest_kept() {
        let sink = PostgresSink::from_config(&config(serde_json::json!({
            "mode": "upsert", "key_column": "id",
        })))
        .expect("valid");
        let values: [&[u8]; 4] = [br#"{"a":1}"#, b"[1,2]", b"not json {", br#"{"b":2}"#];
        let records = values
            .iter()
            .enumerate()
            .map(|(entry, value)| SinkRecord {
                record: crate::api::Record {
                    value: value.to_vec(),
                    // Only the first has the key a jsonb upsert needs.
                    key: (entry == 0).then(|| "k".to_owned()),
                    ..crate::api::Record::default()
                },
                topic: "persistent://public/default/in".to_owned(),
                message_id: InputMessageId {
                    ledger_id: 7,
                    entry_id: entry as u64,
                    batch_index: -1,
                },
            })
            .collect();
        let (candidates, rejected) = sink.rows(records);
        let kept: Vec<usize> = candidates.iter().map(|candidate| candidate.index).collect();
        assert_eq!(kept, [0]);
        assert_eq!(
            candidates[0].row,
            serde_json::json!({"payload": {"a": 1}, "id": "k"})
                .as_object()
                .cloned()
                .expect("an object")
        );
        let reasons: Vec<(usize, &str)> = rejected
            .iter()
            .map(|rejection| (rejection.index, rejection.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(reasons[0].0, 1);
        assert!(reasons[0].1.contains("an array"), "{reasons:?}");
        assert_eq!(reasons[1].0, 2);
        assert!(reasons[1].1.contains("not JSON"), "{reasons:?}");
        assert_eq!(reasons[2].0, 3);
        assert!(reasons[2].1.contains("message key"), "{reasons:?}");
    }
}
