//! The command line of the `rtu` binary and what each subcommand prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::EngineConfig;

/// rtu: runs Fast Data Real-Time Updaters on Kubernetes.
///
/// One binary for the operator and for the consumer engine its worker pods run.
#[derive(Debug, Parser)]
#[command(name = "rtu", version, about, long_about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the consumer engine: ingestion topics to MongoDB projections. SIGTERM or Ctrl-C:
    /// finish the batch in hand, commit, leave the consumer group, exit 0.
    Engine {
        /// The engine config (YAML); see `rtu check`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate an engine config file and explain every error with its field path.
    Check {
        /// The engine config (YAML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the operator: reconcile SystemOfRecord and RealTimeUpdater resources into worker
    /// Deployments. SIGTERM: finish in-flight reconciles, release the leader Lease, exit 0.
    Operator(OperatorArgs),
    /// Run a RealTimeUpdater's worker Deployment as local processes, as a kubelet would (its
    /// command, args, env, ConfigMap and Secret mounts), and follow its changes; for demos and
    /// development with an API server but no nodes. SIGTERM stops the workers.
    LocalWorkers {
        /// The RealTimeUpdater's namespace.
        #[arg(long)]
        namespace: String,
        /// The RealTimeUpdater (its Deployment has the same name).
        #[arg(long)]
        name: String,
        /// Where the pods' files and logs go.
        #[arg(long, default_value = "/tmp/rtu-local-workers")]
        dir: PathBuf,
    },
    /// Print the CustomResourceDefinitions generated from the Rust types (both kinds, as one
    /// YAML stream), or write one file per CRD into a directory, or print their Markdown
    /// reference.
    Crd {
        /// Write `<crd name>.yaml` files here instead of printing.
        #[arg(long, value_name = "DIR", conflicts_with = "reference")]
        out_dir: Option<PathBuf>,
        /// Print the resource reference (Markdown, `docs/reference.md`) instead of the CRDs.
        #[arg(long)]
        reference: bool,
    },
}

/// The settings of `rtu operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// A namespace to watch; repeat for several. None: every namespace.
    #[arg(
        long = "namespace",
        value_name = "NS",
        env = "RTU_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// The worker image when a RealTimeUpdater names none (the operator's own image).
    #[arg(long, env = "RTU_WORKER_IMAGE", default_value = concat!("rtu-operator:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Port of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Reconcile only while holding the leader Lease (needed with more than one replica).
    #[arg(long, env = "RTU_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// The name of the leader Lease.
    #[arg(long, default_value = "rtu-operator-leader")]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log filter, e.g. `info` or `info,rtu_operator=debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl Cli {
    /// Runs the subcommand; the exit code is 0 on success, 1 when the input is invalid.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Check { config } => check(&config),
            Command::Engine { config } => engine(&config),
            Command::Crd { reference: true, .. } => reference(),
            Command::Crd { out_dir, reference: false } => crd(out_dir.as_deref()),
            Command::Operator(args) => operator(args),
            Command::LocalWorkers { namespace, name, dir } => {
                local_workers(&namespace, &name, &dir)
            }
        }
    }
}

fn operator(args: OperatorArgs) -> ExitCode {
    crate::process::init_logs(&args.log_level);
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let options = crate::operator::Options {
        scope: if args.namespaces.is_empty() {
            crate::operator::Scope::All
        } else {
            crate::operator::Scope::Namespaces(args.namespaces)
        },
        worker_image: args.worker_image,
        host: args.host,
        port: args.port,
        leader_election: args.leader_election,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::operator::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator failed");
            ExitCode::FAILURE
        }
    }
}

fn local_workers(namespace: &str, name: &str, dir: &std::path::Path) -> ExitCode {
    crate::process::init_logs("info");
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot find the rtu binary");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| e.to_string())?;
        crate::local_workers::follow(
            client,
            namespace,
            name,
            dir,
            &binary,
            crate::process::shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "local workers failed");
            ExitCode::FAILURE
        }
    }
}

fn reference() -> ExitCode {
    match crate::api::reference::markdown() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot render the reference: {e}");
            ExitCode::FAILURE
        }
    }
}

fn crd(out_dir: Option<&std::path::Path>) -> ExitCode {
    for (file, crd) in crate::api::crds() {
        let yaml = match crate::api::crd_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("{file}: cannot render: {e}");
                return ExitCode::FAILURE;
            }
        };
        match out_dir {
            None => print!("---\n{yaml}"),
            Some(dir) => {
                let path = dir.join(&file);
                if let Err(e) = std::fs::write(&path, yaml) {
                    eprintln!("{}: cannot write: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn engine(path: &std::path::Path) -> ExitCode {
    let config = match EngineConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    crate::process::init_logs(&config.telemetry.log_level);
    for warning in config.warnings() {
        tracing::warn!(%warning, "config setting overridden");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::engine::consumer::Engine::serve(
        config,
        crate::process::shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "engine failed");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match EngineConfig::load(path) {
        Ok(config) => {
            let topics: usize = config.projections.iter().map(|p| p.topics.len()).sum();
            println!(
                "{}: valid engine config (system of record {:?}, {} projection(s), {topics} topic(s), adapter {})",
                path.display(),
                config.system_of_record,
                config.projections.len(),
                serde_json::to_value(config.adapter.kind).unwrap_or_default(),
            );
            println!("  adapter {}", config.adapter.describe());
            for p in &config.projections {
                if let Some(a) = &p.adapter {
                    println!("  projection {} adapter {}", p.name, a.describe());
                }
            }
            for warning in config.warnings() {
                println!("  warning: {warning}");
            }
            let problems = crate::engine::functions::check_files(&config);
            for problem in &problems {
                eprintln!("{}: {problem}", path.display());
            }
            if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
