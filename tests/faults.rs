//! Agreement under crashes, loss, long reordering and churn.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::transport::sim::LinkConfig;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn figure_8_crashes_of_leaders() {
    init_tracing();
    let seed = seed("figure_8");
    bounded(SECS(240), async {
        let mut c = Cluster::new(5, test_config(), seed, |_| Counter::default()).await;
        let handles = Handles::default();
        handles.sync(&c);
        let mut rng = fastrand::Rng::with_seed(seed);
        c.wait_leader(SECS(10)).await.unwrap();
        let mut next = 0;
        for _ in 0..1000 {
            // Propose on every running node, without waiting.
            for id in c.running() {
                next += 1;
                let r = c.raft(id).clone();
                let n = next;
                actix_rt::spawn(async move {
                    let _ = r.write(Add(n)).await;
                });
            }
            let pause = if rng.u8(..100) < 10 {
                rng.u64(0..200)
            } else {
                rng.u64(0..13)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if let Some((leader, _)) = c.leaders().first().copied() {
                c.crash(leader);
            }
            if c.running().len() < 3 {
                let down: Vec<u64> = c
                    .ids()
                    .into_iter()
                    .filter(|id| !c.running().contains(id))
                    .collect();
                let id = down[rng.usize(..down.len())];
                c.start(id).await;
            }
        }
        for id in c.ids() {
            if !c.running().contains(&id) {
                c.start(id).await;
            }
        }
        handles.sync(&c);
        check_acknowledged_writes(&c, &[]).await;
    })
    .await;
}

async fn unreliable_run(name: &str, link: LinkConfig, churn: bool) {
    init_tracing();
    let seed = seed(name);
    bounded(SECS(180), async {
        let mut c = Cluster::new(5, test_config(), seed, |_| Counter::default()).await;
        c.wait_leader(SECS(10)).await.unwrap();
        let handles = Handles::default();
        handles.sync(&c);
        c.net().set_link(link);
        let work = Workload::start(&handles, 5, false, seed);
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if !churn {
                continue;
            }
            match rng.u8(..3) {
                0 => {
                    // Crash a node, keeping a majority up.
                    let running = c.running();
                    if running.len() > 3 {
                        c.crash(running[rng.usize(..running.len())]);
                    }
                }
                1 => {
                    let a = rng.u64(1..=5);
                    let b = rng.u64(1..=5);
                    c.net().partition(&[&[a, b]]);
                }
                _ => c.net().heal(),
            }
            for id in c.ids() {
                if !c.running().contains(&id) && rng.bool() {
                    c.start(id).await;
                }
            }
            handles.sync(&c);
        }
        let history = work.stop().await;
        c.net().set_link(LinkConfig::reliable());
        c.net().heal();
        for id in c.ids() {
            if !c.running().contains(&id) {
                c.start(id).await;
            }
        }
        check_acknowledged_writes(&c, &history).await;
    })
    .await;
}

#[actix_rt::test]
async fn unreliable_network() {
    unreliable_run("unreliable", LinkConfig::unreliable(), false).await;
}

#[actix_rt::test]
async fn unreliable_network_with_long_reordering() {
    let link = LinkConfig {
        long_delay_replies: 0.66,
        long_delay: (Duration::from_millis(200), Duration::from_millis(2200)),
        ..LinkConfig::unreliable()
    };
    unreliable_run("reordering", link, false).await;
}

#[actix_rt::test]
async fn unreliable_network_with_churn() {
    unreliable_run("churn", LinkConfig::unreliable(), true).await;
}
