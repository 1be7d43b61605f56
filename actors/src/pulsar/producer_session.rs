//! A producer session that publishes with caller-chosen sequence ids: the Pulsar half of
//! effectively-once sources (../shared/DESIGN.md §6).
//!
//! pulsar-rs's `Producer` numbers messages itself from 0 and hides the broker's
//! `last_sequence_id`, so a restarted producer with a stable name would have its first messages
//! dropped as duplicates. This session instead:
//!
//! - registers under a stable name and reports the broker's `last_sequence_id`
//!   ([`ProducerSession::last_sequence_id`]);
//! - sends each message with the sequence id the caller gives, batching several into one SEND;
//! - resolves each send to a [`Receipt`]: persisted (with its message id) or dropped as a
//!   duplicate. Ids at or below what the broker already has resolve as duplicates at once,
//!   without a round trip; the broker's deduplication catches the rest;
//! - keeps a bounded number of messages in flight (the caller waits for room);
//! - on a lost connection, looks the topic up again, re-registers, and resends what is still
//!   unconfirmed, in order;
//! - retries `ProducerBusy` (an old owner still connected) with backoff until a deadline, then
//!   fails: that refusal is the fence against a zombie owner.
//!
//! One session owns one broker connection and one producer on one topic (for a partitioned
//! topic, open one session per partition, `<topic>-partition-<n>`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pulsar::message::Message as Frame;
use pulsar::message::proto::{
    BaseCommand, CommandCloseProducer, CommandPartitionedTopicMetadata, CommandProducer,
    ProducerAccessMode, ServerError, base_command::Type as CommandType,
    command_partitioned_topic_metadata_response,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::PulsarSettings;
use super::batch::{BatchingOptions, OutgoingMessage, SequenceRange, encode_send};
use super::connection::{BrokerConnection, BrokerUrl, Dialer, TcpDialer};
use super::error::SessionError;

/// The only producer id a session uses: each session has its own connection.
const PRODUCER_ID: u64 = 1;
const COMMAND_QUEUE: usize = 1024;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// How a session behaves.
#[derive(Clone)]
pub struct ProducerSessionOptions {
    /// Full topic name, e.g. `persistent://public/default/out` (one partition of a partitioned
    /// topic: `...-partition-0`).
    pub topic: String,
    /// Stable producer name; deduplication is per name.
    pub producer_name: String,
    /// How messages are grouped into SENDs.
    pub batching: BatchingOptions,
    /// Most messages sent but not yet confirmed; `send` waits for room beyond it.
    pub max_pending_messages: usize,
    /// Limit for one request to the broker (connect, lookup, register, close).
    pub operation_timeout: Duration,
    /// How long the session keeps trying to (re)connect before failing pending sends.
    pub reconnect_deadline: Duration,
    /// How long `ProducerBusy` is retried before the session gives up.
    pub busy_deadline: Duration,
    /// Silence after which the session pings the broker; twice this and the connection is
    /// considered dead.
    pub keepalive: Duration,
    /// Opens TCP connections (tests substitute one that can cut them).
    pub dialer: Arc<dyn Dialer>,
    /// Asked before every SEND goes out: false stops the session with
    /// [`SessionError::Fenced`], so an owner that lost its lease (paused, partitioned) writes
    /// nothing once it resumes, not even what it had batched before.
    pub fence: Option<crate::instance::Fence>,
}

impl std::fmt::Debug for ProducerSessionOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProducerSessionOptions")
            .field("topic", &self.topic)
            .field("producer_name", &self.producer_name)
            .field("batching", &self.batching)
            .field("max_pending_messages", &self.max_pending_messages)
            .field("reconnect_deadline", &self.reconnect_deadline)
            .field("busy_deadline", &self.busy_deadline)
            .finish_non_exhaustive()
    }
}

impl ProducerSessionOptions {
    /// Returns options with defaults: batching on (1,000 messages / 128 KiB / 1 ms), 10,000
    /// pending messages, 30 s operations, 60 s to reconnect, 30 s of `ProducerBusy` retries.
    pub fn new(topic: impl Into<String>, producer_name: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            producer_name: producer_name.into(),
            batching: BatchingOptions::default(),
            max_pending_messages: 10_000,
            operation_timeout: Duration::from_secs(30),
            reconnect_deadline: Duration::from_secs(60),
            busy_deadline: Duration::from_secs(30),
            keepalive: Duration::from_secs(30),
            dialer: Arc::new(TcpDialer),
            fence: None,
        }
    }

    fn check_fence(&self) -> Result<(), SessionError> {
        if crate::instance::Fence::allows(self.fence.as_ref()) {
            Ok(())
        } else {
            Err(SessionError::Fenced)
        }
    }
}

/// Where a persisted message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// Ledger.
    pub ledger_id: u64,
    /// Entry within the ledger.
    pub entry_id: u64,
    /// Index within a batched entry, -1 when not batched.
    pub batch_index: i32,
}

/// How one send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The broker stored the message.
    Persisted {
        /// The message's sequence id.
        sequence_id: u64,
        /// Where it is stored.
        message_id: MessageId,
    },
    /// The broker already had this sequence id from this producer name and dropped the copy.
    Duplicate {
        /// The message's sequence id.
        sequence_id: u64,
    },
}

impl Receipt {
    /// The message's sequence id.
    pub fn sequence_id(&self) -> u64 {
        match self {
            Self::Persisted { sequence_id, .. } | Self::Duplicate { sequence_id } => *sequence_id,
        }
    }
}

/// A send's future outcome; resolves when the broker confirms (or the session fails).
#[derive(Debug)]
pub struct PendingReceipt {
    receiver: oneshot::Receiver<Result<Receipt, SessionError>>,
    failure: Arc<OnceLock<SessionError>>,
}

impl Future for PendingReceipt {
    type Output = Result<Receipt, SessionError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|outcome| outcome.unwrap_or_else(|_| Err(closed_error(&self.failure))))
    }
}

fn closed_error(failure: &OnceLock<SessionError>) -> SessionError {
    match failure.get() {
        Some(error) => error.clone(),
        None => SessionError::Closed("the session task ended".to_owned()),
    }
}

type Reply = oneshot::Sender<Result<Receipt, SessionError>>;

/// A send waiting for its receipt, holding its slot among the pending messages.
#[derive(Debug)]
struct Waiter {
    sequence_id: u64,
    reply: Reply,
    _slot: OwnedSemaphorePermit,
}

impl Waiter {
    fn resolve(self, outcome: Result<Receipt, SessionError>) {
        // The caller may have stopped waiting; the outcome is then nobody's concern.
        let _ = self.reply.send(outcome);
    }
}

#[derive(Debug)]
enum Command {
    Send {
        message: OutgoingMessage,
        reply: Reply,
        slot: OwnedSemaphorePermit,
    },
    Flush,
    Close {
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
}

/// A producer with caller-chosen sequence ids on one topic. See the module documentation.
#[derive(Debug)]
pub struct ProducerSession {
    commands: mpsc::Sender<Command>,
    slots: Arc<Semaphore>,
    failure: Arc<OnceLock<SessionError>>,
    reconnects: Arc<AtomicU64>,
    last_sequence_id: Option<u64>,
    topic: String,
    producer_name: String,
}

impl ProducerSession {
    /// Looks the topic up, connects to its broker and registers the producer; retries
    /// `ProducerBusy` up to `busy_deadline`.
    pub async fn open(
        settings: PulsarSettings,
        options: ProducerSessionOptions,
    ) -> Result<Self, SessionError> {
        let (connection, last_sequence_id) = establish(&settings, &options).await?;
        info!(
            topic = %options.topic,
            producer = %options.producer_name,
            broker = %connection.url,
            last_sequence_id = ?last_sequence_id,
            "producer session open"
        );
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let slots = Arc::new(Semaphore::new(options.max_pending_messages.max(1)));
        let failure = Arc::new(OnceLock::new());
        let reconnects = Arc::new(AtomicU64::new(0));
        let session = Self {
            commands,
            slots,
            failure: failure.clone(),
            reconnects: reconnects.clone(),
            last_sequence_id,
            topic: options.topic.clone(),
            producer_name: options.producer_name.clone(),
        };
        let task = SessionTask::new(
            settings,
            options,
            connection,
            last_sequence_id,
            failure,
            reconnects,
        );
        tokio::spawn(task.run(receiver));
        Ok(session)
    }

    /// The highest sequence id the broker had stored for this producer name when the session
    /// opened; `None` when it had none.
    pub fn last_sequence_id(&self) -> Option<u64> {
        self.last_sequence_id
    }

    /// How many times the session has re-established its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The topic this session publishes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The producer name.
    pub fn producer_name(&self) -> &str {
        &self.producer_name
    }

    /// Queues `message`; waits while `max_pending_messages` are unconfirmed. The returned
    /// future resolves to the message's receipt.
    pub async fn send(&mut self, message: OutgoingMessage) -> Result<PendingReceipt, SessionError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed_error(&self.failure))?;
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Send {
                message,
                reply,
                slot,
            })
            .await
            .map_err(|_| closed_error(&self.failure))?;
        Ok(PendingReceipt {
            receiver,
            failure: self.failure.clone(),
        })
    }

    /// Sends the open batch now instead of at its deadline.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        self.commands
            .send(Command::Flush)
            .await
            .map_err(|_| closed_error(&self.failure))
    }

    /// Sends what is queued, waits for every receipt, and closes the producer at the broker.
    pub async fn close(self) -> Result<(), SessionError> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Close { reply })
            .await
            .map_err(|_| closed_error(&self.failure))?;
        receiver
            .await
            .unwrap_or_else(|_| Err(closed_error(&self.failure)))
    }
}

/// Returns how many partitions `topic` has (0: not partitioned). A partitioned topic takes one
/// session per partition, on `<topic>-partition-<n>`.
pub async fn partition_count(
    settings: &PulsarSettings,
    topic: &str,
    timeout: Duration,
) -> Result<u32, SessionError> {
    let service = BrokerUrl::parse(&settings.url)?;
    let mut connection = BrokerConnection::open(settings, &TcpDialer, &service, timeout).await?;
    let request_id = connection.next_request_id();
    let request = Frame {
        command: BaseCommand {
            r#type: CommandType::PartitionedMetadata as i32,
            partition_metadata: Some(CommandPartitionedTopicMetadata {
                topic: topic.to_owned(),
                request_id,
                ..Default::default()
            }),
            ..Default::default()
        },
        payload: None,
    };
    let operation = format!("reading the partitions of {topic}");
    let response = connection
        .request(request, request_id, &operation, timeout)
        .await?;
    let answer = response.partition_metadata_response.unwrap_or_default();
    match answer.response() {
        command_partitioned_topic_metadata_response::LookupType::Success => {
            Ok(answer.partitions.unwrap_or(0))
        }
        command_partitioned_topic_metadata_response::LookupType::Failed => {
            Err(SessionError::Broker {
                operation,
                error: answer.error(),
                message: answer.message.unwrap_or_default(),
            })
        }
    }
}

/// Looks up the topic, connects and registers the producer. Returns the connection and the
/// broker's last sequence id for the producer name.
async fn establish(
    settings: &PulsarSettings,
    options: &ProducerSessionOptions,
) -> Result<(BrokerConnection, Option<u64>), SessionError> {
    let timeout = options.operation_timeout;
    let service = BrokerUrl::parse(&settings.url)?;
    let connection =
        BrokerConnection::open(settings, options.dialer.as_ref(), &service, timeout).await?;
    let mut connection = connection
        .lookup_owner(settings, options.dialer.as_ref(), &options.topic, timeout)
        .await?;

    let busy_since = Instant::now();
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let request_id = connection.next_request_id();
        let register = Frame {
            command: BaseCommand {
                r#type: CommandType::Producer as i32,
                producer: Some(CommandProducer {
                    topic: options.topic.clone(),
                    producer_id: PRODUCER_ID,
                    request_id,
                    producer_name: Some(options.producer_name.clone()),
                    user_provided_producer_name: Some(true),
                    producer_access_mode: Some(ProducerAccessMode::Shared as i32),
                    ..Default::default()
                }),
                ..Default::default()
            },
            payload: None,
        };
        let operation = format!(
            "registering producer {:?} on {}",
            options.producer_name, options.topic
        );
        let mut response = connection
            .request(register, request_id, &operation, timeout)
            .await?;
        loop {
            match response.r#type() {
                CommandType::ProducerSuccess => {
                    let success = response.producer_success.unwrap_or_default();
                    if success.producer_ready == Some(false) {
                        // Queued behind another producer (exclusive access modes): the broker
                        // sends a second ProducerSuccess once this one is ready.
                        response = connection
                            .request_more(request_id, &operation, timeout)
                            .await?;
                        continue;
                    }
                    let last = success
                        .last_sequence_id
                        .and_then(|last| u64::try_from(last).ok());
                    return Ok((connection, last));
                }
                CommandType::Error => {
                    let error = response.error.unwrap_or_default();
                    if error.error() == ServerError::ProducerBusy {
                        let waited = busy_since.elapsed();
                        if waited >= options.busy_deadline {
                            return Err(SessionError::ProducerBusy {
                                topic: options.topic.clone(),
                                producer_name: options.producer_name.clone(),
                                waited,
                            });
                        }
                        debug!(producer = %options.producer_name, ?backoff, "producer name busy; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                    return Err(SessionError::Broker {
                        operation,
                        error: error.error(),
                        message: error.message,
                    });
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "{operation}: unexpected answer {other:?}"
                    )));
                }
            }
        }
    }
}

/// Whether re-establishing a session after `error` is worth another try.
fn retriable(error: &SessionError) -> bool {
    match error {
        SessionError::Connect { .. }
        | SessionError::Timeout { .. }
        | SessionError::ConnectionLost(_)
        | SessionError::Protocol(_) => true,
        SessionError::Broker { error, .. } => matches!(
            error,
            ServerError::ServiceNotReady
                | ServerError::TooManyRequests
                | ServerError::MetadataError
                | ServerError::PersistenceError
                | ServerError::UnknownError
        ),
        _ => false,
    }
}

/// A SEND on the wire, awaiting its receipt.
#[derive(Debug)]
struct InFlight {
    range: SequenceRange,
    batched: bool,
    frame: Frame,
    waiters: Vec<Waiter>,
}

/// What woke the session loop.
#[allow(
    clippy::large_enum_variant,
    reason = "one event exists at a time and is consumed at once; boxing would allocate per frame"
)]
enum Event {
    Command(Option<Command>),
    Received(Result<BaseCommand, SessionError>),
    BatchDue,
    LivenessCheck,
}

/// The task that owns the connection.
struct SessionTask {
    settings: PulsarSettings,
    options: ProducerSessionOptions,
    connection: Option<BrokerConnection>,
    last_persisted: Option<u64>,
    last_accepted: Option<u64>,
    open_batch: Vec<(OutgoingMessage, Waiter)>,
    open_batch_bytes: usize,
    batch_deadline: Option<Instant>,
    in_flight: VecDeque<InFlight>,
    liveness_check: Instant,
    ping_outstanding: bool,
    closing: Option<Option<oneshot::Sender<Result<(), SessionError>>>>,
    failure: Arc<OnceLock<SessionError>>,
    reconnects: Arc<AtomicU64>,
}

impl SessionTask {
    fn new(
        settings: PulsarSettings,
        options: ProducerSessionOptions,
        connection: BrokerConnection,
        last_persisted: Option<u64>,
        failure: Arc<OnceLock<SessionError>>,
        reconnects: Arc<AtomicU64>,
    ) -> Self {
        let liveness_check = Instant::now() + options.keepalive;
        Self {
            settings,
            options,
            connection: Some(connection),
            last_persisted,
            last_accepted: last_persisted,
            open_batch: Vec::new(),
            open_batch_bytes: 0,
            batch_deadline: None,
            in_flight: VecDeque::new(),
            liveness_check,
            ping_outstanding: false,
            closing: None,
            failure,
            reconnects,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            if self.closing.is_some() && self.open_batch.is_empty() && self.in_flight.is_empty() {
                let outcome = self.close_producer().await;
                if let Some(Some(reply)) = self.closing.take() {
                    let _ = reply.send(outcome);
                }
                return;
            }
            if self.connection.is_none() {
                if let Err(error) = self.reestablish().await {
                    self.fail(&error, &mut commands);
                    return;
                }
                continue;
            }
            let event = self.next_event(&mut commands).await;
            let outcome = match event {
                Event::Command(Some(command)) => self.accept(command, &mut commands).await,
                Event::Command(None) => {
                    // Every handle is gone: finish what is pending, then close.
                    self.closing = Some(None);
                    self.flush_batch().await
                }
                Event::Received(Ok(command)) => self.handle_frame(command).await,
                Event::Received(Err(error)) => Err(error),
                Event::BatchDue => self.flush_batch().await,
                Event::LivenessCheck => self.check_liveness().await,
            };
            if let Err(error) = outcome {
                if retriable(&error) {
                    warn!(topic = %self.options.topic, producer = %self.options.producer_name, error = %error, "producer connection lost; reconnecting");
                    self.connection = None;
                } else {
                    self.fail(&error, &mut commands);
                    return;
                }
            }
        }
    }

    async fn next_event(&mut self, commands: &mut mpsc::Receiver<Command>) -> Event {
        let accepting = self.closing.is_none();
        let batch_deadline = self.batch_deadline;
        let liveness_check = self.liveness_check;
        let Some(connection) = self.connection.as_mut() else {
            return Event::Received(Err(SessionError::ConnectionLost(
                "no connection".to_owned(),
            )));
        };
        tokio::select! {
            biased;
            received = connection.receive() => Event::Received(received),
            () = sleep_until_some(batch_deadline) => Event::BatchDue,
            command = commands.recv(), if accepting => Event::Command(command),
            () = tokio::time::sleep_until(liveness_check) => Event::LivenessCheck,
        }
    }

    async fn accept(
        &mut self,
        command: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<(), SessionError> {
        let mut next = Some(command);
        // Take whatever else is already queued, so one wake-up fills a batch.
        while let Some(command) = next.take() {
            match command {
                Command::Send {
                    message,
                    reply,
                    slot,
                } => self.enqueue(message, reply, slot).await?,
                Command::Flush => self.flush_batch().await?,
                Command::Close { reply } => {
                    self.closing = Some(Some(reply));
                    return self.flush_batch().await;
                }
            }
            next = commands.try_recv().ok();
        }
        Ok(())
    }

    async fn enqueue(
        &mut self,
        message: OutgoingMessage,
        reply: Reply,
        slot: OwnedSemaphorePermit,
    ) -> Result<(), SessionError> {
        let sequence_id = message.sequence_id;
        let waiter = Waiter {
            sequence_id,
            reply,
            _slot: slot,
        };
        if self.last_persisted.is_some_and(|last| sequence_id <= last) {
            waiter.resolve(Ok(Receipt::Duplicate { sequence_id }));
            return Ok(());
        }
        if let Some(last_sent) = self.last_accepted.filter(|last| sequence_id <= *last) {
            waiter.resolve(Err(SessionError::SequenceNotIncreasing {
                sequence_id,
                last_sent,
                last_persisted: self.last_persisted,
            }));
            return Ok(());
        }
        let size = message.size_in_batch();
        let limit = self
            .connection
            .as_ref()
            .map_or(usize::MAX, |connection| connection.max_message_size);
        if size > limit {
            waiter.resolve(Err(SessionError::MessageTooLarge {
                sequence_id,
                size,
                limit,
            }));
            return Ok(());
        }
        let batching = self.options.batching;
        if !self.open_batch.is_empty()
            && (self.open_batch_bytes + size > batching.max_bytes.min(limit))
        {
            self.flush_batch().await?;
        }
        self.last_accepted = Some(sequence_id);
        if self.open_batch.is_empty() {
            self.batch_deadline = Some(Instant::now() + batching.max_delay);
        }
        self.open_batch.push((message, waiter));
        self.open_batch_bytes += size;
        if self.open_batch.len() >= batching.max_messages.max(1) {
            self.flush_batch().await?;
        }
        Ok(())
    }

    async fn flush_batch(&mut self) -> Result<(), SessionError> {
        self.batch_deadline = None;
        if self.open_batch.is_empty() {
            return Ok(());
        }
        self.open_batch_bytes = 0;
        let (messages, waiters): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.open_batch).into_iter().unzip();
        let batched = self.options.batching.enabled();
        let (frame, range) = encode_send(
            PRODUCER_ID,
            &self.options.producer_name,
            &messages,
            batched,
            now_ms(),
        );
        self.in_flight.push_back(InFlight {
            range,
            batched,
            frame: frame.clone(),
            waiters,
        });
        self.options.check_fence()?;
        match self.connection.as_mut() {
            Some(connection) => connection.send(frame).await,
            // Sent after reconnecting, with everything else in flight.
            None => Ok(()),
        }
    }

    async fn handle_frame(&mut self, command: BaseCommand) -> Result<(), SessionError> {
        self.ping_outstanding = false;
        self.liveness_check = Instant::now() + self.options.keepalive;
        match command.r#type() {
            CommandType::SendReceipt => {
                let receipt = command.send_receipt.unwrap_or_default();
                self.confirm(
                    receipt.sequence_id,
                    receipt.message_id.map(|id| (id.ledger_id, id.entry_id)),
                )
            }
            CommandType::SendError => {
                let error = command.send_error.unwrap_or_default();
                let failure = SessionError::Broker {
                    operation: format!(
                        "sending sequence id {} to {}",
                        error.sequence_id, self.options.topic
                    ),
                    error: error.error(),
                    message: error.message,
                };
                // Retriable send errors (checksum, persistence) are repaired by reconnecting
                // and resending; the broker closes the connection on most of them anyway.
                if matches!(
                    failure,
                    SessionError::Broker {
                        error: ServerError::ChecksumError | ServerError::PersistenceError,
                        ..
                    }
                ) {
                    Err(SessionError::ConnectionLost(failure.to_string()))
                } else {
                    Err(failure)
                }
            }
            CommandType::Ping => match self.connection.as_mut() {
                Some(connection) => connection.pong().await,
                None => Ok(()),
            },
            CommandType::CloseProducer => Err(SessionError::ConnectionLost(format!(
                "the broker closed producer {:?} (topic moved or unloaded)",
                self.options.producer_name
            ))),
            other => {
                debug!(command = ?other, "ignoring frame");
                Ok(())
            }
        }
    }

    /// Resolves the in-flight SEND that `sequence_id` confirms.
    fn confirm(
        &mut self,
        sequence_id: u64,
        message_id: Option<(u64, u64)>,
    ) -> Result<(), SessionError> {
        let Some(front) = self.in_flight.front() else {
            debug!(
                sequence_id,
                "receipt with nothing in flight (a resend already confirmed)"
            );
            return Ok(());
        };
        if sequence_id < front.range.first {
            debug!(sequence_id, "late receipt for an already confirmed send");
            return Ok(());
        }
        if sequence_id != front.range.first {
            return Err(SessionError::Protocol(format!(
                "receipt for sequence id {sequence_id} while {} is the oldest in flight",
                front.range.first
            )));
        }
        let Some(in_flight) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.last_persisted = Some(self.last_persisted.map_or(in_flight.range.highest, |last| {
            last.max(in_flight.range.highest)
        }));
        // The broker acknowledges a dropped duplicate with message id -1:-1.
        let stored = message_id.filter(|&(ledger, entry)| ledger != u64::MAX && entry != u64::MAX);
        for (index, waiter) in in_flight.waiters.into_iter().enumerate() {
            let sequence_id = waiter.sequence_id;
            let receipt = match stored {
                Some((ledger_id, entry_id)) => Receipt::Persisted {
                    sequence_id,
                    message_id: MessageId {
                        ledger_id,
                        entry_id,
                        batch_index: if in_flight.batched {
                            i32::try_from(index).unwrap_or(i32::MAX)
                        } else {
                            -1
                        },
                    },
                },
                None => Receipt::Duplicate { sequence_id },
            };
            waiter.resolve(Ok(receipt));
        }
        Ok(())
    }

    async fn check_liveness(&mut self) -> Result<(), SessionError> {
        if self.ping_outstanding {
            return Err(SessionError::ConnectionLost(format!(
                "no answer from the broker for {:?}",
                self.options.keepalive * 2
            )));
        }
        self.ping_outstanding = true;
        self.liveness_check = Instant::now() + self.options.keepalive;
        match self.connection.as_mut() {
            Some(connection) => connection.ping().await,
            None => Ok(()),
        }
    }

    /// Reconnects and resends every unconfirmed SEND in order, within `reconnect_deadline`.
    async fn reestablish(&mut self) -> Result<(), SessionError> {
        let started = Instant::now();
        let mut backoff = INITIAL_BACKOFF;
        loop {
            match establish(&self.settings, &self.options).await {
                Ok((connection, last_sequence_id)) => {
                    info!(
                        topic = %self.options.topic,
                        producer = %self.options.producer_name,
                        broker = %connection.url,
                        last_sequence_id = ?last_sequence_id,
                        unconfirmed = self.in_flight.len(),
                        after = ?started.elapsed(),
                        "producer session reconnected"
                    );
                    self.connection = Some(connection);
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.ping_outstanding = false;
                    self.liveness_check = Instant::now() + self.options.keepalive;
                    if let Some(last) = last_sequence_id {
                        self.last_persisted =
                            Some(self.last_persisted.map_or(last, |known| known.max(last)));
                    }
                    return self.resend_unconfirmed().await;
                }
                Err(error)
                    if retriable(&error) && started.elapsed() < self.options.reconnect_deadline =>
                {
                    debug!(error = %error, ?backoff, "reconnect attempt failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// After a reconnect: SENDs the broker already stored resolve as duplicates; the rest go
    /// out again, oldest first.
    async fn resend_unconfirmed(&mut self) -> Result<(), SessionError> {
        while let Some(front) = self.in_flight.front() {
            if self
                .last_persisted
                .is_some_and(|last| front.range.highest <= last)
            {
                let first = front.range.first;
                self.confirm(first, None)?;
            } else {
                break;
            }
        }
        self.options.check_fence()?;
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        for in_flight in &self.in_flight {
            connection.feed(in_flight.frame.clone()).await?;
        }
        connection.flush().await
    }

    async fn close_producer(&mut self) -> Result<(), SessionError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let request_id = connection.next_request_id();
        let close = Frame {
            command: BaseCommand {
                r#type: CommandType::CloseProducer as i32,
                close_producer: Some(CommandCloseProducer {
                    producer_id: PRODUCER_ID,
                    request_id,
                }),
                ..Default::default()
            },
            payload: None,
        };
        let operation = format!("closing producer {:?}", self.options.producer_name);
        let response = connection
            .request(
                close,
                request_id,
                &operation,
                self.options.operation_timeout,
            )
            .await?;
        match response.r#type() {
            CommandType::Success => {
                info!(topic = %self.options.topic, producer = %self.options.producer_name, "producer session closed");
                Ok(())
            }
            _ => {
                let error = response.error.unwrap_or_default();
                Err(SessionError::Broker {
                    operation,
                    error: error.error(),
                    message: error.message,
                })
            }
        }
    }

    /// Ends the session: every pending and later send fails with `error`.
    fn fail(&mut self, error: &SessionError, commands: &mut mpsc::Receiver<Command>) {
        warn!(topic = %self.options.topic, producer = %self.options.producer_name, error = %error, "producer session failed");
        let _ = self.failure.set(error.clone());
        for (_, waiter) in self.open_batch.drain(..) {
            waiter.resolve(Err(error.clone()));
        }
        for in_flight in self.in_flight.drain(..) {
            for waiter in in_flight.waiters {
                waiter.resolve(Err(error.clone()));
            }
        }
        if let Some(Some(reply)) = self.closing.take() {
            let _ = reply.send(Err(error.clone()));
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Send { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Close { reply } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Flush => {}
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
