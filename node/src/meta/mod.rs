//! The metadata store: a Raft-replicated (openraft) state machine holding nodes, connectors,
//! assignments with epochs, and checkpoints (../shared/DESIGN.md §4).
//!
//! - [`state`]: the state machine as plain data and its pure `apply`; no I/O.
//! - [`codec`]: the one place bincode encodes and decodes (with a size limit).
//! - [`store`]: the redb-backed durable state-machine storage, and opening the store.
//! - [`log_store`]: the redb-backed durable Raft log, with group commit.
//! - [`network`]: Raft RPCs over tonic, one cached channel per peer, and the test fault knobs.
//! - [`service`]: the `ferry.cluster.v1.Cluster` gRPC service.
//! - [`node`]: [`Meta`], the node-side handle: start, bootstrap or join, write, read, watch.
//! - `write`: the write path (forwarding, retries) and the checkpoint-commit batcher.
//! - [`local`]: a member running in this process on loopback, for benchmarks and tests.

pub mod codec;
pub mod local;
pub mod log_store;
pub mod network;
pub mod node;
pub mod service;
pub mod state;
pub mod store;
mod write;

pub use network::Faults;
pub use node::{Meta, MetaError, MetaSettings, RaftTuning};

use std::io::Cursor;

openraft::declare_raft_types!(
    /// Ferry's openraft type configuration.
    pub TypeConfig:
        D = state::Command,
        R = state::Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);
