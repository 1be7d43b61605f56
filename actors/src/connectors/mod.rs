//! Built-in connectors, one module each.
//!
//! - [`datagen`]: deterministic generated records (replayable), the workhorse for tests,
//!   demos and benchmarks.

pub mod datagen;
