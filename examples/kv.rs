//! A replicated key-value store over HTTP: the state machine, its routes,
//! and the start-up — everything else comes from regatta's `Node` and
//! web scope.
//!
//! ```text
//! cargo run --release --example kv -- serve --id 1 --data-dir /tmp/kv-1 \
//!     --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 \
//!     --initial-cluster '1=127.0.0.1:7001;api=127.0.0.1:8001,2=127.0.0.1:7002;api=127.0.0.1:8002,3=127.0.0.1:7003;api=127.0.0.1:8003'
//! curl -X PUT localhost:8001/kv/color -d '{"value": "blue"}'       # {"previous":null}
//! curl localhost:8002/kv/color                                     # {"value":"blue"}
//! curl -X POST localhost:8003/kv/color/cas -d '{"expected": "blue", "new": "red"}'
//! curl 'localhost:8001/kv?prefix=co&limit=10'                      # {"items":[...]}
//! curl -X DELETE localhost:8001/kv/color                           # {"previous":"red"}
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use regatta::web::{ApiError, JsonBody, Replica};
use regatta::{Apply, InitialCluster, Node, Restore, Snapshot, SnapshotData, StateMachine};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The replicated state. Behind an `Arc` so a snapshot takes a reference
/// in O(1) and serializes it off the actor; the next write after a
/// snapshot copies the map once (`Arc::make_mut`).
#[derive(Default)]
struct Kv {
    map: Arc<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Command {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Sets `key` to `new` (`None`: deletes it) if it holds `expected`
    /// (`None`: is absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: Option<String>,
    },
}

/// Put and Delete: the previous value. Cas: whether it swapped, and the
/// value after.
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Previous(Option<String>),
    Cas {
        swapped: bool,
        current: Option<String>,
    },
}

impl Actor for Kv {
    type Context = Context<Self>;
}

impl StateMachine for Kv {
    type Command = Command;
    type Response = Response;
}

impl Handler<Apply<Kv>> for Kv {
    type Result = Vec<Response>;
    fn handle(&mut self, batch: Apply<Kv>, _: &mut Context<Self>) -> Vec<Response> {
        let map = Arc::make_mut(&mut self.map);
        let mut apply = |command| match command {
            Command::Put { key, value } => Response::Previous(map.insert(key, value)),
            Command::Delete { key } => Response::Previous(map.remove(&key)),
            Command::Cas { key, expected, new } => {
                let swapped = map.get(&key) == expected.as_ref();
                if swapped {
                    match new {
                        Some(value) => map.insert(key.clone(), value),
                        None => map.remove(&key),
                    };
                }
                Response::Cas {
                    swapped,
                    current: map.get(&key).cloned(),
                }
            }
        };
        batch
            .entries
            .into_iter()
            .map(|(_, command)| apply(command))
            .collect()
    }
}

impl Handler<Snapshot> for Kv {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let map = self.map.clone();
        Ok(SnapshotData::deferred(move || {
            rmp_serde::to_vec(&*map)
                .map(Into::into)
                .map_err(|e| e.to_string())
        }))
    }
}

impl Handler<Restore> for Kv {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        self.map = Arc::new(rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?);
        Ok(())
    }
}

/// Reads: the value of a key, or the keys from a prefix on.
#[derive(Message)]
#[rtype(result = "Vec<(String, String)>")]
enum Read {
    Get(String),
    Scan { prefix: String, limit: usize },
}

impl Handler<Read> for Kv {
    type Result = Vec<(String, String)>;
    fn handle(&mut self, read: Read, _: &mut Context<Self>) -> Self::Result {
        match read {
            Read::Get(key) => self
                .map
                .get_key_value(&key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect(),
            Read::Scan { prefix, limit } => self
                .map
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

// ---- routes ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expected: Option<String>,
    new: Option<String>,
}

#[derive(Deserialize)]
struct ScanQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// The answer to a write of the wrong kind would be a bug above: a 500.
fn unexpected(r: Response) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected response {r:?}"),
    )
}

async fn put(
    kv: Replica<Kv>,
    key: web::Path<String>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::Put {
        key: key.into_inner(),
        value: body.into_inner().value,
    };
    match kv.write(command).await? {
        Response::Previous(previous) => {
            Ok(HttpResponse::Ok().json(json!({ "previous": previous })))
        }
        other => Err(unexpected(other)),
    }
}

async fn delete(kv: Replica<Kv>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match kv
        .write(Command::Delete {
            key: key.into_inner(),
        })
        .await?
    {
        Response::Previous(previous) => {
            Ok(HttpResponse::Ok().json(json!({ "previous": previous })))
        }
        other => Err(unexpected(other)),
    }
}

async fn cas(
    kv: Replica<Kv>,
    key: web::Path<String>,
    body: JsonBody<CasBody>,
) -> Result<HttpResponse, ApiError> {
    let CasBody { expected, new } = body.into_inner();
    match kv
        .write(Command::Cas {
            key: key.into_inner(),
            expected,
            new,
        })
        .await?
    {
        Response::Cas { swapped, current } => {
            Ok(HttpResponse::Ok().json(json!({ "swapped": swapped, "current": current })))
        }
        other => Err(unexpected(other)),
    }
}

async fn get(kv: Replica<Kv>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match kv.read(Read::Get(key.into_inner())).await?.pop() {
        Some((_, value)) => Ok(HttpResponse::Ok().json(json!({ "value": value }))),
        None => Err(ApiError::not_found("no such key")),
    }
}

async fn scan(kv: Replica<Kv>, query: web::Query<ScanQuery>) -> Result<HttpResponse, ApiError> {
    let ScanQuery { prefix, limit } = query.into_inner();
    let items = kv
        .read(Read::Scan {
            prefix,
            limit: limit.unwrap_or(100).min(10_000),
        })
        .await?;
    let items: Vec<_> = items
        .into_iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/kv", web::get().to(scan))
        .route("/kv/{key}", web::get().to(get))
        .route("/kv/{key}", web::put().to(put))
        .route("/kv/{key}", web::delete().to(delete))
        .route("/kv/{key}/cas", web::post().to(cas));
}

// ---- start-up ----

#[derive(Parser)]
enum Cli {
    /// Run one node: Raft over TCP, a fjall log in --data-dir, HTTP API.
    Serve {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        raft_addr: SocketAddr,
        #[arg(long)]
        http_addr: SocketAddr,
        /// ID=HOST:PORT[;api=HOST:PORT],... (used only on an empty data directory)
        #[arg(long)]
        initial_cluster: Option<InitialCluster>,
        /// Wait to be added to a running cluster (`POST /cluster/members`).
        #[arg(long)]
        join: bool,
    },
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let Cli::Serve {
        id,
        data_dir,
        raft_addr,
        http_addr,
        initial_cluster,
        join,
    } = Cli::parse();
    let mut node = Node::builder(id, Kv::default())
        .cluster_name("kv")
        .data_dir(data_dir)
        .listen(raft_addr);
    node = match (initial_cluster, join) {
        (Some(cluster), _) => node.initial_cluster(cluster),
        (None, true) => node.join(),
        (None, false) => node,
    };
    let node = node.start().await?;
    let raft = node.raft().clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(regatta::web::configure(raft.clone()))
            .configure(routes)
            .default_service(web::to(regatta::web::not_found))
    })
    .bind(http_addr)?
    .run();
    let served = server.await; // until SIGINT or SIGTERM
    node.shutdown().await;
    Ok(served?)
}
