//! `ferry bench sink`: Pulsar -> sink through the real `SinkInstance` actor, effectively-once,
//! against the floors of the same work done bare, on the same broker and database in the same
//! run.
//!
//! Each round pre-fills a fresh topic with `--records` datagen records (pulsar-rs's batched
//! producer), then runs five contenders in a rotating order, each reading the whole topic on
//! its own subscription and writing rows to its own fresh table:
//!
//! - a raw pulsar-rs `Consumer` reading every message and acknowledging cumulatively every
//!   1,000: the floor of the blackhole path;
//! - the instance with the `blackhole` sink;
//! - a raw pulsar-rs `Consumer` as above that turns each JSON value into a row and, every
//!   1,000, writes them with one bare multi-row INSERT before its cumulative ack: the
//!   hand-written Rust program doing the postgres path's job, its floor;
//! - the instance with the `postgres` sink (rows, offsets and epoch in one transaction per
//!   checkpoint);
//! - the same multi-row INSERTs of the same rows alone, made in memory beforehand: how much
//!   of either postgres path is PostgreSQL's own time (reported, in no ratio).
//!
//! Both instances checkpoint as a node does (every 1,000 records or 100 ms) into a
//! `MemoryCheckpointStore`; each is timed from the moment it reports Running (subscribed) until
//! its confirmed count reaches `--records`. The best round of each counts; the last line is
//! `sink ratio=<blackhole instance / raw consumer> pg_ratio=<postgres instance / raw consumer
//! with INSERT>`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use clap::Args;
use ferry_actors::api::Kind;
use ferry_actors::api::registry::InstanceContext;
use ferry_actors::connectors::datagen;
use ferry_actors::connectors::registry;
use ferry_actors::instance::Guarantee;
use ferry_actors::instance::checkpoint::MemoryCheckpointStore;
use ferry_actors::instance::sink::{SinkInstance, SinkInstanceConfig};
use ferry_actors::instance::source::{CheckpointPolicy, Stop};
use ferry_actors::pulsar::PulsarSettings;
use ferry_actors::pulsar::sink_consumer::StartPosition;
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{ConsumerOptions, SubType};
use serde_json::json;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::source::{
    RecordBenchArgs, SEED, per_second, publish_with_pulsar_rs, rate, time_instance, unique_suffix,
};

/// Rows per statement of the bare INSERT, and records per sink write and checkpoint.
const BATCH: usize = 1000;

/// Flags of `ferry bench sink`.
#[derive(Debug, Args)]
pub struct SinkBenchArgs {
    #[command(flatten)]
    pub records: RecordBenchArgs,
    /// PostgreSQL URL with credentials (postgres://user:password@host:port/database).
    #[arg(
        long,
        env = "FERRY_TEST_PG_URL",
        default_value = "postgres://ferry:ferry@127.0.0.1:5432/ferry"
    )]
    pub pg_url: String,
}

/// Which path a measurement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    PulsarRs,
    Blackhole,
    PulsarRsInsert,
    Postgres,
    InsertAlone,
}

impl Contender {
    const ALL: [Self; 5] = [
        Self::PulsarRs,
        Self::Blackhole,
        Self::PulsarRsInsert,
        Self::Postgres,
        Self::InsertAlone,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::PulsarRs => "pulsar-rs Consumer (cumulative acks)",
            Self::Blackhole => "SinkInstance -> blackhole (effectively-once)",
            Self::PulsarRsInsert => "pulsar-rs Consumer -> multi-row INSERT",
            Self::Postgres => "SinkInstance -> postgres (effectively-once)",
            Self::InsertAlone => "multi-row INSERT alone (rows in memory)",
        }
    }

    /// The contender's subscription and table name part.
    fn slug(self) -> &'static str {
        match self {
            Self::PulsarRs => "raw",
            Self::Blackhole => "blackhole",
            Self::PulsarRsInsert => "raw_insert",
            Self::Postgres => "postgres",
            Self::InsertAlone => "insert_alone",
        }
    }

    /// Whether it writes to PostgreSQL.
    fn writes_rows(self) -> bool {
        matches!(
            self,
            Self::PulsarRsInsert | Self::Postgres | Self::InsertAlone
        )
    }

    /// Whether it reads the topic.
    fn reads_topic(self) -> bool {
        self != Self::InsertAlone
    }
}

/// One row of the benchmark tables: a datagen record's JSON fields.
struct Row {
    index: i64,
    seed: i64,
    data: String,
}

impl Row {
    /// Returns the row of a datagen record's value, as the postgres sink maps it.
    fn from_json(value: &[u8]) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(value)?;
        let field = |name: &str| {
            value
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("a datagen record lacks {name}"))
        };
        Ok(Self {
            index: field("index")?.as_i64().unwrap_or_default(),
            seed: field("seed")?.as_i64().unwrap_or_default(),
            data: field("data")?.as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// Where the postgres sink connects, split as its config wants it: a URL without
/// credentials, the user and the password.
struct PgTarget {
    url: String,
    user: String,
    password: String,
}

impl PgTarget {
    fn parse(pg_url: &str) -> anyhow::Result<Self> {
        let config = tokio_postgres::Config::from_str(pg_url)
            .map_err(|error| anyhow::anyhow!("--pg-url is not a postgres:// URL: {error}"))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) if host.contains(':') => {
                format!("[{host}]")
            }
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => anyhow::bail!("--pg-url must name a TCP host"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .ok_or_else(|| anyhow::anyhow!("--pg-url must carry a user"))?
            .to_owned();
        let database = config.get_dbname().unwrap_or(&user).to_owned();
        let password = String::from_utf8_lossy(config.get_password().unwrap_or_default());
        Ok(Self {
            url: format!("postgres://{host}:{port}/{database}"),
            user,
            password: password.into_owned(),
        })
    }
}

/// Runs the benchmark and prints its report.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub async fn run(args: SinkBenchArgs) -> anyhow::Result<()> {
    let settings = args.records.validate()?;
    let target = PgTarget::parse(&args.pg_url)?;
    let client = connect(&args.pg_url).await?;
    let args = args.records;
    println!(
        "sink bench: {} datagen records of {} bytes per contender per round, {} rounds, \
         checkpoints every 1000 records or 100 ms, broker {}, postgres {}",
        args.records, args.payload_size, args.rounds, args.pulsar_url, target.url
    );
    let run_id = unique_suffix();
    let table_prefix = format!("ferry_bench_{}", run_id.replace('-', "_"));
    let bench = Bench {
        rows: generate_rows(args.records, args.payload_size)?,
        offsets_table: format!("{table_prefix}_offsets"),
        table_prefix,
        run_id,
        settings,
        target,
        client,
        args,
    };
    let outcome = bench.run_rounds().await;
    // The tables are the benchmark's own: they go whether it succeeded or not.
    let mut drop_tables = format!("DROP TABLE IF EXISTS \"{}\"", bench.offsets_table);
    for round in 1..=bench.args.rounds {
        for contender in Contender::ALL.into_iter().filter(|c| c.writes_rows()) {
            drop_tables.push_str(&format!(", \"{}\"", bench.table(round, contender)));
        }
    }
    bench.client.batch_execute(&drop_tables).await?;
    let args = bench.args;
    let best = outcome?;
    for contender in Contender::ALL {
        println!(
            "best:    {:<46} {}",
            contender.label(),
            rate(args.records, best[contender as usize])
        );
    }
    let per_second = |contender: Contender| per_second(args.records, best[contender as usize]);
    println!(
        "postgres instance vs multi-row INSERT alone (no Pulsar): insert_alone_ratio={:.3}",
        per_second(Contender::Postgres) / per_second(Contender::InsertAlone)
    );
    println!(
        "sink ratio={:.3} pg_ratio={:.3}",
        per_second(Contender::Blackhole) / per_second(Contender::PulsarRs),
        per_second(Contender::Postgres) / per_second(Contender::PulsarRsInsert)
    );
    Ok(())
}

/// One run's fixed context.
struct Bench {
    args: RecordBenchArgs,
    settings: PulsarSettings,
    target: PgTarget,
    client: Client,
    /// The rows the postgres sink makes of the records, for the bare INSERT.
    rows: Vec<Row>,
    run_id: String,
    table_prefix: String,
    offsets_table: String,
}

impl Bench {
    /// Returns the table `contender` writes in `round`.
    fn table(&self, round: u32, contender: Contender) -> String {
        format!("{}_{round}_{}", self.table_prefix, contender.slug())
    }

    /// Runs every round; returns the best time of each contender.
    #[allow(clippy::print_stdout, reason = "the report is the command's output")]
    async fn run_rounds(&self) -> anyhow::Result<[Duration; 5]> {
        let Self {
            args,
            settings,
            target,
            client,
            rows,
            run_id,
            offsets_table,
            ..
        } = self;
        let mut best = [Duration::MAX; 5];
        for round in 1..=args.rounds {
            let topic = format!(
                "persistent://{}/ferry-bench-sink-{run_id}-{round}",
                args.namespace
            );
            // Subscriptions made before the messages exist keep them until each one read them.
            create_subscriptions(settings, &topic).await?;
            let filled =
                publish_with_pulsar_rs(settings, &topic, args.records, args.payload_size).await?;
            println!(
                "round {round}: pre-filled {topic} in {:.2} s",
                filled.as_secs_f64()
            );
            for contender in Contender::ALL.into_iter().filter(|c| c.writes_rows()) {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE \"{}\" (id bigint NOT NULL, seed bigint NOT NULL, \
                         data text NOT NULL)",
                        self.table(round, contender)
                    ))
                    .await?;
            }
            let mut order = Contender::ALL;
            order.rotate_left((round as usize - 1) % Contender::ALL.len());
            for contender in order {
                let table = self.table(round, contender);
                let elapsed = match contender {
                    Contender::PulsarRs => {
                        consume_with_pulsar_rs(settings, &topic, contender, args.records, None)
                            .await?
                    }
                    Contender::PulsarRsInsert => {
                        let insert = Insert::prepare(client, &table).await?;
                        let into = Some((client, &insert));
                        consume_with_pulsar_rs(settings, &topic, contender, args.records, into)
                            .await?
                    }
                    Contender::InsertAlone => {
                        let insert = Insert::prepare(client, &table).await?;
                        let started = Instant::now();
                        for chunk in rows.chunks(BATCH) {
                            insert.run(client, chunk).await?;
                        }
                        started.elapsed()
                    }
                    Contender::Blackhole => {
                        let sink = registry().find(Kind::Sink, "blackhole")?.build_sink(
                            &serde_json::Map::new(),
                            &InstanceContext::single("bench/blackhole"),
                            Guarantee::EffectivelyOnce,
                        )?;
                        run_instance(settings, &topic, contender, sink, args.records).await?
                    }
                    Contender::Postgres => {
                        let config = json!({
                                "url": target.url,
                                "user": target.user,
                                "password": target.password,
                                "table": table,
                                "columns": {"index": "id", "seed": "seed", "data": "data"},
                                "offsets_table": offsets_table,
                                "batch_size": BATCH,
                        });
                        let serde_json::Value::Object(config) = config else {
                            anyhow::bail!("the postgres config is an object");
                        };
                        let sink = registry().find(Kind::Sink, "postgres")?.build_sink(
                            &config,
                            &InstanceContext::single("bench/postgres"),
                            Guarantee::EffectivelyOnce,
                        )?;
                        run_instance(settings, &topic, contender, sink, args.records).await?
                    }
                };
                let slot = &mut best[contender as usize];
                *slot = (*slot).min(elapsed);
                println!(
                    "round {round}: {:<46} {}",
                    contender.label(),
                    rate(args.records, elapsed)
                );
                if contender.writes_rows() {
                    let stored: i64 = client
                        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
                        .await?
                        .get(0);
                    if u64::try_from(stored).ok() != Some(args.records) {
                        anyhow::bail!("{table} holds {stored} rows, not {}", args.records);
                    }
                }
            }
        }
        Ok(best)
    }
}

/// Connects to PostgreSQL, driving the connection on its own task.
async fn connect(pg_url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(pg_url, NoTls)
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to postgres (--pg-url): {error}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %error, "benchmark postgres connection ended");
        }
    });
    Ok(client)
}

/// Returns the rows the postgres sink makes of datagen records 0..count.
fn generate_rows(count: u64, payload_size: usize) -> anyhow::Result<Vec<Row>> {
    (0..count)
        .map(|index| Row::from_json(&datagen::record(SEED, index, payload_size).value))
        .collect()
}

/// Subscribes and closes a consumer on each contender's subscription, so that each exists
/// (at the start of the topic) before the topic is filled.
async fn create_subscriptions(settings: &PulsarSettings, topic: &str) -> anyhow::Result<()> {
    let client = settings.connect().await?;
    for contender in Contender::ALL.into_iter().filter(|c| c.reads_topic()) {
        let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
            .consumer()
            .with_topic(topic)
            .with_subscription(contender.slug())
            .with_subscription_type(SubType::Failover)
            .with_options(
                ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
            )
            .build()
            .await?;
        consumer.close().await?;
    }
    Ok(())
}

/// Reads `count` messages with a raw pulsar-rs consumer on `contender`'s subscription,
/// acknowledging cumulatively every [`BATCH`] and at the end; with `insert_into`, first
/// writes the rows of those messages. Returns the time from the first read to the last ack.
async fn consume_with_pulsar_rs(
    settings: &PulsarSettings,
    topic: &str,
    contender: Contender,
    count: u64,
    insert_into: Option<(&Client, &Insert)>,
) -> anyhow::Result<Duration> {
    let client = settings.connect().await?;
    let mut consumer: pulsar::Consumer<Vec<u8>, _> = client
        .consumer()
        .with_topic(topic)
        .with_subscription(contender.slug())
        .with_subscription_type(SubType::Failover)
        .with_batch_size(BATCH as u32)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await?;
    let started = Instant::now();
    let mut read = 0_u64;
    let mut bytes = 0_usize;
    let mut rows = Vec::with_capacity(BATCH);
    while read < count {
        let message = match consumer.next().await {
            Some(message) => message?,
            None => anyhow::bail!("the consumer ended after {read} of {count} messages"),
        };
        read += 1;
        bytes += message.payload.data.len();
        if insert_into.is_some() {
            rows.push(Row::from_json(&message.payload.data)?);
        }
        if read.is_multiple_of(BATCH as u64) || read == count {
            if let Some((postgres, insert)) = insert_into {
                insert.run(postgres, &rows).await?;
                rows.clear();
            }
            consumer.cumulative_ack(&message).await?;
        }
    }
    let elapsed = started.elapsed();
    if bytes == 0 {
        anyhow::bail!("the consumer read {read} empty messages");
    }
    consumer.close().await?;
    Ok(elapsed)
}

/// Runs a sink instance effectively-once over the topic until it confirmed `count` records,
/// then stops it; returns the time from Running to the last confirmed record.
async fn run_instance(
    settings: &PulsarSettings,
    topic: &str,
    contender: Contender,
    sink: Box<dyn ferry_actors::api::Sink>,
    count: u64,
) -> anyhow::Result<Duration> {
    let store = MemoryCheckpointStore::default();
    let epoch = 1;
    store.assign(epoch);
    let config = SinkInstanceConfig {
        connector: format!(
            "bench/sink/{}-{}",
            contender.slug(),
            topic.rsplit('/').next().unwrap_or(topic)
        ),
        index: 0,
        epoch,
        inputs: vec![topic.to_owned()],
        subscription: contender.slug().to_owned(),
        guarantee: Guarantee::EffectivelyOnce,
        checkpoints: CheckpointPolicy::default(),
        pulsar: settings.clone(),
        write_batch: BATCH,
        start: StartPosition::Earliest,
        receiver_queue_size: 1000,
        error_policy: ferry_actors::api::ErrorPolicy::Fail,
        fence: None,
        incarnation: 0,
    };
    let instance = SinkInstance::new(config, sink, Arc::new(store));
    let status = instance.status();
    let address = instance.start();
    let elapsed = time_instance(&status, count).await;
    // A sink's input never ends: it runs until told to stop.
    address.send(Stop).await?;
    elapsed
}

/// Bare multi-row INSERTs into one table, [`BATCH`] rows per statement, each statement its
/// own transaction.
struct Insert {
    table: String,
    full_batch: tokio_postgres::Statement,
}

impl Insert {
    async fn prepare(client: &Client, table: &str) -> anyhow::Result<Self> {
        Ok(Self {
            table: table.to_owned(),
            full_batch: client.prepare(&Self::statement(table, BATCH)).await?,
        })
    }

    fn statement(table: &str, rows: usize) -> String {
        let values: Vec<String> = (0..rows)
            .map(|row| format!("(${}, ${}, ${})", 3 * row + 1, 3 * row + 2, 3 * row + 3))
            .collect();
        format!(
            "INSERT INTO \"{table}\" (id, seed, data) VALUES {}",
            values.join(", ")
        )
    }

    /// Inserts up to [`BATCH`] rows with one statement.
    async fn run(&self, client: &Client, rows: &[Row]) -> anyhow::Result<()> {
        let parameters: Vec<&(dyn ToSql + Sync)> = rows
            .iter()
            .flat_map(|row| [&row.index as _, &row.seed as _, &row.data as _])
            .collect();
        if rows.len() == BATCH {
            client.execute(&self.full_batch, &parameters).await?;
        } else if !rows.is_empty() {
            let statement = Self::statement(&self.table, rows.len());
            client.execute(statement.as_str(), &parameters).await?;
        }
        Ok(())
    }
}
