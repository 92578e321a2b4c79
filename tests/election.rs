//! Leader election on the simulated network.

mod common;

use std::time::Duration;

use common::*;
use regatta::testing::Cluster;
use regatta::Role;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[actix_rt::test]
async fn initial_election() {
    init_tracing();
    bounded(SECS(30), async {
        let c = Cluster::new(3, test_config(), seed("initial_election"), |_| Counter::default()).await;
        let leader = c.wait_leader(SECS(5)).await.expect("a leader within 5 s");
        let term = c.metrics()[&leader].term;
        let terms: Vec<u64> = c.metrics().values().map(|m| m.term).collect();
        assert!(terms.iter().all(|t| *t == term), "all nodes agree on the term: {terms:?}");
        // Without faults the term stays put.
        tokio::time::sleep(SECS(2)).await;
        let after = c.metrics();
        assert!(after.values().all(|m| m.term == term), "term changed without faults: {after:?}");
        assert_eq!(c.leaders(), vec![(leader, term)]);
    })
    .await;
}
