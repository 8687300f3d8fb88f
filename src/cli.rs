//! The command line of the `rtu` binary. Subcommands (`operator`, `engine`, `crd`, `check`) are
//! added as each one works.

use clap::Parser;

/// rtu: runs Fast Data Real-Time Updaters on Kubernetes.
///
/// One binary for the operator and for the consumer engine its worker pods run.
#[derive(Debug, Parser)]
#[command(name = "rtu", version, about, long_about, arg_required_else_help = true)]
pub struct Cli {}
