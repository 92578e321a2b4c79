//! `regatta bench`: clients writing back to back through the service's
//! HTTP API, each on its own keep-alive connection (the regatta client),
//! for a fixed time; a progress line on stderr, then throughput and
//! latency percentiles.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use awc::http::Method;
use bytes::Bytes;
use regatta::client::Client;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// HTTP addresses to send to (HOST:PORT, comma-separated); clients are
    /// spread over them in turn.
    #[arg(
        long,
        alias = "endpoint",
        default_value = "127.0.0.1:8001",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// The write to send, e.g. /counter/incr. `{n}` in the path or the
    /// body becomes a number unique to each request (fresh keys:
    /// `--path '/kv/k{n}'`).
    #[arg(long)]
    pub path: String,
    /// Its method.
    #[arg(long, default_value = "POST")]
    pub method: Method,
    /// JSON body of each request (none when omitted).
    #[arg(long)]
    pub body: Option<String>,
    /// Write in exactly-once sessions (one per client), as a careful
    /// client does.
    #[arg(long)]
    pub session: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub clients: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Stop after this many requests have been sent, if before the time
    /// is up (with `{n}`: load exactly this many keys).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Threads the clients run on.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
}

/// What the clients share.
struct Tally {
    stop: AtomicBool,
    /// Requests handed out (`{n}` of the next one).
    next: AtomicU64,
    /// Stop handing out requests here.
    limit: u64,
    done: AtomicU64,
    failed: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    first_error: Mutex<Option<String>>,
    /// The longest a failed request took (a client timeout shows here).
    slowest_failure: Mutex<Duration>,
}

pub fn run(args: &BenchArgs) -> Result<(), String> {
    if let Some(body) = &args.body {
        serde_json::from_str::<serde_json::Value>(&body.replace(NUMBER, "0"))
            .map_err(|e| format!("--body is not JSON: {e}"))?;
    }
    // Checked once here, so the clients' own construction cannot fail.
    Client::new(&args.endpoints).map_err(|e| e.to_string())?;
    let tally = Arc::new(Tally {
        stop: AtomicBool::new(false),
        next: AtomicU64::new(0),
        limit: args.requests.unwrap_or(u64::MAX),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latencies: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
        slowest_failure: Mutex::new(Duration::ZERO),
    });
    let run = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let clients: Vec<u64> = (0..args.clients)
                .filter(|c| c % args.threads == t)
                .collect();
            let endpoints = args.endpoints.clone();
            let (method, path, session) = (args.method.clone(), args.path.clone(), args.session);
            let body = args.body.clone().map(Bytes::from);
            let tally = tally.clone();
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let tasks: Vec<_> = clients
                        .into_iter()
                        .map(|c| {
                            let endpoint = &endpoints[c as usize % endpoints.len()];
                            let client = Client::new([endpoint]).expect("checked above");
                            let write = Request {
                                method: method.clone(),
                                path: path.clone(),
                                body: body.clone(),
                            };
                            actix_rt::spawn(client_loop(client, write, session, tally.clone()))
                        })
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                })
            })
        })
        .collect();
    let width = 30;
    while started.elapsed() < run && !tally.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200).min(run.saturating_sub(started.elapsed())));
        let elapsed = started.elapsed().min(run);
        let filled = (elapsed.as_secs_f64() / run.as_secs_f64() * width as f64) as usize;
        eprint!(
            "\r[{}{}] {:>4.1}/{} s  {} ok  {} failed ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            elapsed.as_secs_f64(),
            args.seconds,
            tally.done.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
        let _ = std::io::stderr().flush();
    }
    tally.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed();
    eprintln!();
    report(args, &tally, elapsed)
}

/// Replaced by a number unique to each request.
const NUMBER: &str = "{n}";

struct Request {
    method: Method,
    path: String,
    body: Option<Bytes>,
}

impl Request {
    /// The `n`th request: `{n}` filled in, where there is one.
    fn numbered(&self, n: u64) -> (String, Option<Bytes>) {
        let fill = |s: &str| s.replace(NUMBER, &n.to_string());
        let path = if self.path.contains(NUMBER) {
            fill(&self.path)
        } else {
            self.path.clone()
        };
        let body = self.body.as_ref().map(|b| match std::str::from_utf8(b) {
            Ok(text) if text.contains(NUMBER) => Bytes::from(fill(text)),
            _ => b.clone(),
        });
        (path, body)
    }
}

async fn client_loop(client: Client, write: Request, session: bool, tally: Arc<Tally>) {
    let mut mine = Vec::new();
    let mut open = None;
    while !tally.stop.load(Ordering::Relaxed) {
        if session && open.is_none() {
            open = client.session().await.ok();
            if open.is_none() {
                continue;
            }
        }
        let n = tally.next.fetch_add(1, Ordering::Relaxed);
        if n >= tally.limit {
            tally.stop.store(true, Ordering::Relaxed);
            break;
        }
        let (path, body) = write.numbered(n);
        let t = Instant::now();
        let result = match &open {
            Some(s) => {
                s.send::<serde_json::Value>(write.method.clone(), &path, body)
                    .await
            }
            None => {
                client
                    .send::<serde_json::Value>(write.method.clone(), &path, body)
                    .await
            }
        };
        match result {
            Ok(_) => {
                mine.push(t.elapsed());
                tally.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                {
                    let mut slowest = tally
                        .slowest_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    *slowest = (*slowest).max(t.elapsed());
                }
                if matches!(e, regatta::client::ClientError::SessionGone(_)) {
                    open = None;
                }
                let mut first = tally.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
    tally
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(mine);
}

fn report(args: &BenchArgs, tally: &Tally, elapsed: Duration) -> Result<(), String> {
    let mut all = std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
    };
    println!(
        "{} clients over {} endpoint(s), {} {}{}, {:.1} s",
        args.clients,
        args.endpoints.len(),
        args.method,
        args.path,
        if args.session { " in sessions" } else { "" },
        elapsed.as_secs_f64()
    );
    println!(
        "{} writes ok, {} failed: {:.0} writes/s",
        all.len(),
        tally.failed.load(Ordering::Relaxed),
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
    if let Some(e) = tally
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        let slowest = *tally
            .slowest_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        println!(
            "first error: {e} (slowest failure: {:.2} ms)",
            slowest.as_secs_f64() * 1e3
        );
    }
    if all.is_empty() {
        return Err("no write succeeded: is the cluster up, and is the path right?".into());
    }
    Ok(())
}
