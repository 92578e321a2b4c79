//! The cluster of `serve` processes: three children of this process on
//! 127.0.0.1, their logs, their start-up (a leader all agree on, one
//! commit) and their stop.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{body_text, first_write, status};
use crate::support::progress;
use crate::{WRITE_BODY, WRITE_PATH};

const NODES: u64 = 3;
/// Bound on a cluster's start-up: a leader all agree on plus one commit.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a node's exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at starting a cluster when a port turned out to be taken.
const START_ATTEMPTS: usize = 3;
/// Log lines quoted per row in the notes.
const QUOTED_LINES: usize = 3;

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

pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) http: SocketAddr,
    raft: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// Three `serve` processes; dropping it kills them. The temporary directory
/// is removed, unless [`Cluster::keep`] was called.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

/// Start-up failed because a port was taken after all: worth a retry.
struct PortTaken(String);

impl Cluster {
    pub(crate) fn start(binary: &Path) -> Result<(Cluster, u64), String> {
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
                .args(["--initial-cluster", &initial_cluster]);
            if let Ok(us) = std::env::var("REGATTA_IDLE_SPIN_US") {
                // Checked by `serve` itself, which exits on a bad value.
                command.args(["--idle-spin-us", &us]);
            }
            command
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

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.as_ref().map_or_else(
            || PathBuf::from("(removed)"),
            |dir| dir.path().to_path_buf(),
        )
    }

    /// Keep the directory (data and logs) and print where it is.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
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
            match first_write(addr, WRITE_PATH, WRITE_BODY) {
                Ok(()) => return Ok(leader),
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
    pub(crate) fn log_marks(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| std::fs::metadata(&n.log).map_or(0, |m| m.len()))
            .collect()
    }

    /// WARN and ERROR lines logged since `marks`: per node, the count and
    /// the first few (timestamps cut).
    pub(crate) fn problems_since(&self, marks: &[u64]) -> Vec<(u64, usize, Vec<String>)> {
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
    pub(crate) fn stop(&mut self) -> Vec<String> {
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
