//! `GET /metrics`: the node's state in Prometheus' text exposition
//! format, labelled with the node and cluster ids. The values are read
//! from the node's [`Metrics`] when scraped, so recording them costs the
//! write path nothing.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::ApiError;
use crate::metrics::{Counts, Metrics, Role};
use crate::raft::Raft;
use crate::state_machine::StateMachine;

/// `GET /metrics`.
pub(super) async fn metrics<SM: StateMachine>(
    raft: web::Data<Raft<SM>>,
) -> Result<HttpResponse, ApiError> {
    let m = raft.metrics().borrow().clone();
    let text = render(&m, &raft.counts()).map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}"),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType(
            "text/plain; version=0.0.4; charset=utf-8"
                .parse()
                .expect("a valid media type"),
        ))
        .body(text))
}

/// The exposition of `m`.
fn render(m: &Metrics, counts: &Counts) -> Result<String, prometheus::Error> {
    let registry = Registry::new_custom(
        Some("regatta".into()),
        Some(
            [
                ("node".to_string(), m.id.to_string()),
                ("cluster".to_string(), format!("{:016x}", m.cluster_id)),
            ]
            .into(),
        ),
    )?;
    let gauge = |name: &str, help: &str, value: u64| -> Result<(), prometheus::Error> {
        let g = IntGauge::with_opts(Opts::new(name, help))?;
        g.set(value as i64);
        registry.register(Box::new(g))
    };
    let membership = &m.membership;
    gauge("term", "Current term.", m.term)?;
    gauge(
        "is_leader",
        "1 if this node leads its term.",
        u64::from(m.role == Role::Leader),
    )?;
    gauge(
        "leader",
        "The leader this node knows of (0: none).",
        m.leader.unwrap_or(0),
    )?;
    gauge(
        "commit_index",
        "Highest index known committed.",
        m.commit_index,
    )?;
    gauge("applied_index", "Highest index applied.", m.last_applied)?;
    gauge(
        "last_log_index",
        "Index of the last log entry.",
        m.last_log_index,
    )?;
    gauge(
        "snapshot_index",
        "Last index covered by a snapshot.",
        m.snapshot_index,
    )?;
    gauge(
        "log_entries",
        "Entries in the log after the snapshot.",
        m.last_log_index.saturating_sub(m.snapshot_index),
    )?;
    gauge(
        "voters",
        "Voters (of both halves during a joint change).",
        membership.all_voters().len() as u64,
    )?;
    gauge("learners", "Learners.", membership.learners.len() as u64)?;
    gauge(
        "joint_configuration",
        "1 during a joint-consensus change.",
        u64::from(membership.is_joint()),
    )?;
    gauge(
        "stopped",
        "1 if the node stopped on its own (see the logs).",
        u64::from(m.stopped_because.is_some()),
    )?;

    let counter = |name: &str, help: &str, value: u64| -> Result<(), prometheus::Error> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    counter(
        "elections_started_total",
        "Elections started as a candidate (pre-votes not counted).",
        counts.elections_started,
    )?;
    counter(
        "elections_won_total",
        "Elections won.",
        counts.elections_won,
    )?;
    counter(
        "leader_changes_total",
        "Times this node learned of a new leader.",
        counts.leader_changes,
    )?;
    counter(
        "entries_proposed_total",
        "Entries appended as leader.",
        counts.entries_proposed,
    )?;
    counter(
        "append_entries_sent_total",
        "AppendEntries sent as leader, heartbeats included.",
        counts.append_entries_sent,
    )?;
    counter(
        "append_entries_received_total",
        "AppendEntries received as follower.",
        counts.append_entries_received,
    )?;
    counter(
        "append_entries_rejected_total",
        "AppendEntries refused for a log mismatch.",
        counts.append_entries_rejected,
    )?;
    counter(
        "snapshots_sent_total",
        "Snapshots a follower finished installing from this leader.",
        counts.snapshots_sent,
    )?;
    counter(
        "snapshots_installed_total",
        "Snapshots received and installed.",
        counts.snapshots_installed,
    )?;
    counter(
        "messages_refused_total",
        "Messages refused: invalid, or from another cluster.",
        counts.messages_refused,
    )?;

    let role = IntGaugeVec::new(Opts::new("role", "1 for this node's role."), &["role"])?;
    for (name, r) in [
        ("follower", Role::Follower),
        ("candidate", Role::Candidate),
        ("leader", Role::Leader),
        ("learner", Role::Learner),
        ("removed", Role::Removed),
        ("shutdown", Role::Shutdown),
    ] {
        role.with_label_values(&[name]).set(i64::from(m.role == r));
    }
    registry.register(Box::new(role))?;

    // Per peer, on the leader.
    let peer = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["peer"]);
    let matched = peer(
        "peer_match_index",
        "Last index known to match the leader's.",
    )?;
    let lag = peer("peer_lag_entries", "Entries behind the leader's last.")?;
    let contact = peer(
        "peer_last_contact_ms",
        "Milliseconds since the peer last answered.",
    )?;
    for (id, p) in &m.replication {
        let peer = id.to_string();
        let label = [peer.as_str()];
        matched.with_label_values(&label).set(p.matched as i64);
        lag.with_label_values(&label).set(p.lag as i64);
        if let Some(ms) = p.last_contact_ms {
            contact.with_label_values(&label).set(ms as i64);
        }
    }
    for vec in [matched, lag, contact] {
        registry.register(Box::new(vec))?;
    }

    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}
