//! `file`: a source following the lines of files matching a pattern, and a sink appending lines
//! to one file. Both offer effectively-once: the source is replayable (files read in name order,
//! like log segments), the sink idempotent (truncated back to its checkpointed length).
//!
//! - [`source`]: the source, its config and its position.
//! - [`sink`]: the sink and its config.
//! - [`glob`]: the file-name pattern the source matches.

//! - [`fixture`]: their conformance fixtures.

pub mod fixture;
pub mod glob;
pub mod sink;
pub mod source;

pub use sink::{FileSink, FileSinkConfig, FileSinkType};
pub use source::{FilePosition, FileSource, FileSourceConfig, FileSourceType};
