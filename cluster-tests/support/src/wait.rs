//! Waiting for a condition, with a deadline and a reason.
//!
//! Tests never sleep and hope: they poll a condition until it holds or a deadline passes, and
//! a missed deadline fails with the reason the test was waiting.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `condition` until it returns `Some`, and returns that value.
///
/// # Panics
/// When `timeout` passes first, naming `reason` and how long it waited.
pub async fn until<T, F, Fut>(reason: &str, timeout: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {:.1?} waiting until {reason}",
            started.elapsed()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `condition` until it returns `Ok`, and returns that value; once `timeout` passes,
/// returns an error naming `reason`, how long it waited and the last `Err` the condition gave
/// (what it saw instead). For suites that gather every failure and report them together.
pub async fn within<T, F, Fut>(
    reason: &str,
    timeout: Duration,
    mut condition: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let seen = match condition().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if started.elapsed() >= timeout {
            return Err(format!(
                "timed out after {:.1?} waiting until {reason} ({seen})",
                started.elapsed()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let polls = AtomicU32::new(0);
        let value = until("the third poll", Duration::from_secs(5), || async {
            (polls.fetch_add(1, Ordering::SeqCst) == 2).then_some("ready")
        })
        .await;
        assert_eq!(value, "ready");
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting until pigs fly")]
    async fn panics_with_the_reason_after_the_deadline() {
        until("pigs fly", Duration::from_millis(120), || async {
            None::<()>
        })
        .await;
    }

    #[tokio::test]
    async fn within_returns_the_value_or_what_it_saw_at_the_deadline() {
        let polls = AtomicU32::new(0);
        let value = within("the second poll", Duration::from_secs(5), || async {
            match polls.fetch_add(1, Ordering::SeqCst) {
                1 => Ok("ready"),
                seen => Err(format!("poll {seen}")),
            }
        })
        .await;
        assert_eq!(value, Ok("ready"));
        let error = within("pigs fly", Duration::from_millis(120), || async {
            Err::<(), _>("a pig on the ground".to_owned())
        })
        .await
        .expect_err("pigs never fly");
        assert!(error.contains("waiting until pigs fly"), "{error}");
        assert!(error.ends_with("(a pig on the ground)"), "{error}");
    }
}
