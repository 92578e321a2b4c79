//! A production node in one call (feature `serve`): the standard command
//! line flags ([`ServeArgs`], flattened into your clap parser) and
//! [`run`], which starts the [`Node`], serves your routes and the admin
//! scope over HTTP (or HTTPS), shuts down gracefully on SIGINT or SIGTERM,
//! and exits non-zero with the cause when the node stops on its own.
//!
//! ```no_run
//! # use actix::prelude::*;
//! # use regatta::{Apply, Restore, Snapshot, StateMachine};
//! # #[derive(Default)] struct Counter(u64);
//! # impl Actor for Counter { type Context = Context<Self>; }
//! # impl StateMachine for Counter { type Command = u64; type Response = u64; }
//! # impl Handler<Apply<Counter>> for Counter { type Result = Vec<u64>;
//! #     fn handle(&mut self, b: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
//! #         b.entries.into_iter().map(|(_, n)| { self.0 += n; self.0 }).collect() } }
//! # impl Handler<Snapshot> for Counter { type Result = Result<regatta::SnapshotData, String>;
//! #     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
//! #         Ok(self.0.to_be_bytes().to_vec().into()) } }
//! # impl Handler<Restore> for Counter { type Result = Result<(), String>;
//! #     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
//! #         self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad")?); Ok(()) } }
//! use actix_web::{web, HttpResponse};
//! use clap::Parser;
//! use regatta::serve::ServeArgs;
//! use regatta::web::{ApiError, Replica};
//!
//! async fn incr(counter: Replica<Counter>) -> Result<HttpResponse, ApiError> {
//!     Ok(HttpResponse::Ok().json(counter.write(1).await?))
//! }
//!
//! /// `counter serve --id 1 --data-dir ... --initial-cluster ...`; other
//! /// subcommands of your own may sit next to it (or flatten `ServeArgs`
//! /// into a struct of flags with `#[command(flatten)]`).
//! #[derive(Parser)]
//! enum Cli {
//!     /// Run one node.
//!     Serve(ServeArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let Cli::Serve(args) = Cli::parse();
//!     regatta::serve::run("counter", args, Counter::default(), |routes| {
//!         routes.route("/incr", web::post().to(incr));
//!     })
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{web, App, HttpServer};

use crate::web::Access;
use crate::{Config, InitialCluster, Node, NodeBuilder, NodeId, Raft, StartError, StateMachine};

/// The flags of one node of a service: identity, addresses, founding or
/// joining, timeouts, snapshots, TLS, HTTPS, the admin token and the log
/// level. Flatten it into your own `clap` parser (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: NodeId,
    /// Directory of this node's durable state; created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address the Raft transport listens on.
    #[arg(long)]
    pub raft_addr: SocketAddr,
    /// Address the HTTP API listens on.
    #[arg(long)]
    pub http_addr: SocketAddr,
    /// Founding members as ID=HOST:PORT[;api=HOST:PORT],... (Raft
    /// addresses, and optionally each member's HTTP address, which error
    /// answers then name). Used only when the data directory holds no
    /// state; a restarted node resumes from its directory.
    #[arg(long)]
    pub initial_cluster: Option<InitialCluster>,
    /// Found a new cluster whose state starts from this backup (`regatta
    /// backup`, `GET /cluster/backup`): with --initial-cluster naming the
    /// new cluster's founders, each restoring the same file. Used only
    /// when the data directory holds no state, as --initial-cluster.
    #[arg(long, requires = "initial_cluster")]
    pub restore_from: Option<PathBuf>,
    /// Start with no configuration and wait to be added to a running
    /// cluster (`POST /cluster/members` on its leader). Instead of
    /// --initial-cluster, for a node with an empty data directory.
    #[arg(long, conflicts_with = "initial_cluster")]
    pub join: bool,
    /// With --join: the id of the cluster to join (`cluster_id` in `GET
    /// /cluster/status` of any member; decimal or 0x-hex). The node then
    /// talks only to that cluster; without it, it takes the id of the
    /// first leader that sends it entries.
    #[arg(long, requires = "join", value_parser = parse_cluster_id)]
    pub cluster_id: Option<u64>,
    /// Mixed into the cluster id generated when the cluster is founded
    /// (as etcd's --initial-cluster-token): give every cluster its own, so
    /// that a stale node of an earlier cluster on the same addresses is
    /// refused. Used only when founding.
    #[arg(long, default_value = "")]
    pub cluster_token: String,
    /// How long a request may wait for a leader and its commit, in ms.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// The shortest election timeout in ms (the longest is twice it);
    /// heartbeats go every sixth of it. Raise it on slow or distant
    /// networks.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(12..=600_000))]
    pub election_timeout_ms: u64,
    /// Take a snapshot (and compact the log) every this many applied
    /// entries; 0 for only on request (`POST /cluster/snapshot`).
    #[arg(long, default_value_t = Config::default().snapshot_every)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for slightly slow followers.
    #[arg(long, default_value_t = Config::default().snapshot_keep_entries)]
    pub snapshot_keep: u64,
    /// Answer linearizable reads from the leader's lease, without a
    /// heartbeat round per read; safe while clocks run at most
    /// `Config::clock_drift` apart in rate (see `Config::lease_reads`).
    #[arg(long)]
    pub lease_reads: bool,
    /// How long a member added with stabilization (`regatta add
    /// --stabilize`, `Raft::add_voter`) must stay caught up and in contact
    /// before it votes, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub voter_stabilization_ms: u64,
    /// Remove a voter the leader has not heard from for this many ms (one
    /// at a time, never below 3 voters, logged and counted); off unless
    /// given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_voter_cleanup_ms: Option<u64>,
    /// Microseconds the node's threads stay awake before they sleep when
    /// out of work (`Config::idle_spin`): lower latency for few clients
    /// where cores are spare; 0, the default, sleeps at once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub idle_spin_us: u64,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log: tracing::Level,
    /// Threads serving HTTP requests.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub http_workers: u64,
    /// The cluster's CA certificate (PEM). With --tls-cert and --tls-key,
    /// Raft traffic between nodes uses mutual TLS (needs the `tls`
    /// feature).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming `node-<id>`.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM);
    /// with --http-tls-key (needs the `tls` feature).
    #[arg(long, requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    #[arg(long, requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// A file whose first line is the admin token: requests that change
    /// the cluster (members, transfer-leader, snapshot) must then carry
    /// `Authorization: Bearer <token>`. Without it they are open.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

/// A cluster id, decimal or 0x-hex (as the logs print it); not 0.
fn parse_cluster_id(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(0) => Err("0 names no cluster".into()),
        Ok(id) => Ok(id),
        Err(e) => Err(format!("not a cluster id (decimal or 0x-hex): {e}")),
    }
}

impl ServeArgs {
    /// The node settings these flags give (the rest at their defaults).
    pub fn config(&self) -> Config {
        let election = Duration::from_millis(self.election_timeout_ms);
        Config {
            client_timeout: Duration::from_millis(self.request_timeout_ms),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            heartbeat_interval: election / 6,
            snapshot_every: self.snapshot_every,
            snapshot_keep_entries: self.snapshot_keep,
            join_cluster_id: self.cluster_id,
            lease_reads: self.lease_reads,
            voter_stabilization: Duration::from_millis(self.voter_stabilization_ms),
            dead_voter_cleanup: self.dead_voter_cleanup_ms.map(Duration::from_millis),
            idle_spin: Duration::from_micros(self.idle_spin_us),
            ..Config::default()
        }
    }

    /// The node these flags describe, not yet started: `name` is the
    /// cluster name stamped on the data directory and the handshakes.
    pub fn node_builder<SM: StateMachine + Send>(
        &self,
        name: &str,
        state_machine: SM,
    ) -> Result<NodeBuilder<SM>, ServeError> {
        let mut builder = Node::builder(self.id, state_machine)
            .cluster_name(name)
            .data_dir(&self.data_dir)
            .listen(self.raft_addr)
            .cluster_token(self.cluster_token.clone())
            .config(self.config());
        if let Some(cluster) = &self.initial_cluster {
            builder = builder.initial_cluster(cluster.clone());
        }
        if self.join {
            builder = builder.join();
        }
        if let Some(file) = &self.restore_from {
            builder = builder.restore_from(file);
        }
        if let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            builder = with_tls(builder, ca, cert, key)?;
        }
        Ok(builder)
    }
}

#[cfg(feature = "tls")]
fn with_tls<SM: StateMachine + Send>(
    builder: NodeBuilder<SM>,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<NodeBuilder<SM>, ServeError> {
    Ok(builder.tls(crate::transport::tls::TlsConfig::new(ca, cert, key)))
}

#[cfg(not(feature = "tls"))]
fn with_tls<SM: StateMachine + Send>(
    _: NodeBuilder<SM>,
    _: &std::path::Path,
    _: &std::path::Path,
    _: &std::path::Path,
) -> Result<NodeBuilder<SM>, ServeError> {
    Err(ServeError::Files(
        "--tls-ca/--tls-cert/--tls-key need regatta's `tls` feature".into(),
    ))
}

/// Why [`serve`] returned with an error. [`ServeError::exit_code`] maps it
/// to the process exit code [`run`] uses.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The flags are wrong or disagree with each other or with the data
    /// directory's founding (exit code 2, as a usage error).
    #[error("{0} (see --help)")]
    Flags(StartError),
    /// The node could not start (exit code 1).
    #[error("{0}")]
    Start(StartError),
    /// A file named by the flags (TLS, HTTPS, admin token) could not be
    /// used (exit code 1).
    #[error("{0}")]
    Files(String),
    /// The HTTP address could not be bound (exit code 1).
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        cause: std::io::Error,
    },
    /// The node stopped on its own (storage, applier or state machine
    /// failure), so the process stopped serving (exit code 1).
    #[error("the node stopped: {0}")]
    NodeStopped(String),
    /// The HTTP server failed (exit code 1).
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

impl ServeError {
    /// 2 for [`ServeError::Flags`], 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Flags(_) => 2,
            _ => 1,
        }
    }
}

impl From<StartError> for ServeError {
    fn from(e: StartError) -> Self {
        match e {
            e @ (StartError::NotInInitialCluster { .. }
            | StartError::AddressMismatch { .. }
            | StartError::NoInitialState { .. }
            | StartError::InitialClusterAndJoin
            | StartError::EmptyInitialCluster
            | StartError::InvalidId
            | StartError::Tls(_)) => ServeError::Flags(e),
            e => ServeError::Start(e),
        }
    }
}

/// Runs one node until SIGINT or SIGTERM, as a process's `main` does:
/// logs to stderr at `args.log`, serves `routes` and the admin scope
/// ([`crate::web::configure_with`]) on `args.http_addr`, and returns the
/// exit code — 0 after a graceful shutdown, 2 for flags that are wrong, 1
/// for anything else — having printed the cause on stderr. `name` is the
/// cluster name stamped on the data directory and handshakes (a node of
/// another service refuses to talk to it).
///
/// `routes` runs once per HTTP worker thread (hence `Fn + Clone`). The
/// admin scope takes `/cluster/...`, `/metrics` and `/dashboard` at the
/// root, so keep your routes off those paths; any other unmatched path
/// gets a JSON 404 (`{"error": "no such endpoint", ...}`) like every
/// other error.
pub fn run<SM, R>(name: &str, args: ServeArgs, state_machine: SM, routes: R) -> ExitCode
where
    SM: StateMachine + Send,
    R: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_max_level(args.log)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match actix_rt::System::new().block_on(serve(name, args, state_machine, routes)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// [`run`] without the logging set-up and the exit code, for a caller
/// already inside an actix system.
pub async fn serve<SM, R>(
    name: &str,
    args: ServeArgs,
    state_machine: SM,
    routes: R,
) -> Result<(), ServeError>
where
    SM: StateMachine + Send,
    R: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    // Read before the node starts: bad files start nothing.
    let https = https_config(&args)?;
    let access = match &args.admin_token_file {
        Some(file) => Access::token_file(file).map_err(ServeError::Files)?,
        None => {
            tracing::warn!(
                "admin endpoints are open to anyone who reaches {}: give --admin-token-file",
                args.http_addr
            );
            Access::open()
        }
    };
    let node = args.node_builder(name, state_machine)?.start().await?;
    let raft = node.raft().clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(crate::web::configure_with(raft.clone(), access.clone()))
            .configure(routes.clone())
            .default_service(web::to(crate::web::not_found))
    })
    .workers(args.http_workers as usize)
    .disable_signals()
    .shutdown_timeout(5);
    #[cfg(feature = "tls")]
    let bound = match https {
        Some(tls) => server.bind_rustls_0_23(args.http_addr, tls),
        None => server.bind(args.http_addr),
    };
    #[cfg(not(feature = "tls"))]
    let bound = {
        let () = https.unwrap_or(());
        server.bind(args.http_addr)
    };
    let server = match bound {
        Ok(server) => server.run(),
        Err(cause) => {
            node.shutdown().await;
            return Err(ServeError::Listen {
                addr: args.http_addr,
                cause,
            });
        }
    };
    tracing::info!(node = args.id, raft = %args.raft_addr, http = %args.http_addr, "serving");
    let handle = server.handle();
    let publisher = actix_rt::spawn(publish_api(node.raft().clone(), args.http_addr));
    // A node that stopped on its own must not leave the process serving.
    let watcher = actix_rt::spawn(stopped_on_its_own(node.raft().clone(), handle.clone()));
    actix_rt::spawn(stop_on_signal(handle));
    let served = server.await;
    watcher.abort();
    publisher.abort();
    let failure = node.raft().metrics().borrow().stopped_because.clone();
    node.shutdown().await;
    tracing::info!(node = args.id, "stopped");
    if let Some(cause) = failure {
        return Err(ServeError::NodeStopped(cause));
    }
    served.map_err(ServeError::Http)
}

#[cfg(feature = "tls")]
type HttpsConfig = rustls::ServerConfig;
#[cfg(not(feature = "tls"))]
type HttpsConfig = ();

#[cfg(feature = "tls")]
fn https_config(args: &ServeArgs) -> Result<Option<HttpsConfig>, ServeError> {
    match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => crate::transport::tls::https_server_config(cert, key)
            .map(Some)
            .map_err(|e| ServeError::Files(e.to_string())),
        _ => Ok(None),
    }
}

#[cfg(not(feature = "tls"))]
fn https_config(args: &ServeArgs) -> Result<Option<HttpsConfig>, ServeError> {
    match args.http_tls_cert {
        Some(_) => Err(ServeError::Files(
            "--http-tls-cert/--http-tls-key need regatta's `tls` feature".into(),
        )),
        None => Ok(None),
    }
}

/// Publishes this node's HTTP address as its `api` metadata through the
/// log once it is a member (etcd's `publish`), so that a node restarted
/// on another address is found without being removed and added again. A
/// wildcard address (0.0.0.0) names no reachable host: nothing then.
async fn publish_api<SM: StateMachine>(raft: Raft<SM>, http: SocketAddr) {
    if http.ip().is_unspecified() {
        return;
    }
    let api = http.to_string();
    loop {
        let membership = raft.metrics().borrow().membership.clone();
        let published = membership
            .metadata
            .get(&raft.id())
            .and_then(|m| m.get(crate::API_ADDRESS));
        if published == Some(&api) {
            return;
        }
        if membership.members().contains(&raft.id()) {
            match raft
                .update_member_metadata(raft.id(), crate::API_ADDRESS, Some(api.clone()))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = raft.id(), api = %api, "published this node's API address");
                    return;
                }
                Err(e) => {
                    tracing::debug!(node = raft.id(), error = %e, "publishing the API address; retrying")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn stop_on_signal(http: actix_web::dev::ServerHandle) {
    use actix_rt::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        }
    }
    tracing::info!("shutting down");
    http.stop(true).await;
}

/// Stops the HTTP server once the node stops on its own (storage, applier
/// or state machine failure).
async fn stopped_on_its_own<SM: StateMachine>(raft: Raft<SM>, http: actix_web::dev::ServerHandle) {
    // Woken only when the node stops, not by every commit.
    if let Some(cause) = raft.stopped().await {
        tracing::error!(node = raft.id(), %cause, "the node stopped; exiting");
        http.stop(true).await;
    }
}
