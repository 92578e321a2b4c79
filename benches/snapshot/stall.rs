//! Part 4: how much applying slows down while a snapshot is built, from
//! the completions of clients writing continuously through the leader.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::LogId;

use crate::build::build_once;
use crate::cluster::BenchNode;
use crate::queue::QueueCommand;
use crate::report::{ms, opt_ms, opt_rate, rate};
use crate::support::median;
use crate::{item, Plan, MAX_CONSECUTIVE_ERRORS};

const STALL_CLIENTS: usize = 64;
const STALL_WARMUP: Duration = Duration::from_secs(1);
const STALL_BASELINE: Duration = Duration::from_secs(2);
const STALL_RECOVERY: Duration = Duration::from_secs(1);
const WINDOW_MS: usize = 100;

struct StallRun {
    baseline_rate: f64,
    during_rate: f64,
    worst_during: f64,
    /// Start of the worst window, in ms from the `Raft::snapshot()` call.
    worst_at: i64,
    worst_baseline: f64,
    snapshot: Duration,
    blocked: Option<Duration>,
    /// When the serialization finished, from the `Raft::snapshot()` call.
    serialized_by: Option<Duration>,
}

/// Completed writes per millisecond since `epoch`, with prefix sums.
struct Timeline {
    /// `prefix[i]` = writes completed in milliseconds `0..i`.
    prefix: Vec<u64>,
}

impl Timeline {
    fn new(completions: &[Vec<u32>]) -> Timeline {
        let len = completions
            .iter()
            .flat_map(|c| c.iter().copied())
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut counts = vec![0u64; len];
        for c in completions {
            for &t in c {
                counts[t as usize] += 1;
            }
        }
        let mut prefix = Vec::with_capacity(len + 1);
        prefix.push(0);
        let mut sum = 0;
        for c in counts {
            sum += c;
            prefix.push(sum);
        }
        Timeline { prefix }
    }

    /// Writes completed in milliseconds `from..to`.
    fn count(&self, from: usize, to: usize) -> u64 {
        let at = |i: usize| self.prefix[i.min(self.prefix.len() - 1)];
        at(to.max(from)) - at(from)
    }

    /// Writes per second over milliseconds `from..to`.
    fn rate(&self, from: usize, to: usize) -> f64 {
        if to <= from {
            return 0.0;
        }
        self.count(from, to) as f64 * 1e3 / (to - from) as f64
    }

    /// The lowest rate of a `WINDOW_MS` window starting in `first..=last`,
    /// and the first window start with that rate.
    fn worst_window(&self, first: usize, last: usize) -> (f64, usize) {
        (first..=last)
            .map(|s| (self.count(s, s + WINDOW_MS), s))
            .min()
            .map_or((0.0, first), |(c, s)| {
                (c as f64 * 1e3 / WINDOW_MS as f64, s)
            })
    }
}

pub(crate) async fn stall_part(leader: &BenchNode, plan: &Plan) -> Result<(), String> {
    println!("## 4. Applying while a snapshot is built\n");
    println!(
        "{STALL_CLIENTS} clients write back-to-back through the leader, each alternating a push \
         and a pop (the queue stays at ~{} items); all three nodes up. Per run: {:?} \
         without a snapshot (baseline), then `Raft::snapshot()` on the leader, then {:?} not \
         counted; {:?} warm-up before the first run. Rates are completed writes per second; \
         windows are {WINDOW_MS} ms, sliding in 1 ms steps: the worst one overlapping the \
         snapshot, and for comparison the worst one inside the baseline. \"Serialized by\" \
         and \"worst window starts at\" are offsets from the `Raft::snapshot()` call: a \
         worst window after the serialization falls in the write, fsync or compaction.\n",
        plan.items, STALL_BASELINE, STALL_RECOVERY, STALL_WARMUP
    );
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..STALL_CLIENTS)
        .map(|c| {
            let raft = leader.raft.clone();
            let stop = stop.clone();
            actix_rt::spawn(async move {
                let mut completions: Vec<u32> = Vec::new();
                let mut failed = 0u64;
                let mut consecutive = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let command = if i.is_multiple_of(2) {
                        QueueCommand::Push(item(u64::MAX / 2 + c as u64 * (1 << 32) + i))
                    } else {
                        QueueCommand::Pop
                    };
                    match raft.write(command).await {
                        Ok(_) => {
                            completions.push(epoch.elapsed().as_millis() as u32);
                            consecutive = 0;
                            i += 1;
                        }
                        Err(e) => {
                            failed += 1;
                            consecutive += 1;
                            if consecutive >= MAX_CONSECUTIVE_ERRORS {
                                return Err(format!(
                                    "{consecutive} consecutive failed writes, last: {e}"
                                ));
                            }
                        }
                    }
                }
                Ok((completions, failed))
            })
        })
        .collect();

    tokio::time::sleep(STALL_WARMUP).await;
    // (baseline start, snapshot start, snapshot end) per run, and the result.
    let mut marks = Vec::new();
    let mut outcome = Ok(());
    let mut last = LogId::default();
    for _ in 0..plan.runs {
        let base = epoch.elapsed();
        tokio::time::sleep(STALL_BASELINE).await;
        let from = epoch.elapsed();
        let at = build_once(leader, last).await;
        let to = epoch.elapsed();
        match at {
            Ok(b) => {
                last = b.at;
                let serialized_by = b
                    .serialized_at
                    .map(|t| t.saturating_duration_since(epoch).saturating_sub(from));
                marks.push((base, from, to, b.blocked, serialized_by));
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        tokio::time::sleep(STALL_RECOVERY).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut completions = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok((c, f))) => {
                completions.push(c);
                failed += f;
            }
            Ok(Err(e)) => outcome = outcome.and(Err(e)),
            Err(e) => outcome = outcome.and(Err(format!("a client died: {e}"))),
        }
    }
    outcome?;

    let timeline = Timeline::new(&completions);
    let ms_of = |d: Duration| d.as_millis() as usize;
    let runs: Vec<StallRun> = marks
        .iter()
        .map(|&(base, from, to, blocked, serialized_by)| {
            let (b, f, t) = (ms_of(base), ms_of(from), ms_of(to).max(ms_of(from) + 1));
            let (worst_during, worst_at) =
                timeline.worst_window((f + 1).saturating_sub(WINDOW_MS), t - 1);
            StallRun {
                baseline_rate: timeline.rate(b, f),
                during_rate: timeline.rate(f, t),
                worst_during,
                worst_at: worst_at as i64 - f as i64,
                worst_baseline: timeline
                    .worst_window(b, f.saturating_sub(WINDOW_MS).max(b))
                    .0,
                snapshot: to - from,
                blocked,
                serialized_by,
            }
        })
        .collect();

    println!(
        "| run | baseline writes/s | during snapshot writes/s | during / baseline | worst 100 ms \
         during snapshot (writes/s) | worst 100 ms in baseline (writes/s) | snapshot took | \
         blocked (handler) | serialized by | worst window starts at |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.0}% | {} | {} | {} | {} | {} | {:+} ms |",
            i + 1,
            rate(r.baseline_rate),
            rate(r.during_rate),
            100.0 * r.during_rate / r.baseline_rate.max(1.0),
            rate(r.worst_during),
            rate(r.worst_baseline),
            ms(r.snapshot),
            opt_ms(r.blocked),
            r.serialized_by
                .map_or("-".into(), |d| format!("+{}", ms(d))),
            r.worst_at,
        );
    }
    let base = median(runs.iter().map(|r| r.baseline_rate).collect());
    let during = median(runs.iter().map(|r| r.during_rate).collect());
    println!(
        "| **median of {}** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** | | |",
        runs.len(),
        opt_rate(base),
        opt_rate(during),
        match (base, during) {
            (Some(b), Some(d)) => format!("{:.0}%", 100.0 * d / b.max(1.0)),
            _ => "-".into(),
        },
        opt_rate(median(runs.iter().map(|r| r.worst_during).collect())),
        opt_rate(median(runs.iter().map(|r| r.worst_baseline).collect())),
        opt_ms(median(runs.iter().map(|r| r.snapshot).collect())),
        opt_ms(median(runs.iter().filter_map(|r| r.blocked).collect())),
    );
    println!();
    if failed > 0 {
        println!("note: {failed} writes failed during part 4 (retried with the next command)\n");
    }
    Ok(())
}
