//! Steps the scenarios share: creating a datagen source, waiting on instance states, and
//! checking what a source wrote.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_test_support::wait;
use serde_json::Value;

use crate::TestCluster;

/// How long a scenario waits for any one condition.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Milliseconds since the Unix epoch (the broker's publish times use the same clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A datagen source as a scenario creates it.
#[derive(Debug, Clone)]
pub struct Datagen<'a> {
    /// The connector's name (in public/default).
    pub name: &'a str,
    /// Its output topic.
    pub topic: &'a str,
    /// Its instances.
    pub parallelism: u32,
    /// `EFFECTIVELY_ONCE`, `ATLEAST_ONCE` or `ATMOST_ONCE`.
    pub guarantee: &'a str,
    /// Records per instance.
    pub count: u64,
    /// Records per second per instance.
    pub rate: u64,
}

impl Datagen<'_> {
    /// Creates the source through node `node`. datagen's `count` and `rate` are for the whole
    /// source (instance i of p generates indexes i, i+p, …): this scenario's per-instance
    /// figures are multiplied by the parallelism.
    pub fn create(&self, cluster: &TestCluster, node: u64) {
        let parallelism = u64::from(self.parallelism);
        let config = format!(
            r#"{{"count": {}, "rate": {}, "payload_size": 64}}"#,
            self.count * parallelism,
            self.rate * parallelism
        );
        cluster.json(
            node,
            &[
                "sources",
                "create",
                "--name",
                self.name,
                "--source-type",
                "datagen",
                "--destination-topic-name",
                self.topic,
                "--parallelism",
                &self.parallelism.to_string(),
                "--processing-guarantees",
                self.guarantee,
                "--source-config",
                &config,
            ],
        );
    }
}

/// Waits until the instances of source `name`, asked of some running node, satisfy
/// `condition`, and returns them.
pub async fn wait_sources(
    cluster: &TestCluster,
    name: &str,
    reason: &str,
    condition: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    wait::until(reason, TIMEOUT, || {
        let found = cluster
            .running()
            .into_iter()
            .find_map(|node| cluster.instances(node, "sources", name));
        let result = found.filter(|instances| condition(instances));
        async move { result }
    })
    .await
}

/// Waits until all `count` instances of source `name` run and each wrote at least `written`
/// records, and returns them.
pub async fn wait_all_writing(
    cluster: &TestCluster,
    name: &str,
    count: usize,
    written: u64,
) -> Vec<Value> {
    wait_sources(cluster, name, "every instance runs and wrote some", |all| {
        all_in(all, count, "RUNNING")
            && all
                .iter()
                .all(|instance| instance["records_written"].as_u64().unwrap_or(0) >= written)
    })
    .await
}

/// Whether every instance is in `state` and there are `count` of them.
pub fn all_in(instances: &[Value], count: usize, state: &str) -> bool {
    instances.len() == count && instances.iter().all(|instance| instance["state"] == state)
}

/// Asserts that `keys` is exactly `0..count` in order, naming the first difference.
pub fn check_exactly_once_in_order(producer: &str, keys: &[u64], count: u64) {
    if let Some((position, key)) = keys
        .iter()
        .enumerate()
        .find(|(position, key)| **key != *position as u64)
    {
        panic!(
            "{producer}: at position {position} key {key}, expected {position} (around it: {:?})",
            &keys[position.saturating_sub(3)..(position + 3).min(keys.len())]
        );
    }
    assert_eq!(
        keys.len() as u64,
        count,
        "{producer}: {} records, expected {count}",
        keys.len()
    );
}

/// The positions within its instance's share of the datagen indexes (keys) of `reads`, in
/// order: instance i of `parallelism` writes keys i, i+p, i+2p, …, which read as 0, 1, 2, ….
pub fn keys(reads: &[crate::topic::Read], parallelism: u32) -> Vec<u64> {
    let parallelism = u64::from(parallelism.max(1));
    reads
        .iter()
        .map(|read| {
            read.key
                .as_deref()
                .and_then(|key| key.parse::<u64>().ok())
                .map_or(u64::MAX, |key| key / parallelism)
        })
        .collect()
}

/// The instance index and, for at-least-once and at-most-once, the epoch in a source's producer
/// name (`ferry-{tenant}-{namespace}-{name}-{index}-c{incarnation}[-e{epoch}]`).
pub fn producer_parts(producer: &str) -> Option<(u64, Option<u64>)> {
    let mut parts = producer.rsplit('-');
    let mut part = parts.next()?;
    let epoch = match part.strip_prefix('e').map(str::parse::<u64>) {
        Some(Ok(epoch)) => {
            part = parts.next()?;
            Some(epoch)
        }
        _ => None,
    };
    part.strip_prefix('c')?.parse::<u64>().ok()?;
    let index = parts.next()?.parse().ok()?;
    Some((index, epoch))
}

/// The reads of the producers of instance `index`, oldest epoch first.
pub fn producers_of(
    by_producer: &std::collections::BTreeMap<String, Vec<crate::topic::Read>>,
    index: u64,
) -> Vec<(Option<u64>, &Vec<crate::topic::Read>)> {
    let mut found: Vec<(Option<u64>, &Vec<crate::topic::Read>)> = by_producer
        .iter()
        .filter_map(|(producer, reads)| {
            let (instance, epoch) = producer_parts(producer)?;
            (instance == index).then_some((epoch, reads))
        })
        .collect();
    found.sort_by_key(|(epoch, _)| *epoch);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_names_give_their_instance_and_epoch() {
        assert_eq!(
            producer_parts("ferry-public-default-gen-2-c17"),
            Some((2, None))
        );
        assert_eq!(
            producer_parts("ferry-public-default-gen-0-c17-e40"),
            Some((0, Some(40)))
        );
        assert_eq!(producer_parts("someone-else"), None);
    }
}
