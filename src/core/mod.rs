//! The sans-I/O protocol core: every Raft decision as plain, deterministic
//! functions and structs. No actix, no tokio, no clock, no disk — the actors
//! around it own timers, mailboxes and I/O and carry out its decisions.
//!
//! - [`step`]: the term preamble every message passes, the answer to a
//!   vote request with its durability barrier, which vote replies count.
//! - [`vote`]: granting (pre-)votes, log up-to-dateness.
//! - [`log`]: the follower consistency check with conflict hints, the
//!   leader's fast backtracking, batched reads.
//! - [`quorum`]: vote tallies and the commit index over a possibly joint
//!   configuration, and the leader's own-term commit rule (Figure 8).
//! - [`progress`]: per-follower replication progress and flow control.
//! - [`read_index`]: linearizable reads on the leader (ReadIndex).
//! - [`lease`]: the leader's lease, for reads without a heartbeat round.
//! - [`tracker`]: what a leader knows of its peers: the commit candidate
//!   and check-quorum.
//! - [`autopilot`]: when a new member has been stable long enough to vote.
//! - [`confchange`]: membership changes: the configurations a request
//!   leads to, the promotion rule, the joint → final sequence, retiring
//!   removed members.
//! - [`transfer`]: leadership transfer.
//! - [`snapshot_transfer`]: InstallSnapshot chunks: pace and resends on
//!   the leader, which chunk a follower takes.
//! - [`configs`]: the configurations in the log, by index, reverting on
//!   truncation.
//! - [`waiters`]: matching applied entries to the clients waiting for them.
//! - [`write_queue`]: the log store's ordered write queue: every change to
//!   durable state in the order it was decided, merged into batches.
//! - [`election`]: randomized election timeouts.
//! - [`validate`]: the rules a message from the network must satisfy.
//! - [`session`]: client sessions, so a retried write applies at most once.
//! - [`founding`]: who may found a cluster on an empty directory.
//! - [`incarnations`]: which incarnation of each peer is live; retired
//!   ones are ignored for good.

pub mod autopilot;
pub mod confchange;
pub mod configs;
pub mod election;
pub mod forwards;
pub mod founding;
pub mod incarnations;
pub mod lease;
pub mod log;
pub mod placement;
pub mod progress;
pub mod quiescence;
pub mod quorum;
pub mod read_index;
pub mod session;
pub mod snapshot_transfer;
pub mod step;
pub mod tracker;
pub mod transfer;
pub mod types;
pub mod validate;
pub mod vote;
pub mod waiters;
pub mod write_queue;
