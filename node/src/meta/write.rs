//! The write path: commit a command through the leader, forwarding from followers and
//! retrying across leader changes; and the batcher that gathers concurrent checkpoint commits
//! into one log entry.
//!
//! openraft 0.9 flushes each appended entry before it takes the next client write, so every
//! client write costs the leader one fsync. Checkpoint commits are the hot path (every instance
//! commits continuously), so the batcher sends whatever commits queued up while the previous
//! batch was in flight as one `Command::Batch`: one entry, one fsync per node.
//!
//! That alone leaves many small entries when commits trickle in from many slow instances (500
//! sources at one record a second commit 500 times a second, one or two per entry: most of an
//! otherwise idle node's CPU went to appending and applying them). So, like PostgreSQL's
//! `commit_delay` with `commit_siblings`, once commits arrive faster than
//! [`GROUP_COMMIT_RATE`] a second, the batcher holds the first of a batch back up to
//! [`GROUP_COMMIT_DELAY`] for others to join. A lone writer never waits; source instances
//! keep working while their commit waits.

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

/// Commits a second above which a batch waits for more: at this rate about four commits join
/// one within [`GROUP_COMMIT_DELAY`], while up to twenty busy instances (ten commits a second
/// each) still commit without delay.
pub(crate) const GROUP_COMMIT_RATE: u64 = 200;

/// The longest the first commit of a batch waits for others, once commits are frequent.
pub(crate) const GROUP_COMMIT_DELAY: Duration = Duration::from_millis(20);

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

/// Commits per second, counted over windows of about a second as they arrive.
#[derive(Debug)]
pub(crate) struct ArrivalRate {
    window_start: Instant,
    in_window: u64,
    per_second: u64,
}

impl ArrivalRate {
    /// Returns a rate of zero, its first window starting at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            in_window: 0,
            per_second: 0,
        }
    }

    /// Counts one arrival at `now`.
    pub(crate) fn record(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            // A window that ran long (a quiet spell) lowers the rate accordingly.
            self.per_second = (self.in_window as f64 / elapsed.as_secs_f64()) as u64;
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
    }

    /// Returns whether the first commit of a batch starting at `now` should wait for others:
    /// the last whole window was busy, and the current one is not quiet so far.
    pub(crate) fn busy(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        self.per_second >= GROUP_COMMIT_RATE && elapsed < Duration::from_secs(2)
    }
}

async fn run_batches(writer: Writer, mut queued: mpsc::Receiver<Queued>) {
    let mut rate = ArrivalRate::new(Instant::now());
    while let Some(first) = queued.recv().await {
        let now = Instant::now();
        rate.record(now);
        let linger_until = rate
            .busy(now)
            .then(|| tokio::time::Instant::from_std(now + GROUP_COMMIT_DELAY));
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let next = match queued.try_recv() {
                Ok(next) => Some(next),
                Err(mpsc::error::TryRecvError::Empty) => match linger_until {
                    Some(until) => tokio::time::timeout_at(until, queued.recv())
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                },
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            let Some(next) = next else { break };
            rate.record(Instant::now());
            batch.push(next);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_for_company_only_while_commits_are_frequent() {
        let start = Instant::now();
        let mut rate = ArrivalRate::new(start);
        assert!(!rate.busy(start), "nothing seen yet");
        // Ten busy instances: 100 commits a second. No waiting.
        for tick in 0..=100 {
            rate.record(start + Duration::from_millis(10 * tick));
        }
        let after_one = start + Duration::from_millis(1_005);
        assert!(!rate.busy(after_one), "100 a second is below the rate");
        // 500 slow instances: 500 commits a second.
        for tick in 0..=500 {
            rate.record(after_one + Duration::from_millis(2 * tick));
        }
        let after_two = after_one + Duration::from_millis(1_010);
        assert!(rate.busy(after_two), "500 a second shares entries");
        // Quiet for a while: the next commit does not wait for company that is not coming.
        assert!(!rate.busy(after_two + Duration::from_secs(3)));
        let later = after_two + Duration::from_secs(5);
        rate.record(later);
        assert!(!rate.busy(later), "the quiet window brought the rate down");
    }
}
