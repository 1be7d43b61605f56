//! The actor shell both instance kinds run in: it starts the driver (the source's or the
//! sink's loop) when the actor starts, answers [`GetStatus`], turns [`Drain`] into the flag the
//! driver checks and [`Stop`] into cancelling the driver, and records how the driver ended.
//!
//! What differs between a source and a sink lives in their [`Driver`]; the shell is one.

use std::fmt;

use actix::prelude::*;
use futures::future::BoxFuture;

use super::{InstanceState, InstanceStatus, SharedStatus, record_end, update};

/// Asks an instance for a copy of its state.
#[derive(Debug, Message)]
#[rtype(result = "InstanceStatus")]
pub struct GetStatus;

/// Stops an instance at once, without a final checkpoint (what a crash would do to it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Asks an instance to stop gracefully for a hand-off: it stops taking input, finishes what it
/// holds (receipts, or writes and flush), commits a final checkpoint, and ends in state
/// Stopped. Its successor then resumes exactly where it stopped: no repeats even under
/// at-least-once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Set when an instance is asked to drain; its driver checks it on every turn.
pub type DrainFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// Whether `flag` asks the driver to drain.
pub(crate) fn draining(flag: &DrainFlag) -> bool {
    flag.load(std::sync::atomic::Ordering::Acquire)
}

/// The loop of one instance kind, run once by its shell.
pub trait Driver: Unpin + 'static {
    /// `source` or `sink`, for logs.
    const KIND: &'static str;

    /// The connector (`tenant/namespace/name`), the instance index and the epoch it runs
    /// under.
    fn identity(&self) -> (&str, u32, u64);

    /// Runs until the input ends, a drain completes, or something fails (the error's text).
    fn run(self, status: SharedStatus, drain: DrainFlag) -> BoxFuture<'static, Result<(), String>>;

    /// The state a run that returned `Ok` ends in (`drained`: a drain was asked for).
    fn ended(drained: bool) -> InstanceState;
}

/// The actor that owns one instance, driven by `D`.
pub struct Instance<D: Driver> {
    connector: String,
    index: u32,
    epoch: u64,
    driver: Option<D>,
    status: SharedStatus,
    handle: Option<SpawnHandle>,
    drain: DrainFlag,
}

impl<D: Driver> fmt::Debug for Instance<D> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct(if D::KIND == "source" {
                "SourceInstance"
            } else {
                "SinkInstance"
            })
            .field("connector", &self.connector)
            .field("index", &self.index)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Instance<D> {
    /// Returns an instance running `driver` once the actor starts.
    pub(crate) fn with_driver(driver: D) -> Self {
        let (connector, index, epoch) = driver.identity();
        Self {
            connector: connector.to_owned(),
            index,
            epoch,
            driver: Some(driver),
            status: SharedStatus::default(),
            handle: None,
            drain: DrainFlag::default(),
        }
    }

    /// The instance's observable state, shared with whoever reports it.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }
}

impl<D: Driver> Actor for Instance<D> {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Self::Context) {
        let Some(driver) = self.driver.take() else {
            context.stop();
            return;
        };
        update(&self.status, |status| {
            status.state = InstanceState::Starting
        });
        let run = driver.run(self.status.clone(), self.drain.clone());
        let handle = context.spawn(run.into_actor(self).map(|outcome, actor, context| {
            let ended = outcome.map(|()| D::ended(draining(&actor.drain)));
            record_end(&actor.status, D::KIND, &actor.connector, actor.index, ended);
            context.stop();
        }));
        self.handle = Some(handle);
    }
}

impl<D: Driver> Handler<GetStatus> for Instance<D> {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        MessageResult(status)
    }
}

impl<D: Driver> Handler<Drain> for Instance<D> {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Self::Context) {
        self.drain.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl<D: Driver> Handler<Stop> for Instance<D> {
    type Result = ();

    fn handle(&mut self, _: Stop, context: &mut Self::Context) {
        update(&self.status, |status| status.state = InstanceState::Stopped);
        // Cancelling the run drops what it holds (producer session, consumer, connector):
        // nothing more is read, sent or written, and what was not acknowledged is delivered
        // again to the next owner.
        if let Some(handle) = self.handle.take() {
            context.cancel_future(handle);
        }
        context.stop();
    }
}
