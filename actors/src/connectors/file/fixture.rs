//! The `file` source's and sink's conformance fixtures.
//!
//! - Source: a fresh directory per test; a writer thread appends `{"id": n, "text": "..."}`
//!   lines at the feed's rate, the first half to `in-000.log` and the rest to `in-001.log` (a
//!   rotation). The outage moves the directory away (the writer follows it there) and back.
//! - Sink: a fresh directory per test holding the output file; the ids are read back from its
//!   lines. The outage moves the directory away and puts a file in its place, so the sink
//!   cannot make it again; bringing it back undoes both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::api::fixture::{
    BadConfig, Feed, FixtureError, Outage, SinkFixture, SinkOutput, SourceFixture, SourceInput,
    json_id, object, temporary_directory,
};

/// The `file` source's fixture.
pub(crate) fn source() -> Option<Box<dyn SourceFixture>> {
    Some(Box::new(FileSourceFixture))
}

/// The `file` sink's fixture.
pub(crate) fn sink() -> Option<Box<dyn SinkFixture>> {
    Some(Box::new(FileSinkFixture))
}

/// Makes directories of growing files for the `file` source.
#[derive(Debug)]
pub struct FileSourceFixture;

/// Makes output files for the `file` sink.
#[derive(Debug)]
pub struct FileSinkFixture;

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FixtureError> + Send + 'static,
) -> Result<T, FixtureError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| format!("file fixture task failed: {error}"))?
}

fn rename(from: &Path, to: &Path) -> Result<(), FixtureError> {
    std::fs::rename(from, to)
        .map_err(|error| format!("move {} to {}: {error}", from.display(), to.display()))
}

/// A directory that can be moved away from its path and back; whoever writes into it asks
/// where it is under the same lock, so a move never lands between the question and the write.
#[derive(Debug)]
struct Movable {
    home: PathBuf,
    away: PathBuf,
    /// Whether the directory is away; the lock is held across each move and each write.
    is_away: Mutex<bool>,
    /// With `block`, a file takes the directory's name while it is away.
    block: bool,
}

impl Movable {
    fn new(home: PathBuf, block: bool) -> Self {
        let mut away = home.clone().into_os_string();
        away.push(".away");
        Self {
            home,
            away: PathBuf::from(away),
            is_away: Mutex::new(false),
            block,
        }
    }

    /// Runs `work` on where the directory is now.
    fn with_current<T>(&self, work: impl FnOnce(&Path) -> T) -> T {
        let is_away = self.is_away.lock().unwrap_or_else(PoisonError::into_inner);
        work(if *is_away { &self.away } else { &self.home })
    }

    fn take_away(&self) -> Result<(), FixtureError> {
        let mut is_away = self.is_away.lock().unwrap_or_else(PoisonError::into_inner);
        if *is_away {
            return Ok(());
        }
        rename(&self.home, &self.away)?;
        if self.block {
            std::fs::write(&self.home, b"not a directory").map_err(|error| {
                format!("put a file at {}: {error}", self.home.display())
            })?;
        }
        *is_away = true;
        Ok(())
    }

    fn bring_back(&self) -> Result<(), FixtureError> {
        let mut is_away = self.is_away.lock().unwrap_or_else(PoisonError::into_inner);
        if !*is_away {
            return Ok(());
        }
        if self.block {
            std::fs::remove_file(&self.home).map_err(|error| {
                format!("remove the file at {}: {error}", self.home.display())
            })?;
        }
        rename(&self.away, &self.home)?;
        *is_away = false;
        Ok(())
    }
}

/// The outage of a [`Movable`] directory.
#[derive(Debug)]
struct MoveAway(Arc<Movable>);

impl Outage for MoveAway {
    fn take_away(&self) -> BoxFuture<'_, Result<(), FixtureError>> {
        let directory = self.0.clone();
        Box::pin(blocking(move || directory.take_away()))
    }

    fn bring_back(&self) -> BoxFuture<'_, Result<(), FixtureError>> {
        let directory = self.0.clone();
        Box::pin(blocking(move || directory.bring_back()))
    }

    fn named_in_error(&self) -> Vec<String> {
        vec![
            "file unavailable".to_owned(),
            self.0.home.display().to_string(),
        ]
    }
}

/// One source test's input: a directory, and the thread writing into it.
#[derive(Debug)]
struct FileInput {
    root: PathBuf,
    directory: Arc<Movable>,
    outage: Option<MoveAway>,
    stop: Arc<AtomicBool>,
    writer: Option<tokio::task::JoinHandle<Result<(), FixtureError>>>,
}

/// Appends lines for `count` ids at `rate` a second into `directory`, the first half to
/// `in-000.log`, the rest to `in-001.log`, until done or `stop`.
async fn write_lines(
    directory: Arc<Movable>,
    count: u64,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Result<(), FixtureError> {
    // Pacing, not waiting for a condition: each tick writes the lines due by then.
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let started = tokio::time::Instant::now();
    let mut next = 0;
    while next < count && !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let end = due.clamp(next, count);
        let directory = directory.clone();
        blocking(move || write_range(&directory, next..end, count)).await?;
        next = end;
    }
    Ok(())
}

/// Appends the lines of `ids` (of `0..count`) to the file each belongs to.
fn write_range(
    directory: &Movable,
    ids: std::ops::Range<u64>,
    count: u64,
) -> Result<(), FixtureError> {
    let half = count / 2;
    for (file, part) in [
        ("in-000.log", ids.start..ids.end.min(half)),
        ("in-001.log", ids.start.max(half)..ids.end),
    ] {
        if part.is_empty() {
            continue;
        }
        let lines: String = part
            .map(|id| format!("{{\"id\":{id},\"text\":\"line {id}\"}}\n"))
            .collect();
        directory.with_current(|path| append(&path.join(file), lines.as_bytes()))?;
    }
    Ok(())
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), FixtureError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|error| format!("append to {}: {error}", path.display()))
}

impl SourceInput for FileInput {
    fn config(&self) -> Map<String, Value> {
        object(json!({
            "path_glob": self.directory.home.join("in-*.log").display().to_string(),
            "poll_interval_ms": 20,
        }))
    }

    fn outage(&self) -> Option<&dyn Outage> {
        self.outage.as_ref().map(|outage| outage as &dyn Outage)
    }

    fn clean_up(mut self: Box<Self>) -> BoxFuture<'static, Result<(), FixtureError>> {
        // The writer sees the flag within a tick and ends; the files go once it has.
        self.stop.store(true, Ordering::Relaxed);
        let writer = self.writer.take();
        Box::pin(async move {
            let written = match writer {
                Some(writer) => writer
                    .await
                    .unwrap_or_else(|error| Err(format!("the file writer failed: {error}"))),
                None => Ok(()),
            };
            blocking(move || {
                self.directory.bring_back()?;
                std::fs::remove_dir_all(&self.root)
                    .map_err(|error| format!("remove {}: {error}", self.root.display()))
            })
            .await?;
            written
        })
    }
}

impl SourceFixture for FileSourceFixture {
    fn input(
        &self,
        test: &str,
        feed: Feed,
    ) -> BoxFuture<'_, Result<Box<dyn SourceInput>, FixtureError>> {
        let test = test.to_owned();
        Box::pin(async move {
            let root = temporary_directory(&test)?;
            let home = root.join("in");
            std::fs::create_dir(&home)
                .map_err(|error| format!("create {}: {error}", home.display()))?;
            let directory = Arc::new(Movable::new(home, false));
            let stop = Arc::new(AtomicBool::new(false));
            let writer = tokio::spawn(write_lines(
                directory.clone(),
                feed.count,
                feed.rate.max(1),
                stop.clone(),
            ));
            Ok(Box::new(FileInput {
                root,
                outage: feed.outage.then(|| MoveAway(directory.clone())),
                directory,
                stop,
                writer: Some(writer),
            }) as Box<dyn SourceInput>)
        })
    }

    fn record_id(&self, _key: Option<&str>, value: &[u8]) -> Option<u64> {
        json_id(value)
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        vec![
            BadConfig::refused(object(json!({})), "path_glob"),
            BadConfig::refused(object(json!({"path_glob": 3})), "path_glob"),
            BadConfig::refused(object(json!({"path_glob": "/tmp/*/in-*.log"})), "path_glob"),
            BadConfig::refused(
                object(json!({"path_glob": "/tmp/in-*.log", "poll_interval_ms": 0})),
                "poll_interval_ms",
            ),
        ]
    }
}

/// One sink test's output: a file in a directory of its own.
#[derive(Debug)]
struct FileOutput {
    root: PathBuf,
    directory: Arc<Movable>,
    outage: Option<MoveAway>,
}

impl FileOutput {
    fn path(&self) -> PathBuf {
        self.directory.home.join("out.jsonl")
    }
}

impl SinkOutput for FileOutput {
    fn config(&self) -> Map<String, Value> {
        object(json!({"path": self.path().display().to_string()}))
    }

    fn read_back(&self) -> BoxFuture<'_, Result<Option<Vec<u64>>, FixtureError>> {
        let path = self.path();
        Box::pin(blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(error) => return Err(format!("read {}: {error}", path.display())),
            };
            text.lines()
                .enumerate()
                .map(|(number, line)| {
                    json_id(line.as_bytes()).ok_or_else(|| {
                        format!(
                            "line {} of {} holds no id: {line:?}",
                            number + 1,
                            path.display()
                        )
                    })
                })
                .collect::<Result<Vec<u64>, FixtureError>>()
                .map(Some)
        }))
    }

    fn check_committed(&self, position: &[u8]) -> BoxFuture<'_, Result<(), FixtureError>> {
        let committed = super::sink::decode_position(position);
        let path = self.path();
        Box::pin(blocking(move || {
            let committed = committed.map_err(|error| format!("the committed position: {error}"))?;
            let length = std::fs::metadata(&path)
                .map_err(|error| format!("{}: {error}", path.display()))?
                .len();
            if committed == length {
                Ok(())
            } else {
                Err(format!(
                    "the committed position is {committed} bytes, {} holds {length}: a \
                     recovery would cut or keep the wrong lines",
                    path.display()
                ))
            }
        }))
    }

    fn outage(&self) -> Option<&dyn Outage> {
        self.outage.as_ref().map(|outage| outage as &dyn Outage)
    }

    fn clean_up(self: Box<Self>) -> BoxFuture<'static, Result<(), FixtureError>> {
        Box::pin(blocking(move || {
            self.directory.bring_back()?;
            std::fs::remove_dir_all(&self.root)
                .map_err(|error| format!("remove {}: {error}", self.root.display()))
        }))
    }
}

impl SinkFixture for FileSinkFixture {
    fn output(
        &self,
        test: &str,
        outage: bool,
    ) -> BoxFuture<'_, Result<Box<dyn SinkOutput>, FixtureError>> {
        let test = test.to_owned();
        Box::pin(async move {
            let root = temporary_directory(&test)?;
            let home = root.join("out");
            std::fs::create_dir(&home)
                .map_err(|error| format!("create {}: {error}", home.display()))?;
            let directory = Arc::new(Movable::new(home, true));
            Ok(Box::new(FileOutput {
                root,
                outage: outage.then(|| MoveAway(directory.clone())),
                directory,
            }) as Box<dyn SinkOutput>)
        })
    }

    fn bad_configs(&self) -> Vec<BadConfig> {
        vec![
            BadConfig::refused(object(json!({})), "path"),
            BadConfig::refused(object(json!({"path": "/tmp/out/"})), "path"),
            BadConfig::refused(object(json!({"path": 7})), "path"),
            BadConfig::refused(object(json!({"path": "/tmp/out", "mode": "append"})), "mode"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn the_source_input_arrives_in_two_files_and_follows_its_directory_away() {
        let feed = Feed {
            count: 300,
            rate: 3_000,
            parallelism: 1,
            outage: true,
        };
        let input = FileSourceFixture.input("unit", feed).await.expect("an input");
        let glob = input.config()["path_glob"]
            .as_str()
            .expect("a path_glob")
            .to_owned();
        let home = PathBuf::from(glob.trim_end_matches("/in-*.log"));
        let outage = input.outage().expect("an outage");
        assert!(outage.named_in_error()[1].ends_with("/in"));
        outage.take_away().await.expect("taken away");
        assert!(!home.exists());
        outage.bring_back().await.expect("brought back");
        // The writer ends on its own: 300 lines at 3000/s.
        ferry_test_support::wait::until("the writer wrote ids 0..300", TIMEOUT, || {
            let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap_or_default();
            let first = read("in-000.log");
            let ids: Vec<u64> = format!("{first}{}", read("in-001.log"))
                .lines()
                .filter_map(|line| json_id(line.as_bytes()))
                .collect();
            let halves = first.lines().count() == 150;
            async move { (halves && ids == (0..300).collect::<Vec<u64>>()).then_some(()) }
        })
        .await;
        let root = home.parent().expect("a root").to_owned();
        input.clean_up().await.expect("cleaned up");
        assert!(!root.exists());
    }

    #[tokio::test]
    async fn the_sink_output_reads_back_ids_and_its_outage_blocks_the_directory() {
        let output = FileSinkFixture.output("unit", true).await.expect("an output");
        let path = PathBuf::from(output.config()["path"].as_str().expect("a path"));
        assert_eq!(output.read_back().await.expect("read"), Some(vec![]));
        std::fs::write(&path, "{\"id\":1}\n{\"id\":0}\n{\"id\":1}\n").expect("write");
        assert_eq!(
            output.read_back().await.expect("read"),
            Some(vec![1, 0, 1])
        );
        let length = std::fs::metadata(&path).expect("the file").len();
        output
            .check_committed(&length.to_be_bytes())
            .await
            .expect("the whole file committed");
        let error = output
            .check_committed(&(length - 1).to_be_bytes())
            .await
            .expect_err("a byte past the committed position");
        assert!(error.contains("committed position"), "{error}");
        let outage = output.outage().expect("an outage");
        outage.take_away().await.expect("taken away");
        let directory = path.parent().expect("a directory");
        assert!(directory.is_file(), "a file blocks the directory's name");
        outage.bring_back().await.expect("brought back");
        assert!(path.is_file());
        std::fs::write(&path, "no id\n").expect("write");
        let error = output.read_back().await.expect_err("a line without an id");
        assert!(error.contains("line 1"), "{error}");
        output.clean_up().await.expect("cleaned up");
        assert!(!directory.exists());
    }
}
