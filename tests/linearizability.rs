//! Randomized fault schedules with a linearizability check of the
//! client-visible history. The seed is printed; rerun with REGATTA_SEED.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::transport::sim::LinkConfig;
use regatta::Config;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn counter_history_is_linearizable_under_faults() {
    history_under_faults("linearizability", test_config()).await;
}

/// Reads answered from the leader's lease must be as linearizable as
/// those confirmed by a heartbeat round.
#[actix_rt::test]
async fn counter_history_with_lease_reads_is_linearizable_under_faults() {
    let config = Config {
        lease_reads: true,
        ..test_config()
    };
    history_under_faults("linearizability with lease reads", config).await;
}

async fn history_under_faults(name: &str, config: Config) {
    init_tracing();
    let seed = seed(name);
    bounded(SECS(240), async {
        let mut c = Cluster::new(5, config, seed, |_| Counter::default()).await;
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
        check_linearizable(&history, 50, seed);
        check_acknowledged_writes(&c, &history).await;
    })
    .await;
}
