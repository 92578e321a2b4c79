//! What the counter and queue examples share: the command line, `serve`
//! (a [`regatta::Node`] plus an actix-web server with the library's admin
//! scope and the example's routes) and the in-process demo cluster. Each
//! example supplies its state machine, its routes and its demo script
//! through [`Service`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use regatta::{Config, InitialCluster, Node, NodeId, Raft, StartError, StateMachine};

mod certs;
mod disk;
pub mod http;
mod ops;

/// One example service: a state machine plus its HTTP routes and demo.
pub trait Service: StateMachine + Default + Send {
    /// Program name, also the cluster name stamped on data directories and
    /// TCP handshakes (a counter node refuses to talk to a queue node).
    const NAME: &'static str;

    /// Registers the service's routes; handlers take a
    /// `regatta::web::Replica<Self>`.
    fn routes(cfg: &mut web::ServiceConfig);

    /// The no-argument demo, run against a fresh 3-node cluster.
    fn demo(cluster: &mut DemoCluster<Self>) -> impl Future<Output = Result<(), String>>;

    /// The write `bench` sends by default: a path and a JSON body.
    const BENCH_WRITE: (&'static str, Option<&'static str>);
}

#[derive(Parser)]
#[command(about = "A replicated service on regatta. With no subcommand: run the 3-node demo.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a multi-process cluster with an HTTP API.
    Serve(Box<ServeArgs>),
    /// Print every member's role, term, indices and lag as a table, asking
    /// any one member for the configuration.
    Status(ops::StatusArgs),
    /// Re-admit a voter whose data directory was replaced, once it has
    /// been started again on its new directory with --join.
    Replace(ops::ReplaceArgs),
    /// Check that this machine can run a node well.
    #[command(subcommand)]
    Check(ops::Check),
    /// Send writes to a running cluster through its HTTP API and report
    /// throughput and latency percentiles.
    Bench(ops::BenchArgs),
    /// Write a CA and one certificate per node for a test cluster over
    /// mutual TLS (keys unencrypted: not for production).
    Certs(CertsArgs),
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

#[derive(clap::Args)]
struct ServeArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: NodeId,
    /// Directory of this node's durable state; created if missing.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address the Raft transport listens on.
    #[arg(long)]
    raft_addr: SocketAddr,
    /// Address the HTTP API listens on.
    #[arg(long)]
    http_addr: SocketAddr,
    /// Founding members as ID=HOST:PORT[;api=HOST:PORT],... (Raft
    /// addresses, and optionally each member's HTTP address, which error
    /// answers then name). Used only when the data directory holds no
    /// state; a restarted node resumes from its directory.
    #[arg(long)]
    initial_cluster: Option<InitialCluster>,
    /// Start with no configuration and wait to be added to a running
    /// cluster (`POST /cluster/members` on its leader). Instead of
    /// --initial-cluster, for a node with an empty data directory.
    #[arg(long, conflicts_with = "initial_cluster")]
    join: bool,
    /// With --join: the id of the cluster to join (`cluster_id` in `GET
    /// /cluster/status` of any member; decimal or 0x-hex). The node then
    /// talks only to that cluster; without it, it takes the id of the
    /// first leader that sends it entries.
    #[arg(long, requires = "join", value_parser = parse_cluster_id)]
    cluster_id: Option<u64>,
    /// How long a request may wait for a leader and its commit, in ms.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
    /// Take a snapshot (and compact the log) every this many applied
    /// entries; 0 for only on request (`POST /cluster/snapshot`).
    #[arg(long, default_value_t = Config::default().snapshot_every)]
    snapshot_every: u64,
    /// Mixed into the cluster id generated when the cluster is founded
    /// (as etcd's --initial-cluster-token): give every cluster its own, so
    /// that a stale node of an earlier cluster on the same addresses is
    /// refused. Used only when founding.
    #[arg(long, default_value = "")]
    cluster_token: String,
    /// Log entries kept behind a snapshot for slightly slow followers.
    #[arg(long, default_value_t = Config::default().snapshot_keep_entries)]
    snapshot_keep: u64,
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log: tracing::Level,
    /// The cluster's CA certificate (PEM). With --tls-cert and --tls-key,
    /// Raft traffic between nodes uses mutual TLS; see `certs`.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming `node-<id>`.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM);
    /// with --http-tls-key.
    #[arg(long, requires = "http_tls_key")]
    http_tls_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    #[arg(long, requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// A file whose first line is the admin token: requests that change
    /// the cluster (members, transfer-leader, snapshot) must then carry
    /// `Authorization: Bearer <token>`. Without it they are open.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Where to write ca.pem, node-<id>.pem and node-<id>.key.
    #[arg(long)]
    dir: PathBuf,
    /// The node ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = clap::value_parser!(u64).range(1..))]
    nodes: Vec<u64>,
}

/// Entry point of an example binary.
pub fn main<S: Service>() {
    let mut command = Cli::command().name(S::NAME);
    let cli = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| usage_error(e.format(&mut command), &mut command));
    let result = match cli.command {
        None => {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::ERROR)
                .with_writer(std::io::stderr)
                .try_init();
            System::new().block_on(run_demo::<S>())
        }
        Some(Command::Status(args)) => ops::status(&args),
        Some(Command::Replace(args)) => ops::replace(&args),
        Some(Command::Certs(args)) => certs::write_cluster(&args.dir, &args.nodes).map(|()| {
            println!(
                "wrote {} (CA) and a certificate and key per node into {}",
                args.dir.join("ca.pem").display(),
                args.dir.display()
            )
        }),
        Some(Command::Check(ops::Check::Disk(args))) => match ops::check_disk(&args) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(3),
            Err(e) => Err(e),
        },
        Some(Command::Bench(mut args)) => {
            let (path, body) = S::BENCH_WRITE;
            if args.body.is_none() && args.path.is_none() {
                args.body = body.map(str::to_string);
            }
            ops::bench(&args, path)
        }
        Some(Command::Serve(args)) => {
            let _ = tracing_subscriber::fmt()
                .with_max_level(args.log)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .try_init();
            match System::new().block_on(serve::<S>(*args)) {
                Err(Failure::Flags(e)) => {
                    let e = command
                        .find_subcommand_mut("serve")
                        .expect("serve is a subcommand")
                        .error(clap::error::ErrorKind::ArgumentConflict, e.to_string());
                    usage_error(e, &mut command)
                }
                Err(Failure::Other(e)) => Err(e),
                Ok(()) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Exits on a command-line error: the message and the usage of the
/// (sub)command at fault on stderr, exit code 2. `--help` and `--version`
/// print to stdout and exit 0, as clap does.
fn usage_error(e: clap::Error, command: &mut clap::Command) -> ! {
    if !e.use_stderr() {
        e.exit();
    }
    let serving = std::env::args().nth(1).as_deref() == Some("serve");
    let usage = match command.find_subcommand_mut("serve") {
        Some(serve) if serving => serve.render_usage(),
        _ => command.render_usage(),
    };
    let message = e.render().to_string();
    if message.contains("Usage:") {
        eprint!("{message}");
    } else {
        eprint!("{message}\n{usage}\n");
    }
    std::process::exit(2);
}

/// Why `serve` failed: flags that disagree (a usage error, exit 2), or
/// anything else (exit 1).
enum Failure {
    Flags(StartError),
    Other(String),
}

/// `serve`: one node with its HTTP API, until SIGTERM or SIGINT.
async fn serve<S: Service>(args: ServeArgs) -> Result<(), Failure> {
    // Read before the node starts: bad files start nothing.
    let https = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => Some(
            regatta::transport::tls::https_server_config(cert, key)
                .map_err(|e| Failure::Other(e.to_string()))?,
        ),
        _ => None,
    };
    let access = match &args.admin_token_file {
        Some(file) => regatta::web::Access::token_file(file).map_err(Failure::Other)?,
        None => {
            tracing::warn!(
                "admin endpoints are open to anyone who reaches {}: give --admin-token-file",
                args.http_addr
            );
            regatta::web::Access::open()
        }
    };
    let config = Config {
        client_timeout: Duration::from_millis(args.request_timeout_ms),
        snapshot_every: args.snapshot_every,
        snapshot_keep_entries: args.snapshot_keep,
        join_cluster_id: args.cluster_id,
        ..Config::default()
    };
    let mut builder = Node::builder(args.id, S::default())
        .cluster_name(S::NAME)
        .data_dir(&args.data_dir)
        .listen(args.raft_addr)
        .cluster_token(args.cluster_token)
        .config(config);
    if let Some(cluster) = args.initial_cluster {
        builder = builder.initial_cluster(cluster);
    }
    if args.join {
        builder = builder.join();
    }
    if let (Some(ca), Some(cert), Some(key)) = (args.tls_ca, args.tls_cert, args.tls_key) {
        builder = builder.tls(regatta::transport::tls::TlsConfig::new(ca, cert, key));
    }
    let node = builder.start().await.map_err(|e| match e {
        e @ (StartError::NotInInitialCluster { .. }
        | StartError::AddressMismatch { .. }
        | StartError::NoInitialState { .. }
        | StartError::InitialClusterAndJoin
        | StartError::Tls(_)) => Failure::Flags(e),
        e => Failure::Other(e.to_string()),
    })?;
    let raft = node.raft().clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(regatta::web::configure_with(raft.clone(), access.clone()))
            .configure(S::routes)
            .default_service(web::to(regatta::web::not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5);
    let server = match https {
        Some(tls) => server.bind_rustls_0_23(args.http_addr, tls),
        None => server.bind(args.http_addr),
    };
    let server = match server {
        Ok(server) => server.run(),
        Err(e) => {
            node.shutdown().await;
            return Err(Failure::Other(format!(
                "cannot listen on {}: {e}",
                args.http_addr
            )));
        }
    };
    tracing::info!(node = args.id, raft = %args.raft_addr, http = %args.http_addr, "serving");
    let handle = server.handle();
    // A node that stopped on its own (storage, applier or state machine
    // failure) must not leave the process serving: exit non-zero.
    let watcher = actix_rt::spawn(stopped_on_its_own(node.raft().clone(), handle.clone()));
    actix_rt::spawn(async move {
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
        handle.stop(true).await;
    });
    let served = server.await;
    watcher.abort();
    let failure = node.raft().metrics().borrow().stopped_because.clone();
    node.shutdown().await;
    tracing::info!("stopped");
    if let Some(cause) = failure {
        return Err(Failure::Other(format!("the node stopped: {cause}")));
    }
    served.map_err(|e| Failure::Other(format!("HTTP server: {e}")))
}

/// Stops the HTTP server once the node stops on its own.
async fn stopped_on_its_own<S: Service>(raft: Raft<S>, http: actix_web::dev::ServerHandle) {
    // Woken only when the node stops, not by every commit.
    if let Some(cause) = raft.stopped().await {
        tracing::error!(node = raft.id(), %cause, "the node stopped; exiting");
        http.stop(true).await;
    }
}

/// The demo's cluster: nodes in this process, fjall directories under a
/// fresh temporary directory, TCP on 127.0.0.1.
pub struct DemoCluster<S: Service> {
    /// Running nodes by id.
    pub nodes: BTreeMap<NodeId, Node<S>>,
    dir: tempfile::TempDir,
}

/// How long the demo waits for elections and commits.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: Service> DemoCluster<S> {
    async fn start(size: u64) -> Result<Self, String> {
        let dir =
            tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        println!(
            "regatta {} demo: {size} nodes, fjall logs under {}",
            S::NAME,
            dir.path().display()
        );
        // Ports are picked by the OS (port 0), so the founders are listed
        // without addresses and told them once every node listens.
        let mut founders = InitialCluster::new();
        for id in 1..=size {
            founders = founders.member(id, "");
        }
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            let node = Node::builder(id, S::default())
                .cluster_name(S::NAME)
                .data_dir(dir.path().join(format!("node-{id}")))
                .listen("127.0.0.1:0".parse().expect("valid address"))
                .initial_cluster(founders.clone())
                .start()
                .await
                .map_err(|e| format!("node {id}: {e}"))?;
            println!("  node {id}: raft on {}", node.raft_addr());
            nodes.insert(id, node);
        }
        for node in nodes.values() {
            for (id, peer) in &nodes {
                node.set_peer_address(*id, peer.raft_addr());
            }
        }
        Ok(DemoCluster { nodes, dir })
    }

    /// The handle of node `id`.
    pub fn raft(&self, id: NodeId) -> &Raft<S> {
        self.nodes[&id].raft()
    }

    /// Waits until the surviving nodes agree on a leader other than
    /// `not` and returns it.
    pub async fn wait_leader(&self, not: Option<NodeId>) -> Result<NodeId, String> {
        let first = self.nodes.values().next().ok_or("no node is running")?;
        let metrics = first
            .raft()
            .wait_for(DEMO_TIMEOUT, |m| {
                m.leader
                    .is_some_and(|l| Some(l) != not && self.nodes.contains_key(&l))
            })
            .await
            .map_err(|e| format!("no leader elected: {e}"))?;
        Ok(metrics.leader.expect("checked above"))
    }

    /// Kills node `id` as a crash would.
    pub async fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.abort().await;
        }
    }

    async fn stop(self) {
        for (_, node) in self.nodes {
            node.shutdown().await;
        }
        drop(self.dir);
    }
}

async fn run_demo<S: Service>() -> Result<(), String> {
    let mut cluster = DemoCluster::<S>::start(3).await?;
    let result = S::demo(&mut cluster).await;
    cluster.stop().await;
    result
}
