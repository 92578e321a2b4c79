//! How fast a directory makes log writes durable, through regatta's own
//! fjall storage (a batch, then fsync): the raw limit under a node. Used by
//! the `regatta check disk` command and by `benches/durable.rs`.
#![allow(dead_code)] // benches/durable.rs uses only `measure`.

use std::path::{Path, PathBuf};
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

#[derive(clap::Args)]
pub struct DiskArgs {
    /// Directory to test (on the disk the data directory will live on);
    /// a scratch store is created inside it and removed afterwards.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Seconds to measure each of the two write patterns.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
}

/// What a node's log needs from its disk (the etcd guidance for its WAL,
/// which does the same job): a single durable write's p99 within 10 ms,
/// since every commit waits for one on the leader and on a majority; and
/// group commit fast enough for bursts.
const MAX_SINGLE_WRITE_P99: Duration = Duration::from_millis(10);
const MIN_GROUP_COMMIT_ENTRIES_PER_SEC: f64 = 20_000.0;

/// `regatta check disk`.
pub fn check(args: &DiskArgs) -> Result<bool, String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    let scratch = args
        .dir
        .join(format!(".regatta-disk-check-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(scratch.clone());
    let run = Duration::from_secs(args.seconds);
    let warmup = Duration::from_millis(300);
    println!(
        "checking {} ({} s per pattern, {}-byte entries, fsync per write)",
        args.dir.display(),
        args.seconds,
        PAYLOAD_BYTES
    );
    let single = measure(&scratch.join("single"), 1, warmup, run)?;
    let group = measure(&scratch.join("group"), 256, warmup, run)?;
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
    println!(
        "single-entry durable write: p50 {}, p99 {}, {:.0} writes/s",
        ms(single.quantile(0.5)),
        ms(single.quantile(0.99)),
        single.writes_per_sec()
    );
    println!(
        "256-entry group commit:     p50 {}, p99 {}, {:.0} entries/s",
        ms(group.quantile(0.5)),
        ms(group.quantile(0.99)),
        group.entries_per_sec()
    );
    let latency_ok = single
        .quantile(0.99)
        .is_some_and(|p| p <= MAX_SINGLE_WRITE_P99);
    let throughput_ok = group.entries_per_sec() >= MIN_GROUP_COMMIT_ENTRIES_PER_SEC;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "{}: single-write p99 must be within {} ms (every commit waits for one)",
        verdict(latency_ok),
        MAX_SINGLE_WRITE_P99.as_millis()
    );
    println!(
        "{}: group commit must reach {:.0} entries/s (bursts of writes)",
        verdict(throughput_ok),
        MIN_GROUP_COMMIT_ENTRIES_PER_SEC
    );
    Ok(latency_ok && throughput_ok)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
