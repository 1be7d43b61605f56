//! The process's runtime: one actix `System` driving one multi-thread tokio runtime.
//!
//! `#[actix::main]` would make a single-threaded runtime, starving tonic and pulsar-rs. Instead
//! the actix system runs on a multi-thread tokio runtime shared with everything else, so actors,
//! gRPC handlers and Pulsar connections all use the same worker threads.

use std::future::Future;

/// Runs `future` to completion inside an actix system on a multi-thread tokio runtime.
pub fn block_on<F: Future>(future: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ferry-worker")
        .build()?;
    let system = actix_rt::System::with_tokio_rt(move || runtime);
    Ok(system.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::{Actor, Context, Handler, Message};

    struct Doubler;

    impl Actor for Doubler {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u64")]
    struct Double(u64);

    impl Handler<Double> for Doubler {
        type Result = u64;

        fn handle(&mut self, message: Double, _: &mut Context<Self>) -> u64 {
            message.0 * 2
        }
    }

    #[test]
    fn actors_and_tokio_tasks_share_the_runtime() {
        let answer = block_on(async {
            let doubler = Doubler.start();
            // A task on a tokio worker thread talks to the actor through its address.
            tokio::spawn(async move { doubler.send(Double(21)).await })
                .await
                .expect("task completes")
                .expect("actor answers")
        })
        .expect("runtime builds");
        assert_eq!(answer, 42);
    }
}
