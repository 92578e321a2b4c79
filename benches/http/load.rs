//! The load: client threads, each on one keep-alive connection, writing
//! back-to-back from a common start until a common deadline, and what they
//! saw (a [`Tally`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::client::{body_text, request, Conn, CONNECT_TIMEOUT};
use crate::{WRITE_BODY, WRITE_PATH};

const CLIENT_STACK: usize = 256 * 1024;

/// What one client (or a whole run) saw.
#[derive(Default)]
pub(crate) struct Tally {
    /// Latencies of the 200 answers.
    pub(crate) latencies: Vec<Duration>,
    /// Non-200 answers by status, with the first body of each.
    pub(crate) non_200: BTreeMap<u16, (u64, String)>,
    pub(crate) io_errors: u64,
    pub(crate) first_io_error: Option<String>,
}

impl Tally {
    fn io_error(&mut self, e: String) {
        self.io_errors += 1;
        self.first_io_error.get_or_insert(e);
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (status, (n, body)) in other.non_200 {
            self.non_200.entry(status).or_insert((0, body)).0 += n;
        }
        self.io_errors += other.io_errors;
        if self.first_io_error.is_none() {
            self.first_io_error = other.first_io_error;
        }
    }

    pub(crate) fn non_200_count(&self) -> u64 {
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
pub(crate) fn run_clients(
    targets: &[SocketAddr],
    run: Duration,
) -> Result<(Tally, Duration), String> {
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
