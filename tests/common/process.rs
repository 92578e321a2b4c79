//! Process-level harness: runs the examples' `serve` mode as real OS
//! processes on loopback and talks to them over HTTP.

use std::collections::BTreeMap;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "http.rs"]
mod client;
pub use client::*;

/// Classifies the answer to a write. Panics on answers that no correct
/// service gives (4xx to a well-formed request, malformed 503s).
pub fn classify(path: &str, answer: Result<(u16, Value), HttpError>) -> WriteOutcome {
    match answer {
        Ok((200, v)) => WriteOutcome::Acked(v),
        Ok((503, v)) if v["indeterminate"] == Value::Bool(true) => WriteOutcome::Maybe,
        Ok((503, v)) if v["error"].is_string() => WriteOutcome::NotApplied,
        Ok((status, v)) => panic!("POST {path}: unexpected {status} {v}"),
        Err(HttpError::Connect(_)) => WriteOutcome::NotApplied,
        Err(HttpError::AfterConnect(_)) => WriteOutcome::Maybe,
    }
}

/// What became of a write request.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// 200 with this body.
    Acked(Value),
    /// It may or may not have been applied.
    Maybe,
    /// It was certainly not applied.
    NotApplied,
}

/// Sends a write on a fresh connection and classifies the answer.
pub fn write(addr: SocketAddr, path: &str, body: Option<&str>) -> WriteOutcome {
    classify(path, http(addr, "POST", path, body))
}

/// Runs the operator command line (`regatta`) with `args`, for at most a
/// minute; returns its exit code and stdout.
pub fn regatta(args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the regatta command line");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`regatta {}` did not finish within a minute",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap();
    println!(
        "$ regatta {}\n{stdout}{}",
        args.join(" "),
        stderr.join().unwrap()
    );
    (status.code(), stdout)
}

/// Picks a port outside Linux's ephemeral range (32768–60999), so no
/// outgoing connection can take it between this check and the bind.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + fastrand::u16(..10_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Path of an example binary built by `cargo test` (next to the test binary's
/// `deps` directory).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: run the whole suite with `cargo test` (it builds the examples), \
         or `cargo build --examples` first",
        path.display()
    );
    path
}

/// One `serve` process.
pub struct ServeProcess {
    child: Option<Child>,
    pub http: SocketAddr,
    pub raft: SocketAddr,
    /// Started with `--join` rather than `--initial-cluster`.
    joins: bool,
}

/// A cluster of `serve` processes of one example, with data directories and
/// logs under a temporary directory (kept, with its path printed, when a
/// test fails).
pub struct ProcessCluster {
    binary: PathBuf,
    dir: Option<tempfile::TempDir>,
    initial_cluster: String,
    extra_args: Vec<String>,
    /// Nodes talk mutual TLS with certificates under `<root>/certs`.
    tls: bool,
    pub nodes: BTreeMap<u64, ServeProcess>,
}

impl ProcessCluster {
    /// Starts `size` nodes of example `name`.
    pub fn start(name: &str, size: u64) -> ProcessCluster {
        Self::start_with(name, size, &[])
    }

    /// Starts `size` nodes of example `name`, each `serve` given `extra`
    /// flags.
    pub fn start_with(name: &str, size: u64, extra: &[&str]) -> ProcessCluster {
        Self::launch(name, size, extra, false)
    }

    /// Starts `size` nodes of example `name` over mutual TLS, with
    /// certificates written by the example's `certs` command (ids up to 9
    /// have one).
    pub fn start_tls(name: &str, size: u64, extra: &[&str]) -> ProcessCluster {
        Self::launch(name, size, extra, true)
    }

    fn launch(name: &str, size: u64, extra: &[&str], tls: bool) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        println!("process cluster under {}", dir.path().display());
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            let raft = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
            nodes.insert(
                id,
                ServeProcess {
                    child: None,
                    http,
                    raft,
                    joins: false,
                },
            );
        }
        let initial_cluster = nodes
            .iter()
            .map(|(id, p)| format!("{id}={};api={}", p.raft, p.http))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcessCluster {
            binary: example_binary(name),
            dir: Some(dir),
            initial_cluster,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tls,
            nodes,
        };
        if tls {
            let written = Command::new(&cluster.binary)
                .args(["certs", "--nodes", "1,2,3,4,5,6,7,8,9", "--dir"])
                .arg(cluster.root().join("certs"))
                .output()
                .expect("run the certs command");
            assert!(written.status.success(), "certs failed: {written:?}");
        }
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster
    }

    fn root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("directory kept")
            .path()
            .to_path_buf()
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root().join(format!("node-{id}"))
    }

    /// Starts (or restarts, on its existing directory) node `id`.
    pub fn spawn(&mut self, id: u64) {
        let log_path = self.log_path(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let node = &self.nodes[&id];
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--raft-addr", &node.raft.to_string()])
            .args(["--http-addr", &node.http.to_string()]);
        if node.joins {
            command.arg("--join");
        } else {
            command.args(["--initial-cluster", &self.initial_cluster]);
        }
        if self.tls {
            let certs = self.root().join("certs");
            command
                .arg("--tls-ca")
                .arg(certs.join("ca.pem"))
                .arg("--tls-cert")
                .arg(certs.join(format!("node-{id}.pem")))
                .arg("--tls-key")
                .arg(certs.join(format!("node-{id}.key")));
        }
        let child = command
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve process");
        self.nodes.get_mut(&id).expect("known node").child = Some(child);
    }

    /// Path of node `id`'s log file (its stderr, across restarts).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root().join(format!("node-{id}.log"))
    }

    /// Starts a new node `id` with `--join`, waiting to be added.
    pub fn spawn_joiner(&mut self, id: u64) {
        let raft = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        self.nodes.insert(
            id,
            ServeProcess {
                child: None,
                http,
                raft,
                joins: true,
            },
        );
        self.spawn(id);
    }

    /// Whether node `id`'s process is running (not yet stopped by the test).
    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// HTTP address of node `id`.
    pub fn http(&self, id: u64) -> SocketAddr {
        self.nodes[&id].http
    }

    /// Raft address of node `id`.
    pub fn raft(&self, id: u64) -> SocketAddr {
        self.nodes[&id].raft
    }

    /// Kills node `id`, deletes its data directory (a replaced disk) and
    /// starts it again with `--join`, waiting to be re-admitted.
    pub fn replace_disk_and_join(&mut self, id: u64) {
        self.kill(id);
        let dir = self.data_dir(id);
        if dir.exists() {
            std::fs::remove_dir_all(dir).expect("delete the data directory");
        }
        self.nodes.get_mut(&id).expect("known node").joins = true;
        self.spawn(id);
    }

    fn signal(&self, id: u64, signal: libc::c_int) {
        let child = self.nodes[&id].child.as_ref().expect("node is running");
        // SAFETY: kill(2) with the pid of a child we have not yet reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({id}, {signal}) failed");
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).expect("known node").child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (its sockets stay open).
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// SIGCONT after [`ProcessCluster::pause`].
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns its code.
    pub fn terminate(&mut self, id: u64, limit: Duration) -> Option<i32> {
        self.signal(id, libc::SIGTERM);
        self.wait_exit(id, limit)
    }

    /// Waits (bounded) for node `id` to exit by itself; returns its code.
    pub fn wait_exit(&mut self, id: u64, limit: Duration) -> Option<i32> {
        let mut child = self.nodes.get_mut(&id).expect("known node").child.take()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {id} did not exit within {limit:?}");
    }

    /// `GET /cluster/status` of node `id`, if it answers.
    pub fn status(&self, id: u64) -> Option<Value> {
        match http(self.http(id), "GET", "/cluster/status", None) {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Polls until `condition` holds, panicking after `limit`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every node in `among` answers and all agree on one
    /// leader from `among`; returns it.
    pub fn wait_leader(&self, among: &[u64], limit: Duration) -> u64 {
        let mut leader = 0;
        self.wait_until("an agreed leader", limit, |c| {
            let seen: Option<Vec<u64>> = among
                .iter()
                .map(|id| c.status(*id).and_then(|s| s["leader"].as_u64()))
                .collect();
            match seen {
                Some(seen) if seen.windows(2).all(|w| w[0] == w[1]) && among.contains(&seen[0]) => {
                    leader = seen[0];
                    true
                }
                _ => false,
            }
        });
        leader
    }

    /// Waits until every node in `among` has applied at least `index`.
    pub fn wait_applied(&self, among: &[u64], index: u64, limit: Duration) {
        self.wait_until(&format!("nodes {among:?} to apply {index}"), limit, |c| {
            among.iter().all(|id| {
                c.status(*id)
                    .and_then(|s| s["last_applied"].as_u64())
                    .is_some_and(|a| a >= index)
            })
        });
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                println!("keeping logs and data in {}", dir.keep().display());
            }
        }
    }
}

/// Disk space used by the files under `dir` (allocated blocks: fjall
/// preallocates its journal, whose apparent length says little).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}
