//! The `ferry` binary: parses the command line and reports a failure as one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use ferry_node::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
