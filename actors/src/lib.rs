//! Ferry's connector runtime, independent of Raft and of the node it runs on.
//!
//! This crate grows into the connector API, the instance actors that apply the processing
//! guarantees, and the built-in connectors (../shared/DESIGN.md §2). Today it holds:
//!
//! - [`api`]: the connector API (records, the `Source` trait).
//! - [`connectors`]: built-in connectors (`datagen`).
//! - [`instance`]: instance actors applying guarantees and checkpoints (`SourceInstance`).
//! - [`pulsar`]: Pulsar I/O: client settings, Ferry's producer session, the sink consumer,
//!   admin REST checks.

pub mod api;
pub mod connectors;
pub mod instance;
pub mod pulsar;
