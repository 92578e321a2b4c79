//! Part 3: the `Restore` handler of a fresh queue actor given the
//! snapshot's bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use regatta::Restore;

use crate::queue::{Len, Queue, SnapshotProbe};
use crate::report::{mib, ms, opt_ms};
use crate::support::median;
use crate::Plan;

pub(crate) async fn restore_part(data: Bytes, items: u64, plan: &Plan) -> Result<(), String> {
    println!("## 3. Restoring: the `Restore` handler of a fresh queue actor\n");
    println!(
        "The snapshot's {} ({} bytes) given to a fresh queue actor (on the bench's own \
         arbiter; the cluster idles meanwhile): rmp-serde into `Vec<String>`, then into \
         `VecDeque<Arc<str>>`, as in examples/queue.rs. Handler = timed inside it; \
         send → reply = `Addr::send(Restore)` until the answer.\n",
        mib(data.len() as u64),
        data.len()
    );
    println!("| run | handler | send → reply |");
    println!("|---|---:|---:|");
    let mut handler = Vec::new();
    let mut round_trip = Vec::new();
    for run in 1..=plan.runs {
        let probe = Arc::new(SnapshotProbe::default());
        let queue = Queue::with_probe(probe.clone()).start();
        let started = Instant::now();
        queue
            .send(Restore {
                data: data.clone(),
                last_included: regatta::LogId::default(),
            })
            .await
            .map_err(|e| format!("restore: the queue actor stopped: {e}"))?
            .map_err(|e| format!("restore refused: {e}"))?;
        let rt = started.elapsed();
        let len = queue
            .send(Len)
            .await
            .map_err(|e| format!("restore: the queue actor stopped: {e}"))?;
        if len as u64 != items {
            return Err(format!("restored {len} items, expected {items}"));
        }
        let h = probe.restore().first().copied();
        println!("| {run} | {} | {} |", opt_ms(h), ms(rt));
        handler.extend(h);
        round_trip.push(rt);
        drop(queue);
        // Let the actor (and its million items) go before the next run.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "| **median of {}** | **{}** | **{}** |",
        plan.runs,
        opt_ms(median(handler)),
        opt_ms(median(round_trip))
    );
    println!();
    Ok(())
}
