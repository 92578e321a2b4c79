//! The actix-web integration, through actix-web's test service: the admin
//! scope on a live (simulated-network) cluster, the error mapping with its
//! indeterminate/retryable flags and leader hints, and bad request bodies.

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

#[actix_rt::test]
async fn admin_scope_manages_a_live_cluster() {
    init_tracing();
    bounded(LIMIT, async {
        let mut c = Cluster::new(3, test_config(), seed("web_admin"), |_| Counter::default()).await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let on_leader = app!(c.raft(leader));
        let on_follower = app!(c.raft(follower));

        // User routes with the library's extractors, on any node.
        let (s, v) = call(&on_follower, "POST", "/add", Some(r#"{"by": 5}"#)).await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(5)), "{v}");
        let (s, v) = call(&on_leader, "POST", "/add", None).await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(6)), "{v}");
        let (s, v) = call(&on_follower, "GET", "/value", None).await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(6)), "{v}");

        // Status and members, on any node.
        let (s, v) = call(&on_follower, "GET", "/cluster/status", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["id"], json!(follower));
        assert_eq!(v["role"], json!("follower"));
        assert_eq!(v["leader"], json!(leader));
        assert_eq!(v["voters"], json!([1, 2, 3]));
        let (s, v) = call(&on_follower, "GET", "/cluster/members", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");

        // Health commits an entry through the log, from a follower too.
        let commit = c.metrics()[&leader].commit_index;
        let (s, v) = call(&on_follower, "GET", "/cluster/health", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["healthy"], json!(true));
        assert!(v["index"].as_u64().unwrap() > commit, "{v}");
        assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);

        // Leader-only requests on a follower: 421 naming the leader.
        let (s, v) = call(
            &on_follower,
            "POST",
            "/cluster/transfer-leader",
            Some(r#"{"to": 1}"#),
        )
        .await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST, "{v}");
        assert_eq!(v["leader"], json!(leader));
        assert_eq!(v["retryable"], json!(true));
        let (s, _) = call(&on_follower, "GET", "/cluster/view", None).await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);

        // Add node 4 with its API address: learner, caught up, voter.
        c.start(4).await;
        let body = r#"{"id": 4, "raft_addr": "node-4:7000", "metadata": {"api": "node-4:8000"}}"#;
        let (s, v) = call(&on_leader, "POST", "/cluster/members", Some(body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["voters"], json!([1, 2, 3, 4]), "{v}");
        let four = member(&v, 4);
        assert_eq!(four["metadata"]["api"], json!("node-4:8000"), "{v}");

        // The leader's view: every member, with its progress.
        let (s, v) = call(&on_leader, "GET", "/cluster/view", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["members"].as_array().unwrap().len(), 4, "{v}");
        c.raft(leader)
            .wait_for(LIMIT, |m| {
                m.replication.get(&4).is_some_and(|p| p.matched > 0)
            })
            .await
            .unwrap();
        let (_, v) = call(&on_leader, "GET", "/cluster/view", None).await;
        let four = member(&v, 4);
        assert_eq!(four["role"], json!("follower"), "{v}");
        assert_eq!(four["api"], json!("node-4:8000"), "{v}");
        assert!(four["matched"].as_u64().unwrap() > 0, "{v}");

        // Leadership to node 4: a follower's 421 now names its API address.
        let (s, v) = call(
            &on_leader,
            "POST",
            "/cluster/transfer-leader",
            Some(r#"{"to": 4}"#),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        c.raft(follower)
            .wait_for(LIMIT, |m| m.leader == Some(4))
            .await
            .unwrap();
        let (s, v) = call(&on_follower, "POST", "/cluster/snapshot", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (s, v) = call(&on_follower, "GET", "/cluster/view", None).await;
        assert_eq!(s, StatusCode::MISDIRECTED_REQUEST, "{v}");
        assert_eq!(
            (&v["leader"], &v["leader_api"]),
            (&json!(4), &json!("node-4:8000")),
            "{v}"
        );
        let (s, v) = call(&on_follower, "GET", "/cluster/status", None).await;
        assert_eq!(
            (s, &v["leader_api"]),
            (StatusCode::OK, &json!("node-4:8000")),
            "{v}"
        );
        let on_four = app!(c.raft(4));
        let (s, v) = call(
            &on_four,
            "POST",
            "/cluster/transfer-leader",
            Some(&format!(r#"{{"to": {leader}}}"#)),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        c.raft(leader)
            .wait_for(LIMIT, |m| m.role == regatta::Role::Leader)
            .await
            .unwrap();

        // Removal, refusals, unknown members.
        let (s, v) = call(&on_leader, "DELETE", "/cluster/members/4", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["voters"], json!([1, 2, 3]), "{v}");
        let (s, _) = call(&on_leader, "DELETE", "/cluster/members/9", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, v) = call(
            &on_leader,
            "POST",
            "/cluster/transfer-leader",
            Some(r#"{"to": 9}"#),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["retryable"], json!(false), "{v}");
        // A learner that never catches up (not running): a bounded wait,
        // then 409 saying retrying may help.
        let body = r#"{"id": 5, "raft_addr": "node-5:7000", "catch_up_timeout_ms": 300}"#;
        let (s, v) = call(&on_leader, "POST", "/cluster/members", Some(body)).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["retryable"], json!(true), "{v}");
        let (s, v) = call(&on_leader, "DELETE", "/cluster/members/5", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["learners"], json!([]), "{v}");

        // Snapshot, then hand leadership over.
        let (s, v) = call(&on_leader, "POST", "/cluster/snapshot", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v["snapshot_index"].as_u64().unwrap() > 0);
        let to = c
            .ids()
            .into_iter()
            .find(|id| *id != leader && *id <= 3)
            .unwrap();
        let (s, v) = call(
            &on_leader,
            "POST",
            "/cluster/transfer-leader",
            Some(&format!(r#"{{"to": {to}}}"#)),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        c.raft(to)
            .wait_for(LIMIT, |m| m.leader == Some(to))
            .await
            .unwrap();
    })
    .await
}

#[actix_rt::test]
async fn bad_bodies_and_paths_are_json_400s_and_404s() {
    bounded(LIMIT, async {
        let c = Cluster::new(1, test_config(), seed("web_bad_input"), |_| {
            Counter::default()
        })
        .await;
        c.wait_leader(LIMIT).await.unwrap();
        let app = app!(c.raft(1));
        let too_large = format!(r#"{{"by": 1, "pad": "{}"}}"#, "x".repeat(70 * 1024));
        for (path, body, expected) in [
            ("/add", "[1]", "JSON object"),
            ("/add", "{\"by\": ", "malformed JSON"),
            ("/add", r#"{"by": "x"}"#, "malformed JSON"),
            ("/add", r#"{"by": 1, "extra": 2}"#, "unknown field"),
            ("/add", too_large.as_str(), "larger than"),
            ("/cluster/members", "", "missing field"),
            (
                "/cluster/members",
                r#"{"id": 0, "raft_addr": "a:1"}"#,
                "start at 1",
            ),
            ("/cluster/transfer-leader", "7", "JSON object"),
        ] {
            let (s, v) = call(&app, "POST", path, Some(body)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body:.40}: {v}");
            assert!(
                v["error"].as_str().unwrap().contains(expected),
                "{path}: {v}"
            );
            assert_eq!(v["indeterminate"], json!(false));
        }
        let (s, v) = call(&app, "DELETE", "/cluster/members/x", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = call(&app, "GET", "/nowhere", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        // Nothing was applied by any of it.
        assert_eq!(c.raft(1).read(Get).await.unwrap(), 0);
    })
    .await
}

fn body(e: impl actix_web::ResponseError) -> (StatusCode, Value) {
    let resp = e.error_response();
    let status = resp.status();
    let bytes = actix_web::body::to_bytes(resp.into_body());
    let bytes = futures_executor_block_on(bytes).unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn errors_say_whether_a_retry_is_safe() {
    // Writes: only a write that may have reached a leader is indeterminate.
    for (error, status, indeterminate, retryable) in [
        (RaftError::NotLeader(Some(2)), 503, false, true),
        (RaftError::ShuttingDown, 503, false, true),
        (RaftError::Timeout, 503, true, false),
        (RaftError::Indeterminate, 503, true, false),
        (RaftError::Codec("x".into()), 500, false, false),
    ] {
        let (s, v) = body(WriteError::from(error.clone()));
        assert_eq!(s.as_u16(), status, "{error:?}");
        assert_eq!(v["indeterminate"], json!(indeterminate), "{error:?}: {v}");
        assert_eq!(v["retryable"], json!(retryable), "{error:?}: {v}");
    }
    // Reads change nothing: never indeterminate, always retryable.
    for error in [
        RaftError::NotLeader(None),
        RaftError::Timeout,
        RaftError::Indeterminate,
    ] {
        let (s, v) = body(ReadError::from(error.clone()));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (&v["indeterminate"], &v["retryable"]),
            (&json!(false), &json!(true)),
            "{error:?}"
        );
    }
    // Administrative refusals: 409, retryable when waiting helps.
    for (error, retryable) in [
        (
            RaftError::Membership(MembershipError::ChangeInProgress),
            true,
        ),
        (
            RaftError::Membership(MembershipError::LearnerBehind {
                learner: 4,
                behind: 9,
            }),
            true,
        ),
        (RaftError::Membership(MembershipError::NotAMember(4)), false),
        (RaftError::Transfer(TransferError::NotAVoter(4)), false),
        (
            RaftError::Transfer(TransferError::TargetDidNotTakeOver(2)),
            true,
        ),
    ] {
        let (s, v) = body(ApiError::admin(error.clone()));
        assert_eq!(s, StatusCode::CONFLICT, "{error:?}");
        assert_eq!(v["retryable"], json!(retryable), "{error:?}");
    }
    let (s, v) = body(ApiError::admin(RaftError::NotLeader(Some(2))));
    assert_eq!(
        (s, &v["leader"]),
        (StatusCode::MISDIRECTED_REQUEST, &json!(2))
    );
}

#[actix_rt::test]
async fn a_write_sent_again_with_its_session_headers_is_answered_not_applied() {
    bounded(LIMIT, async {
        let c = Cluster::new(3, test_config(), seed("web_sessions"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let (on_leader, on_follower) = (app!(c.raft(leader)), app!(c.raft(follower)));
        let (s, v) = call(&on_follower, "POST", "/cluster/session", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let session = v["session"].as_u64().unwrap().to_string();
        let tagged = |seq: &str| {
            vec![
                ("Regatta-Session", session.clone()),
                ("Regatta-Sequence", seq.to_string()),
            ]
        };
        let (s, v) = call_with(
            &on_follower,
            "POST",
            "/add",
            Some(r#"{"by": 5}"#),
            &tagged("1"),
        )
        .await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(5)), "{v}");
        // The retry, through another node: the first answer again.
        let (s, v) = call_with(
            &on_leader,
            "POST",
            "/add",
            Some(r#"{"by": 5}"#),
            &tagged("1"),
        )
        .await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(5)), "{v}");
        let (s, v) = call_with(
            &on_leader,
            "POST",
            "/add",
            Some(r#"{"by": 1}"#),
            &tagged("2"),
        )
        .await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(6)), "{v}");
        // Sequence 1 is acknowledged now (Regatta-Received defaults to 1).
        let (s, v) = call_with(
            &on_leader,
            "POST",
            "/add",
            Some(r#"{"by": 5}"#),
            &tagged("1"),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert_eq!(v["indeterminate"], json!(false), "{v}");
        // A session nobody opened.
        let unknown = vec![
            ("Regatta-Session", "999999".to_string()),
            ("Regatta-Sequence", "1".to_string()),
        ];
        let (s, v) = call_with(&on_leader, "POST", "/add", None, &unknown).await;
        assert_eq!(s, StatusCode::GONE, "{v}");
        // Malformed headers.
        for headers in [
            vec![("Regatta-Session", session.clone())],
            vec![
                ("Regatta-Session", "x".to_string()),
                ("Regatta-Sequence", "1".to_string()),
            ],
            vec![
                ("Regatta-Session", session.clone()),
                ("Regatta-Sequence", "0".to_string()),
            ],
            vec![
                ("Regatta-Session", session.clone()),
                ("Regatta-Sequence", "3".to_string()),
                ("Regatta-Received", "3".to_string()),
            ],
        ] {
            let (s, v) = call_with(&on_leader, "POST", "/add", None, &headers).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{headers:?}: {v}");
        }
        assert_eq!(c.raft(leader).read(Get).await.unwrap(), 6);
    })
    .await
}

#[actix_rt::test]
async fn metrics_are_in_the_prometheus_text_format() {
    bounded(LIMIT, async {
        let c = Cluster::new(3, test_config(), seed("web_metrics"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        c.write(leader, Add(3)).await.unwrap();
        c.raft(leader)
            .wait_for(LIMIT, |m| {
                m.replication.len() == 2 && m.replication.values().all(|p| p.matched > 0)
            })
            .await
            .unwrap();
        let app = app!(c.raft(leader));
        let resp = web_test::call_service(
            &app,
            web_test::TestRequest::get().uri("/metrics").to_request(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = String::from_utf8(web_test::read_body(resp).await.to_vec()).unwrap();
        let samples = exposition::parse_exposition(&text);
        let value = |name: &str| {
            samples
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .2
        };
        assert_eq!(value("regatta_is_leader"), 1.0);
        assert!(value("regatta_elections_won_total") >= 1.0);
        assert!(value("regatta_entries_proposed_total") >= 2.0); // the blank and the write
        assert!(value("regatta_append_entries_sent_total") >= 2.0);
        assert_eq!(value("regatta_messages_refused_total"), 0.0);
        assert!(value("regatta_writes_submitted_total") >= 1.0);
        // Histograms: the write committed, was applied and made durable.
        assert!(value("regatta_commit_latency_seconds_count") >= 2.0);
        assert!(value("regatta_apply_latency_seconds_count") >= 1.0);
        assert!(value("regatta_fsync_latency_seconds_count") >= 1.0);
        assert!(value("regatta_append_entries_batch_entries_count") >= 1.0);
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|(n, _, _)| n == "regatta_commit_latency_seconds_bucket")
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "buckets are cumulative: {buckets:?}"
        );
        for name in [
            "regatta_pre_votes_lost_total",
            "regatta_snapshots_built_total",
            "regatta_snapshot_build_seconds_count",
            "regatta_snapshot_transfer_seconds_count",
            "regatta_snapshot_restore_seconds_count",
            "regatta_write_batch_entries_count",
            "regatta_members",
            "regatta_apply_lag_entries",
        ] {
            value(name);
        }
        let failed: Vec<_> = samples
            .iter()
            .filter(|(n, _, _)| n == "regatta_writes_failed_total")
            .collect();
        assert_eq!(failed.len(), 5, "one series per kind");
        let histograms = c.raft(leader).histograms();
        assert!(
            histograms.commit_latency_us.quantile(0.5).is_some(),
            "{histograms:?}"
        );
        let counts = c.raft(leader).counts();
        assert!(
            counts.leader_changes >= 1 && counts.elections_started >= 1,
            "{counts:?}"
        );
        let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
        let theirs = c.raft(follower).counts();
        assert!(
            theirs.append_entries_received >= 2 && theirs.elections_won == 0,
            "{theirs:?}"
        );
        assert_eq!(value("regatta_leader"), leader as f64);
        assert_eq!(value("regatta_voters"), 3.0);
        assert!(value("regatta_commit_index") >= 2.0);
        assert!(value("regatta_term") >= 1.0);
        // Every sample names the node and the cluster.
        for (name, labels, _) in &samples {
            assert!(
                labels
                    .iter()
                    .any(|(k, v)| k == "node" && v == &leader.to_string()),
                "{name}"
            );
            assert!(labels.iter().any(|(k, _)| k == "cluster"), "{name}");
        }
        // One role is set; the leader reports both peers.
        let roles: Vec<_> = samples
            .iter()
            .filter(|(n, _, v)| n == "regatta_role" && *v == 1.0)
            .collect();
        assert_eq!(roles.len(), 1);
        assert!(roles[0]
            .1
            .contains(&("role".to_string(), "leader".to_string())));
        let peers = samples
            .iter()
            .filter(|(n, _, v)| n == "regatta_peer_match_index" && *v > 0.0)
            .count();
        assert_eq!(peers, 2, "{text}");
        let inflight = samples
            .iter()
            .filter(|(n, _, _)| n == "regatta_peer_inflight")
            .count();
        assert_eq!(inflight, 2, "{text}");
    })
    .await
}

#[actix_rt::test]
async fn admin_endpoints_refuse_without_the_token_and_accept_with_it() {
    bounded(LIMIT, async {
        let c = Cluster::new(3, test_config(), seed("web_admin_token"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let access = regatta::web::Access::token("s3cret").unwrap();
        let app = web_test::init_service(
            App::new()
                .configure(regatta::web::configure_with(c.raft(leader).clone(), access))
                .route("/add", web::post().to(add)),
        )
        .await;
        let bearer = |t: &str| [("authorization", format!("Bearer {t}"))];
        // A change without a credential: 401; with a wrong one: 403.
        let (status, body) = call(&app, "POST", "/cluster/snapshot", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        let (status, body) =
            call_with(&app, "POST", "/cluster/snapshot", None, &bearer("guess")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let other = if leader == 1 { 2 } else { 1 };
        let path = format!("/cluster/members/{other}");
        assert_eq!(
            call(&app, "DELETE", &path, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let transfer = format!(r#"{{"to": {other}}}"#);
        let (status, _) = call(&app, "POST", "/cluster/transfer-leader", Some(&transfer)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Nothing happened: still the same leader and members.
        assert_eq!(c.metrics()[&leader].membership.voters.len(), 3);
        // With the token the change is made.
        let (status, body) =
            call_with(&app, "POST", "/cluster/snapshot", None, &bearer("s3cret")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Reads and client requests stay open.
        assert_eq!(
            call(&app, "GET", "/cluster/status", None).await.0,
            StatusCode::OK
        );
        let (status, body) = call(&app, "POST", "/add", Some(r#"{"by": 2}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = call(&app, "POST", "/cluster/session", None).await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[actix_rt::test]
async fn protected_reads_need_the_token_too() {
    bounded(LIMIT, async {
        let c = Cluster::new(1, test_config(), seed("web_read_token"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(LIMIT).await.unwrap();
        let access = regatta::web::Access::token("s3cret")
            .unwrap()
            .protect_reads(true);
        let app = web_test::init_service(
            App::new().configure(regatta::web::configure_with(c.raft(leader).clone(), access)),
        )
        .await;
        assert_eq!(
            call(&app, "GET", "/cluster/status", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let metrics = web_test::call_service(
            &app,
            web_test::TestRequest::get().uri("/metrics").to_request(),
        )
        .await;
        assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
        let auth = [("authorization", "Bearer s3cret".to_string())];
        let (status, body) = call_with(&app, "GET", "/cluster/status", None, &auth).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}
