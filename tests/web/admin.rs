//! The admin scope on a live cluster, and its access token.

use super::*;

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

        // A change asked of a follower is carried out by the leader, which
        // the answer names (here a transfer to the leader itself: a no-op).
        let body = format!(r#"{{"to": {leader}}}"#);
        let (s, v) = call(
            &on_follower,
            "POST",
            "/cluster/transfer-leader",
            Some(&body),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["by"], json!(leader), "{v}");
        // The leader's own view is served by the leader only: 421 naming it.
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
        // Replacing a voter whose disk was not replaced: a bounded wait
        // for a new incarnation, then 409 saying what to do; bad bodies
        // and learners are refused at once.
        let replace = format!("/cluster/members/{follower}/replace");
        let body = r#"{"catch_up_timeout_ms": 300}"#;
        let (s, v) = call(&on_leader, "POST", &replace, Some(body)).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(v["error"].as_str().unwrap().contains("--join"), "{v}");
        let (s, v) = call(&on_leader, "POST", &replace, Some(r#"{"wait": 1}"#)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, v) = call(&on_leader, "POST", "/cluster/members/9/replace", None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(v["error"].as_str().unwrap().contains("not a voter"), "{v}");

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
        // Reads and the service's own routes stay open.
        assert_eq!(
            call(&app, "GET", "/cluster/status", None).await.0,
            StatusCode::OK
        );
        let (status, body) = call(&app, "POST", "/add", Some(r#"{"by": 2}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Opening a session may evict another client's (the table is
        // bounded): it needs the token (issue 23, finding 2).
        let (status, _) = call(&app, "POST", "/cluster/session", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) =
            call_with(&app, "POST", "/cluster/session", None, &bearer("s3cret")).await;
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
