//! actix-web integration: mount a node's admin endpoints in your own
//! `App`, and write your routes with extractors and error types that
//! speak Raft.
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
//! use actix_web::{web, App, HttpResponse, HttpServer};
//! use regatta::web::{ApiError, JsonBody, Replica};
//!
//! #[derive(serde::Deserialize)]
//! struct Incr { by: u64 }
//!
//! async fn incr(node: Replica<Counter>, body: JsonBody<Incr>) -> Result<HttpResponse, ApiError> {
//!     let value = node.write(body.into_inner().by).await?;
//!     Ok(HttpResponse::Ok().json(value))
//! }
//!
//! # async fn run(node: regatta::Node<Counter>) -> std::io::Result<()> {
//! let raft = node.raft().clone();
//! HttpServer::new(move || {
//!     App::new()
//!         .configure(regatta::web::configure(raft.clone())) // /cluster/...
//!         .route("/incr", web::post().to(incr))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await
//! # }
//! ```
//!
//! The admin scope, under `/cluster`:
//!
//! | request | answer |
//! |---|---|
//! | `GET /cluster/status` | this node's [`crate::Metrics`], plus `voters`, `learners`, `joint`, `leader_api` |
//! | `GET /cluster/members` | every member: id, voter or learner, Raft address, metadata |
//! | `POST /cluster/members` `{"id", "raft_addr", "metadata"?, "voter"?, "catch_up_timeout_ms"?}` | adds a learner, waits for it to catch up, makes it a voter (unless `"voter": false`); leader only |
//! | `DELETE /cluster/members/{id}` | removes a voter (joint consensus) or a learner; leader only |
//! | `POST /cluster/transfer-leader` `{"to"}` | hands leadership to voter `to`; leader only |
//! | `POST /cluster/snapshot` | snapshots this node and compacts its log |
//! | `GET /cluster/health` | commits an empty entry through the log; its latency |
//! | `GET /cluster/view` | the leader's view of every member: role, matched index, lag, last contact; leader only |
//! | `POST /cluster/session` | opens a client session (see [`Replica`]) |
//! | `GET /metrics` | Prometheus text format: term, role, leader, commit/applied/last/snapshot index, members, per-peer match index, lag and last contact on the leader; labelled `node` and `cluster` |
//!
//! Leader-only requests sent elsewhere get `421` naming the leader and its
//! API address (metadata [`crate::API_ADDRESS`]). Every error is an
//! [`ApiError`] JSON body.

mod admin;
mod auth;
mod error;
#[cfg(all(feature = "fjall", feature = "tcp"))]
mod groups;
mod prometheus;

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::middleware::from_fn;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

pub use self::auth::Access;
pub use self::error::{ApiError, ReadError, WriteError};
#[cfg(all(feature = "fjall", feature = "tcp"))]
pub use self::groups::configure_host;
use crate::core::types::SessionTag;
use crate::raft::{Raft, Written};
use crate::state_machine::StateMachine;

/// Largest request body [`JsonBody`] and the admin endpoints accept.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Registers `raft` as app data (for [`Replica`]), mounts the admin
/// scope under `/cluster`, Prometheus metrics at `GET /metrics` and the
/// live dashboard at `GET /dashboard`, all open to anyone who reaches the
/// port ([`Access::open`]). Call inside `App::configure`.
pub fn configure<SM: StateMachine>(raft: Raft<SM>) -> impl FnOnce(&mut web::ServiceConfig) {
    configure_with(raft, Access::open())
}

/// [`configure`], with the admin endpoints guarded by `access`: requests
/// that change the cluster need its bearer token (401 without one, 403
/// with a wrong one, as JSON [`ApiError`]s; logged without the
/// credential), and so do the read-only ones if it protects reads.
pub fn configure_with<SM: StateMachine>(
    raft: Raft<SM>,
    access: Access,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(raft));
        cfg.app_data(web::Data::new(access));
        cfg.service(admin::scope::<SM>().wrap(from_fn(auth::guard)));
        cfg.service(
            web::resource("/metrics")
                .wrap(from_fn(auth::guard))
                .route(web::get().to(prometheus::metrics::<SM>)),
        );
        cfg.service(
            web::resource("/dashboard")
                .wrap(from_fn(auth::guard))
                .route(web::get().to(dashboard)),
        );
    }
}

/// The cluster dashboard: one static page, embedded in the binary, that
/// polls every member's `GET /cluster/stats` (learning their API
/// addresses from the membership metadata) and draws the members, the
/// replication lag, commit latency and throughput, and leader changes.
async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("dashboard.html"))
}

/// Parses `body` as every admin request body: for the fuzzer.
#[cfg(feature = "testing")]
pub(crate) fn fuzz_admin_bodies(body: &[u8]) {
    admin::parse_bodies_for_fuzzing(body)
}

/// A JSON 404 for `App::default_service`.
pub async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found("no such endpoint"))
}

/// The node serving this request, as an extractor (registered by
/// [`configure`]): writes and reads whose errors carry the leader's API
/// address.
///
/// A request with the headers [`SESSION_HEADER`] and [`SEQUENCE_HEADER`]
/// (and optionally [`RECEIVED_HEADER`], default: acknowledges nothing) writes in
/// that client session (open one with `POST /cluster/session`): sent again
/// after an unknown outcome (a `503` with `"indeterminate": true`, a lost
/// connection), the write is not applied twice, and the answer is the
/// original one. Malformed headers are a 400.
pub struct Replica<SM: StateMachine> {
    raft: web::Data<Raft<SM>>,
    tag: Option<SessionTag>,
}

/// The client session a write belongs to (an id from `POST /cluster/session`).
pub const SESSION_HEADER: &str = "Regatta-Session";
/// The write's sequence number in its session, from 1.
pub const SEQUENCE_HEADER: &str = "Regatta-Sequence";
/// The client has the answers of every sequence up to this one, so the
/// cluster may forget them and refuse their copies. Without it a write
/// acknowledges nothing: a client with several writes in flight must not
/// have an earlier one refused as already answered. A client that never
/// sends it is refused (`429`) once `Config::max_unacknowledged` answers
/// are kept.
pub const RECEIVED_HEADER: &str = "Regatta-Received";

impl<SM: StateMachine> Replica<SM> {
    /// The node's handle.
    pub fn raft(&self) -> &Raft<SM> {
        &self.raft
    }

    /// [`Raft::write`] — in the request's client session when it carries
    /// the session headers (exactly once), else as a plain write —
    /// failing with a [`WriteError`].
    pub async fn write(&self, command: SM::Command) -> Result<SM::Response, WriteError> {
        Ok(self.write_entry(command).await?.response)
    }

    /// [`Raft::execute`]: a typed command (in the request's session, if
    /// it has one), failing with a [`WriteError`].
    pub async fn execute<C: crate::Command<SM>>(
        &self,
        command: C,
    ) -> Result<C::Response, WriteError> {
        let response = self.write(command.into()).await?;
        crate::command::typed::<SM, C>(response).map_err(WriteError::from)
    }

    /// [`Replica::write`], also returning where the command sits in the
    /// log.
    pub async fn write_entry(
        &self,
        command: SM::Command,
    ) -> Result<Written<SM::Response>, WriteError> {
        let written = match self.tag {
            Some(tag) => self.raft.write_tagged(tag, command).await,
            None => self.raft.write_entry(command).await,
        };
        written.map_err(|e| WriteError::from(e).with_leader(None, &self.membership()))
    }

    /// [`Raft::read`], failing with a [`ReadError`].
    pub async fn read<M>(&self, query: M) -> Result<M::Result, ReadError>
    where
        SM: actix::Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        self.raft
            .read(query)
            .await
            .map_err(|e| ReadError::from(e).with_leader(None, &self.membership()))
    }

    /// [`Raft::read_local`]: this node's state, possibly stale, with the
    /// index it had applied.
    pub async fn read_local<M>(&self, query: M) -> Result<crate::LocalRead<M::Result>, ReadError>
    where
        SM: actix::Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        self.raft.read_local(query).await.map_err(ReadError::from)
    }

    fn membership(&self) -> crate::core::types::Membership {
        self.raft.metrics().borrow().membership.clone()
    }
}

impl<SM: StateMachine> FromRequest for Replica<SM> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raft = this_node::<SM>(req).map(web::Data::new);
        ready(raft.and_then(|raft| {
            Ok(Replica {
                raft,
                tag: session_tag(req)?,
            })
        }))
    }
}

/// The node a request is for: a host's group named in the path (left in
/// the request by [`configure_host`]'s middleware), else the node
/// registered as app data by [`configure`].
pub(super) fn this_node<SM: StateMachine>(req: &HttpRequest) -> Result<Raft<SM>, ApiError> {
    #[cfg(all(feature = "fjall", feature = "tcp"))]
    {
        use actix_web::HttpMessage;
        if let Some(node) = req.extensions().get::<groups::GroupNode<SM>>() {
            return Ok(node.0.clone());
        }
    }
    req.app_data::<web::Data<Raft<SM>>>()
        .map(|data| data.get_ref().clone())
        .ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "no regatta node registered: call regatta::web::configure(raft) in App::configure",
            )
        })
}

/// The node an admin handler serves: see [`this_node`].
pub(super) struct ThisNode<SM: StateMachine>(Raft<SM>);

impl<SM: StateMachine> std::ops::Deref for ThisNode<SM> {
    type Target = Raft<SM>;
    fn deref(&self) -> &Raft<SM> {
        &self.0
    }
}

impl<SM: StateMachine> FromRequest for ThisNode<SM> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(this_node(req).map(ThisNode))
    }
}

/// The session headers of a request, if it has them.
fn session_tag(req: &HttpRequest) -> Result<Option<SessionTag>, ApiError> {
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        match req.headers().get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a number"))),
        }
    };
    let (session, seq) = (number(SESSION_HEADER)?, number(SEQUENCE_HEADER)?);
    let received = number(RECEIVED_HEADER)?;
    match (session, seq) {
        (None, None) if received.is_none() => Ok(None),
        (Some(session), Some(seq)) if seq >= 1 && received.is_none_or(|r| r < seq) => {
            Ok(Some(SessionTag {
                session,
                seq,
                // Acknowledges nothing: never assume the earlier writes are
                // answered (they may still be in flight).
                received: received.unwrap_or(0),
                implicit: false,
            }))
        }
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{SEQUENCE_HEADER} starts at 1, and {RECEIVED_HEADER} must be below it"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a session write needs both {SESSION_HEADER} and {SEQUENCE_HEADER}"
        ))),
    }
}

/// A JSON object request body of at most [`MAX_BODY_BYTES`]; an empty body
/// reads as `{}` (so a body whose fields all have defaults is optional).
/// Anything else is a 400 [`ApiError`] saying what was wrong. The
/// `Content-Type` header is not checked (`curl -d` works as is).
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    /// The parsed body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = Vec::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::bad_request(format!(
                        "body larger than {MAX_BODY_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(JsonBody)
        })
    }
}

/// An object (serde would also take a struct from an array; the API is
/// objects only); blank reads as `{}`.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let body = match first {
        None => &b"{}"[..],
        Some(b'{') => body,
        Some(_) => return Err(ApiError::bad_request("the body must be a JSON object")),
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}
