//! What the counter and queue examples share: the command line, starting a
//! durable node (fjall log + TCP transport on its own arbiter), the HTTP
//! plumbing (`/cluster/status`, JSON bodies, error mapping), `serve` and the
//! in-process demo cluster. Each example supplies its state machine, its
//! routes and its demo script through [`Service`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::StreamExt;
use regatta::storage::FjallStorage;
use regatta::transport::tcp::{TcpConfig, TcpTransport};
use regatta::transport::Transport;
use regatta::{Config, Membership, NodeId, Raft, RaftError, Role, StateMachine};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Largest accepted HTTP request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One example service: a state machine plus its HTTP routes and demo.
pub trait Service: StateMachine + Default {
    /// Program name, also the cluster id stamped on data directories and
    /// TCP handshakes (a counter node refuses to talk to a queue node).
    const NAME: &'static str;

    /// Registers the service's routes; handlers find the node's handle as
    /// `web::Data<Raft<Self>>`.
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
    Serve(ServeArgs),
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
    /// Founding members as ID=HOST:PORT,... (Raft addresses). Used only
    /// when the data directory holds no state; a restarted node resumes
    /// from its directory.
    #[arg(long, value_parser = parse_initial_cluster)]
    initial_cluster: Option<Membership>,
    /// Start with no configuration and wait to be added to a running
    /// cluster (`POST /cluster/members` on its leader). Instead of
    /// --initial-cluster, for a node with an empty data directory.
    #[arg(long, conflicts_with = "initial_cluster")]
    join: bool,
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
}

fn parse_initial_cluster(s: &str) -> Result<Membership, String> {
    let mut members = Membership::default();
    for part in s.split(',') {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` is not a node id"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not a HOST:PORT address"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        if members.addresses.insert(id, addr.to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
        members.voters.insert(id);
    }
    Ok(members)
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
        Some(Command::Serve(args)) => {
            if let Err(msg) = check_serve_args(&args) {
                let e = command
                    .find_subcommand_mut("serve")
                    .expect("serve is a subcommand")
                    .error(clap::error::ErrorKind::ArgumentConflict, msg);
                usage_error(e, &mut command);
            }
            let _ = tracing_subscriber::fmt()
                .with_max_level(args.log)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .try_init();
            System::new().block_on(serve::<S>(args))
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

/// Checks what clap cannot: the flags must agree with each other.
fn check_serve_args(args: &ServeArgs) -> Result<(), String> {
    match &args.initial_cluster {
        Some(members) => match members.addresses.get(&args.id) {
            None => Err(format!(
                "--initial-cluster does not list this node (--id {})",
                args.id
            )),
            Some(addr) if *addr != args.raft_addr.to_string() => Err(format!(
                "--raft-addr {} differs from node {}'s address {addr} in --initial-cluster",
                args.raft_addr, args.id
            )),
            Some(_) => Ok(()),
        },
        None if !args.join && !holds_state(&args.data_dir) => Err(format!(
            "{} holds no state: a new node needs --initial-cluster (to found a cluster) or --join (to be added to one)",
            args.data_dir.display()
        )),
        None => Ok(()),
    }
}

fn holds_state(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// A node running on its own arbiter (thread) in this process.
pub struct LocalNode<S: Service> {
    arbiter: Arbiter,
    /// The node's handle.
    pub raft: Raft<S>,
    transport: TcpTransport,
}

impl<S: Service> LocalNode<S> {
    /// Opens (or creates) the node's fjall log in `dir`, listens for Raft
    /// traffic on `listen` and starts the node. `members` founds a new
    /// cluster and is ignored when `dir` already holds state.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        listen: SocketAddr,
        members: Option<Membership>,
        config: Config,
    ) -> Result<Self, String> {
        let arbiter = Arbiter::new();
        let dir = dir.to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            let started = async {
                // The transport delivers into the node, which needs the
                // transport to start: the handle is filled in right after.
                let handle: Arc<OnceLock<Raft<S>>> = Arc::new(OnceLock::new());
                let inbound = handle.clone();
                let transport = TcpTransport::start(
                    TcpConfig::new(id, S::NAME, listen),
                    Arc::new(move |envelope| {
                        if let Some(raft) = inbound.get() {
                            raft.deliver(envelope)
                        }
                    }),
                )
                .await
                .map_err(|e| format!("node {id}: cannot listen on {listen}: {e}"))?;
                let storage = FjallStorage::open(&dir, S::NAME)
                    .map_err(|e| format!("node {id}: {}: {e}", dir.display()))?;
                let raft = Raft::start(
                    id,
                    config,
                    storage,
                    Arc::new(transport.clone()),
                    members,
                    S::default().start(),
                )
                .map_err(|e| format!("node {id}: {}: {e}", dir.display()))?;
                let _ = handle.set(raft.clone());
                Ok((raft, transport))
            }
            .await;
            let _ = tx.send(started);
        });
        match rx.await {
            Ok(Ok((raft, transport))) => Ok(LocalNode {
                arbiter,
                raft,
                transport,
            }),
            Ok(Err(e)) => {
                stop_arbiter(arbiter);
                Err(e)
            }
            Err(_) => Err(format!("node {id}: start-up did not report")),
        }
    }

    /// Where the node's Raft transport listens.
    pub fn raft_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Tells the node where a peer listens.
    pub fn set_peer_address(&self, id: NodeId, addr: SocketAddr) {
        self.transport.set_address(id, &addr.to_string());
    }

    /// Graceful stop: pending requests fail, queued log writes are made
    /// durable, then the node's actors and thread stop.
    pub async fn stop(self) {
        self.raft.shutdown().await;
        self.kill();
    }

    /// Abrupt stop, as a crash: the thread is stopped with whatever was in
    /// flight (what was acknowledged is already durable).
    pub fn kill(self) {
        self.transport.shutdown();
        stop_arbiter(self.arbiter);
    }
}

fn stop_arbiter(arbiter: Arbiter) {
    arbiter.stop();
    let _ = arbiter.join();
}

/// An error answer of the HTTP API: `{"error": ..., "indeterminate": true?}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    indeterminate: bool,
}

impl ApiError {
    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            indeterminate: false,
        }
    }

    /// A failed write. Anything but "no leader" may have been applied: the
    /// command may already sit in the log of a leader we lost touch with.
    pub fn write(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader(_) => Self::no_leader(),
            e => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                indeterminate: true,
            },
        }
    }

    /// A failed read: it changed nothing, so retrying is always safe.
    pub fn read(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader(_) | RaftError::Timeout | RaftError::Indeterminate => {
                Self::no_leader()
            }
            e => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                indeterminate: false,
            },
        }
    }

    fn no_leader() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "no leader".into(),
            indeterminate: false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = if self.indeterminate {
            json!({"error": self.message, "indeterminate": true})
        } else {
            json!({"error": self.message})
        };
        HttpResponse::build(self.status).json(body)
    }
}

/// Reads a JSON request body of at most [`MAX_BODY_BYTES`]. An empty body
/// yields `empty` when given (optional bodies), else it is an error.
pub async fn read_json<T: DeserializeOwned>(
    mut payload: web::Payload,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::bad_request(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    match empty {
        Some(default) if body.iter().all(u8::is_ascii_whitespace) => Ok(default),
        // serde would also take a struct from a JSON array; the API is
        // objects only.
        _ if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') => {
            Err(ApiError::bad_request("the body must be a JSON object"))
        }
        _ => serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}"))),
    }
}

/// `GET /cluster/status`, answered from the local node's metrics.
async fn status<S: Service>(raft: web::Data<Raft<S>>) -> HttpResponse {
    let m = raft.metrics().borrow().clone();
    let role = match m.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Removed => "removed",
        Role::Shutdown => "shutdown",
    };
    HttpResponse::Ok().json(json!({
        "id": m.id,
        "role": role,
        "term": m.term,
        "leader": m.leader,
        "commit_index": m.commit_index,
        "last_applied": m.last_applied,
        "last_log_index": m.last_log_index,
        "snapshot_index": m.snapshot_index,
        "voters": m.membership.voters,
        "learners": m.membership.learners,
        "joint": m.membership.is_joint(),
    }))
}

impl ApiError {
    /// A failed membership change.
    fn membership(e: RaftError) -> Self {
        let (status, message) = match e {
            RaftError::Membership(why) => (StatusCode::CONFLICT, why.to_string()),
            RaftError::NotLeader(Some(leader)) => (
                StatusCode::MISDIRECTED_REQUEST,
                format!("not the leader: send membership changes to node {leader}"),
            ),
            e => return Self::write(e),
        };
        ApiError {
            status,
            message,
            indeterminate: false,
        }
    }
}

fn membership_json(m: &Membership) -> serde_json::Value {
    json!({
        "voters": m.voters,
        "learners": m.learners,
        "joint": m.is_joint(),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: NodeId,
    raft_addr: SocketAddr,
}

/// How long `POST /cluster/members` waits for the new node to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /cluster/members` `{"id", "raft_addr"}` (on the leader): adds the
/// node as a learner, waits until it has caught up, then makes it a voter;
/// answers once the new configuration has committed.
async fn add_member<S: Service>(
    raft: web::Data<Raft<S>>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let AddMember { id, raft_addr } = read_json(body, None).await?;
    if id == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    raft.add_learner(id, raft_addr.to_string())
        .await
        .map_err(ApiError::membership)?;
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let mut voters = raft.metrics().borrow().membership.voters.clone();
        voters.insert(id);
        match raft.change_membership(voters).await {
            Ok(m) => return Ok(HttpResponse::Ok().json(membership_json(&m))),
            Err(RaftError::Membership(regatta::MembershipError::LearnerBehind { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(ApiError::membership(e)),
        }
    }
}

/// `DELETE /cluster/members/{id}` (on the leader): removes a voter.
async fn remove_member<S: Service>(
    raft: web::Data<Raft<S>>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a node id")))?;
    let mut voters = raft.metrics().borrow().membership.voters.clone();
    if !voters.remove(&id) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("node {id} is not a voter"),
            indeterminate: false,
        });
    }
    let m = raft
        .change_membership(voters)
        .await
        .map_err(ApiError::membership)?;
    Ok(HttpResponse::Ok().json(membership_json(&m)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferTo {
    to: NodeId,
}

/// `POST /cluster/transfer-leader` `{"to": N}` (on the leader): hands
/// leadership to voter N; answers once this node has stepped down.
async fn transfer_leader<S: Service>(
    raft: web::Data<Raft<S>>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let TransferTo { to } = read_json(body, None).await?;
    match raft.transfer_leadership(to).await {
        Ok(()) => Ok(HttpResponse::Ok().json(json!({ "leader": to }))),
        Err(RaftError::Transfer(why)) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: why.to_string(),
            indeterminate: false,
        }),
        Err(e) => Err(ApiError::membership(e)),
    }
}

/// `POST /cluster/snapshot`: snapshot this node now and compact its log.
async fn snapshot<S: Service>(raft: web::Data<Raft<S>>) -> Result<HttpResponse, ApiError> {
    match raft.snapshot().await {
        Ok(at) => Ok(HttpResponse::Ok().json(json!({
            "snapshot_index": at.index,
            "snapshot_term": at.term,
        }))),
        Err(e) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            indeterminate: false,
        }),
    }
}

async fn not_found() -> HttpResponse {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        indeterminate: false,
    }
    .error_response()
}

/// `serve`: one node with its HTTP API, until SIGTERM or SIGINT.
async fn serve<S: Service>(args: ServeArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let config = Config {
        client_timeout: Duration::from_millis(args.request_timeout_ms),
        snapshot_every: args.snapshot_every,
        snapshot_keep_entries: args.snapshot_keep,
        cluster_token: args.cluster_token.clone(),
        ..Config::default()
    };
    let node = LocalNode::<S>::start(
        args.id,
        &args.data_dir,
        args.raft_addr,
        args.initial_cluster,
        config,
    )
    .await?;
    let raft = web::Data::new(node.raft.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(raft.clone())
            .route("/cluster/status", web::get().to(status::<S>))
            .route("/cluster/snapshot", web::post().to(snapshot::<S>))
            .route("/cluster/members", web::post().to(add_member::<S>))
            .route(
                "/cluster/members/{id}",
                web::delete().to(remove_member::<S>),
            )
            .route(
                "/cluster/transfer-leader",
                web::post().to(transfer_leader::<S>),
            )
            .configure(S::routes)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(args.http_addr)
    .map_err(|e| format!("cannot listen on {}: {e}", args.http_addr));
    let server = match server {
        Ok(server) => server.run(),
        Err(e) => {
            node.stop().await;
            return Err(e);
        }
    };
    tracing::info!(
        node = args.id,
        raft = %args.raft_addr,
        http = %args.http_addr,
        "serving"
    );
    let handle = server.handle();
    // A node that stopped on its own (storage, applier or state machine
    // failure) must not leave the process serving: exit non-zero.
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let (watched, stop_http, failed) = (node.raft.clone(), handle.clone(), failure.clone());
    actix_rt::spawn(async move {
        loop {
            let hour = Duration::from_secs(3600);
            match watched
                .wait_for(hour, |m| m.stopped_because.is_some())
                .await
            {
                Ok(m) => {
                    let cause = m.stopped_because.unwrap_or_default();
                    tracing::error!(node = m.id, %cause, "the node stopped; exiting");
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause);
                    stop_http.stop(true).await;
                    return;
                }
                // Still running after an hour: keep watching.
                Err(RaftError::Timeout) => {}
                // The node is gone (a requested shutdown).
                Err(_) => return,
            }
        }
    });
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
    node.stop().await;
    tracing::info!("stopped");
    if let Some(cause) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(format!("the node stopped: {cause}"));
    }
    served.map_err(|e| format!("HTTP server: {e}"))
}

/// The demo's cluster: nodes in this process, fjall directories under a
/// fresh temporary directory, TCP on 127.0.0.1.
pub struct DemoCluster<S: Service> {
    /// Running nodes by id.
    pub nodes: BTreeMap<NodeId, LocalNode<S>>,
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
        let members = Membership::new(1..=size);
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            let node = LocalNode::<S>::start(
                id,
                &dir.path().join(format!("node-{id}")),
                "127.0.0.1:0".parse().expect("valid address"),
                Some(members.clone()),
                Config::default(),
            )
            .await?;
            println!("  node {id}: raft on {}", node.raft_addr());
            nodes.insert(id, node);
        }
        // Ports were picked by the OS: tell every node where its peers are.
        for node in nodes.values() {
            for (id, peer) in &nodes {
                node.set_peer_address(*id, peer.raft_addr());
            }
        }
        Ok(DemoCluster { nodes, dir })
    }

    /// The handle of node `id`.
    pub fn raft(&self, id: NodeId) -> &Raft<S> {
        &self.nodes[&id].raft
    }

    /// Waits until the surviving nodes agree on a leader other than
    /// `not` and returns it.
    pub async fn wait_leader(&self, not: Option<NodeId>) -> Result<NodeId, String> {
        let first = self.nodes.values().next().ok_or("no node is running")?;
        let metrics = first
            .raft
            .wait_for(DEMO_TIMEOUT, |m| {
                m.leader
                    .is_some_and(|l| Some(l) != not && self.nodes.contains_key(&l))
            })
            .await
            .map_err(|e| format!("no leader elected: {e}"))?;
        Ok(metrics.leader.expect("checked above"))
    }

    /// Kills node `id` as a crash would.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.kill();
        }
    }

    async fn stop(self) {
        for (_, node) in self.nodes {
            node.stop().await;
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
