//! A sharded key-value store: the keys are spread by hash over N Raft
//! groups, every group replicated on the same three processes (hosts),
//! which share one connection per pair, one fjall database and one fsync
//! stream each. Group leaders are spread over the hosts, so every
//! process leads a third of the writes. Any process takes any request:
//! a write is forwarded to its group's leader, a read is linearizable
//! wherever it lands.
//!
//! ```text
//! cargo build --release --example sharded_kv
//! HOSTS='1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103'
//! for i in 1 2 3; do
//!   ./target/release/examples/sharded_kv serve --id $i --data-dir /tmp/skv-$i \
//!     --raft-addr 127.0.0.1:710$i --http-addr 127.0.0.1:810$i --initial-cluster $HOSTS --groups 16 &
//! done
//! curl -X PUT localhost:8101/kv/color -d '{"value": "blue"}'   # {"group":..,"previous":null}
//! curl localhost:8102/kv/color                                 # {"group":..,"value":"blue"}
//! curl 'localhost:8103/kv?prefix=co'                          # every group's keys from "co", merged
//! curl localhost:8103/groups                                   # each group's role, term, leader, quiet or not
//! curl localhost:8103/groups/9/cluster/status                  # one group's admin scope, as a node's /cluster
//! curl -X POST localhost:8101/balance                          # spread the group leaders again
//! curl -X DELETE localhost:8101/kv/color                       # {"group":..,"previous":"blue"}
//! ```
//!
//! Exit codes: 2 for bad flags or a failed start, 0 after SIGINT/SIGTERM.

#[path = "state/kv.rs"]
mod kv_state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use kv_state::{Delete, Kv, Put, Read};
use regatta::web::{ApiError, JsonBody, ReadError, WriteError};
use regatta::{GroupId, Host, InitialCluster, NodeId, Raft};
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
#[command(about = "A sharded key-value store on regatta")]
enum Cli {
    /// Run one host: its replicas of every group, and the HTTP API.
    Serve(Args),
}

#[derive(clap::Args)]
struct Args {
    /// This host's id (1, 2, 3, ...).
    #[arg(long)]
    id: NodeId,
    /// Where this host keeps its database and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// Raft over TCP listens here.
    #[arg(long)]
    raft_addr: SocketAddr,
    /// The HTTP API listens here.
    #[arg(long)]
    http_addr: SocketAddr,
    /// Every host as `id=raft-address`, comma-separated, this one
    /// included (the founders of every group).
    #[arg(long)]
    initial_cluster: InitialCluster,
    /// How many groups the keys are spread over (the same on every host).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    groups: u64,
}

/// What every handler needs: the host and how many groups there are.
struct Shards {
    host: Arc<Host<Kv>>,
    groups: u64,
}

impl Shards {
    /// The group of `key`: FNV-1a, so every process (and every build)
    /// agrees.
    fn group_of(&self, key: &str) -> GroupId {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        hash % self.groups + 1
    }

    fn raft(&self, key: &str) -> Result<(GroupId, Raft<Kv>), ApiError> {
        let group = self.group_of(key);
        let raft = self
            .host
            .group(group)
            .ok_or_else(|| ApiError::not_found(format!("this host has no group {group}")))?;
        Ok((group, raft))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
}

async fn put(
    shards: web::Data<Shards>,
    key: web::Path<String>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let (group, raft) = shards.raft(&key)?;
    let value = body.into_inner().value;
    let previous = raft
        .execute(Put { key, value })
        .await
        .map_err(WriteError::from)?;
    Ok(HttpResponse::Ok().json(json!({ "group": group, "previous": previous })))
}

async fn get(shards: web::Data<Shards>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let (group, raft) = shards.raft(&key)?;
    match raft
        .read(Read::Get(key))
        .await
        .map_err(ReadError::from)?
        .pop()
    {
        Some((_, value)) => Ok(HttpResponse::Ok().json(json!({ "group": group, "value": value }))),
        None => Err(ApiError::not_found("no such key")),
    }
}

async fn delete(
    shards: web::Data<Shards>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let (group, raft) = shards.raft(&key)?;
    let previous = raft
        .execute(Delete { key })
        .await
        .map_err(WriteError::from)?;
    Ok(HttpResponse::Ok().json(json!({ "group": group, "previous": previous })))
}

#[derive(Deserialize)]
struct ScanQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// The keys from a prefix on, across every group: each group is read
/// (linearizably) at once and the answers merged in key order.
async fn scan(
    shards: web::Data<Shards>,
    query: web::Query<ScanQuery>,
) -> Result<HttpResponse, ApiError> {
    let ScanQuery { prefix, limit } = query.into_inner();
    let limit = limit.unwrap_or(100).min(10_000);
    let reads = (1..=shards.groups)
        .filter_map(|g| shards.host.group(g))
        .map(|raft| {
            let prefix = prefix.clone();
            async move { raft.read(Read::Scan { prefix, limit }).await }
        });
    let mut items = Vec::new();
    for answer in futures_util::future::join_all(reads).await {
        items.extend(answer.map_err(ReadError::from)?);
    }
    items.sort();
    items.truncate(limit);
    let items: Vec<_> = items
        .into_iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Spreads the group leaders evenly over the hosts.
async fn balance(shards: web::Data<Shards>) -> HttpResponse {
    let moved = shards.host.balance_leaders().await;
    HttpResponse::Ok().json(json!({ "moved": moved }))
}

/// Once every group has a leader, the lowest host id spreads them (one
/// balancer, so the hosts do not undo each other's transfers).
async fn balance_when_elected(shards: Arc<Shards>) {
    for _ in 0..600 {
        let groups = shards.host.groups();
        if groups.iter().all(|g| g.leader.is_some()) {
            let moved = shards.host.balance_leaders().await;
            println!(
                "host {}: spread the group leaders ({moved} transfers)",
                shards.host.id()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let Cli::Serve(args) = Cli::parse();
    let hosts: Vec<NodeId> = args.initial_cluster.ids().collect();
    if !hosts.contains(&args.id) {
        eprintln!(
            "error: --initial-cluster does not list this host ({})",
            args.id
        );
        return ExitCode::from(2);
    }
    let mut builder = Host::builder(args.id, |_group| Kv::default())
        .cluster_name("sharded-kv")
        .data_dir(&args.data_dir)
        .listen(args.raft_addr);
    for id in &hosts {
        match args.initial_cluster.address(*id) {
            Some(address) if *id != args.id => builder = builder.peer(*id, address),
            _ => {}
        }
    }
    let host = match builder.start().await {
        Ok(host) => host,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // A restarted host has its groups already: creating them again
    // returns them as they are.
    for group in 1..=args.groups {
        if let Err(e) = host.create_group(group, hosts.iter().copied()).await {
            eprintln!("error: {e}");
            host.shutdown().await;
            return ExitCode::from(2);
        }
    }
    let host = Arc::new(host);
    let shards = Arc::new(Shards {
        host: host.clone(),
        groups: args.groups,
    });
    if hosts.iter().min() == Some(&args.id) {
        actix_web::rt::spawn(balance_when_elected(shards.clone()));
    }
    let data = web::Data::from(shards.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/kv", web::get().to(scan))
            .route("/kv/{key}", web::put().to(put))
            .route("/kv/{key}", web::get().to(get))
            .route("/kv/{key}", web::delete().to(delete))
            .route("/balance", web::post().to(balance))
            // GET /groups, /groups/{group}/cluster/..., GET /metrics
            .configure(regatta::web::configure_host(
                host.clone(),
                regatta::web::Access::open(),
            ))
    })
    .workers(2)
    .bind(args.http_addr);
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.http_addr);
            return ExitCode::from(2);
        }
    };
    println!(
        "host {} serving {} groups: HTTP on {}, Raft on {}",
        args.id, args.groups, args.http_addr, args.raft_addr
    );
    // actix-web stops on SIGINT or SIGTERM.
    let served = server.run().await;
    shards.host.shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
