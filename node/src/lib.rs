//! A Ferry cluster node and the `ferry` command line.
//!
//! The node grows into the metadata store, scheduler, control loop and supervisor of
//! ../shared/DESIGN.md §2. Today it holds:
//!
//! - [`cli`]: the `ferry` command line (clap definitions and dispatch).
//! - [`server`]: `ferry serve`, the node's gRPC server (admin API and gRPC health) with a clean
//!   stop on SIGTERM or Ctrl-C.
//! - [`admin`]: the `ferry.admin.v1.Admin` service.
//! - [`client`]: the `ferry sources|sinks|offsets|cluster` client commands over that service.
//! - [`bench`]: `ferry bench`, measurements reported against a floor from the same run.
//! - [`meta`]: the metadata store (openraft over redb and tonic) and its node-side handle.
//! - [`security`]: optional TLS and bearer tokens (admin and viewer roles) on the gRPC port.
//! - [`settings`]: `ferry serve`'s settings from flags, `FERRY_*` variables, a TOML file and the
//!   identity stored in the data directory.
//! - [`runtime`]: the one multi-thread tokio runtime that actix, tonic and pulsar-rs share.
//! - [`scheduler`]: where instances go, a pure function of the state.
//! - [`control`]: the leader-only loop that applies the scheduler's placements.
//! - [`supervisor`]: the per-node actor running the instances assigned to this node: a pure
//!   plan and its executor, with the Raft-backed checkpoint store.
//! - [`context`]: what a node holds around its metadata store (the supervisor's status board,
//!   the leader's record of heartbeats), wired into the store's cluster service from above.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod client;
pub mod context;
pub mod control;
pub mod meta;
pub mod runtime;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod settings;
pub mod supervisor;

/// Ferry's release version, from the crate manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
