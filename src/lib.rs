//! # regatta
//!
//! Replicated state machines on the Raft consensus algorithm, shaped as
//! actix actors. You write one actor — your state machine — and regatta
//! elects leaders, replicates and commits the log, and applies committed
//! commands to your actor in order, on every node.
//!
//! ```
//! use actix::prelude::*;
//! use regatta::testing::Cluster;
//! use regatta::{Apply, Config, Restore, Snapshot, StateMachine};
//!
//! /// A replicated counter: `Add(n)` returns the new value.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Actor for Counter {
//!     type Context = Context<Self>;
//! }
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//! }
//! impl Handler<Apply<Counter>> for Counter {
//!     type Result = Vec<u64>;
//!     fn handle(&mut self, batch: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
//!         batch.entries.into_iter().map(|(_, by)| { self.0 += by; self.0 }).collect()
//!     }
//! }
//! impl Handler<Snapshot> for Counter {
//!     type Result = Result<regatta::SnapshotData, String>;
//!     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
//!         Ok(self.0.to_be_bytes().to_vec().into())
//!     }
//! }
//! impl Handler<Restore> for Counter {
//!     type Result = Result<(), String>;
//!     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
//!         self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad snapshot")?);
//!         Ok(())
//!     }
//! }
//!
//! /// A read: sent through `Raft::read`, so it is linearizable.
//! #[derive(Message)]
//! #[rtype(result = "u64")]
//! struct Get;
//! impl Handler<Get> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 { self.0 }
//! }
//!
//! # #[actix_rt::main]
//! # async fn main() {
//! // Three nodes in one process on a simulated network.
//! let cluster = Cluster::new(3, Config::default(), 1, |_| Counter::default()).await;
//! let leader = cluster.wait_leader(std::time::Duration::from_secs(10)).await.unwrap();
//! assert_eq!(cluster.raft(leader).write(5).await.unwrap(), 5);
//! // Any node accepts writes and serves linearizable reads.
//! let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
//! assert_eq!(cluster.raft(follower).write(2).await.unwrap(), 7);
//! assert_eq!(cluster.raft(follower).read(Get).await.unwrap(), 7);
//! # }
//! ```
//!
//! ## Layout
//!
//! - [`core`]: the sans-I/O protocol core — every Raft decision as plain
//!   functions, unit-tested against the paper's scenarios.
//! - One module per actor: `node` (router and single writer of term, vote
//!   and role), `follower`, `candidate`, `leader` (one actor per term),
//!   `replicator` (one per peer), `log_store` (the log, group commit),
//!   `applier` (committed entries to your state machine).
//! - Seams: [`transport::Transport`] (simulated network, TCP) and
//!   [`storage::LogStorage`] (memory, fjall).

#![warn(missing_docs)]

mod applier;
mod candidate;
pub mod config;
pub mod core;
#[cfg(all(feature = "fjall", feature = "tcp"))]
mod embed;
pub mod error;
mod follower;
mod identity;
mod io;
mod leader;
mod log_store;
pub mod message;
pub mod metrics;
mod node;
mod probe;
mod raft;
mod replicator;
mod snapshotter;
pub mod state_machine;
pub mod storage;
pub mod testing;
pub mod transport;
#[cfg(feature = "web")]
pub mod web;

pub use crate::config::Config;
pub use crate::core::types::{
    Entry, HardState, LogId, Membership, NodeId, NodeIdentity, Payload, API_ADDRESS,
};
#[cfg(all(feature = "fjall", feature = "tcp"))]
pub use crate::embed::{InitialCluster, Node, NodeBuilder, ParseClusterError};
pub use crate::error::{MembershipError, RaftError, StartError, TransferError};
pub use crate::metrics::{Metrics, PeerProgress, Role};
pub use crate::raft::{Raft, Written};
pub use crate::state_machine::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
