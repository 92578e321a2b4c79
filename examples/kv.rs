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
use std::sync::Arc;

use actix::prelude::*;
use actix_web::{web, HttpResponse};
use clap::Parser;
use regatta::web::{ApiError, JsonBody, Replica};
use regatta::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The replicated state. Behind an `Arc` so a snapshot takes a reference
/// in O(1) and serializes it off the actor; the next write after a
/// snapshot copies the map once (`Arc::make_mut`).
#[derive(Default)]
struct Kv {
    map: Arc<BTreeMap<String, String>>,
}

/// The commands, one type each: a write of a `Put` answers a `Put`'s
/// response type (see `regatta::Command` below), with no match on
/// `Response` in the handlers.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Command {
    Put(Put),
    Delete(Delete),
    Cas(Cas),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Put {
    key: String,
    value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Delete {
    key: String,
}

/// Sets `key` to `new` (`None`: deletes it) if it holds `expected`
/// (`None`: is absent).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cas {
    key: String,
    expected: Option<String>,
    new: Option<String>,
}

/// Put and Delete: the previous value. Cas: whether it swapped, and the
/// value after.
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Previous(Option<String>),
    Cas(CasOutcome),
}

#[derive(Debug, Serialize, Deserialize)]
struct CasOutcome {
    swapped: bool,
    current: Option<String>,
}

/// Each command type, its variant of `Command` and its answer.
macro_rules! typed_command {
    ($command:ident, $answer:ident => $response:ty) => {
        impl From<$command> for Command {
            fn from(c: $command) -> Self {
                Command::$command(c)
            }
        }
        impl regatta::Command<Kv> for $command {
            type Response = $response;
            fn response(response: Response) -> Option<$response> {
                match response {
                    Response::$answer(answer) => Some(answer),
                    _ => None,
                }
            }
        }
    };
}
typed_command!(Put, Previous => Option<String>);
typed_command!(Delete, Previous => Option<String>);
typed_command!(Cas, Cas => CasOutcome);

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
            Command::Put(Put { key, value }) => Response::Previous(map.insert(key, value)),
            Command::Delete(Delete { key }) => Response::Previous(map.remove(&key)),
            Command::Cas(Cas { key, expected, new }) => {
                let swapped = map.get(&key) == expected.as_ref();
                if swapped {
                    match new {
                        Some(value) => map.insert(key.clone(), value),
                        None => map.remove(&key),
                    };
                }
                Response::Cas(CasOutcome {
                    swapped,
                    current: map.get(&key).cloned(),
                })
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

async fn put(
    kv: Replica<Kv>,
    key: web::Path<String>,
    body: JsonBody<PutBody>,
) -> Result<HttpResponse, ApiError> {
    let put = Put {
        key: key.into_inner(),
        value: body.into_inner().value,
    };
    let previous = kv.execute(put).await?;
    Ok(HttpResponse::Ok().json(json!({ "previous": previous })))
}

async fn delete(kv: Replica<Kv>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let previous = kv.execute(Delete { key }).await?;
    Ok(HttpResponse::Ok().json(json!({ "previous": previous })))
}

async fn cas(
    kv: Replica<Kv>,
    key: web::Path<String>,
    body: JsonBody<CasBody>,
) -> Result<HttpResponse, ApiError> {
    let CasBody { expected, new } = body.into_inner();
    let key = key.into_inner();
    let CasOutcome { swapped, current } = kv.execute(Cas { key, expected, new }).await?;
    Ok(HttpResponse::Ok().json(json!({ "swapped": swapped, "current": current })))
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
    Serve(regatta::serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let Cli::Serve(args) = Cli::parse();
    regatta::serve::run("kv", args, Kv::default(), routes)
}
