//! `rtu`: parses the command line; the work lives in the library.

use clap::Parser;
use rtu_operator::cli::Cli;

fn main() {
    let Cli {} = Cli::parse();
}
