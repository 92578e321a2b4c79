//! Bad request bodies and paths, errors that say whether a retry is safe,
//! and writes sent again with their session headers.

use super::*;

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
        // Nor do they speak of a write that may have been applied.
        let message = v["error"].as_str().unwrap();
        assert!(!message.contains("write"), "{error:?}: {message}");
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
        // Without Regatta-Received, sequence 2 acknowledged nothing: with
        // both in flight, the retry of 1 is answered from the cache (a
        // default of "sequence - 1" refused it as stale, "not applied",
        // though it was).
        let (s, v) = call_with(
            &on_leader,
            "POST",
            "/add",
            Some(r#"{"by": 5}"#),
            &tagged("1"),
        )
        .await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(5)), "{v}");
        // Once the client says it has the answer of 1, a copy is refused.
        let mut acknowledged = tagged("3");
        acknowledged.push(("Regatta-Received", "1".to_string()));
        let (s, v) = call_with(
            &on_leader,
            "POST",
            "/add",
            Some(r#"{"by": 0}"#),
            &acknowledged,
        )
        .await;
        assert_eq!((s, &v["value"]), (StatusCode::OK, &json!(6)), "{v}");
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
                ("Regatta-Sequence", "4".to_string()),
                ("Regatta-Received", "4".to_string()),
            ],
        ] {
            let (s, v) = call_with(&on_leader, "POST", "/add", None, &headers).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{headers:?}: {v}");
        }
        assert_eq!(c.raft(leader).read(Get).await.unwrap(), 6);
    })
    .await
}
