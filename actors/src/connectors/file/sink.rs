//! The `file` sink: appends one line per record (the value's bytes, then `\n`) to one file.
//!
//! Idempotent, hence effectively-once: `flush` makes the file durable and returns its length
//! as the sink position; `open` truncates the file back to the checkpointed length, so what was
//! written after the last checkpoint is cut off and written again by the replay, once.
//! Without a checkpoint (`resume.sink` absent) the file is left as it is: it may hold lines
//! written before the instance's first checkpoint, or lines that are not Ferry's at all.
//!
//! The sink holds an exclusive lock on the file (`flock`) from `open` until it is dropped and
//! its last write has finished: a previous owner that has not stopped yet (an instance told to
//! stop while a write of its runs on the blocking pool) could otherwise append after its
//! successor cut the file back, and the replay would repeat those lines. The successor's open
//! fails as unavailable until the lock is free, and the instance retries.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::config::ConnectorConfig;
use crate::api::registry::{self, InstanceContext, SinkFactory};
use crate::api::{
    ConnectorError, Position, Rejected, Sink, SinkCapabilities, SinkDelivery, SinkRecord,
    SinkResume,
};
use crate::connectors;

/// Appends each record's value as one line to a file (idempotent: truncated back to the
/// checkpointed length on recovery).
///
/// A value holding a newline cannot be one line: it is rejected (the error policy decides).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to; it and its directory are created when missing.
    pub path: String,
}

impl ConnectorConfig for FileSinkConfig {}

/// The `file` sink type.
#[derive(Debug)]
pub struct FileSinkType;

impl SinkFactory for FileSinkType {
    type Config = FileSinkConfig;
    const NAME: &'static str = "file";
    const CAPABILITIES: SinkCapabilities = SinkCapabilities {
        delivery: SinkDelivery::Idempotent,
    };

    fn build(
        config: FileSinkConfig,
        _context: &InstanceContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        Ok(Box::new(FileSink::new(&config)?))
    }

    fn render_position(position: &[u8]) -> Result<String, ConnectorError> {
        registry::render_u64_position("length", position)
    }

    fn parse_position(text: &str) -> Result<Position, ConnectorError> {
        registry::parse_u64_position("length", text)
    }

    fn fixture() -> Option<Box<dyn crate::api::fixture::SinkFixture>> {
        super::fixture::sink()
    }
}

/// Decodes a `file` sink position: the file's length, 8 bytes big-endian.
pub fn decode_position(position: &[u8]) -> Result<u64, ConnectorError> {
    connectors::decode_u64_position("file sink", position)
}

/// The `file` sink.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    /// Open in append mode once `open` succeeded; shared with the blocking tasks that use it.
    file: Option<Arc<File>>,
}

impl FileSink {
    /// Returns a sink for `config`, not yet opened; fails naming the field of an invalid config.
    pub fn new(config: &FileSinkConfig) -> Result<Self, ConnectorError> {
        if config.path.is_empty() || config.path.ends_with('/') {
            return Err(ConnectorError::InvalidConfig {
                field: "path".to_owned(),
                reason: format!("{:?} does not name a file", config.path),
            });
        }
        Ok(Self {
            path: PathBuf::from(&config.path),
            file: None,
        })
    }

    fn opened(&self) -> Result<Arc<File>, ConnectorError> {
        self.file
            .clone()
            .ok_or_else(|| ConnectorError::Unavailable {
                system: "file".to_owned(),
                reason: format!("{} is not open (open the sink first)", self.path.display()),
            })
    }
}

/// Opens `path` for appending, creating it and its directory, and truncates it back to
/// `restore_to` bytes when given.
fn open_and_restore(path: &Path, restore_to: Option<u64>) -> Result<File, ConnectorError> {
    let unavailable = |error: io::Error| unavailable(path, &error);
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(unavailable)?;
    }
    let existed = path.try_exists().map_err(unavailable)?;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(unavailable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ConnectorError::Unavailable {
                system: "file".to_owned(),
                reason: format!(
                    "{}: locked by another writer (a previous owner still finishing a write, \
                     or another sink writing the same file)",
                    path.display()
                ),
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(unavailable(error)),
    }
    if !existed {
        // A new file's directory entry is durable only once its directory is synced.
        File::open(parent.unwrap_or(Path::new(".")))
            .and_then(|directory| directory.sync_all())
            .map_err(unavailable)?;
    }
    if let Some(restore_to) = restore_to {
        let length = file.metadata().map_err(unavailable)?.len();
        if restore_to > length {
            return Err(ConnectorError::InvalidPosition(format!(
                "the checkpointed length {restore_to} is past the end of {} ({length} bytes): \
                 the file was truncated or replaced outside Ferry",
                path.display()
            )));
        }
        if restore_to < length {
            tracing::info!(
                file = %path.display(),
                from = length,
                to = restore_to,
                "truncating the lines written after the last checkpoint"
            );
            file.set_len(restore_to).map_err(unavailable)?;
            file.sync_all().map_err(unavailable)?;
        }
    }
    Ok(file)
}

fn unavailable(path: &Path, error: &io::Error) -> ConnectorError {
    ConnectorError::Unavailable {
        system: "file".to_owned(),
        reason: format!("{}: {error}", path.display()),
    }
}

/// Fails unless `path` still names the open file `written` describes: a checkpoint claims the
/// output is durable *at the path*, and a file moved or removed while open (its directory
/// renamed or deleted) takes the writes elsewhere or nowhere. Failing makes the instance
/// reopen the path, which reports what is there instead.
fn check_still_at_path(path: &Path, written: &std::fs::Metadata) -> Result<(), ConnectorError> {
    use std::os::unix::fs::MetadataExt;
    let moved = || ConnectorError::Unavailable {
        system: "file".to_owned(),
        reason: format!(
            "{}: moved or removed while the sink wrote to it",
            path.display()
        ),
    };
    match std::fs::metadata(path) {
        Ok(current) if current.dev() == written.dev() && current.ino() == written.ino() => Ok(()),
        Ok(_) => Err(moved()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(moved()),
        Err(error) => Err(unavailable(path, &error)),
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ConnectorError::Unavailable {
            system: "file".to_owned(),
            reason: format!("file task failed: {error}"),
        })?
}

impl Sink for FileSink {
    fn open(
        &mut self,
        resume: &SinkResume,
    ) -> BoxFuture<'_, Result<Option<Position>, ConnectorError>> {
        let restore_to = resume.sink.as_deref().map(decode_position).transpose();
        Box::pin(async move {
            let restore_to = restore_to?;
            self.file = None;
            let path = self.path.clone();
            let file = blocking(move || open_and_restore(&path, restore_to)).await?;
            self.file = Some(Arc::new(file));
            Ok(None)
        })
    }

    fn write(
        &mut self,
        records: Vec<SinkRecord>,
    ) -> BoxFuture<'_, Result<Vec<Rejected>, ConnectorError>> {
        Box::pin(async move {
            let file = self.opened()?;
            let mut lines = Vec::with_capacity(
                records
                    .iter()
                    .map(|record| record.record.value.len() + 1)
                    .sum(),
            );
            let mut rejected = Vec::new();
            for (index, record) in records.into_iter().enumerate() {
                if record.record.value.contains(&b'\n') {
                    rejected.push(Rejected {
                        index,
                        reason: "the value holds a newline and cannot be one line".to_owned(),
                    });
                    continue;
                }
                lines.extend_from_slice(&record.record.value);
                lines.push(b'\n');
            }
            let path = self.path.clone();
            blocking(move || {
                (&*file)
                    .write_all(&lines)
                    .map_err(|error| unavailable(&path, &error))
            })
            .await?;
            Ok(rejected)
        })
    }

    fn flush(&mut self, _input: &Position) -> BoxFuture<'_, Result<Position, ConnectorError>> {
        Box::pin(async move {
            let file = self.opened()?;
            let path = self.path.clone();
            let length = blocking(move || {
                let written = file
                    .sync_all()
                    .and_then(|()| file.metadata())
                    .map_err(|error| unavailable(&path, &error))?;
                check_still_at_path(&path, &written)?;
                Ok(written.len())
            })
            .await?;
            Ok(length.to_be_bytes().to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_eight_bytes() {
        assert_eq!(decode_position(&42_u64.to_be_bytes()).expect("valid"), 42);
        let error = decode_position(&[1, 2, 3]).expect_err("short");
        assert_eq!(
            error,
            ConnectorError::InvalidPosition("a file sink position is 8 bytes, got 3".to_owned())
        );
    }

    #[test]
    fn a_path_naming_no_file_is_refused() {
        for path in ["", "/tmp/dir/"] {
            let error = FileSink::new(&FileSinkConfig {
                path: path.to_owned(),
            })
            .expect_err("no file");
            assert!(
                matches!(&error, ConnectorError::InvalidConfig { field, .. } if field == "path"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn writing_before_open_is_refused() {
        let mut sink = FileSink::new(&FileSinkConfig {
            path: "/nonexistent/out.txt".to_owned(),
        })
        .expect("valid");
        let error = sink.write(Vec::new()).await.expect_err("not open");
        assert!(error.to_string().contains("not open"), "{error}");
    }

    #[tokio::test]
    async fn a_flush_after_the_file_moved_away_fails_instead_of_claiming_it_durable() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = dir.path().join("out");
        let path = out.join("out.txt");
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.display().to_string(),
        })
        .expect("valid");
        sink.open(&SinkResume::default()).await.expect("open");
        sink.flush(&Vec::new()).await.expect("flush in place");
        std::fs::rename(&out, dir.path().join("away")).expect("move the directory");
        let error = sink.flush(&Vec::new()).await.expect_err("moved");
        assert!(
            matches!(&error, ConnectorError::Unavailable { system, reason }
                if system == "file" && reason.contains("moved or removed")),
            "{error}"
        );
    }
}
