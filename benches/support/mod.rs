//! What the benchmarks share: argument parsing, statistics, where their
//! data goes, and starting and stopping in-process nodes. Each bench uses a
//! part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use regatta::{Config, InitialCluster, Node, NodeId, StateMachine};

/// The bench's positional arguments, parsed by `parse`. `-h`/`--help`
/// prints `usage` and exits; a parse error prints it with the error and
/// exits with status 2. Flags (`cargo bench` appends `--bench`) are
/// ignored.
pub fn plan_from_args<P>(usage: &str, parse: impl FnOnce(&[String]) -> Result<P, String>) -> P {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.iter().any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        std::process::exit(0);
    }
    let args: Vec<String> = all.into_iter().filter(|a| !a.starts_with("--")).collect();
    parse(&args).unwrap_or_else(|e| {
        eprintln!("error: {e}\n\n{usage}");
        std::process::exit(2);
    })
}

/// `arg` as a positive integer, or an error naming `what`.
pub fn positive<T: FromStr + PartialOrd + Default>(arg: &str, what: &str) -> Result<T, String> {
    match arg.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("{what} must be a positive integer, got {arg:?}")),
    }
}

/// The environment variable `name` as seconds (0 to 86,400), or `default`.
pub fn seconds_from_env(name: &str, default: f64) -> Result<Duration, String> {
    let value = match std::env::var(name) {
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => return Ok(Duration::from_secs_f64(default)),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{name} must be a number of seconds between 0 and 86400, got {value:?}"
        )),
    }
}

/// The nodes' configuration: the defaults, but for `REGATTA_IDLE_SPIN_US`
/// (microseconds a node thread stays awake before it sleeps, `Config::idle_spin`)
/// when set, to compare settings on one build. Exits on a bad value, with
/// `Config::validate`'s reason when the number is out of its range.
pub fn bench_config() -> Config {
    let mut config = Config::default();
    if let Ok(value) = std::env::var("REGATTA_IDLE_SPIN_US") {
        let Ok(us) = value.trim().parse::<u64>() else {
            eprintln!("REGATTA_IDLE_SPIN_US must be a number of microseconds, got {value:?}");
            std::process::exit(2);
        };
        config.idle_spin = Duration::from_micros(us);
        if let Err(why) = config.validate() {
            eprintln!("REGATTA_IDLE_SPIN_US: {why}");
            std::process::exit(2);
        }
    }
    config
}

/// The element at quantile `p` of a sorted, non-empty slice.
pub fn quantile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The median (upper median for an even count), or `None` when empty.
pub fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

/// The median rate and the medians of the percentiles of several runs,
/// formatted (`-` where no run has one).
pub fn medians(samples: &[Sample]) -> (String, String, String) {
    let rate = median(samples.iter().map(|s| s.per_sec).collect())
        .map_or("-".into(), |r| format!("{r:.0}"));
    let p50 = median(samples.iter().filter_map(|s| s.p50).collect())
        .map_or("-".into(), |d| format!("{d:.2?}"));
    let p99 = median(samples.iter().filter_map(|s| s.p99).collect())
        .map_or("-".into(), |d| format!("{d:.2?}"));
    (rate, p50, p99)
}

/// Throughput and latency percentiles of one run.
pub struct Sample {
    /// Operations (batches or writes) per second.
    pub per_sec: f64,
    /// `None` when not one operation succeeded.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub errors: u64,
}

impl Sample {
    /// From the latency of every successful operation.
    pub fn from_latencies(lat: &mut [Duration], elapsed: Duration, errors: u64) -> Sample {
        lat.sort_unstable();
        let (p50, p99) = if lat.is_empty() {
            (None, None)
        } else {
            (Some(quantile(lat, 0.50)), Some(quantile(lat, 0.99)))
        };
        Sample {
            per_sec: lat.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            p50,
            p99,
            errors,
        }
    }
}

/// A fresh directory under `$TMPDIR` (or `/tmp`), named `prefix…`.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    let base = std::env::temp_dir();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| {
            format!(
                "cannot create a temporary directory under {}: {e}",
                base.display()
            )
        })
}

/// The file system type and device holding `path`, from /proc/mounts
/// (Linux; `None` elsewhere or when unreadable).
pub fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            // Spaces in mount points are escaped as \040.
            let point = PathBuf::from(fields.next()?.replace("\\040", " "));
            let kind = fields.next()?;
            path.starts_with(&point)
                .then(|| (point.components().count(), format!("{kind} ({device})")))
        })
        // The last of the longest matches: later mounts shadow earlier ones.
        .fold(
            None,
            |best: Option<(usize, String)>, (depth, what)| match &best {
                Some((d, _)) if *d > depth => best,
                _ => Some((depth, what)),
            },
        )
        .map(|(_, what)| what)
}

/// Starts node `id` of `founders` running `state_machine`: a regatta
/// `Node` on a thread of its own, fjall in `dir`, TCP on an ephemeral port
/// of 127.0.0.1. The founders are listed without addresses (the OS picks
/// the ports); [`connect`] tells the nodes each other's once all listen.
pub async fn start_node<S: StateMachine + Send>(
    id: NodeId,
    state_machine: S,
    cluster_name: &str,
    dir: PathBuf,
    founders: &InitialCluster,
    config: Config,
    tls: Option<regatta::transport::tls::TlsConfig>,
) -> Result<Node<S>, String> {
    let mut builder = Node::builder(id, state_machine)
        .cluster_name(cluster_name)
        .data_dir(dir)
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .initial_cluster(founders.clone())
        .config(config);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.start().await.map_err(|e| format!("node {id}: {e}"))
}

/// Tells every node every node's address.
pub fn connect<'a, S: StateMachine + 'a>(nodes: impl IntoIterator<Item = &'a Node<S>>) {
    let nodes: Vec<&Node<S>> = nodes.into_iter().collect();
    let addrs: Vec<(NodeId, SocketAddr)> = nodes.iter().map(|n| (n.id(), n.raft_addr())).collect();
    for node in &nodes {
        for (id, addr) in &addrs {
            node.set_peer_address(*id, *addr);
        }
    }
}

/// Stops every node cleanly (queued log writes made durable, threads
/// joined), all at once: a node stopped after the others would find them
/// gone and warn that it cannot reach them.
pub async fn stop_nodes<S: StateMachine>(nodes: impl IntoIterator<Item = Node<S>>) {
    futures_util::future::join_all(nodes.into_iter().map(Node::shutdown)).await;
}

/// A progress line on stderr that the next one (or `progress("")`)
/// erases; nothing when stderr is not a terminal.
pub fn progress(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{line}");
    }
}

/// The median round trip of a small message over TCP on 127.0.0.1 (no
/// Nagle delay), measured with `rounds` ping-pongs between two threads:
/// the network part of the physical limit of one replicated write.
pub fn loopback_rtt(rounds: usize) -> Result<Duration, String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = [7u8; 64];
    let mut rtts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        s.write_all(&buf).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        rtts.push(t.elapsed());
    }
    drop(s);
    let _ = echo.join();
    rtts.sort_unstable();
    rtts.get(rtts.len() / 2)
        .copied()
        .ok_or_else(|| "no round trip measured".to_string())
}
