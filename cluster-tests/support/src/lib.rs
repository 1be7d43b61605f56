//! Helpers shared by Ferry's tests.
//!
//! - [`broker`]: the real Pulsar broker every Pulsar test talks to. Its addresses come from
//!   `PULSAR_URL` and `PULSAR_ADMIN_URL`; when it does not answer, the test **fails** with a
//!   message saying how to start it. A Pulsar test never skips silently.
//! - [`postgres`]: the real PostgreSQL server the `postgres` sink's tests write to. Its URL
//!   comes from `FERRY_TEST_PG_URL`; when it does not answer, the test **fails** with a message
//!   saying how to start it (`deploy/postgres/postgres.sh start`).
//! - [`wait`]: waiting for a condition with a deadline and a reason, instead of sleeping.
//! - [`unique_name`]: names for topics and subscriptions that no earlier run used.

pub mod broker;
pub mod postgres;
pub mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns `prefix` followed by this process's id, the current time and a counter, so that
/// names never collide across tests, runs, or a broker that keeps its data between runs.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{sequence}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let first = unique_name("topic");
        let second = unique_name("topic");
        assert_ne!(first, second);
        assert!(first.starts_with("topic-"), "{first}");
    }
}
