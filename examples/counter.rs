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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use regatta::storage::FjallStorage;
use regatta::transport::tcp::{TcpConfig, TcpTransport};
use regatta::{Apply, Config, Membership, NodeId, Raft, Restore, Snapshot, StateMachine};
use serde::{Deserialize, Serialize};

/// The replicated state: one number.
#[derive(Default)]
struct Counter {
    value: u64,
}

/// Increment by N; the response is the value after the increment.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Incr(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl StateMachine for Counter {
    type Command = Incr;
    type Response = u64;
}

impl Handler<Apply<Counter>> for Counter {
    type Result = Vec<u64>;
    fn handle(&mut self, batch: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
        batch
            .entries
            .into_iter()
            .map(|(_, Incr(n))| {
                self.value += n;
                self.value
            })
            .collect()
    }
}

impl Handler<Snapshot> for Counter {
    type Result = Result<bytes::Bytes, String>;
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

const CLUSTER_ID: &str = "regatta-counter-demo";

/// One node of the demo: its arbiter (thread), handle and transport.
struct DemoNode {
    arbiter: Arbiter,
    raft: Raft<Counter>,
    transport: TcpTransport,
}

async fn start_node(
    id: NodeId,
    dir: std::path::PathBuf,
    members: Membership,
) -> Result<DemoNode, String> {
    let arbiter = Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    arbiter.spawn_fn(move || {
        actix_rt::spawn(async move {
            let result: Result<(Raft<Counter>, TcpTransport), String> = async {
                let handle: Arc<OnceLock<Raft<Counter>>> = Arc::new(OnceLock::new());
                let inbound = handle.clone();
                let listen: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
                let transport = TcpTransport::start(
                    TcpConfig::new(id, CLUSTER_ID, listen),
                    Arc::new(move |env| {
                        if let Some(r) = inbound.get() {
                            r.deliver(env)
                        }
                    }),
                )
                .await
                .map_err(|e| format!("node {id}: cannot listen: {e}"))?;
                let storage =
                    FjallStorage::open(&dir, CLUSTER_ID).map_err(|e| format!("node {id}: {e}"))?;
                let raft = Raft::start(
                    id,
                    Config::default(),
                    storage,
                    Arc::new(transport.clone()),
                    Some(members),
                    Counter::default().start(),
                )
                .map_err(|e| format!("node {id}: {e}"))?;
                let _ = handle.set(raft.clone());
                Ok((raft, transport))
            }
            .await;
            let _ = tx.send(result);
        });
    });
    let (raft, transport) = rx
        .await
        .map_err(|_| "node start-up did not report".to_string())??;
    Ok(DemoNode {
        arbiter,
        raft,
        transport,
    })
}

async fn demo() -> Result<(), String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    println!(
        "regatta counter demo: 3 nodes, fjall logs under {}",
        dir.path().display()
    );
    let members = Membership::new([1, 2, 3]);
    let mut nodes: BTreeMap<NodeId, DemoNode> = BTreeMap::new();
    for id in 1..=3 {
        let node = start_node(id, dir.path().join(format!("node-{id}")), members.clone()).await?;
        println!("  node {id}: raft on {}", node.transport.local_addr());
        nodes.insert(id, node);
    }
    // Tell every node where its peers listen.
    let addrs: Vec<(NodeId, SocketAddr)> = nodes
        .iter()
        .map(|(id, n)| (*id, n.transport.local_addr()))
        .collect();
    for node in nodes.values() {
        for (id, addr) in &addrs {
            regatta::transport::Transport::set_address(&node.transport, *id, &addr.to_string());
        }
    }

    let timeout = Duration::from_secs(10);
    let leader = nodes[&1]
        .raft
        .wait_leader(timeout)
        .await
        .map_err(|e| format!("no leader: {e}"))?;
    println!("\nnode {leader} was elected leader");
    for (i, via) in [1, 2, 3, 1, 2].into_iter().enumerate() {
        let by = i as u64 + 1;
        let value = nodes[&via]
            .raft
            .write(Incr(by))
            .await
            .map_err(|e| format!("write: {e}"))?;
        println!("  incr {by} via node {via} -> {value}");
    }

    println!("\nkilling the leader, node {leader}");
    let killed = nodes.remove(&leader).expect("leader is running");
    killed.transport.shutdown();
    killed.arbiter.stop();
    let _ = killed.arbiter.join();

    let survivor = *nodes.keys().next().expect("two nodes left");
    let new_leader = nodes[&survivor]
        .raft
        .wait_for(timeout, |m| m.leader.is_some_and(|l| l != leader))
        .await
        .map_err(|e| format!("no failover: {e}"))?
        .leader
        .expect("a leader");
    println!("node {new_leader} took over as leader");
    for via in nodes.keys().copied().collect::<Vec<_>>() {
        let value = nodes[&via]
            .raft
            .write(Incr(10))
            .await
            .map_err(|e| format!("write: {e}"))?;
        println!("  incr 10 via node {via} -> {value}");
    }
    println!("\nlinearizable reads:");
    let mut values = Vec::new();
    for (id, node) in &nodes {
        let v = node
            .raft
            .read(Get)
            .await
            .map_err(|e| format!("read: {e}"))?;
        println!("  node {id}: value = {v}");
        values.push(v);
    }
    if values.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("nodes disagree: {values:?}"));
    }
    for node in nodes.values() {
        node.raft.shutdown().await;
        node.transport.shutdown();
    }
    println!("\ndone: every surviving node reads {}", values[0]);
    Ok(())
}

fn main() {
    if std::env::args().len() > 1 {
        eprintln!(
            "usage: counter\n\n  with no arguments, runs a 3-node demo cluster in this process"
        );
        std::process::exit(2);
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .try_init();
    let system = actix::System::new();
    match system.block_on(demo()) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
