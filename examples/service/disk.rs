//! How fast a directory makes log writes durable, through regatta's own
//! fjall storage (a batch, then fsync): the raw limit under a node. Used by
//! the examples' `check disk` command and by `benches/durable.rs`.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use regatta::storage::{FjallStorage, LogStorage, WriteBatch};
use regatta::{Entry, LogId, Payload};

/// Bytes of each entry's command.
pub const PAYLOAD_BYTES: usize = 256;

/// Durable writes of one batch size, back to back.
pub struct DiskRun {
    /// Entries per write.
    pub batch: usize,
    /// Latency of each write, sorted.
    pub latencies: Vec<Duration>,
    /// Time the measured writes took, warm-up excluded.
    pub elapsed: Duration,
}

impl DiskRun {
    /// Writes (batches) per second.
    pub fn writes_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Entries per second.
    pub fn entries_per_sec(&self) -> f64 {
        self.writes_per_sec() * self.batch as f64
    }

    /// The latency at quantile `q` (`None` if nothing was written).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let n = self.latencies.len();
        (n > 0).then(|| self.latencies[((n as f64 * q) as usize).min(n - 1)])
    }
}

/// Opens a fresh store in `dir` (which must not hold one) and writes
/// `batch`-entry batches of random payloads for `warmup`, then for `run`,
/// timing each write.
pub fn measure(
    dir: &Path,
    batch: usize,
    warmup: Duration,
    run: Duration,
) -> Result<DiskRun, String> {
    let mut store = FjallStorage::open(dir, "regatta-disk-check")
        .map_err(|e| format!("cannot open a store in {}: {e}", dir.display()))?;
    // The storage contract: load once before the first write.
    store
        .load()
        .map_err(|e| format!("cannot load the store: {e}"))?;
    // Random bytes, so compression cannot make the disk look faster.
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let slots = 4096;
    let pool: Bytes = (0..(slots + 1) * PAYLOAD_BYTES)
        .map(|_| rng.u8(..))
        .collect::<Vec<u8>>()
        .into();
    let mut next_index = 1u64;
    let mut make_batch = || WriteBatch {
        entries: (0..batch)
            .map(|_| {
                let index = next_index;
                next_index += 1;
                let at = (index as usize % slots) * PAYLOAD_BYTES;
                Entry {
                    log_id: LogId::new(1, index),
                    payload: Payload::Command(pool.slice(at..at + PAYLOAD_BYTES)),
                }
            })
            .collect(),
        ..WriteBatch::default()
    };
    let write_error = |e| format!("durable write failed: {e}");
    let started = Instant::now();
    while started.elapsed() < warmup {
        store.write(make_batch()).map_err(write_error)?;
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < run {
        let b = make_batch();
        let t = Instant::now();
        store.write(b).map_err(write_error)?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(DiskRun {
        batch,
        latencies,
        elapsed,
    })
}
