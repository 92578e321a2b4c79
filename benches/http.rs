//! End-to-end write throughput and latency through the HTTP API of a
//! three-process cluster of the counter example (`counter serve`, as in
//! README.md "A three-process cluster"): three OS processes on 127.0.0.1,
//! each with its own fjall log (fsync per batch) in a temporary directory,
//! Raft over TCP and actix-web on loopback.
//!
//! `cargo bench` does not build examples, so build the release example
//! binary first:
//!
//! ```text
//! cargo build --release --example counter && cargo bench --bench http
//! ```
//!
//! ```text
//! cargo bench --bench http              # clients 1, 16, 64, 256, 5 runs each
//! cargo bench --bench http -- 64        # 64 clients, 5 runs
//! cargo bench --bench http -- 64 3      # 64 clients, 3 runs
//! ```
//!
//! Every client is one OS thread with one persistent keep-alive HTTP/1.1
//! connection (a hand-rolled client: the request with a Content-Length,
//! headers read up to `\r\n\r\n`, then exactly Content-Length body bytes),
//! sending `POST /counter/incr` `{"by":1}` back-to-back. Two tables:
//!
//! - **leader**: every client talks to the leader's HTTP address;
//! - **spread**: client `i` talks to node `i mod 3`, the two followers
//!   first, so a lone client is always forwarded and larger counts send
//!   about two thirds of the writes through a follower (which forwards them
//!   to the leader over the Raft transport).
//!
//! A fresh cluster per table row: started, waited for (bounded) until all
//! three nodes agree on a leader through `GET /cluster/status`, one write
//! to prove it commits, a warm-up with that many clients, then the runs.
//! Each run opens new connections before the clock starts. Printed per
//! row: the median over runs of writes/s (200 answers per second), the
//! medians of the per-run p50 and p99 latency of a 200 answer, and the
//! number of non-200 answers and of I/O errors (timeouts, closed or refused
//! connections) over the measured runs; notes below each table say what
//! went wrong (status codes with a sample body, WARN/ERROR lines the nodes
//! logged after start-up, a leader change, a node that exited badly).
//!
//! Environment (seconds, fractions allowed):
//!
//! - `HTTP_BENCH_SECS`: length of one run (default 3);
//! - `HTTP_BENCH_WARMUP_SECS`: warm-up per row, not measured (default 1).
//!
//! A smoke test: `HTTP_BENCH_SECS=0.5 HTTP_BENCH_WARMUP_SECS=0.2 cargo
//! bench --bench http -- 16 1`.
//!
//! The clients run on the same machine as the three servers and compete
//! with them for the CPU. Data directories and the nodes' logs (stderr, at
//! the default `info` level) go to a temporary directory under `$TMPDIR`
//! (else `/tmp`), kept and printed when a row fails. The child processes
//! are killed when the bench exits, errors included (a drop guard; on Linux
//! also `PR_SET_PDEATHSIG`, should the bench itself be killed).

mod support;
use support::{file_system_of, median, plan_from_args, positive, seconds_from_env, Sample};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

const EXAMPLE: &str = "counter";
const CLIENT_COUNTS: [usize; 4] = [1, 16, 64, 256];
const DEFAULT_RUNS: usize = 5;
const NODES: u64 = 3;
const WRITE_PATH: &str = "/counter/incr";
const WRITE_BODY: &str = r#"{"by":1}"#;
/// One HTTP exchange may take this long: more than the services' request
/// timeout (5 s), so their own 503 answers arrive first.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a cluster's start-up: a leader all agree on plus one commit.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a node's exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting a cluster when a port turned out to be taken.
const START_ATTEMPTS: usize = 3;
const CLIENT_STACK: usize = 256 * 1024;
/// Log lines quoted per row in the notes.
const QUOTED_LINES: usize = 3;

const USAGE: &str = "\
usage: cargo bench --bench http -- [CLIENTS [RUNS]]

  (none)         clients 1, 16, 64 and 256, 5 runs each
  CLIENTS        that many clients only
  CLIENTS RUNS   that many clients, RUNS runs

CLIENTS and RUNS are positive integers. Build the server binary first:
  cargo build --release --example counter

environment (seconds, fractions allowed):
  HTTP_BENCH_SECS          one run (default 3)
  HTTP_BENCH_WARMUP_SECS   warm-up per client count and table (default 1)";

// ---------------------------------------------------------------------------
// Command line

struct Plan {
    clients: Vec<usize>,
    runs: usize,
    run: Duration,
    warmup: Duration,
}

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        clients: CLIENT_COUNTS.to_vec(),
        runs: DEFAULT_RUNS,
        run: seconds_from_env("HTTP_BENCH_SECS", 3.0)?,
        warmup: seconds_from_env("HTTP_BENCH_WARMUP_SECS", 1.0)?,
    };
    match args {
        [] => {}
        [clients] => plan.clients = vec![positive(clients, "CLIENTS")?],
        [clients, runs] => {
            plan.clients = vec![positive(clients, "CLIENTS")?];
            plan.runs = positive(runs, "RUNS")?;
        }
        _ => return Err(format!("too many arguments: {args:?}")),
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------
// The server binary

/// `target/release/examples/counter`, next to this bench's `deps` directory.
fn example_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("path of this bench: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    Ok(profile_dir.join("examples").join(EXAMPLE))
}

/// The newest source file the binary depends on, when it is newer than
/// the binary (a stale build would measure old code).
fn newer_source(binary: &Path) -> Option<PathBuf> {
    fn newest(path: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    newest(&entry.path(), best);
                }
            }
        } else if let Ok(modified) = meta.modified() {
            if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                *best = Some((modified, path.to_path_buf()));
            }
        }
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut best = None;
    // Sources only: cargo does not relink the binary for a Cargo.toml or
    // Cargo.lock change that leaves it as it was.
    for part in ["src", "examples"] {
        newest(&root.join(part), &mut best);
    }
    best.filter(|(t, _)| *t > built).map(|(_, path)| path)
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client

/// One answer.
struct Response {
    status: u16,
    body: Vec<u8>,
    /// The server said `Connection: close`.
    close: bool,
}

/// One keep-alive connection.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let setup = |e: std::io::Error| format!("set up connection to {addr}: {e}");
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(setup)?;
        stream
            .set_write_timeout(Some(HTTP_TIMEOUT))
            .map_err(setup)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Reads more bytes into `buf`; an error at end of stream.
    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Sends one complete request and reads its answer.
    fn exchange(&mut self, request: &[u8]) -> Result<Response, String> {
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        let mut scanned = 0;
        let head_end = loop {
            if let Some(i) = self.buf[scanned..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break scanned + i;
            }
            scanned = self.buf.len().saturating_sub(3);
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "response head is not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = match status_line.split(' ').collect::<Vec<_>>()[..] {
            [version, code, ..] if version.starts_with("HTTP/1.") => code
                .parse()
                .map_err(|_| format!("bad status line {status_line:?}"))?,
            _ => return Err(format!("bad status line {status_line:?}")),
        };
        let mut length = None;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
        }
        let length = length.ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        let end = head_end + 4 + length;
        while self.buf.len() < end {
            self.fill()?;
        }
        let body = self.buf[head_end + 4..end].to_vec();
        self.buf.drain(..end);
        Ok(Response {
            status,
            body,
            close,
        })
    }
}

fn request(method: &str, addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One exchange on a fresh connection.
fn http_once(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<Response, String> {
    Conn::connect(addr)?.exchange(&request(method, addr, path, body))
}

/// `GET /cluster/status`, when it answers 200 with JSON.
fn status(addr: SocketAddr) -> Option<Value> {
    match http_once(addr, "GET", "/cluster/status", "") {
        Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).ok(),
        _ => None,
    }
}

fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_string()
    }
}

// ---------------------------------------------------------------------------
// The cluster of serve processes

/// Picks a port outside Linux's ephemeral range (32768–60999), so that no
/// outgoing connection takes it between this check and the server's bind.
fn free_port(taken: &mut Vec<u16>) -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
}

struct Node {
    id: u64,
    http: SocketAddr,
    raft: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// Three `serve` processes; dropping it kills them. The temporary directory
/// is removed, unless [`Cluster::keep`] was called.
struct Cluster {
    nodes: Vec<Node>,
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

/// Start-up failed because a port was taken after all: worth a retry.
struct PortTaken(String);

impl Cluster {
    fn start(binary: &Path) -> Result<(Cluster, u64), String> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(binary) {
                Ok(started) => return Ok(started),
                Err(Ok(PortTaken(e))) => {
                    progress("");
                    eprintln!("[http] start-up attempt {attempt}: {e}; retrying on new ports");
                    last = e;
                }
                Err(Err(e)) => return Err(e),
            }
        }
        Err(last)
    }

    fn try_start(binary: &Path) -> Result<(Cluster, u64), Result<PortTaken, String>> {
        let dir = tempfile::Builder::new()
            .prefix("regatta-http-")
            .tempdir()
            .map_err(|e| Err(format!("cannot create a temporary directory: {e}")))?;
        let mut taken = Vec::new();
        let nodes: Vec<Node> = (1..=NODES)
            .map(|id| Node {
                id,
                http: SocketAddr::from(([127, 0, 0, 1], free_port(&mut taken))),
                raft: SocketAddr::from(([127, 0, 0, 1], free_port(&mut taken))),
                log: dir.path().join(format!("node-{id}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.raft))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            nodes,
            dir: Some(dir),
            keep: false,
        };
        let root = cluster.root();
        for node in &mut cluster.nodes {
            let log = std::fs::File::create(&node.log)
                .map_err(|e| Err(format!("cannot create {}: {e}", node.log.display())))?;
            let mut command = Command::new(binary);
            command
                .arg("serve")
                .args(["--id", &node.id.to_string()])
                .arg("--data-dir")
                .arg(root.join(format!("node-{}", node.id)))
                .args(["--raft-addr", &node.raft.to_string()])
                .args(["--http-addr", &node.http.to_string()])
                .args(["--initial-cluster", &initial_cluster])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            die_with_parent(&mut command);
            let child = command.spawn().map_err(|e| {
                Err(format!(
                    "cannot start {} serve (node {}): {e}",
                    binary.display(),
                    node.id
                ))
            })?;
            node.child = Some(child);
        }
        match cluster.wait_ready() {
            Ok(leader) => Ok((cluster, leader)),
            Err(e) => {
                let port_taken = cluster.nodes.iter().any(|n| {
                    std::fs::read_to_string(&n.log)
                        .is_ok_and(|log| log.contains("cannot listen") && log.contains("in use"))
                });
                if port_taken {
                    // Nothing worth keeping: the next attempt starts afresh.
                    Err(Ok(PortTaken(e)))
                } else {
                    cluster.keep();
                    Err(Err(e))
                }
            }
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.as_ref().map_or_else(
            || PathBuf::from("(removed)"),
            |dir| dir.path().to_path_buf(),
        )
    }

    /// Keep the directory (data and logs) and print where it is.
    fn keep(&mut self) {
        self.keep = true;
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// A node that has exited, with its status and the end of its log.
    fn exited(&mut self) -> Option<String> {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Some(format!(
                        "node {} exited ({status}); its log ends with:\n{}",
                        node.id,
                        log_tail(&node.log, 10)
                    ));
                }
            }
        }
        None
    }

    /// Waits until every node answers and all agree on a leader that knows
    /// it leads, then makes one write through it; returns the leader.
    fn wait_ready(&mut self) -> Result<u64, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: String;
        let leader = loop {
            if let Some(e) = self.exited() {
                return Err(e);
            }
            let seen: Vec<Option<Value>> = self.nodes.iter().map(|n| status(n.http)).collect();
            let leaders: Vec<Option<u64>> = seen
                .iter()
                .map(|s| s.as_ref().and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                let leader = *leader;
                let agreed = leaders.iter().all(|l| *l == Some(leader));
                let in_office = (1..=NODES).contains(&leader)
                    && seen[(leader - 1) as usize]
                        .as_ref()
                        .is_some_and(|s| s["role"] == "leader");
                if agreed && in_office {
                    break leader;
                }
            }
            last = format!("leaders seen: {leaders:?}");
            if Instant::now() >= deadline {
                return Err(format!("no agreed leader after {READY_TIMEOUT:?} ({last})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // One write proves the cluster commits before anything is timed.
        let addr = self.node(leader).http;
        loop {
            match http_once(addr, "POST", WRITE_PATH, WRITE_BODY) {
                Ok(r) if r.status == 200 => return Ok(leader),
                Ok(r) => last = format!("first write: {} {}", r.status, body_text(&r.body)),
                Err(e) => last = format!("first write: {e}"),
            }
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!("no commit after {READY_TIMEOUT:?} ({last})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Current sizes of the nodes' logs, to scan what comes after.
    fn log_marks(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| std::fs::metadata(&n.log).map_or(0, |m| m.len()))
            .collect()
    }

    /// WARN and ERROR lines logged since `marks`: per node, the count and
    /// the first few (timestamps cut).
    fn problems_since(&self, marks: &[u64]) -> Vec<(u64, usize, Vec<String>)> {
        let mut found = Vec::new();
        for (node, mark) in self.nodes.iter().zip(marks) {
            let Ok(bytes) = std::fs::read(&node.log) else {
                continue;
            };
            let from = (*mark as usize).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[from..]);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            if !lines.is_empty() {
                let quoted = lines
                    .iter()
                    .take(QUOTED_LINES)
                    .map(|l| {
                        let l = l.split_once(' ').map_or(*l, |(_, rest)| rest).trim();
                        body_text(l.as_bytes())
                    })
                    .collect();
                found.push((node.id, lines.len(), quoted));
            }
        }
        found
    }

    /// SIGTERM to every node, then a bounded wait; returns what went wrong.
    fn stop(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for node in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                notes.push(format!(
                    "node {} had exited ({status}) before the end; its log ends with:\n{}",
                    node.id,
                    log_tail(&node.log, 5)
                ));
            } else {
                // SAFETY: kill(2) on the pid of a child not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        notes.push(format!(
                            "node {} exited with {status} after SIGTERM; its log ends with:\n{}",
                            node.id,
                            log_tail(&node.log, 5)
                        ));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) | Err(_) => {
                        notes.push(format!(
                            "node {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed",
                            node.id
                        ));
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        notes
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.keep || std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                progress("");
                eprintln!("[http] keeping logs and data in {}", dir.keep().display());
            }
        }
    }
}

/// On Linux, the child gets SIGKILL when this process dies, even killed.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the bench exited during the spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n    ");
            format!("    {tail}")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------
// Clients

/// What one client (or a whole run) saw.
#[derive(Default)]
struct Tally {
    /// Latencies of the 200 answers.
    latencies: Vec<Duration>,
    /// Non-200 answers by status, with the first body of each.
    non_200: BTreeMap<u16, (u64, String)>,
    io_errors: u64,
    first_io_error: Option<String>,
}

impl Tally {
    fn io_error(&mut self, e: String) {
        self.io_errors += 1;
        self.first_io_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (status, (n, body)) in other.non_200 {
            self.non_200.entry(status).or_insert((0, body)).0 += n;
        }
        self.io_errors += other.io_errors;
        if self.first_io_error.is_none() {
            self.first_io_error = other.first_io_error;
        }
    }

    fn non_200_count(&self) -> u64 {
        self.non_200.values().map(|(n, _)| n).sum()
    }
}

/// The start signal: `None` until the clients may go, then the end of the
/// run.
type Gate = Arc<(Mutex<Option<Instant>>, Condvar)>;

/// One client: connect, wait for the gate, then write back-to-back until
/// the deadline, reconnecting after a failed or closed connection.
fn client(addr: SocketAddr, gate: Gate, ready: mpsc::Sender<()>) -> Tally {
    let mut tally = Tally {
        latencies: Vec::with_capacity(4096),
        ..Tally::default()
    };
    let request = request("POST", addr, WRITE_PATH, WRITE_BODY);
    let mut conn = Conn::connect(addr).map_err(|e| tally.io_error(e)).ok();
    let _ = ready.send(());
    let deadline = {
        let (lock, cvar) = &*gate;
        let mut end = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(end) = *end {
                break end;
            }
            end = cvar.wait(end).unwrap_or_else(|e| e.into_inner());
        }
    };
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.io_error(e);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let t = Instant::now();
        match c.exchange(&request) {
            Ok(r) => {
                if r.status == 200 {
                    tally.latencies.push(t.elapsed());
                } else {
                    tally
                        .non_200
                        .entry(r.status)
                        .or_insert_with(|| (0, body_text(&r.body)))
                        .0 += 1;
                }
                if r.close {
                    conn = None;
                }
            }
            Err(e) => {
                tally.io_error(e);
                conn = None;
            }
        }
    }
    tally
}

/// One run: `targets.len()` clients, client `i` on `targets[i]`, for `run`
/// after all have connected. Returns the tally and the elapsed time.
fn run_clients(targets: &[SocketAddr], run: Duration) -> Result<(Tally, Duration), String> {
    let gate: Gate = Arc::new((Mutex::new(None), Condvar::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(targets.len());
    let mut spawn_error = None;
    for (i, &addr) in targets.iter().enumerate() {
        let (gate, ready) = (gate.clone(), ready_tx.clone());
        match std::thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || client(addr, gate, ready))
        {
            Ok(t) => threads.push(t),
            Err(e) => {
                spawn_error = Some(format!("cannot start client thread {i}: {e}"));
                break;
            }
        }
    }
    drop(ready_tx);
    // Every client connects (bounded by the connect timeout) first.
    let wait_until = Instant::now() + CONNECT_TIMEOUT * 2;
    for _ in 0..threads.len() {
        let left = wait_until.saturating_duration_since(Instant::now());
        if ready_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let start = Instant::now();
    {
        let (lock, cvar) = &*gate;
        let end = if spawn_error.is_some() {
            start
        } else {
            start + run
        };
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
        cvar.notify_all();
    }
    let mut tally = Tally::default();
    let mut panicked = 0;
    for t in threads {
        match t.join() {
            Ok(t) => tally.merge(t),
            Err(_) => panicked += 1,
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = spawn_error {
        return Err(e);
    }
    if panicked > 0 {
        return Err(format!("{panicked} client threads panicked"));
    }
    Ok((tally, elapsed))
}

/// A progress line on stderr that the next one (or `progress("")`)
/// erases; nothing when stderr is not a terminal.
fn progress(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{line}");
    }
}

// ---------------------------------------------------------------------------
// Statistics

// ---------------------------------------------------------------------------
// Measuring

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Every client on the leader.
    Leader,
    /// Client `i` on node `i mod 3`, followers first.
    Spread,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::Spread => "spread",
        }
    }
}

/// One table row.
struct Row {
    samples: Vec<Sample>,
    non_200: u64,
    io_errors: u64,
    /// Clients talking to a follower.
    on_followers: usize,
    notes: Vec<String>,
}

fn describe_failures(what: &str, tally: &Tally, notes: &mut Vec<String>) {
    for (status, (n, body)) in &tally.non_200 {
        notes.push(format!("{what}: {n} × {status}, e.g. {body}"));
    }
    if tally.io_errors > 0 {
        notes.push(format!(
            "{what}: {} I/O errors, the first: {}",
            tally.io_errors,
            tally.first_io_error.as_deref().unwrap_or("?")
        ));
    }
}

/// A fresh cluster, a warm-up, `plan.runs` runs.
fn measure_row(plan: &Plan, binary: &Path, target: Target, clients: usize) -> Result<Row, String> {
    let (mut cluster, leader) = Cluster::start(binary)?;
    let result = measure_on(&cluster, leader, plan, target, clients);
    match result {
        Ok(mut row) => {
            row.notes.extend(cluster.stop());
            Ok(row)
        }
        Err(e) => {
            cluster.keep();
            Err(e)
        }
    }
}

fn measure_on(
    cluster: &Cluster,
    leader: u64,
    plan: &Plan,
    target: Target,
    clients: usize,
) -> Result<Row, String> {
    let leader_addr = cluster.node(leader).http;
    let term = status(leader_addr).and_then(|s| s["term"].as_u64());
    let mut order: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.http)
        .collect();
    order.push(leader_addr);
    let targets: Vec<SocketAddr> = match target {
        Target::Leader => vec![leader_addr; clients],
        Target::Spread => (0..clients).map(|i| order[i % order.len()]).collect(),
    };
    let on_followers = targets.iter().filter(|a| **a != leader_addr).count();
    let what = format!("{clients} clients → {}", target.name());
    progress(&format!(
        "[http] {what}: leader node {leader}, warming up ({})",
        cluster.root().display()
    ));

    let marks = cluster.log_marks();
    let mut notes = Vec::new();
    let (warm, _) = run_clients(&targets, plan.warmup)?;
    describe_failures(&format!("{what}, warm-up"), &warm, &mut notes);

    let mut samples = Vec::with_capacity(plan.runs);
    let mut all = Tally::default();
    for i in 1..=plan.runs {
        progress(&format!("[http] {what}: run {i}/{}", plan.runs));
        let (mut tally, elapsed) = run_clients(&targets, plan.run)?;
        samples.push(Sample::from_latencies(&mut tally.latencies, elapsed, 0));
        tally.latencies = Vec::new();
        all.merge(tally);
    }
    progress("");
    describe_failures(&what, &all, &mut notes);

    match status(leader_addr) {
        Some(s) if s["role"] == "leader" && s["term"].as_u64() == term => {}
        Some(s) => notes.push(format!(
            "{what}: node {leader} lost leadership during the runs (now {}, term {}, \
             leader {}); writes were forwarded",
            s["role"], s["term"], s["leader"]
        )),
        None => notes.push(format!(
            "{what}: node {leader} no longer answers GET /cluster/status"
        )),
    }
    for (node, count, quoted) in cluster.problems_since(&marks) {
        notes.push(format!(
            "{what}: node {node} logged {count} WARN/ERROR lines after start-up, \
             the first:\n    {}",
            quoted.join("\n    ")
        ));
    }
    Ok(Row {
        samples,
        non_200: all.non_200_count(),
        io_errors: all.io_errors,
        on_followers,
        notes,
    })
}

fn table(plan: &Plan, binary: &Path, target: Target) -> Result<(), String> {
    match target {
        Target::Leader => {
            println!("## HTTP writes through the leader: 3 `counter serve` processes\n");
            println!("Every client sends `POST {WRITE_PATH}` to the leader's HTTP address.\n");
            println!("| clients | writes/s | p50 latency | p99 latency | non-200 | I/O errors |");
            println!("|--------:|---------:|------------:|------------:|--------:|-----------:|");
        }
        Target::Spread => {
            println!("## HTTP writes spread over all three nodes\n");
            println!(
                "Client `i` sends `POST {WRITE_PATH}` to node `i mod 3`, the followers first; \
                 a follower forwards the write to the leader over the Raft transport.\n"
            );
            println!(
                "| clients | on followers | writes/s | p50 latency | p99 latency | non-200 | \
                 I/O errors |"
            );
            println!(
                "|--------:|-------------:|---------:|------------:|------------:|--------:|\
                 -----------:|"
            );
        }
    }
    let mut notes = Vec::new();
    for &clients in &plan.clients {
        let row = measure_row(plan, binary, target, clients)
            .map_err(|e| format!("{clients} clients → {}: {e}", target.name()))?;
        notes.extend(row.notes);
        let rate = median(row.samples.iter().map(|s| s.per_sec).collect())
            .map_or("-".into(), |r| format!("{r:.0}"));
        let p50 = median(row.samples.iter().filter_map(|s| s.p50).collect())
            .map_or("-".into(), |d| format!("{d:.2?}"));
        let p99 = median(row.samples.iter().filter_map(|s| s.p99).collect())
            .map_or("-".into(), |d| format!("{d:.2?}"));
        let (non_200, io) = (row.non_200, row.io_errors);
        match target {
            Target::Leader => println!(
                "| {clients:>7} | {rate:>8} | {p50:>11} | {p99:>11} | {non_200:>7} | {io:>10} |"
            ),
            Target::Spread => {
                let on = format!("{}/{clients}", row.on_followers);
                println!(
                    "| {clients:>7} | {on:>12} | {rate:>8} | {p50:>11} | {p99:>11} | \
                     {non_200:>7} | {io:>10} |"
                )
            }
        }
    }
    println!();
    for note in notes {
        println!("note: {note}");
    }
    Ok(())
}

fn run(plan: &Plan, binary: &Path) -> Result<(), String> {
    let base = std::env::temp_dir();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Server: {} (`serve`, default flags, log level info); data under {} on {}; \
         {cores} CPUs shared by the 3 servers and the client threads. Request body \
         `{WRITE_BODY}`; one OS thread and one keep-alive HTTP/1.1 connection per client; \
         a fresh cluster per row, {:?} warm-up, then {} runs of {:?}; medians over runs; \
         non-200 and I/O errors summed over the runs.\n",
        binary.display(),
        base.display(),
        file_system_of(&base).unwrap_or_else(|| "an unknown file system".into()),
        plan.warmup,
        plan.runs,
        plan.run,
    );
    table(plan, binary, Target::Leader)?;
    println!();
    table(plan, binary, Target::Spread)
}

fn main() {
    let plan = plan_from_args(USAGE, parse_plan);
    let binary = match example_binary() {
        Ok(path) if path.is_file() => path,
        Ok(path) => {
            eprintln!(
                "error: {} not found.\n`cargo bench` does not build examples: run\n\n    \
                 cargo build --release --example {EXAMPLE}\n\nfirst, then \
                 `cargo bench --bench http` again.",
                path.display()
            );
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(source) = newer_source(&binary) {
        eprintln!(
            "warning: {} is newer than {}: the numbers may be of old code; rebuild with \
             `cargo build --release --example {EXAMPLE}`",
            source.display(),
            binary.display()
        );
    }
    // Every cluster is dropped (its processes killed) before `run` returns.
    if let Err(e) = run(&plan, &binary) {
        progress("");
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
