//! A replicated counter.
//!
//! With no arguments: a self-contained demo — three nodes in one process,
//! each with its own fjall directory under a fresh temporary directory and
//! real TCP on 127.0.0.1 — that writes, kills the leader, shows the failover
//! and reads the value back from every surviving node.
//!
//! ```text
//! cargo run --release --example counter
//! ```
//!
//! With `serve`: one node of a multi-process cluster with an HTTP API
//! (`POST /counter/incr` `{"by": N}`, `GET /counter`, `GET /cluster/status`);
//! see README.md.
//!
//! ```text
//! cargo run --release --example counter -- serve --id 1 --data-dir /tmp/c1 \
//!     --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 \
//!     --initial-cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//! ```

mod service;

use actix::prelude::*;
use actix_web::{web, HttpResponse};
use regatta::web::{ApiError, JsonBody, Replica};
use regatta::{Apply, Raft, Restore, Snapshot, StateMachine};
use serde::{Deserialize, Serialize};
use serde_json::json;
use service::{DemoCluster, Service};

/// The replicated state: one number.
#[derive(Default)]
struct Counter {
    value: u64,
}

/// Increment by N. The response is the value after the increment, or
/// `None` when it would overflow (then nothing changes). The check runs
/// when the entry is applied, so every node rejects the same entries.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Incr(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl StateMachine for Counter {
    type Command = Incr;
    type Response = Option<u64>;
}

impl Handler<Apply<Counter>> for Counter {
    type Result = Vec<Option<u64>>;
    fn handle(&mut self, batch: Apply<Counter>, _: &mut Context<Self>) -> Self::Result {
        batch
            .entries
            .into_iter()
            .map(|(_, Incr(n))| {
                let next = self.value.checked_add(n)?;
                self.value = next;
                Some(next)
            })
            .collect()
    }
}

impl Handler<Snapshot> for Counter {
    type Result = Result<regatta::SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        // The whole state is eight bytes: copying it is instant.
        Ok(self.value.to_be_bytes().to_vec().into())
    }
}

impl Handler<Restore> for Counter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let bytes: [u8; 8] = r.data[..]
            .try_into()
            .map_err(|_| "snapshot is not 8 bytes")?;
        self.value = u64::from_be_bytes(bytes);
        Ok(())
    }
}

/// A read of the value; linearizable when sent through `Raft::read`.
#[derive(Message)]
#[rtype(result = "u64")]
struct Get;

impl Handler<Get> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.value
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrBody {
    #[serde(default = "one")]
    by: u64,
}

fn one() -> u64 {
    1
}

/// `POST /counter/incr`, body `{"by": N}` (optional, default 1).
async fn incr(node: Replica<Counter>, body: JsonBody<IncrBody>) -> Result<HttpResponse, ApiError> {
    match node.write(Incr(body.into_inner().by)).await? {
        Some(value) => Ok(HttpResponse::Ok().json(json!({ "value": value }))),
        None => Err(ApiError::bad_request("the counter would overflow")),
    }
}

/// `GET /counter`: a linearizable read.
async fn get(node: Replica<Counter>) -> Result<HttpResponse, ApiError> {
    let value = node.read(Get).await?;
    Ok(HttpResponse::Ok().json(json!({ "value": value })))
}

impl Service for Counter {
    const NAME: &'static str = "counter";

    fn routes(cfg: &mut web::ServiceConfig) {
        cfg.route("/counter/incr", web::post().to(incr))
            .route("/counter", web::get().to(get));
    }

    async fn demo(cluster: &mut DemoCluster<Self>) -> Result<(), String> {
        let leader = cluster.wait_leader(None).await?;
        println!("\nnode {leader} was elected leader");
        for (i, via) in [1, 2, 3, 1, 2].into_iter().enumerate() {
            let by = i as u64 + 1;
            let value = write(cluster.raft(via), by).await?;
            println!("  incr {by} via node {via} -> {value}");
        }

        println!("\nkilling the leader, node {leader}");
        cluster.kill(leader).await;
        let new_leader = cluster.wait_leader(Some(leader)).await?;
        println!("node {new_leader} took over as leader");
        let survivors: Vec<_> = cluster.nodes.keys().copied().collect();
        for &via in &survivors {
            let value = write(cluster.raft(via), 10).await?;
            println!("  incr 10 via node {via} -> {value}");
        }

        println!("\nlinearizable reads:");
        let mut values = Vec::new();
        for &id in &survivors {
            let v = cluster
                .raft(id)
                .read(Get)
                .await
                .map_err(|e| format!("read: {e}"))?;
            println!("  node {id}: value = {v}");
            values.push(v);
        }
        if values.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("nodes disagree: {values:?}"));
        }
        println!("\ndone: every surviving node reads {}", values[0]);
        Ok(())
    }
}

async fn write(raft: &Raft<Counter>, by: u64) -> Result<u64, String> {
    raft.write(Incr(by))
        .await
        .map_err(|e| format!("write: {e}"))?
        .ok_or_else(|| "counter overflow".to_string())
}

fn main() -> std::process::ExitCode {
    service::main::<Counter>()
}
