//! The `ferry` binary: the built-in connectors and the command line of [`ferry_node::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    ferry_node::cli::main()
}
