//! Tunables of a node.

use std::time::Duration;

/// Timing and batching settings. The defaults suit a LAN or one machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often an idle leader sends heartbeats. Default 50 ms.
    pub heartbeat_interval: Duration,
    /// Election timeouts are drawn from `[election_timeout_min,
    /// election_timeout_max)`. Default 300 ms. It also bounds how long a
    /// follower that heard a leader refuses votes, which leases rely on.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`. Default 600 ms.
    pub election_timeout_max: Duration,
    /// AppendEntries in flight per follower once it matches. Default 8.
    pub max_inflight: usize,
    /// Entries per AppendEntries. Default 256.
    pub max_batch_entries: usize,
    /// Bytes of entries per AppendEntries (at least one entry is always
    /// sent). Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Entries handed to the state machine per `Apply`. Default 256.
    pub max_apply_batch: usize,
    /// How long a client call waits before giving up. Default 5 s.
    pub client_timeout: Duration,
    /// Pre-vote (dissertation §9.6): a node first checks it could win before
    /// bumping its term, so a node rejoining after a partition cannot
    /// disrupt a healthy leader. Default on.
    pub pre_vote: bool,
    /// A leader that hears from no quorum for an election timeout steps
    /// down. Default on.
    pub check_quorum: bool,
    /// A learner becomes a voter only once it is at most this many entries
    /// behind the leader; `change_membership` refuses before that.
    /// Default 100.
    pub learner_max_lag: u64,
    /// Take a snapshot every this many applied entries (0: only on
    /// request, [`crate::Raft::snapshot`]). Default 10,000.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a follower slightly
    /// behind gets entries rather than the whole snapshot. Default 1,000.
    pub snapshot_keep_entries: u64,
    /// Bytes per InstallSnapshot chunk. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// The longest a leader waits for a follower to acknowledge a snapshot
    /// chunk before resending it. A chunk is first resent after the
    /// AppendEntries timeout (half the minimum election timeout), so a
    /// lost chunk costs milliseconds; each further silent resend waits
    /// twice as long, up to this bound, so a slow link that needs longer
    /// per chunk is not flooded with copies. Default 10 s.
    pub snapshot_chunk_timeout: Duration,
    /// Mixed into the cluster id the founders generate from the founding
    /// configuration (as etcd's `--initial-cluster-token`): two clusters
    /// founded with the same members and addresses get different ids only
    /// if their tokens differ. Used only when a cluster is founded.
    /// Default empty.
    pub cluster_token: String,
    /// For a node that joins a running cluster: that cluster's id (`GET
    /// /cluster/status` shows it as `cluster_id`; `Metrics::cluster_id`).
    /// With it the node talks only to that cluster from the start;
    /// without it (the default) it takes the id of the first leader that
    /// sends it entries — fine where strangers cannot reach the Raft port
    /// (mutual TLS, a private network). A directory of another cluster is
    /// refused at start-up. Default `None`.
    pub join_cluster_id: Option<u64>,
    /// A client session idle this long expires (measured on the leaders'
    /// clocks written into the log, so every node agrees); its next write
    /// is refused. Default 1 hour.
    pub session_timeout: Duration,
    /// Most client sessions kept; opening one more evicts the least
    /// recently used (logged at `warn`). Default 10,000.
    pub max_sessions: usize,
    /// Most answers a session keeps for writes its client has not yet
    /// acknowledged; a write beyond it is refused until some are. Default
    /// 1,024.
    pub max_unacknowledged: usize,
    /// Lease reads (thesis §6.4.1): the leader answers linearizable reads
    /// ([`crate::Raft::read`], from any node) at its commit index without a
    /// heartbeat round while a quorum has acknowledged a heartbeat sent
    /// less than `election_timeout_min / (1 + clock_drift)` ago — no
    /// follower that acknowledged it votes for anyone else before then.
    /// Saves a round trip per read; safe only while no node's clock runs
    /// faster than another's by more than `clock_drift` (rate, not
    /// offset: NTP slews keep it small, a suspended VM may not) and every
    /// node uses the same `election_timeout_min`. Turn it on for every
    /// node of the cluster: with it, a restarted node also refuses votes
    /// for an election timeout (it may have acknowledged the leader just
    /// before it went down). Default off.
    pub lease_reads: bool,
    /// [`crate::Raft::add_voter`] promotes a new member only once it has
    /// stayed caught up and in contact for this long (raft-autopilot's
    /// stabilization time). Default 10 s.
    pub voter_stabilization: Duration,
    /// [`crate::Raft::add_voter`] gives up on a new member that has not
    /// been stable this long after it was added as a learner (it may be
    /// receiving a large snapshot: leave room for that). Default 60 s.
    pub voter_catch_up_timeout: Duration,
    /// Dead-voter cleanup (raft-autopilot's): the leader removes a voter
    /// it has not heard from for this long — one at a time, never below
    /// [`Config::min_voters`], and only while the voters left can commit
    /// the change themselves. Every removal is logged at `warn` and
    /// counted (`dead_voters_removed`). A removed node comes back with
    /// `add_voter`. Default `None`: off.
    pub dead_voter_cleanup: Option<Duration>,
    /// Dead-voter cleanup never leaves fewer voters than this. Default 3.
    pub min_voters: usize,
    /// The largest relative difference in clock rate between two nodes
    /// that lease reads must survive: 0.05 allows one clock to run 5%
    /// faster than another. Default 0.05.
    pub clock_drift: f64,
    /// How long a thread of a node (a `Node`'s, a `Host`'s, a testing
    /// `Cluster`'s) that runs out of work stays awake
    /// before it sleeps, giving its CPU to any other runnable thread
    /// meanwhile. A message that arrives within it is handled without
    /// waking a sleeping CPU, which costs tens of microseconds on a
    /// virtual machine: on a 2-core VM, 20 µs gave +16% writes/s to one
    /// client and +24% to 16 in process, but up to 10% less to 256
    /// clients of a durable cluster, whose threads outnumber the cores
    /// (BENCHMARKS.md). Worth trying where few clients wait on latency
    /// and cores are spare. Default zero: sleep at once.
    pub idle_spin: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            max_inflight: 8,
            max_batch_entries: 256,
            max_batch_bytes: 1 << 20,
            max_apply_batch: 256,
            client_timeout: Duration::from_secs(5),
            pre_vote: true,
            check_quorum: true,
            learner_max_lag: 100,
            snapshot_every: 10_000,
            snapshot_keep_entries: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunk_timeout: Duration::from_secs(10),
            cluster_token: String::new(),
            join_cluster_id: None,
            session_timeout: Duration::from_secs(3600),
            max_sessions: 10_000,
            max_unacknowledged: 1024,
            lease_reads: false,
            voter_stabilization: Duration::from_secs(10),
            voter_catch_up_timeout: Duration::from_secs(60),
            dead_voter_cleanup: None,
            min_voters: 3,
            clock_drift: 0.05,
            idle_spin: Duration::ZERO,
        }
    }
}

impl Config {
    /// Checks that the values make sense together; says which does not.
    pub fn validate(&self) -> Result<(), String> {
        let zero = Duration::ZERO;
        if self.heartbeat_interval == zero {
            return Err("heartbeat_interval must be positive".into());
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(format!(
                "election_timeout_min ({:?}) must be below election_timeout_max ({:?})",
                self.election_timeout_min, self.election_timeout_max
            ));
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(format!(
                "heartbeat_interval ({:?}) must be below election_timeout_min ({:?}), or followers time out between heartbeats",
                self.heartbeat_interval, self.election_timeout_min
            ));
        }
        for (name, value) in [
            ("max_inflight", self.max_inflight),
            ("max_batch_entries", self.max_batch_entries),
            ("max_batch_bytes", self.max_batch_bytes),
            ("max_apply_batch", self.max_apply_batch),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.max_sessions == 0 || self.max_unacknowledged == 0 {
            return Err("max_sessions and max_unacknowledged must be positive".into());
        }
        if self.client_timeout == zero || self.snapshot_chunk_timeout == zero {
            return Err("client_timeout and snapshot_chunk_timeout must be positive".into());
        }
        if self.idle_spin > Duration::from_millis(10) {
            return Err(format!(
                "idle_spin ({:?}) must be at most 10 ms: it is the moment a node thread stays awake before it sleeps (tens of microseconds)",
                self.idle_spin
            ));
        }
        if !(0.0..1.0).contains(&self.clock_drift) {
            return Err(format!(
                "clock_drift ({}) must be at least 0 and below 1",
                self.clock_drift
            ));
        }
        if self.join_cluster_id == Some(0) {
            return Err(
                "join_cluster_id 0 names no cluster: leave it unset, or give the cluster's id"
                    .into(),
            );
        }
        Ok(())
    }

    /// How long a replicator waits for an AppendEntries reply before
    /// assuming it was lost and probing again.
    pub(crate) fn rpc_timeout(&self) -> Duration {
        self.election_timeout_min / 2
    }

    /// How long a lease lasts after the heartbeat round that confirmed
    /// it began (see [`Config::lease_reads`]).
    pub(crate) fn lease_duration(&self) -> Duration {
        self.election_timeout_min
            .div_f64(1.0 + self.clock_drift)
            .saturating_sub(Duration::from_millis(1))
    }

    pub(crate) fn session_limits(&self) -> crate::core::session::SessionLimits {
        crate::core::session::SessionLimits {
            timeout_ms: self.session_timeout.as_millis() as u64,
            max_sessions: self.max_sessions,
            max_cached: self.max_unacknowledged,
        }
    }
}
