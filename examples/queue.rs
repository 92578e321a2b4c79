//! A replicated FIFO queue of text items.
//!
//! With no arguments: a self-contained demo — three nodes in one process,
//! each with its own fjall directory under a fresh temporary directory and
//! real TCP on 127.0.0.1 — that pushes and pops through every node, kills
//! the leader, and reads the queue back from every surviving node.
//!
//! ```text
//! cargo run --release --example queue
//! ```
//!
//! With `serve`: one node of a multi-process cluster with an HTTP API
//! (`POST /queue/push` `{"item": "text"}`, `POST /queue/pop`, `GET /queue`,
//! `GET /cluster/status`); see README.md.
//!
//! The state machine (items, commands, snapshots, reads) is in
//! `state/queue.rs`, shared with the snapshot bench; this file serves it.

mod service;
#[path = "state/queue.rs"]
mod state;

use actix_web::{web, HttpResponse};
use regatta::web::{ApiError, JsonBody, Replica};
use regatta::Raft;
use serde::Deserialize;
use serde_json::json;
use service::{DemoCluster, Service};
use state::{Peek, Queue, QueueCommand, QueueResponse, QueueView};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    item: String,
}

/// `POST /queue/push`, body `{"item": "text"}`.
async fn push(node: Replica<Queue>, body: JsonBody<PushBody>) -> Result<HttpResponse, ApiError> {
    let PushBody { item } = body.into_inner();
    match node.write(QueueCommand::Push(item)).await? {
        QueueResponse::Len(len) => Ok(HttpResponse::Ok().json(json!({ "len": len }))),
        other => unreachable_response(other),
    }
}

/// `POST /queue/pop`: the oldest item, or `null` when empty.
async fn pop(node: Replica<Queue>) -> Result<HttpResponse, ApiError> {
    match node.write(QueueCommand::Pop).await? {
        QueueResponse::Item(item) => Ok(HttpResponse::Ok().json(json!({ "item": item }))),
        other => unreachable_response(other),
    }
}

/// A response of the wrong kind would mean a bug in `Apply` above; answer
/// it as an error rather than bring the server down.
fn unreachable_response(response: QueueResponse) -> Result<HttpResponse, ApiError> {
    tracing::error!(?response, "state machine answered with the wrong kind");
    Err(ApiError::new(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: unexpected response",
    ))
}

/// `GET /queue`: a linearizable read of the length and the head.
async fn peek(node: Replica<Queue>) -> Result<HttpResponse, ApiError> {
    let QueueView { len, head } = node.read(Peek).await?;
    Ok(HttpResponse::Ok().json(json!({ "len": len, "head": head })))
}

impl Service for Queue {
    const NAME: &'static str = "queue";

    fn routes(cfg: &mut web::ServiceConfig) {
        cfg.route("/queue/push", web::post().to(push))
            .route("/queue/pop", web::post().to(pop))
            .route("/queue", web::get().to(peek));
    }

    async fn demo(cluster: &mut DemoCluster<Self>) -> Result<(), String> {
        let leader = cluster.wait_leader(None).await?;
        println!("\nnode {leader} was elected leader");
        for (i, via) in [1, 2, 3, 1, 2].into_iter().enumerate() {
            let item = format!("job-{}", i + 1);
            let response = write(cluster.raft(via), QueueCommand::Push(item.clone())).await?;
            println!("  push {item:?} via node {via} -> {response:?}");
        }
        let response = write(cluster.raft(3), QueueCommand::Pop).await?;
        println!("  pop via node 3 -> {response:?}");

        println!("\nkilling the leader, node {leader}");
        cluster.kill(leader).await;
        let new_leader = cluster.wait_leader(Some(leader)).await?;
        println!("node {new_leader} took over as leader");
        let survivors: Vec<_> = cluster.nodes.keys().copied().collect();
        for &via in &survivors {
            let response = write(cluster.raft(via), QueueCommand::Pop).await?;
            println!("  pop via node {via} -> {response:?}");
        }

        println!("\nlinearizable reads:");
        let mut views = Vec::new();
        for &id in &survivors {
            let view = cluster
                .raft(id)
                .read(Peek)
                .await
                .map_err(|e| format!("read: {e}"))?;
            println!("  node {id}: len = {}, head = {:?}", view.len, view.head);
            views.push(view);
        }
        if views.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("nodes disagree: {views:?}"));
        }
        println!("\ndone: every surviving node reads the same queue");
        Ok(())
    }
}

async fn write(raft: &Raft<Queue>, command: QueueCommand) -> Result<QueueResponse, String> {
    raft.write(command).await.map_err(|e| format!("write: {e}"))
}

fn main() -> std::process::ExitCode {
    service::main::<Queue>()
}
