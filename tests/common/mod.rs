//! Shared by the cluster tests: a counter state machine and helpers.
#![allow(dead_code)]

pub mod exposition;
pub mod membership;
pub mod process;
pub mod process_faults;
pub mod scripted;

use std::future::Future;
use std::time::Duration;

use actix::prelude::*;
use regatta::{Apply, Config, Restore, Snapshot, StateMachine};
use serde::{Deserialize, Serialize};

/// A counter that also remembers every command it applied, so tests can
/// compare what each node applied.
#[derive(Default)]
pub struct Counter {
    pub value: u64,
    pub applied: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Add(pub u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl StateMachine for Counter {
    type Command = Add;
    type Response = u64;
}

impl Handler<Apply<Counter>> for Counter {
    type Result = Vec<u64>;
    fn handle(&mut self, batch: Apply<Counter>, _: &mut Context<Self>) -> Vec<u64> {
        batch
            .entries
            .into_iter()
            .map(|(id, Add(n))| {
                self.value += n;
                self.applied.push((id.index, n));
                self.value
            })
            .collect()
    }
}

impl Handler<Snapshot> for Counter {
    type Result = Result<regatta::SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        rmp_serde::to_vec(&(self.value, &self.applied))
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
}

impl Handler<Restore> for Counter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let (value, applied): (u64, Vec<(u64, u64)>) =
            rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?;
        // The position regatta names must be the snapshot's: the last
        // command it holds cannot come after it.
        if let Some((index, _)) = applied.last().filter(|(i, _)| *i > r.last_included.index) {
            return Err(format!(
                "snapshot said to end at {:?} holds the command at {index}",
                r.last_included
            ));
        }
        self.value = value;
        self.applied = applied;
        Ok(())
    }
}

/// Reads the value.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Get;

impl Handler<Get> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.value
    }
}

/// Every (index, amount) applied so far.
#[derive(Message)]
#[rtype(result = "Vec<(u64, u64)>")]
pub struct History;

impl Handler<History> for Counter {
    type Result = Vec<(u64, u64)>;
    fn handle(&mut self, _: History, _: &mut Context<Self>) -> Vec<(u64, u64)> {
        self.applied.clone()
    }
}

/// Timing for tests: generous enough for a loaded 2-core machine.
pub fn test_config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(400),
        election_timeout_max: Duration::from_millis(800),
        client_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

/// Runs a test body with a time bound, so a hang fails instead of stalling CI.
pub async fn bounded<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its time bound of {limit:?}"),
    }
}

/// A seed from REGATTA_SEED or the clock, printed so a failure reruns.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("REGATTA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (rerun with REGATTA_SEED={seed})");
    seed
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(
            if std::env::var("REGATTA_LOG").is_ok_and(|v| v == "trace") {
                tracing::Level::TRACE
            } else if std::env::var("REGATTA_LOG").is_ok() {
                tracing::Level::DEBUG
            } else {
                tracing::Level::WARN
            },
        )
        .with_test_writer()
        .try_init();
}

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use regatta::testing::Cluster;
use regatta::{Raft, RaftError};

/// One client-visible operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: u64,
    /// `Some(n)`: Add(n); `None`: a read.
    pub add: Option<u64>,
    pub call: u64,
    /// `None` when the outcome is unknown (timeout / indeterminate).
    pub ret: Option<u64>,
    pub output: Option<u64>,
}

/// Handles of the running nodes, updated by the test as nodes crash and
/// restart, shared with the client tasks.
#[derive(Clone, Default)]
pub struct Handles(Arc<Mutex<BTreeMap<u64, Raft<Counter>>>>);

impl Handles {
    pub fn sync(&self, c: &Cluster<Counter>) {
        let mut m = self.0.lock().unwrap();
        m.clear();
        for id in c.running() {
            m.insert(id, c.raft(id).clone());
        }
    }
    pub fn all(&self) -> Vec<Raft<Counter>> {
        self.0.lock().unwrap().values().cloned().collect()
    }
    fn pick(&self, rng: &mut fastrand::Rng) -> Option<Raft<Counter>> {
        let m = self.0.lock().unwrap();
        if m.is_empty() {
            return None;
        }
        let i = rng.usize(..m.len());
        m.values().nth(i).cloned()
    }
}

/// Concurrent clients writing unique amounts (and, optionally, reading)
/// through random nodes until stopped; every outcome is recorded.
pub struct Workload {
    pub history: Arc<Mutex<Vec<Op>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Workload {
    pub fn start(handles: &Handles, clients: u64, reads: bool, seed: u64) -> Workload {
        let history = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let epoch = std::time::Instant::now();
        let tasks = (0..clients)
            .map(|client| {
                let (handles, history, stop) = (handles.clone(), history.clone(), stop.clone());
                actix_rt::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(seed ^ ((client + 1) * 7919));
                    let mut seq = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Some(raft) = handles.pick(&mut rng) else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        seq += 1;
                        // Unique amounts identify each write in the logs.
                        let add = (!reads || rng.bool()).then_some((client + 1) * 1_000_000 + seq);
                        let call = epoch.elapsed().as_nanos() as u64;
                        let result = match add {
                            Some(n) => raft.write(Add(n)).await,
                            None => raft.read(Get).await,
                        };
                        let now = epoch.elapsed().as_nanos() as u64;
                        let (ret, output) = match result {
                            Ok(v) => (Some(now), Some(v)),
                            Err(e) if e.is_indeterminate() => (None, None),
                            // Not submitted (no leader, node stopped): it
                            // did not happen.
                            Err(RaftError::NotLeader(_)) | Err(RaftError::ShuttingDown) => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                            Err(e) => panic!("unexpected client error: {e}"),
                        };
                        history.lock().unwrap().push(Op {
                            client,
                            add,
                            call,
                            ret,
                            output,
                        });
                    }
                })
            })
            .collect();
        Workload {
            history,
            stop,
            tasks,
        }
    }

    /// Operations completed so far.
    pub fn completed(&self) -> usize {
        self.history
            .lock()
            .unwrap()
            .iter()
            .filter(|op| op.ret.is_some())
            .count()
    }

    /// Waits (bounded) until at least `n` operations have completed.
    pub async fn wait_completed(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = self.completed();
            if done >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {done} of {n} operations completed within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> Vec<Op> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let h = self.history.lock().unwrap().clone();
        h
    }
}

/// Checks every acknowledged write is applied exactly once on every node,
/// and all nodes applied the same sequence. Returns the final value.
pub async fn check_acknowledged_writes(c: &Cluster<Counter>, history: &[Op]) -> u64 {
    let ids = c.running();
    let leader = c
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("leader at the end");
    c.write(leader, Add(0)).await.expect("final write");
    let target = c.metrics()[&leader].commit_index;
    c.wait_applied(&ids, target, Duration::from_secs(20))
        .await
        .expect("all nodes catch up");
    let mut logs = Vec::new();
    for id in &ids {
        logs.push(c.raft(*id).state_machine().send(History).await.unwrap());
    }
    for (id, log) in ids.iter().zip(&logs) {
        let n = log.len().min(logs[0].len());
        assert_eq!(
            &log[..n],
            &logs[0][..n],
            "node {id} applied a different sequence"
        );
    }
    let applied: BTreeMap<u64, usize> = logs[0].iter().fold(BTreeMap::new(), |mut m, (_, n)| {
        *m.entry(*n).or_default() += 1;
        m
    });
    let mut acked = 0;
    for op in history {
        if let (Some(n), Some(_)) = (op.add, op.output) {
            acked += 1;
            assert_eq!(
                applied.get(&n),
                Some(&1),
                "acknowledged write {n} applied {:?} times",
                applied.get(&n)
            );
        }
    }
    assert!(
        applied.iter().all(|(n, k)| *n == 0 || *k == 1),
        "a write was applied twice"
    );
    eprintln!(
        "{acked} acknowledged writes, all present once on {} nodes",
        ids.len()
    );
    c.raft(leader).read(Get).await.unwrap()
}

/// Runs the linearizability checker over a client history (writes and
/// reads of the counter); fails unless it is linearizable and at least
/// `min_completed` operations completed.
pub fn check_linearizable(history: &[Op], min_completed: usize, seed: u64) {
    use regatta::testing::linearizability::{
        check, CheckResult, CounterInput, CounterModel, Operation,
    };
    let ops: Vec<Operation<CounterInput, u64>> = history
        .iter()
        .map(|op| Operation {
            client: op.client,
            input: match op.add {
                Some(n) => CounterInput::Incr(n),
                None => CounterInput::Read,
            },
            call: op.call,
            ret: op.ret,
            output: op.output,
        })
        .collect();
    let completed = ops.iter().filter(|o| o.ret.is_some()).count();
    eprintln!("{} operations, {completed} completed", ops.len());
    assert!(
        completed > min_completed,
        "the workload made too little progress: {completed} operations"
    );
    let started = std::time::Instant::now();
    let result = check(&CounterModel, &ops, Duration::from_secs(60));
    eprintln!("checked in {:?}", started.elapsed());
    assert_eq!(
        result,
        CheckResult::Ok,
        "history is not linearizable (seed {seed})"
    );
}
