//! The web scope of a [`crate::Host`]: every group's admin endpoints under
//! `/groups/{group}/cluster/...` (the same as a single node's
//! `/cluster/...`), the host's view of its groups at `GET /groups`, and
//! the host's totals at `GET /metrics`.
//!
//! Groups come and go at runtime, so the group is resolved per request:
//! a middleware looks `{group}` up on the host and leaves its [`Raft`] in
//! the request, where the admin handlers (and [`super::Replica`]) find it
//! before any node registered as app data.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, Error, HttpMessage, HttpResponse};
use serde_json::json;

use super::{admin, auth, Access, ApiError};
use crate::host::Host;
use crate::raft::Raft;
use crate::state_machine::StateMachine;

/// A group's node, left in a request by the group middleware.
pub(super) struct GroupNode<SM: StateMachine>(pub Raft<SM>);

/// Mounts a host's endpoints (see the module documentation), the admin
/// ones guarded by `access` as for a single node. Call inside
/// `App::configure`.
pub fn configure_host<SM: StateMachine + Send>(
    host: Arc<Host<SM>>,
    access: Access,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(host));
        cfg.app_data(web::Data::new(access));
        cfg.service(
            web::resource("/groups")
                .wrap(from_fn(auth::guard))
                .route(web::get().to(groups::<SM>)),
        );
        cfg.service(
            web::scope("/groups/{group}")
                .wrap(from_fn(auth::guard))
                .wrap(from_fn(resolve::<SM>))
                .service(admin::scope::<SM>()),
        );
        cfg.service(
            web::resource("/metrics")
                .wrap(from_fn(auth::guard))
                .route(web::get().to(metrics::<SM>)),
        );
    }
}

/// Finds `{group}` on the host, or answers 404.
async fn resolve<SM: StateMachine + Send>(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let group = req
        .match_info()
        .get("group")
        .and_then(|g| g.parse::<u64>().ok());
    let raft = match (group, req.app_data::<web::Data<Host<SM>>>()) {
        (Some(group), Some(host)) => host.group(group),
        _ => None,
    };
    match raft {
        Some(raft) => {
            req.extensions_mut().insert(GroupNode(raft));
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        None => {
            let name = req.match_info().get("group").unwrap_or("").to_string();
            let response = actix_web::ResponseError::error_response(&ApiError::not_found(format!(
                "this host has no group {name:?}"
            )));
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// `GET /groups`: the host, its counts, and every group with its role,
/// term, leader and whether it is quiet.
async fn groups<SM: StateMachine + Send>(host: web::Data<Host<SM>>) -> HttpResponse {
    let counts = host.counts();
    let groups: Vec<_> = host
        .groups()
        .into_iter()
        .map(|g| {
            json!({
                "group": g.group,
                "role": format!("{:?}", g.role),
                "term": g.term,
                "leader": g.leader,
                "quiesced": g.quiesced,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "host": host.id(),
        "counts": {
            "log_syncs": counts.log_syncs,
            "log_group_writes": counts.log_group_writes,
            "messages_unknown_group": counts.messages_unknown_group,
            "heartbeats_sent": counts.heartbeats_sent,
            "heartbeats_received": counts.heartbeats_received,
        },
        "groups": groups,
    }))
}

/// `GET /metrics`: the host's totals in Prometheus' text format, one
/// series each whatever the number of groups (per-group series would
/// multiply by thousands; each group's own are at
/// `/groups/{group}/cluster/stats`).
async fn metrics<SM: StateMachine + Send>(host: web::Data<Host<SM>>) -> HttpResponse {
    let counts = host.counts();
    let groups = host.groups();
    let leading = groups
        .iter()
        .filter(|g| g.role == crate::metrics::Role::Leader)
        .count();
    let quiet = groups.iter().filter(|g| g.quiesced).count();
    let id = host.id();
    let mut text = String::new();
    let mut series = |name: &str, kind: &str, help: &str, value: u64| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{host=\"{id}\"}} {value}\n"
        ));
    };
    series(
        "regatta_host_groups",
        "gauge",
        "Groups this host has a replica of.",
        groups.len() as u64,
    );
    series(
        "regatta_host_groups_leading",
        "gauge",
        "Groups this host leads.",
        leading as u64,
    );
    series(
        "regatta_host_groups_quiesced",
        "gauge",
        "Groups quiet here.",
        quiet as u64,
    );
    series(
        "regatta_host_log_syncs_total",
        "counter",
        "fsyncs of the shared log.",
        counts.log_syncs,
    );
    series(
        "regatta_host_log_group_writes_total",
        "counter",
        "Group writes made durable by those fsyncs.",
        counts.log_group_writes,
    );
    series(
        "regatta_host_messages_unknown_group_total",
        "counter",
        "Messages refused for a group this host does not have.",
        counts.messages_unknown_group,
    );
    series(
        "regatta_host_heartbeats_sent_total",
        "counter",
        "Host heartbeats sent.",
        counts.heartbeats_sent,
    );
    series(
        "regatta_host_heartbeats_received_total",
        "counter",
        "Host heartbeats received.",
        counts.heartbeats_received,
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
