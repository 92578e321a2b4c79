//! The simulator's built-in workload: a replicated counter whose clients
//! add unique amounts, and a linearizability check of what they saw.

use std::time::Duration;

use actix::prelude::*;

use super::{ClientWrite, Failure, Faults, Report, Simulation};
use crate::state_machine::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
use crate::testing::linearizability::{check, CheckResult, CounterInput, CounterModel, Operation};

/// A counter: each command adds its amount and returns the new value.
#[derive(Debug, Default)]
pub struct Counter {
    value: u64,
    /// Answers each batch 0–3 ms (virtual) after applying it, as a state
    /// machine on a busy thread of its own does; the mailbox waits
    /// meanwhile, so batches still apply in order. Without it the
    /// simulator answers every batch at once, and an applier that hands
    /// out its next batch early would never do so here.
    slow: bool,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;
}

impl Handler<Apply<Counter>> for Counter {
    type Result = AtomicResponse<Self, Vec<u64>>;
    fn handle(&mut self, batch: Apply<Counter>, _: &mut Context<Self>) -> Self::Result {
        // Drawn from the batch, so a seed replays the same delays.
        let delay_ms = match batch.entries.last() {
            Some((id, _)) if self.slow => id.index % 4,
            _ => 0,
        };
        let responses: Vec<u64> = batch
            .entries
            .into_iter()
            .map(|(_, n)| {
                self.value = self.value.wrapping_add(n);
                self.value
            })
            .collect();
        AtomicResponse::new(Box::pin(
            async move {
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                responses
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Snapshot> for Counter {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        Ok(self.value.to_be_bytes().to_vec().into())
    }
}

impl Handler<Restore> for Counter {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let bytes: [u8; 8] = r.data[..].try_into().map_err(|_| "bad counter snapshot")?;
        self.value = u64::from_be_bytes(bytes);
        Ok(())
    }
}

/// The counter under `nodes` founding members and `faults`; every client
/// adds an amount no other write adds, so each write is identifiable.
pub fn counter(nodes: u64, faults: Faults) -> Simulation<Counter> {
    counter_with(nodes, faults, false)
}

/// [`counter`], with a state machine that answers each batch a few
/// (virtual) milliseconds after applying it when `slow`, as a busy one on
/// a thread of its own does.
pub fn counter_with(nodes: u64, faults: Faults, slow: bool) -> Simulation<Counter> {
    Simulation::new(
        nodes,
        move |_| Counter { value: 0, slow },
        |_, client, seq| (client + 1) * 1_000_000 + seq,
    )
    .faults(faults)
}

/// Runs one seed of the counter and checks its client history for
/// linearizability (which includes: every acknowledged write is there).
pub fn run_counter(sim: &Simulation<Counter>, seed: u64) -> Result<Report<Counter>, Failure> {
    let report = sim.run(seed)?;
    check_counter_history(&report.history).map_err(|reason| Failure {
        seed,
        nodes: sim.nodes,
        groups: 1,
        at: report.simulated,
        reason,
    })?;
    Ok(report)
}

/// Checks a counter's client history for linearizability; says why not.
pub(super) fn check_counter_history(history: &[ClientWrite<u64, u64>]) -> Result<(), String> {
    let ops: Vec<Operation<CounterInput, u64>> = history
        .iter()
        .map(|w| Operation {
            client: w.client,
            input: CounterInput::Incr(w.command),
            call: w.call,
            ret: w.ret,
            output: w.response,
        })
        .collect();
    match check(&CounterModel, &ops, Duration::from_secs(30)) {
        CheckResult::Ok => Ok(()),
        CheckResult::Illegal(why) => Err(format!("client history not linearizable: {why}")),
        CheckResult::Timeout => Err("linearizability check ran out of time".into()),
    }
}
