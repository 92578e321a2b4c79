//! The actix-web integration, through actix-web's test service: the admin
//! scope on a live (simulated-network) cluster, the error mapping with its
//! indeterminate/retryable flags and leader hints, and bad request bodies.
//!
//! Modules: `admin` (the admin scope and its token), `requests` (bad
//! bodies, error mapping, session headers), `metrics` (Prometheus text).

#[path = "../common/mod.rs"]
mod common;

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::test as web_test;
use actix_web::{web, App, HttpResponse};
use common::*;
use regatta::testing::Cluster;
use regatta::web::{ApiError, JsonBody, ReadError, Replica, WriteError};
use regatta::{MembershipError, RaftError, TransferError};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    #[serde(default = "one")]
    by: u64,
}

fn one() -> u64 {
    1
}

/// A user's routes, as a service would write them.
async fn add(node: Replica<Counter>, body: JsonBody<AddBody>) -> Result<HttpResponse, ApiError> {
    let value = node.write(Add(body.into_inner().by)).await?;
    Ok(HttpResponse::Ok().json(json!({ "value": value })))
}

async fn get(node: Replica<Counter>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(json!({ "value": node.read(Get).await? })))
}

macro_rules! app {
    ($raft:expr) => {
        web_test::init_service(
            App::new()
                .configure(regatta::web::configure($raft.clone()))
                .route("/add", web::post().to(add))
                .route("/value", web::get().to(get))
                .default_service(web::to(regatta::web::not_found)),
        )
        .await
    };
}

async fn call<S>(app: &S, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    call_with(app, method, path, body, &[]).await
}

async fn call_with<S>(
    app: &S,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, String)],
) -> (StatusCode, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let req = match method {
        "GET" => web_test::TestRequest::get(),
        "POST" => web_test::TestRequest::post(),
        "DELETE" => web_test::TestRequest::delete(),
        other => panic!("method {other}"),
    }
    .uri(path);
    let req = headers.iter().fold(req, |req, (name, value)| {
        req.insert_header((*name, value.clone()))
    });
    let req = match body {
        Some(b) => req.set_payload(b.to_string()),
        None => req,
    };
    let resp = web_test::call_service(app, req.to_request()).await;
    let status = resp.status();
    let bytes = web_test::read_body(resp).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

/// Member `id` in a `members` list of an answer.
fn member(v: &Value, id: u64) -> Value {
    let members = v["members"].as_array().expect("a members list");
    let found = members.iter().find(|m| m["id"] == json!(id));
    found
        .unwrap_or_else(|| panic!("no member {id} in {v}"))
        .clone()
}

mod admin;
mod metrics;
mod requests;
