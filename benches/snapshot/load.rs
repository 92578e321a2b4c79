//! The load before the parts: ITEMS pushes through the leader from many
//! concurrent clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::Raft;

use crate::queue::{Queue, QueueCommand, QueueResponse};
use crate::{item, MAX_CONSECUTIVE_ERRORS};

/// Pushes items `0..items` through `raft` from `clients` concurrent tasks.
/// Returns the elapsed time and the number of failed (retried) writes.
pub(crate) async fn load(
    raft: &Raft<Queue>,
    items: u64,
    clients: usize,
) -> Result<(Duration, u64), String> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  loading: {n}/{items} pushes after {:.0?}",
                    started.elapsed()
                );
            }
        })
    };
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let raft = raft.clone();
            let next = next.clone();
            let done = done.clone();
            actix_rt::spawn(async move {
                let mut failed = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items {
                        return Ok(failed);
                    }
                    let it = item(i);
                    let mut consecutive = 0;
                    loop {
                        match raft.write(QueueCommand::Push(it.clone())).await {
                            Ok(QueueResponse::Len(_)) => break,
                            Ok(other) => return Err(format!("push answered {other:?}")),
                            Err(e) => {
                                failed += 1;
                                consecutive += 1;
                                if consecutive >= MAX_CONSECUTIVE_ERRORS {
                                    return Err(format!(
                                        "{consecutive} consecutive failed pushes, last: {e}"
                                    ));
                                }
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut failed = 0;
    let mut outcome = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(f)) => failed += f,
            Ok(Err(e)) => outcome = Err(e),
            Err(e) => outcome = Err(format!("a load client died: {e}")),
        }
    }
    progress.abort();
    outcome.map(|()| (started.elapsed(), failed))
}
