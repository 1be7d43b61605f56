//! A connector written outside `ferry-actors`, and the registry of a `ferry` build that runs it
//! (the worked example of `actors/src/connectors/README.md`).
//!
//! - [`sequence`]: the `sequence` source, laid out like a built-in connector's folder: its
//!   typed config and factory (`mod.rs`), the source (`source.rs`) and its conformance fixture
//!   (`fixture.rs`).
//! - [`registry`]: the built-in connectors plus `sequence`; `src/main.rs` installs it and runs
//!   the `ferry` command line as the `ferry-sequence` binary.
//!
//! Nothing here reaches into `ferry-actors` beyond its public connector API
//! (`ferry_actors::api`) and `ferry_actors::connectors::{builtin, install}`.

use ferry_actors::api::registry::Registry;

pub mod sequence;

/// Returns the registry of this build: every built-in connector type, and `sequence`.
pub fn registry() -> Registry {
    let mut registry = ferry_actors::connectors::builtin();
    registry.source::<sequence::Sequence>();
    registry
}
