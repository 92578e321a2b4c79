//! # regatta
//!
//! Replicated state machines on the Raft consensus algorithm, shaped as
//! actix actors. You write one actor — your state machine — and regatta
//! elects leaders, replicates and commits the log durably, and applies
//! committed commands to your actor in order, on every node.
//!
//! ## A node in your service
//!
//! A [`Node`] is a whole durable, networked replica — a fjall log in a
//! data directory, Raft over TCP, your state machine — built in one call
//! and running on a thread of its own. [`web::configure`] mounts its admin
//! endpoints in your actix-web `App`, next to your routes:
//!
//! ```no_run
//! use actix::prelude::*;
//! use actix_web::{web, App, HttpResponse, HttpServer};
//! use regatta::web::{ApiError, JsonBody, Replica};
//! use regatta::{Apply, Node, Restore, Snapshot, SnapshotData, StateMachine};
//!
//! /// A replicated counter: a command adds to it and answers the new value.
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
//!     type Result = Result<SnapshotData, String>;
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
//! #[derive(serde::Deserialize)]
//! struct Add { by: u64 }
//!
//! async fn add(node: Replica<Counter>, body: JsonBody<Add>) -> Result<HttpResponse, ApiError> {
//!     Ok(HttpResponse::Ok().json(node.write(body.into_inner().by).await?))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let node = match Node::builder(1, Counter::default())
//!         .cluster_name("counter")
//!         .data_dir("/var/lib/counter")
//!         .listen("127.0.0.1:7001".parse()?)
//!         .initial_cluster("1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003".parse()?)
//!         .start()
//!         .await
//!     {
//!         Ok(node) => node,
//!         Err(e) => {
//!             // The Display form says what to fix.
//!             eprintln!("error: {e}");
//!             std::process::exit(2);
//!         }
//!     };
//!     let raft = node.raft().clone();
//!     HttpServer::new(move || {
//!         App::new()
//!             .configure(regatta::web::configure(raft.clone()))
//!             .route("/add", web::post().to(add))
//!     })
//!     .bind("127.0.0.1:8001")?
//!     .run()
//!     .await?;
//!     node.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! `serve::run` (feature `serve`) does all of this — flags, server,
//! signals, exit codes — in one call; `client` (feature `client`) is a
//! client for any such service, and the `regatta` binary (feature `cli`)
//! its operator command line.
//!
//! Errors say whether a retry is safe: see [`RaftError`] (definite or
//! indeterminate), [`StartError`] (what to fix before starting) and
//! [`web::ApiError`] (the HTTP form).
//!
//! ## Trying it in one process
//!
//! `testing::Cluster` (feature `testing`) runs nodes on a simulated network,
//! for tests:
//!
//! ```
//! # use actix::prelude::*;
//! # use regatta::{Apply, Restore, Snapshot, StateMachine};
//! # #[derive(Default)] struct Counter(u64);
//! # impl Actor for Counter { type Context = Context<Self>; }
//! # impl StateMachine for Counter { type Command = u64; type Response = u64; }
//! # impl Handler<Apply<Counter>> for Counter { type Result = Vec<u64>;
//! #     fn handle(&mut self, b: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
//! #         b.entries.into_iter().map(|(_, n)| { self.0 += n; self.0 }).collect() } }
//! # impl Handler<Snapshot> for Counter { type Result = Result<regatta::SnapshotData, String>;
//! #     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
//! #         Ok(self.0.to_be_bytes().to_vec().into()) } }
//! # impl Handler<Restore> for Counter { type Result = Result<(), String>;
//! #     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
//! #         self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad")?); Ok(()) } }
//! use regatta::testing::Cluster;
//! use regatta::Config;
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
//! let cluster = Cluster::new(3, Config::default(), 1, |_| Counter::default()).await;
//! let leader = cluster.wait_leader(std::time::Duration::from_secs(10)).await.unwrap();
//! let written = cluster.raft(leader).write_entry(5).await.unwrap();
//! assert_eq!(written.response, 5); // and written.log_id: where it sits in the log
//! // Any node accepts writes and serves linearizable reads.
//! let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
//! assert_eq!(cluster.raft(follower).write(2).await.unwrap(), 7);
//! assert_eq!(cluster.raft(follower).read(Get).await.unwrap(), 7);
//! # }
//! ```
//!
//! ## Layout
//!
//! - The sans-I/O protocol core (`core`, internal): Raft decisions as
//!   plain functions, unit-tested against the paper's scenarios.
//! - One module per actor: `node` (router and single writer of term, vote
//!   and role), `follower`, `candidate`, `leader` (one actor per term),
//!   `replicator` (one per peer), `log_store` (the log, group commit),
//!   `applier` (committed entries to your state machine), `snapshotter`.
//! - Seams, for your own backends: [`transport::Transport`] (simulated
//!   network, TCP) and [`storage::LogStorage`] (memory, fjall).
//! - Cargo features, on by default: `fjall` ([`storage::FjallStorage`]),
//!   `tcp` ([`transport::tcp`]), both needed by [`Node`]; `web`
//!   ([`web`], actix-web). Off by default: `tls` (mutual TLS, HTTPS),
//!   `serve`, `client`, `cli` (the `regatta`
//!   binary), `testing`.
//!
//! The design notes are in the repository's `docs/design.md`.

#![warn(missing_docs)]

mod applier;
pub mod backup;
mod candidate;
#[cfg(feature = "client")]
pub mod client;
mod command;
mod config;
#[doc(hidden)]
pub mod core;
#[cfg(all(feature = "fjall", feature = "tcp"))]
mod embed;
mod error;
mod follower;
#[cfg(all(feature = "fjall", feature = "tcp"))]
pub mod host;
mod identity;
mod io;
mod leader;
mod log_store;
#[doc(hidden)]
pub mod message;
mod metrics;
mod node;
#[cfg(any(all(feature = "fjall", feature = "tcp"), feature = "testing"))]
mod park;
mod probe;
mod raft;
#[cfg(feature = "fjall")]
pub mod recovery;
mod replicator;
mod role;
mod sequence;
#[cfg(feature = "serve")]
pub mod serve;
mod session;
mod snapshotter;
mod spawn;
mod state_machine;
pub mod storage;
#[cfg(any(all(feature = "fjall", feature = "tcp"), feature = "testing"))]
mod switchboard;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
#[cfg(feature = "web")]
pub mod web;

pub use crate::command::Command;
pub use crate::config::Config;
pub use crate::core::session::SessionError;
pub use crate::core::types::{
    Entry, GroupId, HardState, LogId, Membership, NodeId, NodeIdentity, Payload, API_ADDRESS,
};
#[cfg(all(feature = "fjall", feature = "tcp"))]
pub use crate::embed::{InitialCluster, Node, NodeBuilder, ParseClusterError};
pub use crate::error::{MembershipError, RaftError, StartError, TransferError};
#[cfg(all(feature = "fjall", feature = "tcp"))]
pub use crate::host::{GroupDeletion, GroupInfo, Host, HostBuilder, HostCounts, HostError};
pub use crate::metrics::{Counts, Histogram, Histograms, Metrics, PeerProgress, Role, Traffic};
pub use crate::raft::{LocalRead, Raft, Written};
pub use crate::session::Session;
pub use crate::state_machine::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
