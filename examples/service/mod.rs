//! What the counter and queue examples share: the command line (its
//! `serve` is [`regatta::serve::run`] with the example's state machine and
//! routes) and the in-process demo cluster. Each
//! example supplies its state machine, its routes and its demo script
//! through [`Service`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use regatta::serve::ServeArgs;
use regatta::{InitialCluster, Node, NodeId, Raft, StateMachine};

mod certs;

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
    /// Write a CA and one certificate per node for a test cluster over
    /// mutual TLS (keys unencrypted: not for production).
    Certs(CertsArgs),
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
pub fn main<S: Service>() -> ExitCode {
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
        Some(Command::Certs(args)) => certs::write_cluster(&args.dir, &args.nodes).map(|()| {
            println!(
                "wrote {} (CA) and a certificate and key per node into {}",
                args.dir.join("ca.pem").display(),
                args.dir.display()
            )
        }),
        Some(Command::Serve(args)) => {
            return regatta::serve::run(S::NAME, *args, S::default(), S::routes);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
