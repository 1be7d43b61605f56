//! The write path: commit a command through the leader, forwarding from followers and
//! retrying across leader changes; and the batcher that gathers concurrent checkpoint commits
//! into one log entry.
//!
//! openraft 0.9 flushes each appended entry before it takes the next client write, so every
//! client write costs the leader one fsync. Checkpoint commits are the hot path (every instance
//! commits continuously), so the batcher sends whatever commits queued up while the previous
//! batch was in flight as one `Command::Batch`: one entry, one fsync per node.

use std::time::{Duration, Instant};

use ferry_proto::cluster::v1::RaftMessage;
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::TypeConfig;
use super::codec;
use super::network::Peers;
use super::node::MetaError;
use super::state::{Command, NodeId, Outcome, Reply};

/// How long a forwarded call to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between retries of a write that met no leader.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// The most checkpoint commits in one batch.
const MAX_BATCH: usize = 512;

/// Checkpoint commits waiting for the batcher.
const BATCH_QUEUE_DEPTH: usize = 4096;

/// Why this node did not commit a write itself.
#[derive(Debug)]
pub(crate) enum LeaderWriteError {
    /// This node is not the leader; the leader's id and address when known.
    NotLeader(Option<(NodeId, String)>),
    /// The write failed.
    Failed(MetaError),
}

/// Commits commands through the leader.
#[derive(Clone)]
pub(crate) struct Writer {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) peers: Peers,
    pub(crate) write_timeout: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Commits `command` through the leader and returns its reply. A follower forwards it; a
    /// leader change is retried until the write timeout (commands are idempotent, so a retry of
    /// a write that did commit is harmless and answered as the command's re-application).
    pub(crate) async fn write(&self, command: Command) -> Result<Reply, MetaError> {
        let deadline = Instant::now() + self.write_timeout;
        loop {
            let error = match self.write_once(&command).await {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            if !error.is_retryable() || Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    async fn write_once(&self, command: &Command) -> Result<Reply, MetaError> {
        match self.write_as_leader(command.clone()).await {
            Err(LeaderWriteError::NotLeader(Some(leader))) if leader.0 != self.id => {
                self.forward_write(&leader.1, command).await
            }
            Err(LeaderWriteError::NotLeader(_)) => {
                Err(MetaError::Unavailable("no leader".to_owned()))
            }
            Err(LeaderWriteError::Failed(error)) => Err(error),
            Ok(reply) => Ok(reply),
        }
    }

    /// Commits `command` on this node only if it is the leader (also the far end of a forward).
    pub(crate) async fn write_as_leader(
        &self,
        command: Command,
    ) -> Result<Reply, LeaderWriteError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(LeaderWriteError::NotLeader(
                    forward
                        .leader_id
                        .zip(forward.leader_node)
                        .map(|(id, node)| (id, node.addr)),
                ))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => Err(
                LeaderWriteError::Failed(MetaError::Membership(error.to_string())),
            ),
            Err(RaftError::Fatal(fatal)) => Err(LeaderWriteError::Failed(MetaError::Stopped(
                fatal.to_string(),
            ))),
        }
    }

    async fn forward_write(&self, leader: &str, command: &Command) -> Result<Reply, MetaError> {
        let mut client = self.peers.client(leader)?;
        let message = RaftMessage {
            payload: codec::encode("command", command)?.into(),
        };
        let answer = tokio::time::timeout(FORWARD_TIMEOUT, client.forward_write(message)).await;
        match answer {
            Ok(Ok(response)) => Ok(codec::decode("reply", &response.into_inner().payload)?),
            // The leader refused the command itself: retrying cannot help.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                Err(MetaError::Refused(format!(
                    "leader at {leader}: {}",
                    status.message()
                )))
            }
            // Anything else (not the leader any more, a connection cut mid-call) may have
            // committed or not: the retry is safe because commands are idempotent.
            Ok(Err(status)) => Err(MetaError::Unavailable(format!(
                "leader at {leader}: {}",
                status.message()
            ))),
            Err(_) => Err(MetaError::Unavailable(format!(
                "leader at {leader} did not answer within {FORWARD_TIMEOUT:?}"
            ))),
        }
    }
}

/// One checkpoint commit waiting for its batch.
type Queued = (Command, oneshot::Sender<Result<Reply, MetaError>>);

/// Gathers concurrent checkpoint commits into batches; one batch in flight at a time.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Queued>,
}

impl Batcher {
    /// Starts the batching task; it ends when the last clone of the batcher is dropped.
    pub(crate) fn start(writer: Writer) -> Self {
        let (queue, queued) = mpsc::channel(BATCH_QUEUE_DEPTH);
        tokio::spawn(run_batches(writer, queued));
        Self { queue }
    }

    /// Commits `command` in the next batch and returns its own reply.
    pub(crate) async fn write(&self, command: Command) -> Result<Reply, MetaError> {
        let (reply, replied) = oneshot::channel();
        let stopped = || MetaError::Stopped("the checkpoint batcher stopped".to_owned());
        self.queue
            .send((command, reply))
            .await
            .map_err(|_| stopped())?;
        replied.await.map_err(|_| stopped())?
    }
}

async fn run_batches(writer: Writer, mut queued: mpsc::Receiver<Queued>) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if batch.len() == 1
            && let Some((command, waiter)) = batch.pop()
        {
            // Alone: no batch wrapper.
            let _ = waiter.send(writer.write(command).await);
            continue;
        }
        let (commands, waiters): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
        let count = commands.len();
        match writer.write(Command::Batch(commands)).await {
            Ok(Ok(Outcome::Batch(replies))) if replies.len() == count => {
                for (waiter, reply) in waiters.into_iter().zip(replies) {
                    let _ = waiter.send(Ok(reply));
                }
            }
            Ok(other) => {
                let message = format!("a batch of {count} commits was answered with {other:?}");
                for waiter in waiters {
                    let _ = waiter.send(Err(MetaError::Stopped(message.clone())));
                }
            }
            Err(error) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(error.duplicate()));
                }
            }
        }
    }
}
