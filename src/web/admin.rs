//! The admin scope: status, membership, leadership, snapshots, health and
//! the leader's view of the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::{ApiError, JsonBody};
use crate::core::types::{Membership, NodeId};
use crate::error::{MembershipError, RaftError};
use crate::metrics::{Metrics, Role};
use crate::raft::Raft;
use crate::state_machine::StateMachine;

/// How long `POST /cluster/members` waits for a new node to catch up,
/// unless the request says otherwise.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest catch-up wait a request may ask for.
const MAX_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3600);

pub(super) fn scope<SM: StateMachine>() -> actix_web::Scope {
    web::scope("/cluster")
        .route("/status", web::get().to(status::<SM>))
        .route("/stats", web::get().to(stats::<SM>))
        .route("/members", web::get().to(members::<SM>))
        .route("/members", web::post().to(add_member::<SM>))
        .route("/members/{id}", web::delete().to(remove_member::<SM>))
        .route(
            "/members/{id}/replace",
            web::post().to(replace_member::<SM>),
        )
        .route(
            "/members/{id}/metadata/{key}",
            web::put().to(set_metadata::<SM>),
        )
        .route(
            "/members/{id}/metadata/{key}",
            web::delete().to(remove_metadata::<SM>),
        )
        .route("/transfer-leader", web::post().to(transfer_leader::<SM>))
        .route("/snapshot", web::post().to(snapshot::<SM>))
        .route("/health", web::get().to(health::<SM>))
        .route("/view", web::get().to(view::<SM>))
        .route("/session", web::post().to(open_session::<SM>))
        .route("/backup", web::get().to(backup::<SM>))
}

type Node<SM> = super::ThisNode<SM>;

fn metrics<SM: StateMachine>(raft: &Raft<SM>) -> Metrics {
    raft.metrics().borrow().clone()
}

/// 421 naming the leader, unless this node leads.
fn require_leader(m: &Metrics) -> Result<(), ApiError> {
    if m.role == Role::Leader {
        return Ok(());
    }
    let message = match m.leader {
        Some(l) => format!("not the leader: send this request to node {l}"),
        None => "no leader is known yet: retry shortly".to_string(),
    };
    let status = match m.leader {
        Some(_) => StatusCode::MISDIRECTED_REQUEST,
        None => StatusCode::SERVICE_UNAVAILABLE,
    };
    Err(ApiError::admin(RaftError::NotLeader(m.leader))
        .with_leader(m.leader, &m.membership)
        .with_status(status, message))
}

fn admin_error(e: RaftError, m: &Membership) -> ApiError {
    let leader = match &e {
        RaftError::NotLeader(hint) => *hint,
        _ => None,
    };
    ApiError::admin(e).with_leader(leader, m)
}

fn membership_json(m: &Membership) -> serde_json::Value {
    let members: Vec<_> = m
        .members()
        .into_iter()
        .map(|id| {
            json!({
                "id": id,
                "voter": m.is_voter(id),
                "incarnation": m.incarnations.get(&id),
                "raft_addr": m.addresses.get(&id),
                "metadata": m.metadata.get(&id).cloned().unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "voters": m.voters,
        "learners": m.learners,
        "joint": m.is_joint(),
        "members": members,
    })
}

/// The configuration after a change, and the leader that carried it out
/// (as this node knows it when the change has completed: any member takes
/// a change and forwards it to the leader).
fn change_json<SM: StateMachine>(raft: &Raft<SM>, m: &Membership) -> serde_json::Value {
    let mut body = membership_json(m);
    body["by"] = json!(metrics(raft).leader);
    body
}

/// `GET /cluster/status`: this node's metrics.
async fn status<SM: StateMachine>(raft: Node<SM>) -> HttpResponse {
    readable_anywhere(HttpResponse::Ok()).json(status_json(&metrics(&raft)))
}

fn status_json(m: &Metrics) -> serde_json::Value {
    let mut body = serde_json::to_value(m).unwrap_or_else(|_| json!({}));
    body["voters"] = json!(m.membership.voters);
    body["learners"] = json!(m.membership.learners);
    body["joint"] = json!(m.membership.is_joint());
    body["leader_api"] = json!(m.leader.and_then(|l| m.membership.api_address(l)));
    body
}

/// `GET /cluster/stats`: the status with the event counts, histograms
/// and per-peer traffic, for the dashboard and the `status` command.
async fn stats<SM: StateMachine>(raft: Node<SM>) -> HttpResponse {
    readable_anywhere(HttpResponse::Ok()).json(json!({
        "status": status_json(&metrics(&raft)),
        "counts": raft.counts(),
        "histograms": raft.histograms(),
        "traffic": raft.traffic(),
    }))
}

/// Read-only answers any page may fetch: the dashboard loaded from one
/// member reads the others' (a simple GET, so no preflight is needed).
fn readable_anywhere(
    mut response: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    response.insert_header(("Access-Control-Allow-Origin", "*"));
    response
}

/// `GET /cluster/members`: the configuration this node knows.
async fn members<SM: StateMachine>(raft: Node<SM>) -> HttpResponse {
    HttpResponse::Ok().json(membership_json(&metrics(&raft).membership))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: NodeId,
    raft_addr: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default = "yes")]
    voter: bool,
    catch_up_timeout_ms: Option<u64>,
    /// Promote only once the new member has stayed caught up and in
    /// contact for `Config::voter_stabilization` (`Raft::add_voter`).
    #[serde(default)]
    stabilize: bool,
}

fn yes() -> bool {
    true
}

/// `POST /cluster/members`: learner, caught up, voter; answers once the
/// final configuration has committed.
async fn add_member<SM: StateMachine>(
    raft: Node<SM>,
    body: JsonBody<AddMember>,
) -> Result<HttpResponse, ApiError> {
    let add = body.into_inner();
    if add.id == 0 {
        return Err(ApiError::bad_request("node ids start at 1"));
    }
    if add.raft_addr.trim().is_empty() {
        return Err(ApiError::bad_request("raft_addr must be HOST:PORT"));
    }
    let wait = add
        .catch_up_timeout_ms
        .map_or(CATCH_UP_TIMEOUT, Duration::from_millis)
        .min(MAX_CATCH_UP_TIMEOUT);
    let m = metrics(&raft);
    if add.voter && add.stabilize {
        let next = raft
            .add_voter(add.id, add.raft_addr, add.metadata)
            .await
            .map_err(|e| admin_error(e, &m.membership))?;
        return Ok(HttpResponse::Ok().json(change_json(&raft, &next)));
    }
    let mut current = if m.membership.is_voter(add.id) {
        m.membership.clone()
    } else {
        raft.add_learner_with_metadata(add.id, add.raft_addr, add.metadata)
            .await
            .map_err(|e| admin_error(e, &m.membership))?
    };
    if add.voter && !current.is_voter(add.id) {
        current = promote(&raft, add.id, Instant::now() + wait, &m.membership).await?;
    }
    Ok(HttpResponse::Ok().json(change_json(&raft, &current)))
}

/// `DELETE /cluster/members/{id}`: removes a voter or a learner.
async fn remove_member<SM: StateMachine>(
    raft: Node<SM>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a node id")))?;
    let m = metrics(&raft);
    let result = if m.membership.voters.contains(&id) {
        let mut voters = m.membership.voters.clone();
        voters.remove(&id);
        raft.change_membership(voters).await
    } else if m.membership.learners.contains(&id) {
        raft.remove_learner(id).await
    } else {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    };
    let next = result.map_err(|e| admin_error(e, &m.membership))?;
    Ok(HttpResponse::Ok().json(change_json(&raft, &next)))
}

/// How long `POST /cluster/members/{id}/replace` waits to hear from the
/// node's new incarnation before answering that it has not come back.
const REPLACEMENT_START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplaceMember {
    catch_up_timeout_ms: Option<u64>,
}

/// `POST /cluster/members/{id}/replace`: re-admits voter `id` after its
/// data directory was replaced (`Raft::replace`), waiting for the new
/// incarnation to be heard (a few seconds) and to catch up; answers once
/// it votes again. The body is optional.
async fn replace_member<SM: StateMachine>(
    raft: Node<SM>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a node id")))?;
    let options: ReplaceMember = if body.iter().all(u8::is_ascii_whitespace) {
        ReplaceMember::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be empty or {{\"catch_up_timeout_ms\": N}}: {e}"
            ))
        })?
    };
    let wait = options
        .catch_up_timeout_ms
        .map_or(CATCH_UP_TIMEOUT, Duration::from_millis)
        .min(MAX_CATCH_UP_TIMEOUT);
    let m = metrics(&raft);
    let started = Instant::now();
    let not_back_deadline = started + REPLACEMENT_START_TIMEOUT.min(wait);
    let deadline = started + wait;
    let next = loop {
        match raft.replace(id).await {
            Ok(next) => break next,
            Err(RaftError::Membership(MembershipError::NotReplaced(_)))
                if Instant::now() < not_back_deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            // The old incarnation is out; the new one is catching up.
            Err(RaftError::Membership(
                MembershipError::LearnerBehind { .. } | MembershipError::TimedOut,
            )) => break promote(&raft, id, deadline, &m.membership).await?,
            Err(e) => return Err(admin_error(e, &m.membership)),
        }
    };
    Ok(HttpResponse::Ok().json(change_json(&raft, &next)))
}

/// Makes learner `id` a voter once it has caught up, retrying until
/// `deadline`.
async fn promote<SM: StateMachine>(
    raft: &Raft<SM>,
    id: NodeId,
    deadline: Instant,
    before: &Membership,
) -> Result<Membership, ApiError> {
    loop {
        let mut voters = metrics(raft).membership.voters;
        voters.insert(id);
        match raft.change_membership(voters).await {
            Ok(next) => return Ok(next),
            // Still catching up (or another change finishing): wait.
            Err(RaftError::Membership(e)) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(admin_error(e, before)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataValue {
    value: String,
}

/// `PUT /cluster/members/{id}/metadata/{key}` `{"value": "..."}`: sets one
/// metadata key of a member through the log (its API address under
/// `api`, say), on any node.
async fn set_metadata<SM: StateMachine>(
    raft: Node<SM>,
    path: web::Path<(String, String)>,
    body: JsonBody<MetadataValue>,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    update_metadata(&raft, &id, key, Some(body.into_inner().value)).await
}

/// `DELETE /cluster/members/{id}/metadata/{key}`.
async fn remove_metadata<SM: StateMachine>(
    raft: Node<SM>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    update_metadata(&raft, &id, key, None).await
}

async fn update_metadata<SM: StateMachine>(
    raft: &Raft<SM>,
    id: &str,
    key: String,
    value: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a node id")))?;
    if key.is_empty() || key.len() > 256 || value.as_ref().is_some_and(|v| v.len() > 4096) {
        return Err(ApiError::bad_request(
            "a metadata key has 1 to 256 bytes, a value at most 4096",
        ));
    }
    let next = raft
        .update_member_metadata(id, key, value)
        .await
        .map_err(|e| admin_error(e, &metrics(raft).membership))?;
    Ok(HttpResponse::Ok().json(change_json(raft, &next)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferTo {
    to: NodeId,
}

/// `POST /cluster/transfer-leader` `{"to": N}`.
async fn transfer_leader<SM: StateMachine>(
    raft: Node<SM>,
    body: JsonBody<TransferTo>,
) -> Result<HttpResponse, ApiError> {
    let to = body.into_inner().to;
    let m = metrics(&raft);
    raft.transfer_leadership(to)
        .await
        .map_err(|e| admin_error(e, &m.membership))?;
    Ok(HttpResponse::Ok().json(json!({ "leader": to, "by": m.leader })))
}

/// `POST /cluster/snapshot`: snapshot this node now.
async fn snapshot<SM: StateMachine>(raft: Node<SM>) -> Result<HttpResponse, ApiError> {
    let at = raft
        .snapshot()
        .await
        .map_err(|e| admin_error(e, &metrics(&raft).membership))?;
    Ok(HttpResponse::Ok().json(json!({
        "snapshot_index": at.index,
        "snapshot_term": at.term,
    })))
}

/// `GET /cluster/health`: commits an empty entry through the log (from
/// any node) and reports how long that took, as `etcdctl endpoint health`.
async fn health<SM: StateMachine>(raft: Node<SM>) -> HttpResponse {
    let started = Instant::now();
    let result = raft.commit_empty_entry().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(at) => HttpResponse::Ok().json(json!({
            "healthy": true,
            "index": at.index,
            "term": at.term,
            "latency_ms": latency_ms,
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "healthy": false,
            "error": e.to_string(),
            "latency_ms": latency_ms,
            "retryable": true,
        })),
    }
}

/// `GET /cluster/backup` (admin token, whenever one is configured): a
/// consistent backup of this member's state (`Raft::backup`), streamed
/// in 1 MiB chunks read from disk on a thread of its own, so memory stays
/// bounded whatever the state's size. `Content-Length` is the file's
/// size; a read error ends the stream early, which a client sees as a
/// short body.
async fn backup<SM: StateMachine>(raft: Node<SM>) -> Result<HttpResponse, ApiError> {
    let backup = raft
        .backup()
        .await
        .map_err(|e| admin_error(e, &metrics(&raft).membership))?;
    let size = backup.file_size();
    let last = backup.header.last_included;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    let mut reader = backup.reader;
    std::thread::Builder::new()
        .name("regatta-backup".into())
        .spawn(move || {
            use std::io::Read;
            loop {
                let mut chunk = vec![0u8; crate::backup::CHUNK_BYTES];
                let sent = match reader.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        tx.blocking_send(Ok(chunk.into()))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "backup stream failed");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                if sent.is_err() {
                    return; // the client went away
                }
            }
        })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Regatta-Backup-Index", last.index.to_string()))
        .insert_header(("Regatta-Backup-Term", last.term.to_string()))
        .no_chunking(size)
        .streaming(body))
}

/// `POST /cluster/session`: opens a client session (through the log,
/// from any node); its id goes in the `Regatta-Session` header of writes.
async fn open_session<SM: StateMachine>(raft: Node<SM>) -> Result<HttpResponse, ApiError> {
    let session = raft.open_session().await.map_err(|e| {
        ApiError::from(super::WriteError::from(e)).with_leader(None, &metrics(&raft).membership)
    })?;
    Ok(HttpResponse::Ok().json(json!({ "session": session.id() })))
}

/// `GET /cluster/view` (on the leader): every member's role and how far
/// its log matches the leader's.
async fn view<SM: StateMachine>(raft: Node<SM>) -> Result<HttpResponse, ApiError> {
    let m = metrics(&raft);
    require_leader(&m)?;
    let members: Vec<_> = m
        .membership
        .members()
        .into_iter()
        .map(|id| {
            let role = if id == m.id {
                "leader"
            } else if m.membership.is_voter(id) {
                "follower"
            } else {
                "learner"
            };
            let (matched, lag, last_contact_ms) = match m.replication.get(&id) {
                _ if id == m.id => (Some(m.last_log_index), Some(0), Some(0)),
                Some(p) => (Some(p.matched), Some(p.lag), p.last_contact_ms),
                None => (None, None, None),
            };
            json!({
                "id": id,
                "role": role,
                "api": m.membership.api_address(id),
                "matched": matched,
                "lag": lag,
                "last_contact_ms": last_contact_ms,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "leader": m.id,
        "term": m.term,
        "commit_index": m.commit_index,
        "last_applied": m.last_applied,
        "last_log_index": m.last_log_index,
        "joint": m.membership.is_joint(),
        "members": members,
    })))
}

/// Parses `body` as every admin request body, as the endpoints would: for
/// the fuzzer, which checks that no body makes a parser panic.
#[cfg(feature = "testing")]
pub(crate) fn parse_bodies_for_fuzzing(body: &[u8]) {
    let _ = super::parse_json::<AddMember>(body);
    let _ = super::parse_json::<TransferTo>(body);
    let _ = super::parse_json::<serde_json::Value>(body);
}
