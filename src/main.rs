//! `rtu`: parses the command line; the work lives in the library.

use std::process::ExitCode;

use clap::Parser;
use rtu_operator::cli::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
