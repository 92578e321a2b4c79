//! The simulator's network: every message is encoded and decoded as on a
//! real wire, then dropped, duplicated or delayed by draws from the run's
//! seeded generator, and delivered in virtual time by one task. Links
//! between partitioned nodes drop everything. A crashed incarnation of a
//! node sends nothing more, but what it sent before its crash is still
//! delivered — late, duplicated — after its restart or disk replacement:
//! a stale incarnation's messages reach the cluster.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Faults;
use crate::core::types::NodeId;
use crate::message::Envelope;
use crate::transport::Transport;

/// Where a delivered message goes.
pub(super) type Deliver = Box<dyn Fn(Envelope) + Send + Sync>;

struct Registered {
    incarnation: u64,
    deliver: Deliver,
}

struct State {
    nodes: BTreeMap<NodeId, Registered>,
    /// Nodes in different groups cannot talk; absent means group 0.
    groups: BTreeMap<NodeId, u64>,
    faults: Faults,
    rng: fastrand::Rng,
    /// Messages in flight: (due, sequence) → encoded envelope.
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    bodies: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    delivered: u64,
    /// A running digest of every delivery (time, bytes), for the
    /// determinism check.
    trace: u64,
    epoch: Instant,
}

/// The network shared by the nodes of one simulated run.
#[derive(Clone)]
pub(super) struct Net {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
}

impl Net {
    pub(super) fn new(seed: u64, faults: Faults) -> Net {
        Net {
            state: Arc::new(Mutex::new(State {
                nodes: BTreeMap::new(),
                groups: BTreeMap::new(),
                faults,
                rng: fastrand::Rng::with_seed(seed ^ 0x006e_6574_776f_726b),
                in_flight: BinaryHeap::new(),
                bodies: BTreeMap::new(),
                next_seq: 0,
                delivered: 0,
                trace: 0,
                epoch: Instant::now(),
            })),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn register(&self, id: NodeId, incarnation: u64, deliver: Deliver) {
        self.lock().nodes.insert(
            id,
            Registered {
                incarnation,
                deliver,
            },
        );
    }

    pub(super) fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    pub(super) fn transport(&self, id: NodeId, incarnation: u64) -> Arc<dyn Transport> {
        Arc::new(Link {
            net: self.clone(),
            from: id,
            incarnation,
        })
    }

    /// Splits the nodes into groups that cannot reach each other.
    pub(super) fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut s = self.lock();
        s.groups.clear();
        for (i, g) in groups.iter().enumerate() {
            for id in g {
                s.groups.insert(*id, i as u64 + 1);
            }
        }
    }

    pub(super) fn heal(&self) {
        self.lock().groups.clear();
    }

    pub(super) fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Messages delivered so far and the digest of all deliveries.
    pub(super) fn trace(&self) -> (u64, u64) {
        let s = self.lock();
        (s.delivered, s.trace)
    }

    fn send(&self, from: NodeId, incarnation: u64, envelope: Envelope) {
        let Ok(bytes) = rmp_serde::to_vec(&envelope) else {
            return;
        };
        let mut s = self.lock();
        if s.nodes
            .get(&from)
            .is_none_or(|r| r.incarnation != incarnation)
        {
            return; // a crashed incarnation speaks no more
        }
        let f = s.faults.clone();
        if s.rng.f64() < f.drop {
            return;
        }
        let copies = if s.rng.f64() < f.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = draw(&mut s.rng, f.delay);
            if s.rng.f64() < f.long_delay {
                delay += draw(&mut s.rng, f.long_delay_range);
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            s.in_flight.push(Reverse((Instant::now() + delay, seq)));
            s.bodies.insert(seq, bytes.clone());
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Delivers messages as they fall due, forever.
    pub(super) async fn run(self) {
        loop {
            let next = self.lock().in_flight.peek().map(|Reverse((due, _))| *due);
            match next {
                None => self.wake.notified().await,
                Some(due) if due > Instant::now() => {
                    tokio::select! {
                        biased;
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                Some(_) => self.deliver_one(),
            }
        }
    }

    fn deliver_one(&self) {
        let mut s = self.lock();
        let Some(Reverse((_, seq))) = s.in_flight.pop() else {
            return;
        };
        let Some(bytes) = s.bodies.remove(&seq) else {
            return;
        };
        let Ok(envelope) = rmp_serde::from_slice::<Envelope>(&bytes) else {
            return;
        };
        let group = |id| s.groups.get(&id).copied().unwrap_or(0);
        if group(envelope.from) != group(envelope.to) {
            return;
        }
        let at = (Instant::now() - s.epoch).as_micros() as u64;
        s.delivered += 1;
        s.trace = mix(mix(s.trace, at), crc32fast::hash(&bytes) as u64);
        tracing::trace!(at, from = envelope.from, to = envelope.to, message = ?envelope.message, "simulator: deliver");
        if let Some(r) = s.nodes.get(&envelope.to) {
            (r.deliver)(envelope);
        }
    }
}

/// Folds `value` into a running digest.
pub(super) fn mix(digest: u64, value: u64) -> u64 {
    (digest ^ value)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
}

fn draw(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    Duration::from_micros(rng.u64(lo.as_micros() as u64..hi.as_micros() as u64))
}

/// One incarnation's way out.
struct Link {
    net: Net,
    from: NodeId,
    incarnation: u64,
}

impl Transport for Link {
    fn send(&self, mut envelope: Envelope) {
        envelope.from = self.from;
        self.net.send(self.from, self.incarnation, envelope);
    }
}
