//! Randomized fault schedules with a linearizability check of the
//! client-visible history. The seed is printed; rerun with REGATTA_SEED.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::linearizability::{
    check, CheckResult, CounterInput, CounterModel, Operation,
};
use regatta::testing::Cluster;
use regatta::transport::sim::LinkConfig;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn counter_history_is_linearizable_under_faults() {
    init_tracing();
    let seed = seed("linearizability");
    bounded(SECS(240), async {
        let mut c = Cluster::new(5, test_config(), seed, |_| Counter::default()).await;
        c.wait_leader(SECS(10)).await.unwrap();
        let handles = Handles::default();
        handles.sync(&c);
        let work = Workload::start(&handles, 6, true, seed);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(rng.u64(100..500))).await;
            match rng.u8(..5) {
                0 => c.net().isolate(rng.u64(1..=5)),
                1 => {
                    let a = rng.u64(1..=5);
                    let b = rng.u64(1..=5);
                    c.net().partition(&[&[a, b]]);
                }
                2 => {
                    let running = c.running();
                    if running.len() > 3 {
                        c.crash(running[rng.usize(..running.len())]);
                    }
                }
                3 => c.net().set_link(if rng.bool() {
                    LinkConfig::unreliable()
                } else {
                    LinkConfig::reliable()
                }),
                _ => c.net().heal(),
            }
            for id in c.ids() {
                if !c.running().contains(&id) && rng.u8(..3) == 0 {
                    c.start(id).await;
                }
            }
            handles.sync(&c);
        }
        c.net().heal();
        c.net().set_link(LinkConfig::reliable());
        for id in c.ids() {
            if !c.running().contains(&id) {
                c.start(id).await;
            }
        }
        handles.sync(&c);
        // Let the clients see the healed cluster for a moment, then stop.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let history = work.stop().await;
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
            completed > 50,
            "the workload made too little progress: {completed} operations"
        );
        let started = std::time::Instant::now();
        let result = check(&CounterModel, &ops, SECS(60));
        eprintln!("checked in {:?}", started.elapsed());
        assert_eq!(
            result,
            CheckResult::Ok,
            "history is not linearizable (seed {seed})"
        );
        check_acknowledged_writes(&c, &history).await;
    })
    .await;
}
