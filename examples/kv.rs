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

#[path = "state/kv.rs"]
mod kv_state;

use actix_web::{web, HttpResponse};
use clap::Parser;
use kv_state::{Cas, CasOutcome, Delete, Kv, Put, Read};
use regatta::web::{ApiError, JsonBody, Replica};
use serde::Deserialize;
use serde_json::json;

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
