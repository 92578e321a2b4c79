//! `regatta`: the operator command line for any service that mounts
//! regatta's web scope (feature `cli`):
//!
//! ```text
//! cargo run --release --features cli --bin regatta -- status --endpoint 127.0.0.1:8001
//! ```
//!
//! Admin calls carry the token from `--admin-token-file` or the
//! `REGATTA_ADMIN_TOKEN` environment variable. Exit codes: 0 done, 1 the
//! cluster refused or did not answer, 2 bad flags, 3 `check disk` failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regatta::client::Client;

mod backup;
mod bench;
mod disk;
mod members;
mod recover;
mod status;

#[derive(Parser)]
#[command(
    name = "regatta",
    about = "Operate a cluster of any service built on regatta, through its HTTP API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every member's role, term, indices and lag as a table, asking any
    /// one member for the configuration.
    Status(Endpoint),
    /// The configuration: voters and learners with their addresses and
    /// incarnations.
    Members(Endpoint),
    /// Add a member (started with --join): a learner first, a voter once
    /// it has caught up (unless --learner).
    Add(members::AddArgs),
    /// Remove a voter or a learner.
    Remove(members::IdArgs),
    /// Re-admit a voter whose data directory was replaced, once it runs
    /// again on its new directory with --join.
    Replace(members::IdArgs),
    /// Hand leadership to a voter.
    TransferLeader(members::TransferArgs),
    /// Set (or with --remove, remove) one metadata key of a member
    /// through the log, e.g. its API address under `api`.
    SetMetadata(members::MetadataArgs),
    /// Snapshot one member now (and compact its log).
    Snapshot(Endpoint),
    /// Write a consistent backup of the cluster's state (from any member)
    /// to a file; restore it with `serve --restore-from FILE`.
    Backup(backup::BackupArgs),
    /// Lost-quorum recovery, offline: make a stopped survivor the only
    /// voter of its cluster, so that it elects itself and serves again.
    Recover(recover::RecoverArgs),
    /// Check that this machine can run a node well.
    #[command(subcommand)]
    Check(Check),
    /// Send writes to a running cluster and report throughput and latency
    /// percentiles.
    Bench(bench::BenchArgs),
}

/// Where to reach the cluster, and the admin credential.
#[derive(clap::Args)]
pub struct Endpoint {
    /// HTTP address of any member (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub endpoint: String,
    /// A file whose first line is the cluster's admin token (else the
    /// REGATTA_ADMIN_TOKEN environment variable, if set).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

impl Endpoint {
    /// A client of the cluster, with the admin token if one is given.
    pub fn client(&self) -> Result<Client, String> {
        let client = Client::new([&self.endpoint]).map_err(|e| e.to_string())?;
        let token = match &self.admin_token_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                Some(text.lines().next().unwrap_or("").trim().to_string())
            }
            None => std::env::var("REGATTA_ADMIN_TOKEN").ok(),
        };
        Ok(match token {
            Some(token) => client.admin_token(token),
            None => client,
        })
    }
}

#[derive(Subcommand)]
enum Check {
    /// Measure durable-write latency and group-commit throughput of a
    /// directory, through regatta's fjall storage, and give a verdict.
    Disk(disk::DiskArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(Check::Disk(args)) => match disk::check(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(3),
            Err(e) => Err(e),
        },
        Command::Bench(args) => bench::run(&args),
        Command::Recover(args) => recover::run(&args),
        Command::Status(at) => block_on(status::print(&at)),
        Command::Members(at) => block_on(members::print(&at)),
        Command::Add(args) => block_on(members::add(&args)),
        Command::Remove(args) => block_on(members::remove(&args)),
        Command::Replace(args) => block_on(members::replace(&args)),
        Command::TransferLeader(args) => block_on(members::transfer(&args)),
        Command::SetMetadata(args) => block_on(members::set_metadata(&args)),
        Command::Snapshot(at) => block_on(members::snapshot(&at)),
        Command::Backup(args) => block_on(backup::run(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a call to the cluster in an actix system (the client is awc's).
fn block_on<F: std::future::Future>(call: F) -> F::Output {
    actix_rt::System::new().block_on(call)
}
