//! The `file` source: follows the files of one directory whose names match a pattern, one
//! record per line.
//!
//! Files are read one after the other in sorted name order, like the segments of a log: the
//! source tails the current file and moves on to the next name only once that next file exists.
//! That is the contract with the writer (the usual log rotation): a file is append-only, and it
//! is complete once a file with a later name exists. Under it the records read from a position
//! are a pure function of the files' contents — the concatenation of the files from that point —
//! whatever the timing of the reads, so the source is replayable and offers effectively-once.
//! (Reading several growing files side by side would interleave their lines in an order that
//! depends on when each read happened, and a replay could not reproduce it.)
//!
//! A line is emitted once its newline is written; a last line without a newline is emitted only
//! when its file is complete. A file whose name sorts before the current one and appears late
//! breaks the contract and is not read.
//!
//! The position is the current file's name and the byte offset of its next unread byte: every
//! file before it is complete and read, every file after it unread, so per-file offsets of the
//! earlier files would add nothing but a position that grows with every rotation.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::time::Instant;

use super::glob::FileGlob;
use crate::api::config::ConnectorConfig;
use crate::api::registry::{InstanceContext, SourceFactory};
use crate::api::{
    ConnectorError, Position, Record, Source, SourceCapabilities, SourceRead, SourceRecord,
};

/// Lines of the files matching a pattern, read in name order and followed as they grow
/// (replayable).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Files to read: a directory and a file-name pattern (`*`, `?`), e.g.
    /// /var/log/app/app-*.log; a file is complete once a later name exists.
    pub path_glob: String,
    /// How often to look for new lines and files once everything was read, in milliseconds
    /// (1 to 60000).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_interval_ms() -> u64 {
    200
}

/// The longest poll interval accepted: a minute between looks is already a stalled source.
const MAX_POLL_INTERVAL_MS: u64 = 60_000;

impl FileSourceConfig {
    /// Checks what serde does not, naming the field; returns the parsed pattern.
    fn checked_glob(&self) -> Result<FileGlob, ConnectorError> {
        if !(1..=MAX_POLL_INTERVAL_MS).contains(&self.poll_interval_ms) {
            return Err(ConnectorError::InvalidConfig {
                field: "poll_interval_ms".to_owned(),
                reason: format!("must be between 1 and {MAX_POLL_INTERVAL_MS}"),
            });
        }
        FileGlob::parse("path_glob", &self.path_glob)
    }
}

impl ConnectorConfig for FileSourceConfig {
    fn validate(&self) -> Result<(), ConnectorError> {
        self.checked_glob().map(drop)
    }
}

/// The `file` source type.
#[derive(Debug)]
pub struct FileSourceType;

impl SourceFactory for FileSourceType {
    type Config = FileSourceConfig;
    const NAME: &'static str = "file";
    const CAPABILITIES: SourceCapabilities = SourceCapabilities { replayable: true };

    fn build(
        config: FileSourceConfig,
        _context: &InstanceContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        Ok(Box::new(FileSource::new(&config)?))
    }

    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        let position = FilePosition::decode(position)?;
        Ok(format!("file={} offset={}", position.file_name, position.offset))
    }

    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        let bad = || {
            ConnectorError::InvalidPosition(format!(
                "{text:?} is not file=<name> offset=<bytes>"
            ))
        };
        let rest = text.trim().strip_prefix("file=").ok_or_else(bad)?;
        let (file_name, offset) = rest.rsplit_once(" offset=").ok_or_else(bad)?;
        if file_name.is_empty() || file_name.contains('/') {
            return Err(bad());
        }
        Ok(FilePosition {
            file_name: file_name.to_owned(),
            offset: offset.trim().parse().map_err(|_| bad())?,
        }
        .encode())
    }

    fn fixture() -> Option<Box<dyn crate::api::fixture::SourceFixture>> {
        super::fixture::source()
    }
}

/// Where a `file` source resumes: the current file and the byte offset of its next unread byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// The file's name in the pattern's directory (the directory comes from the config, so a
    /// position survives a config that spells the same directory differently).
    pub file_name: String,
    /// The offset of the next unread byte.
    pub offset: u64,
}

/// The version byte opening an encoded [`FilePosition`].
const POSITION_VERSION: u8 = 1;

impl FilePosition {
    /// Encodes the position: version 1, name length (4 bytes BE), name (UTF-8), offset (8
    /// bytes BE).
    pub fn encode(&self) -> Position {
        let name = self.file_name.as_bytes();
        let mut bytes = Vec::with_capacity(1 + 4 + name.len() + 8);
        bytes.push(POSITION_VERSION);
        bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(&self.offset.to_be_bytes());
        bytes
    }

    /// Decodes a position written by [`FilePosition::encode`].
    pub fn decode(position: &[u8]) -> Result<Self, ConnectorError> {
        let invalid = |reason: &str| {
            ConnectorError::InvalidPosition(format!(
                "file source position of {} bytes: {reason}",
                position.len()
            ))
        };
        let (&version, rest) = position.split_first().ok_or_else(|| invalid("empty"))?;
        if version != POSITION_VERSION {
            return Err(invalid(&format!("unknown version {version}")));
        }
        let (length, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("truncated name length"))?;
        let length = u32::from_be_bytes(*length) as usize;
        if rest.len() != length + 8 {
            return Err(invalid("name length does not match"));
        }
        let (name, offset) = rest.split_at(length);
        let file_name = String::from_utf8(name.to_vec()).map_err(|_| invalid("name not UTF-8"))?;
        let offset: [u8; 8] = offset.try_into().map_err(|_| invalid("truncated offset"))?;
        Ok(Self {
            file_name,
            offset: u64::from_be_bytes(offset),
        })
    }
}

/// Caps the bytes one read returns, so a read of a large backlog stays a bounded blocking task.
const MAX_READ_BYTES: usize = 1024 * 1024;

/// Whether the current file may still grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The last file: a line without its newline is still being written.
    Growing,
    /// A later file exists: what is left, newline or not, is the file's last line.
    Complete,
}

/// The blocking part of the source: lists the directory and reads lines. Runs on
/// `spawn_blocking`, moved in and out of the task.
#[derive(Debug)]
struct Follower {
    glob: FileGlob,
    current: Option<FilePosition>,
}

impl Follower {
    /// Positions the follower, checking that the directory exists and that the position's file
    /// is not shorter than its offset.
    fn open(&mut self, position: Option<FilePosition>) -> Result<(), ConnectorError> {
        self.next_file_after(None)?;
        if let Some(position) = &position {
            let path = self.path_of(&position.file_name);
            match std::fs::metadata(&path) {
                Ok(metadata) if metadata.len() < position.offset => {
                    return Err(shorter_than_offset(&path, metadata.len(), position.offset));
                }
                Ok(_) => {}
                // Deleted after it was read (retention): reading moves on to the next file.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(unavailable(&path, &error)),
            }
        }
        self.current = position;
        Ok(())
    }

    /// Reads up to `max_records` lines from where the follower stands, moving on to the next
    /// file when the current one is complete. Returns no records when nothing new is there.
    fn read(&mut self, max_records: usize) -> Result<Vec<SourceRecord>, ConnectorError> {
        loop {
            let Some(current) = self.current.clone() else {
                match self.next_file_after(None)? {
                    Some(file_name) => {
                        self.current = Some(FilePosition {
                            file_name,
                            offset: 0,
                        });
                        continue;
                    }
                    None => return Ok(Vec::new()),
                }
            };
            let records = self.read_lines(&current, max_records, Ending::Growing)?;
            if !records.is_empty() {
                return Ok(records);
            }
            let Some(next) = self.next_file_after(Some(&current.file_name))? else {
                return Ok(Vec::new());
            };
            // A later file exists, so the current one is complete: read it again now, after the
            // listing, to get what was appended before `next` appeared and a last line without a
            // newline.
            let records = self.read_lines(&current, max_records, Ending::Complete)?;
            if !records.is_empty() {
                return Ok(records);
            }
            self.current = Some(FilePosition {
                file_name: next,
                offset: 0,
            });
        }
    }

    fn path_of(&self, file_name: &str) -> PathBuf {
        self.glob.directory().join(file_name)
    }

    /// Returns the first matching file name after `after` (all of them when `None`).
    fn next_file_after(&self, after: Option<&str>) -> Result<Option<String>, ConnectorError> {
        let directory = self.glob.directory();
        let entries =
            std::fs::read_dir(directory).map_err(|error| unavailable(directory, &error))?;
        let mut first: Option<String> = None;
        for entry in entries {
            let entry = entry.map_err(|error| unavailable(directory, &error))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // Not UTF-8: cannot be named in a position or a property.
            };
            let later = after.is_none_or(|after| name.as_str() > after);
            let earlier_than_first = first.as_ref().is_none_or(|first| name < *first);
            // `metadata` follows symbolic links: a link to a file is read like the file.
            if later
                && earlier_than_first
                && self.glob.matches(&name)
                && std::fs::metadata(entry.path()).is_ok_and(|metadata| metadata.is_file())
            {
                first = Some(name);
            }
        }
        Ok(first)
    }

    /// Reads lines of `position`'s file from its offset and advances the follower past them.
    fn read_lines(
        &mut self,
        position: &FilePosition,
        max_records: usize,
        ending: Ending,
    ) -> Result<Vec<SourceRecord>, ConnectorError> {
        let path = self.path_of(&position.file_name);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            // Gone: nothing more to read from it; a later file, once there, takes over.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if ending == Ending::Complete {
                    tracing::warn!(file = %path.display(), "file removed before it was read to its end");
                }
                return Ok(Vec::new());
            }
            Err(error) => return Err(unavailable(&path, &error)),
        };
        let length = file
            .metadata()
            .map_err(|error| unavailable(&path, &error))?
            .len();
        if length < position.offset {
            return Err(shorter_than_offset(&path, length, position.offset));
        }
        file.seek(SeekFrom::Start(position.offset))
            .map_err(|error| unavailable(&path, &error))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let file_property = path.display().to_string();
        let mut records = Vec::new();
        let mut offset = position.offset;
        let mut bytes_read = 0;
        let mut line = Vec::new();
        while records.len() < max_records.max(1) && bytes_read < MAX_READ_BYTES {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|error| unavailable(&path, &error))?;
            if read == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if ending == Ending::Growing {
                break; // The rest of this line is still to be written.
            }
            let line_offset = offset;
            offset += read as u64;
            bytes_read += read;
            records.push(SourceRecord {
                record: Record {
                    value: line.clone(),
                    properties: [
                        ("file".to_owned(), file_property.clone()),
                        ("offset".to_owned(), line_offset.to_string()),
                    ]
                    .into(),
                    ..Record::default()
                },
                position_after: FilePosition {
                    file_name: position.file_name.clone(),
                    offset,
                }
                .encode(),
            });
        }
        self.current = Some(FilePosition {
            file_name: position.file_name.clone(),
            offset,
        });
        Ok(records)
    }
}

fn unavailable(path: &Path, error: &io::Error) -> ConnectorError {
    ConnectorError::Unavailable {
        system: "file".to_owned(),
        reason: format!("{}: {error}", path.display()),
    }
}

fn shorter_than_offset(path: &Path, length: u64, offset: u64) -> ConnectorError {
    ConnectorError::InvalidPosition(format!(
        "{} is {length} bytes, shorter than the read offset {offset} (files must only grow)",
        path.display()
    ))
}

/// The `file` source.
#[derive(Debug)]
pub struct FileSource {
    glob: FileGlob,
    poll_interval: Duration,
    /// `None` only while a blocking read holds it, or after that read panicked (then `open`
    /// makes a new one).
    follower: Option<Follower>,
    /// After a read found nothing, the next look at the file system waits until then.
    next_poll: Option<Instant>,
}

impl FileSource {
    /// Returns a source for `config`, positioned before the first file; fails naming the field
    /// of an invalid config.
    pub fn new(config: &FileSourceConfig) -> Result<Self, ConnectorError> {
        let glob = config.checked_glob()?;
        Ok(Self {
            follower: Some(Follower {
                glob: glob.clone(),
                current: None,
            }),
            glob,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            next_poll: None,
        })
    }

    /// Runs `work` on the follower in a blocking task and puts the follower back.
    async fn with_follower<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut Follower) -> Result<T, ConnectorError> + Send + 'static,
    ) -> Result<T, ConnectorError> {
        let mut follower = self
            .follower
            .take()
            .ok_or_else(|| ConnectorError::Unavailable {
                system: "file".to_owned(),
                reason: "the source lost its reader after a failed read; reopen it".to_owned(),
            })?;
        let (follower, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut follower);
            (follower, result)
        })
        .await
        .map_err(|error| ConnectorError::Unavailable {
            system: "file".to_owned(),
            reason: format!("reader task failed: {error}"),
        })?;
        self.follower = Some(follower);
        result
    }
}

impl Source for FileSource {
    fn open(&mut self, position: Option<&Position>) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let position = position
            .map(|bytes| FilePosition::decode(bytes))
            .transpose();
        Box::pin(async move {
            let position = position?;
            self.follower = Some(Follower {
                glob: self.glob.clone(),
                current: None,
            });
            self.next_poll = None;
            self.with_follower(move |follower| follower.open(position))
                .await
        })
    }

    fn read(
        &mut self,
        max_records: usize,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<SourceRead, ConnectorError>> {
        Box::pin(async move {
            loop {
                // After an idle look, the file system is looked at again only after the
                // interval; the wait ends at the deadline.
                if let Some(at) = self.next_poll.filter(|at| Instant::now() < *at) {
                    if at > deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Ok(SourceRead::Idle);
                    }
                    tokio::time::sleep_until(at).await;
                }
                let records = self
                    .with_follower(move |follower| follower.read(max_records))
                    .await?;
                if !records.is_empty() {
                    self.next_poll = None;
                    return Ok(SourceRead::Records(records));
                }
                self.next_poll = Some(Instant::now() + self.poll_interval);
                if Instant::now() >= deadline {
                    return Ok(SourceRead::Idle);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let position = FilePosition {
            file_name: "app-0001.log".to_owned(),
            offset: 4_096,
        };
        let bytes = position.encode();
        assert_eq!(bytes[0], POSITION_VERSION);
        assert_eq!(FilePosition::decode(&bytes).expect("decode"), position);
        for bad in [
            Vec::new(),
            vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            bytes[..bytes.len() - 1].to_vec(),
            [bytes.as_slice(), &[0]].concat(),
        ] {
            let error = FilePosition::decode(&bad).expect_err("bad position");
            assert!(
                matches!(error, ConnectorError::InvalidPosition(_)),
                "{error}"
            );
        }
    }

    #[test]
    fn config_ranges_name_the_field() {
        let config = |poll_interval_ms| FileSourceConfig {
            path_glob: "/tmp/*.log".to_owned(),
            poll_interval_ms,
        };
        assert!(config(200).checked_glob().is_ok());
        for bad in [0, MAX_POLL_INTERVAL_MS + 1] {
            let error = config(bad).checked_glob().expect_err("out of range");
            assert!(
                matches!(&error, ConnectorError::InvalidConfig { field, .. } if field == "poll_interval_ms"),
                "{error}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_idle_read_the_file_system_is_looked_at_again_only_after_the_interval() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mut source = FileSource::new(&FileSourceConfig {
            path_glob: format!("{}/*.log", directory.path().display()),
            poll_interval_ms: 1_000,
        })
        .expect("valid");
        source.open(None).await.expect("open");
        let soon = || Instant::now() + Duration::from_millis(10);
        assert_eq!(source.read(10, soon()).await.expect("read"), SourceRead::Idle);
        std::fs::write(directory.path().join("a.log"), "one\n").expect("write");
        let before = Instant::now();
        assert_eq!(
            source.read(10, soon()).await.expect("read"),
            SourceRead::Idle,
            "within the interval: not looked at"
        );
        assert_eq!(before.elapsed(), Duration::from_millis(10), "waited until the deadline");
        // A read with a later deadline waits for the interval, then finds the line.
        let SourceRead::Records(records) = source
            .read(10, Instant::now() + Duration::from_secs(5))
            .await
            .expect("read")
        else {
            panic!("the new line is read once the interval passed");
        };
        assert_eq!(records[0].record.value, b"one");
        assert!(before.elapsed() >= Duration::from_millis(990), "{:?}", before.elapsed());
        assert_eq!(
            FileSourceType::render_position(&FilePosition { file_name: "a.log".to_owned(), offset: 4 }.encode())
                .expect("position"),
            "file=a.log offset=4"
        );
        assert_eq!(
            FileSourceType::parse_position("file=a b.log offset=12").expect("text"),
            FilePosition { file_name: "a b.log".to_owned(), offset: 12 }.encode()
        );
        assert!(FileSourceType::parse_position("file=../x offset=1").is_err());
    }

    #[test]
    fn a_complete_file_gives_its_last_line_without_a_newline_then_the_next_file() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(directory.path().join("a.log"), "one\ntwo").expect("write");
        let mut follower = Follower {
            glob: FileGlob::parse(
                "path_glob",
                &format!("{}/*.log", directory.path().display()),
            )
            .expect("glob"),
            current: None,
        };
        let values = |records: Vec<SourceRecord>| -> Vec<String> {
            records
                .into_iter()
                .map(|record| String::from_utf8(record.record.value).expect("utf-8"))
                .collect()
        };
        assert_eq!(values(follower.read(10).expect("read")), ["one"]);
        assert!(
            follower.read(10).expect("read").is_empty(),
            "two is partial"
        );
        std::fs::write(directory.path().join("b.log"), "three\n").expect("write");
        assert_eq!(values(follower.read(10).expect("read")), ["two"]);
        assert_eq!(values(follower.read(10).expect("read")), ["three"]);
        assert_eq!(
            follower.current,
            Some(FilePosition {
                file_name: "b.log".to_owned(),
                offset: 6
            })
        );
    }
}
