//! Shared by the cluster tests: a counter state machine and helpers.
#![allow(dead_code)]

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
    type Result = Result<bytes::Bytes, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        rmp_serde::to_vec(&(self.value, &self.applied))
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
}

impl Handler<Restore> for Counter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let (value, applied) = rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?;
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
        .with_max_level(if std::env::var("REGATTA_LOG").is_ok() {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        })
        .with_test_writer()
        .try_init();
}
