//! `ferry-sequence`: the `ferry` command line of a build that knows one connector more than the
//! built-in ones, the `sequence` source of this crate.
//!
//! Everything `ferry` does, this does (`serve`, `sources`, `sinks`, `offsets`, `cluster`); a
//! node started with it runs `sequence` sources, and its admin API lists the type with its
//! config definition.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The registry must be in place before anything asks for it: first thing in main.
    if ferry_actors::connectors::install(ferry_example_connector::registry()).is_err() {
        eprintln!("error: a connector registry was installed already");
        return ExitCode::FAILURE;
    }
    ferry_node::cli::main()
}
