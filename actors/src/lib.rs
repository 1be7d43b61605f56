//! Ferry's connector runtime, independent of Raft and of the node it runs on.
//!
//! This crate grows into the connector API, the instance actors that apply the processing
//! guarantees, and the built-in connectors (../shared/DESIGN.md §2). Today it holds:
//!
//! - [`pulsar`]: how Ferry connects to a Pulsar cluster (client settings and connection).

pub mod pulsar;
