//! The sans-I/O protocol core: every Raft decision as plain, deterministic
//! functions and structs. No actix, no tokio, no clock, no disk — the actors
//! around it own timers, mailboxes and I/O and carry out its decisions.
//!
//! - [`vote`]: granting (pre-)votes, log up-to-dateness.
//! - [`log`]: the follower consistency check with conflict hints, the
//!   leader's fast backtracking, batched reads.
//! - [`quorum`]: vote tallies and the commit index over a possibly joint
//!   configuration, and the leader's own-term commit rule (Figure 8).
//! - [`progress`]: per-follower replication progress and flow control.
//! - [`read_index`]: linearizable reads on the leader (ReadIndex).
//! - [`tracker`]: what a leader knows of its peers: the commit candidate
//!   and check-quorum.
//! - [`election`]: randomized election timeouts.
//! - [`validate`]: the rules a message from the network must satisfy.
//! - [`session`]: client sessions, so a retried write applies at most once.

pub mod election;
pub mod log;
pub mod progress;
pub mod quorum;
pub mod read_index;
pub mod session;
pub mod tracker;
pub mod types;
pub mod validate;
pub mod vote;
