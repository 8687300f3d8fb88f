//! `rtu`: parses the command line; the work lives in the library.

use std::process::ExitCode;

use clap::Parser;
use rtu_operator::cli::Cli;

/// jemalloc instead of glibc malloc: the engine allocates and frees many small buffers per
/// message, where glibc's malloc/free took ~30 % of the engine's CPU in perf.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    Cli::parse().run()
}
