//! `GET /metrics`: the node's state in Prometheus' text exposition
//! format, labelled with the node and cluster ids. Gauges are read from
//! the node's [`Metrics`] when scraped; counters and histograms from the
//! relaxed atomics the actors bump. A scrape builds a fresh registry, so
//! nothing is registered globally and nothing costs the write path.
//!
//! Built on the `prometheus` crate (without its default features: no
//! protobuf, no process collector) for its exposition encoder and metric
//! family model, which keep names, escaping and `# TYPE` lines right.

use std::collections::BTreeMap;

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;
use prometheus::core::Collector;
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::ApiError;
use crate::metrics::{Counts, Histogram, Histograms, Metrics, Role, Traffic};
use crate::state_machine::StateMachine;
use crate::NodeId;

/// `GET /metrics`.
pub(super) async fn metrics<SM: StateMachine>(
    raft: super::ThisNode<SM>,
) -> Result<HttpResponse, ApiError> {
    let m = raft.metrics().borrow().clone();
    let node = Node {
        metrics: &m,
        counts: &raft.counts(),
        histograms: &raft.histograms(),
        traffic: &raft.traffic(),
    };
    let text = render(&node).map_err(|e| {
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

/// Everything one scrape reports.
struct Node<'a> {
    metrics: &'a Metrics,
    counts: &'a Counts,
    histograms: &'a Histograms,
    traffic: &'a BTreeMap<NodeId, Traffic>,
}

/// The exposition of one node.
fn render(node: &Node) -> Result<String, prometheus::Error> {
    let m = node.metrics;
    let labels: Vec<(String, String)> = vec![
        ("node".into(), m.id.to_string()),
        ("cluster".into(), format!("{:016x}", m.cluster_id)),
    ];
    let registry = Registry::new_custom(
        Some("regatta".into()),
        Some(labels.iter().cloned().collect()),
    )?;
    let register = |c: Box<dyn Collector>| registry.register(c);

    let membership = &m.membership;
    let gauges: [(&str, &str, u64); 15] = [
        ("term", "Current term.", m.term),
        (
            "is_leader",
            "1 if this node leads its term.",
            u64::from(m.role == Role::Leader),
        ),
        (
            "leader",
            "The leader this node knows of (0: none).",
            m.leader.unwrap_or(0),
        ),
        (
            "commit_index",
            "Highest index known committed.",
            m.commit_index,
        ),
        ("applied_index", "Highest index applied.", m.last_applied),
        (
            "last_log_index",
            "Index of the last log entry.",
            m.last_log_index,
        ),
        (
            "snapshot_index",
            "Last index covered by a snapshot.",
            m.snapshot_index,
        ),
        (
            "log_entries",
            "Entries in the log after the snapshot.",
            m.last_log_index.saturating_sub(m.snapshot_index),
        ),
        (
            "log_bytes",
            "Bytes the log takes in storage (sampled each second).",
            node.counts.log_bytes,
        ),
        (
            "apply_lag_entries",
            "Committed entries not yet applied.",
            m.commit_index.saturating_sub(m.last_applied),
        ),
        (
            "members",
            "Members (voters and learners).",
            membership.members().len() as u64,
        ),
        (
            "voters",
            "Voters (of both halves during a joint change).",
            membership.all_voters().len() as u64,
        ),
        ("learners", "Learners.", membership.learners.len() as u64),
        (
            "joint_configuration",
            "1 during a joint-consensus change.",
            u64::from(membership.is_joint()),
        ),
        (
            "stopped",
            "1 if the node stopped on its own (see the logs).",
            u64::from(m.stopped_because.is_some()),
        ),
    ];
    for (name, help, value) in gauges {
        let g = prometheus::IntGauge::with_opts(Opts::new(name, help))?;
        g.set(clamp(value));
        register(Box::new(g))?;
    }

    let c = node.counts;
    let counters: [(&str, &str, u64); 15] = [
        (
            "dead_voters_removed_total",
            "Unreachable voters removed as leader (dead-voter cleanup).",
            c.dead_voters_removed,
        ),
        (
            "reads_by_lease_total",
            "Linearizable reads answered as leader from the lease.",
            c.reads_by_lease,
        ),
        (
            "reads_by_round_total",
            "Linearizable reads answered as leader after a heartbeat round.",
            c.reads_by_round,
        ),
        (
            "elections_started_total",
            "Elections started as a candidate (pre-votes not counted).",
            c.elections_started,
        ),
        ("elections_won_total", "Elections won.", c.elections_won),
        ("pre_votes_lost_total", "Pre-votes lost.", c.pre_votes_lost),
        (
            "leader_changes_total",
            "Times this node learned of a new leader.",
            c.leader_changes,
        ),
        (
            "entries_proposed_total",
            "Entries appended as leader.",
            c.entries_proposed,
        ),
        (
            "writes_submitted_total",
            "Client writes submitted through this node.",
            c.writes_submitted,
        ),
        (
            "append_entries_sent_total",
            "AppendEntries sent as leader, heartbeats included.",
            c.append_entries_sent,
        ),
        (
            "append_entries_received_total",
            "AppendEntries received as follower.",
            c.append_entries_received,
        ),
        (
            "append_entries_rejected_total",
            "AppendEntries refused for a log mismatch.",
            c.append_entries_rejected,
        ),
        (
            "snapshots_built_total",
            "Snapshots built of this node's state machine.",
            c.snapshots_built,
        ),
        (
            "snapshots_sent_total",
            "Snapshots a follower finished installing from this leader.",
            c.snapshots_sent,
        ),
        (
            "snapshots_installed_total",
            "Snapshots received and installed.",
            c.snapshots_installed,
        ),
    ];
    for (name, help, value) in counters {
        let counter = prometheus::IntCounter::with_opts(Opts::new(name, help))?;
        counter.inc_by(value);
        register(Box::new(counter))?;
    }
    let labelled = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
        counter_vec(&registry, name, help, label, values.iter().copied())
    };
    labelled(
        "writes_failed_total",
        "Client writes failed, by what the caller may do next.",
        "kind",
        &[
            ("not_leader", c.writes_failed_not_leader),
            ("timeout", c.writes_failed_timeout),
            ("indeterminate", c.writes_failed_indeterminate),
            ("shutting_down", c.writes_failed_shutting_down),
            ("refused", c.writes_failed_refused),
        ],
    )?;
    labelled(
        "messages_refused_total",
        "Network messages refused, by reason.",
        "reason",
        &[
            ("invalid", c.messages_invalid),
            ("other_cluster", c.messages_other_cluster),
        ],
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
    register(Box::new(role))?;

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
    let inflight = peer(
        "peer_inflight",
        "AppendEntries sent to the peer and not yet answered.",
    )?;
    for (id, p) in &m.replication {
        let peer = id.to_string();
        let label = [peer.as_str()];
        matched.with_label_values(&label).set(clamp(p.matched));
        lag.with_label_values(&label).set(clamp(p.lag));
        inflight.with_label_values(&label).set(clamp(p.inflight));
        if let Some(ms) = p.last_contact_ms {
            contact.with_label_values(&label).set(clamp(ms));
        }
    }
    for vec in [matched, lag, contact, inflight] {
        register(Box::new(vec))?;
    }
    let traffic = |name: &str, help: &str, pick: fn(&Traffic) -> u64| {
        let per_peer = node.traffic.iter().map(|(id, t)| (id.to_string(), pick(t)));
        counter_vec(&registry, name, help, "peer", per_peer)
    };
    traffic("peer_sent_bytes_total", "Bytes written to the peer.", |t| {
        t.sent
    })?;
    traffic(
        "peer_received_bytes_total",
        "Bytes read from the peer.",
        |t| t.received,
    )?;

    let mut families = registry.gather();
    let h = node.histograms;
    let seconds = 1e-6;
    for (name, help, histogram, scale) in [
        (
            "commit_latency_seconds",
            "Leader: from appending an entry to its commit.",
            &h.commit_latency_us,
            seconds,
        ),
        (
            "apply_latency_seconds",
            "Reading and applying one batch of committed entries.",
            &h.apply_latency_us,
            seconds,
        ),
        (
            "fsync_latency_seconds",
            "Making one batch of log writes durable.",
            &h.fsync_latency_us,
            seconds,
        ),
        (
            "write_batch_entries",
            "Entries per durable log write (group commit).",
            &h.write_batch_entries,
            1.0,
        ),
        (
            "append_entries_batch_entries",
            "Entries per AppendEntries sent (heartbeats not counted).",
            &h.append_batch_entries,
            1.0,
        ),
        (
            "snapshot_build_seconds",
            "Building and storing a snapshot.",
            &h.snapshot_build_us,
            seconds,
        ),
        (
            "snapshot_transfer_seconds",
            "Leader: sending a snapshot, first chunk to installed.",
            &h.snapshot_transfer_us,
            seconds,
        ),
        (
            "snapshot_restore_seconds",
            "Restoring the state machine from a received snapshot.",
            &h.snapshot_restore_us,
            seconds,
        ),
    ] {
        families.push(histogram_family(
            &format!("regatta_{name}"),
            help,
            histogram,
            scale,
            &labels,
        ));
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// Registers a counter with one label, one series per `(value, count)`.
fn counter_vec<V: AsRef<str>>(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (V, u64)>,
) -> Result<(), prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label])?;
    for (value, n) in values {
        vec.with_label_values(&[value.as_ref()]).inc_by(n);
    }
    registry.register(Box::new(vec))
}

/// A histogram family from buckets read off the node's atomics; bounds
/// are multiplied by `scale` (microseconds to seconds).
fn histogram_family(
    name: &str,
    help: &str,
    h: &Histogram,
    scale: f64,
    labels: &[(String, String)],
) -> MetricFamily {
    let mut histogram = prometheus::proto::Histogram::default();
    histogram.set_sample_count(h.count);
    histogram.set_sample_sum(h.sum as f64 * scale);
    histogram.set_bucket(
        h.buckets
            .iter()
            .map(|(bound, below)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*bound as f64 * scale);
                b.set_cumulative_count(*below);
                b
            })
            .collect(),
    );
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut pair = LabelPair::default();
                pair.set_name(k.clone());
                pair.set_value(v.clone());
                pair
            })
            .collect(),
    );
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(name.into());
    family.set_help(help.into());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
