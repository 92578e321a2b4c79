//! The metrics endpoint in the Prometheus text format.

use super::*;

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
