//! The web scope of a [`crate::Host`]: every group's admin endpoints under
//! `/groups/{group}/cluster/...` (the same as a single node's
//! `/cluster/...`), the host's view of its groups at `GET /groups`,
//! `DELETE /groups/{group}` to delete a group from every member host,
//! the host's totals at `GET /metrics`, and a dashboard of the groups and
//! of the leaders per host at `GET /dashboard`.
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
            web::resource("/groups/{group}")
                .wrap(from_fn(auth::guard))
                .route(web::delete().to(delete::<SM>)),
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
        cfg.service(
            web::resource("/dashboard")
                .wrap(from_fn(auth::guard))
                .route(web::get().to(dashboard)),
        );
    }
}

/// The host's dashboard: one static page, embedded in the binary, that
/// polls `GET /groups` and shows how many groups each host leads (as this
/// host sees their leaders) and every group's role, leader, term, indexes
/// and quiet state.
async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("host_dashboard.html"))
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
                "commit_index": g.commit_index,
                "last_applied": g.last_applied,
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

/// `DELETE /groups/{group}`: [`Host::delete_group`]; answers which
/// member hosts confirmed and which did not answer in time.
async fn delete<SM: StateMachine + Send>(
    host: web::Data<Host<SM>>,
    group: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let group: u64 = group
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{group:?} is not a group id")))?;
    match host.delete_group(group).await {
        Ok(deletion) => Ok(HttpResponse::Ok().json(json!({
            "group": deletion.group,
            "confirmed": deletion.confirmed,
            "unanswered": deletion.unanswered,
        }))),
        Err(e @ crate::host::HostError::NoSuchGroup(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

/// What `GET /metrics` may be asked.
#[derive(serde::Deserialize)]
struct MetricsQuery {
    /// Add a few series per group (`?groups=true`): thousands of groups
    /// make thousands of series, so the host's totals alone by default.
    #[serde(default)]
    groups: bool,
}

/// `GET /metrics`: the host's totals in Prometheus' text format, one
/// series each whatever the number of groups; with `?groups=true` also
/// each group's role, term, leader, commit and applied index and quiet
/// state, labelled by group (each group's full numbers are at
/// `/groups/{group}/cluster/stats`).
async fn metrics<SM: StateMachine + Send>(
    host: web::Data<Host<SM>>,
    query: web::Query<MetricsQuery>,
) -> HttpResponse {
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
    if query.groups {
        per_group(&mut text, id, &groups);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// One series per group for each of a few gauges.
fn per_group(text: &mut String, host: u64, groups: &[crate::host::GroupInfo]) {
    type Gauge = fn(&crate::host::GroupInfo) -> u64;
    let gauges: [(&str, &str, Gauge); 6] = [
        (
            "regatta_group_term",
            "The group's term as this host knows it.",
            |g| g.term,
        ),
        (
            "regatta_group_leader",
            "The group's leader (host id; 0: none known).",
            |g| g.leader.unwrap_or(0),
        ),
        (
            "regatta_group_is_leader",
            "1 if this host leads the group.",
            |g| u64::from(g.role == crate::metrics::Role::Leader),
        ),
        (
            "regatta_group_commit_index",
            "The group's commit index here.",
            |g| g.commit_index,
        ),
        (
            "regatta_group_last_applied",
            "The group's last applied index here.",
            |g| g.last_applied,
        ),
        (
            "regatta_group_quiesced",
            "1 if the group is quiet here.",
            |g| u64::from(g.quiesced),
        ),
    ];
    for (name, help, value) in gauges {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for g in groups {
            text.push_str(&format!(
                "{name}{{host=\"{host}\",group=\"{}\"}} {}\n",
                g.group,
                value(g)
            ));
        }
    }
}
