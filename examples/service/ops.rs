//! Operator commands: `status` (the whole cluster as a table, from any one
//! member's address), `replace` (re-admit a voter whose disk was
//! replaced), `check disk` (is this directory fast enough for a node's
//! log) and `bench` (load a running cluster through its HTTP API).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::disk;
use super::http::{http, HttpConnection};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// HTTP address of any member (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub endpoint: String,
}

#[derive(clap::Args)]
pub struct ReplaceArgs {
    /// HTTP address of any member (HOST:PORT): the command asks it for
    /// the leader.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub endpoint: String,
    /// The voter whose data directory was replaced (already started again
    /// on its new directory with --join).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// A file whose first line is the cluster's admin token.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum Check {
    /// Measure durable-write latency and group-commit throughput of a
    /// directory, through regatta's fjall storage, and give a verdict.
    Disk(DiskArgs),
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

#[derive(clap::Args)]
pub struct BenchArgs {
    /// HTTP addresses to send to (HOST:PORT, comma-separated); clients are
    /// spread over them in turn.
    #[arg(long, default_value = "127.0.0.1:8001", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one keep-alive connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub clients: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// The write to send: `POST` to this path (the service's own default
    /// when omitted).
    #[arg(long)]
    pub path: Option<String>,
    /// JSON body of each request (none when omitted).
    #[arg(long)]
    pub body: Option<String>,
}

fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {endpoint:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{endpoint:?} resolves to no address"))
}

fn stats(addr: SocketAddr) -> Option<Value> {
    match http(addr, "GET", "/cluster/stats", None) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

/// `replace`: finds the leader through `--endpoint` and asks it to
/// re-admit voter `--id` on its new data directory.
pub fn replace(args: &ReplaceArgs) -> Result<(), String> {
    let token = match &args.admin_token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        None => None,
    };
    let seed = resolve(&args.endpoint)?;
    let status = match http(seed, "GET", "/cluster/status", None) {
        Ok((200, v)) => v,
        _ => {
            return Err(format!(
                "{} does not answer GET /cluster/status",
                args.endpoint
            ))
        }
    };
    let leader = status["leader_api"].as_str().ok_or_else(|| {
        format!(
            "{} knows no leader with an API address yet: retry shortly",
            args.endpoint
        )
    })?;
    let headers: Vec<(&str, String)> = token
        .iter()
        .map(|t| ("Authorization", format!("Bearer {t}")))
        .collect();
    let path = format!("/cluster/members/{}/replace", args.id);
    // The leader's wait stays inside this client's read timeout.
    let body = r#"{"catch_up_timeout_ms": 15000}"#;
    let (code, answer) = HttpConnection::connect(resolve(leader)?)
        .and_then(|mut c| c.request_with("POST", &path, Some(body), &headers))
        .map_err(|e| format!("POST {path} to the leader at {leader}: {e:?}"))?;
    if code != 200 {
        return Err(format!(
            "the leader at {leader} answered {code}: {}",
            answer["error"].as_str().unwrap_or(&answer.to_string())
        ));
    }
    let incarnation = answer["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"].as_u64() == Some(args.id)))
        .map(|m| m["incarnation"].clone())
        .unwrap_or(Value::Null);
    println!(
        "node {} votes again, as incarnation {incarnation}; voters now {}",
        args.id, answer["voters"]
    );
    Ok(())
}

/// `status`: asks one member for the configuration, then every member
/// for its own state; prints one row per member.
pub fn status(args: &StatusArgs) -> Result<(), String> {
    let first = resolve(&args.endpoint)?;
    let seed = stats(first).ok_or_else(|| {
        format!(
            "{} does not answer GET /cluster/stats: is a node serving there?",
            args.endpoint
        )
    })?;
    let membership = &seed["status"]["membership"];
    let mut ids: Vec<u64> = ["voters", "learners"]
        .iter()
        .flat_map(|k| membership[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let api_of = |id: u64| -> Option<String> {
        membership["metadata"][id.to_string()]["api"]
            .as_str()
            .map(str::to_string)
    };
    let answers: Vec<(u64, Option<String>, Option<Value>)> = ids
        .iter()
        .map(|&id| {
            let api = api_of(id);
            let answer = if seed["status"]["id"] == id {
                Some(seed.clone())
            } else {
                api.as_deref().and_then(|a| resolve(a).ok()).and_then(stats)
            };
            (id, api, answer)
        })
        .collect();
    let leader = answers
        .iter()
        .filter_map(|(_, _, s)| s.as_ref())
        .filter(|s| s["status"]["role"] == "leader")
        .max_by_key(|s| s["status"]["term"].as_u64());
    let header = [
        "ID",
        "API",
        "RAFT",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST LOG",
        "SNAPSHOT",
        "LAG",
        "CONTACT",
        "COMMIT P99",
    ];
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for (id, api, answer) in &answers {
        let raft = membership["addresses"][id.to_string()]
            .as_str()
            .unwrap_or("")
            .to_string();
        let text = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let progress = leader.map(|l| &l["status"]["replication"][id.to_string()]);
        let is_leader = leader.is_some_and(|l| l["status"]["id"] == *id);
        let lag = if is_leader {
            "0".into()
        } else {
            progress.map(|p| text(&p["lag"])).unwrap_or_default()
        };
        let contact = progress
            .and_then(|p| p["last_contact_ms"].as_u64())
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_default();
        let row = match answer {
            Some(s) => {
                let st = &s["status"];
                let p99 = if is_leader {
                    serde_json::from_value::<regatta::Histogram>(
                        s["histograms"]["commit_latency_us"].clone(),
                    )
                    .ok()
                    .and_then(|h| h.quantile(0.99))
                    .map(|us| format!("≤{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_default()
                } else {
                    String::new()
                };
                vec![
                    id.to_string(),
                    api.clone().unwrap_or_default(),
                    raft,
                    text(&st["role"]),
                    text(&st["term"]),
                    text(&st["leader"]),
                    text(&st["commit_index"]),
                    text(&st["last_applied"]),
                    text(&st["last_log_index"]),
                    text(&st["snapshot_index"]),
                    lag,
                    contact,
                    p99,
                ]
            }
            None => {
                let mut row = vec![
                    id.to_string(),
                    api.clone().unwrap_or_else(|| "(no api address)".into()),
                    raft,
                    "unreachable".into(),
                ];
                row.resize(header.len() - 3, String::new());
                row.extend([lag, contact, String::new()]);
                row
            }
        };
        rows.push(row);
    }
    print_table(&rows);
    match leader {
        Some(l) => println!(
            "leader: node {} in term {}",
            l["status"]["id"], l["status"]["term"]
        ),
        None => println!("no member reports itself leader"),
    }
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    println!("{rule}");
    for (i, row) in rows.iter().enumerate() {
        let line: String = widths
            .iter()
            .enumerate()
            .map(|(c, w)| {
                let cell = row.get(c).map_or("", String::as_str);
                format!("| {cell}{} ", " ".repeat(w - cell.chars().count()))
            })
            .collect();
        println!("{line}|");
        if i == 0 {
            println!("{rule}");
        }
    }
    println!("{rule}");
}

/// What a node's log needs from its disk (the etcd guidance for its WAL,
/// which does the same job): a single durable write's p99 within 10 ms,
/// since every commit waits for one on the leader and on a majority; and
/// group commit fast enough for bursts.
const MAX_SINGLE_WRITE_P99: Duration = Duration::from_millis(10);
const MIN_GROUP_COMMIT_ENTRIES_PER_SEC: f64 = 20_000.0;

/// `check disk`.
pub fn check_disk(args: &DiskArgs) -> Result<bool, String> {
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
        disk::PAYLOAD_BYTES
    );
    let single = disk::measure(&scratch.join("single"), 1, warmup, run)?;
    let group = disk::measure(&scratch.join("group"), 256, warmup, run)?;
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

/// `bench`: `clients` threads, each sending writes back to back on its own
/// keep-alive connection, for `seconds`; a progress bar on stderr, then
/// throughput and latency percentiles.
pub fn bench(args: &BenchArgs, default_path: &str) -> Result<(), String> {
    let endpoints: Vec<SocketAddr> = args
        .endpoints
        .iter()
        .map(|e| resolve(e))
        .collect::<Result<_, _>>()?;
    let path = args
        .path
        .clone()
        .unwrap_or_else(|| default_path.to_string());
    let run = Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|i| {
            let addr = endpoints[i as usize % endpoints.len()];
            let (stop, done, failed, latencies) = (
                stop.clone(),
                done.clone(),
                failed.clone(),
                latencies.clone(),
            );
            let (path, body) = (path.clone(), args.body.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => match HttpConnection::connect(addr) {
                            Ok(c) => c,
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        },
                    };
                    let t = Instant::now();
                    match c.request("POST", &path, body.as_deref()) {
                        Ok((status, _)) if (200..300).contains(&status) => {
                            mine.push(t.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                            conn = Some(c);
                        }
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = Some(c);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            })
        })
        .collect();
    let width = 30;
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_millis(200).min(run.saturating_sub(started.elapsed())));
        let elapsed = started.elapsed().min(run);
        let filled = (elapsed.as_secs_f64() / run.as_secs_f64() * width as f64) as usize;
        eprint!(
            "\r[{}{}] {:>4.1}/{} s  {} ok  {} failed ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            elapsed.as_secs_f64(),
            args.seconds,
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    eprintln!();
    let mut all = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
    };
    println!(
        "{} clients over {} endpoint(s), POST {path}, {:.1} s",
        args.clients,
        endpoints.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "{} writes ok, {} failed: {:.0} writes/s",
        all.len(),
        failed.load(Ordering::Relaxed),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency p50 {}  p90 {}  p99 {}  max {}",
        q(0.5),
        q(0.9),
        q(0.99),
        all.last()
            .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
    );
    if all.is_empty() {
        return Err("no write succeeded: is the cluster up, and is the path right?".into());
    }
    Ok(())
}
