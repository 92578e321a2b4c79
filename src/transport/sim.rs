//! An in-process simulated network with fault injection, for tests: per-link
//! loss, delay, long delays (reordering) and duplication; partitions; and
//! counters of messages and bytes. Every message is encoded and decoded as
//! on a real wire, unless a benchmark turns that off
//! ([`SimNetwork::set_encoding`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Transport;
use crate::core::types::NodeId;
use crate::message::Envelope;

/// Where a delivered message goes.
pub type Deliver = Arc<dyn Fn(Envelope) + Send + Sync>;

/// Fault settings of the network (applied to every link).
#[derive(Clone, Debug, Default)]
pub struct LinkConfig {
    /// Probability that a request (AppendEntries, RequestVote, …) is lost.
    pub drop_requests: f64,
    /// Probability that a reply is lost.
    pub drop_replies: f64,
    /// Every message is delayed by a uniform draw from this range.
    pub delay: (Duration, Duration),
    /// Probability that a reply is held back much longer (reordering).
    pub long_delay_replies: f64,
    /// The range of that longer delay.
    pub long_delay: (Duration, Duration),
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
}

impl LinkConfig {
    /// A perfect network.
    pub fn reliable() -> Self {
        Self::default()
    }

    /// Loss, delay and duplication as in the unreliable-network tests.
    pub fn unreliable() -> Self {
        LinkConfig {
            drop_requests: 0.1,
            drop_replies: 0.1,
            delay: (Duration::ZERO, Duration::from_millis(27)),
            duplicate: 0.02,
            ..Default::default()
        }
    }
}

/// Messages and bytes sent by one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests sent (a request and its reply count as one exchange).
    pub requests: u64,
    /// All messages sent, replies included.
    pub messages: u64,
    /// Encoded bytes of all messages sent.
    pub bytes: u64,
}

struct NetState {
    nodes: HashMap<NodeId, Deliver>,
    /// Nodes in different groups cannot talk; absent means group 0.
    groups: HashMap<NodeId, u64>,
    link: LinkConfig,
    counters: BTreeMap<NodeId, Counters>,
    rng: fastrand::Rng,
    next_group: u64,
}

/// The simulated network shared by every node of a test cluster.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    /// Outside the lock: encoding is the costly part of a send.
    encode: Arc<AtomicBool>,
    timers: tokio::runtime::Handle,
    _timer_thread: Arc<TimerThread>,
}

struct TimerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TimerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl SimNetwork {
    /// A reliable network whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("cannot build the simulated network's timer runtime");
        let handle = rt.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("regatta-simnet".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stop_rx.await;
                })
            })
            .expect("cannot start the simulated network's timer thread");
        SimNetwork {
            state: Arc::new(Mutex::new(NetState {
                nodes: HashMap::new(),
                groups: HashMap::new(),
                link: LinkConfig::default(),
                counters: BTreeMap::new(),
                rng: fastrand::Rng::with_seed(seed),
                next_group: 1,
            })),
            encode: Arc::new(AtomicBool::new(true)),
            timers: handle,
            _timer_thread: Arc::new(TimerThread {
                stop: Some(stop_tx),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects node `id`: messages to it go to `deliver`.
    pub fn register(&self, id: NodeId, deliver: Deliver) {
        self.lock().nodes.insert(id, deliver);
    }

    /// Disconnects node `id` (it crashed): messages to it are lost.
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: NodeId) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            net: self.clone(),
            from: id,
        })
    }

    /// Whether messages go through the wire encoding (the default). Off,
    /// envelopes are handed to the addressee as they are, like function
    /// calls between nodes: for benchmarks that measure the protocol, not
    /// the codec. Byte counters then stay at zero.
    pub fn set_encoding(&self, encode: bool) {
        self.encode.store(encode, Ordering::Relaxed);
    }

    /// Replaces the fault settings.
    pub fn set_link(&self, link: LinkConfig) {
        self.lock().link = link;
    }

    /// Splits the network: nodes in different groups cannot reach each
    /// other; nodes in no group stay in the default group.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut s = self.lock();
        s.groups.clear();
        for g in groups {
            let group = s.next_group;
            s.next_group += 1;
            for id in *g {
                s.groups.insert(*id, group);
            }
        }
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&self, id: NodeId) {
        let mut s = self.lock();
        let group = s.next_group;
        s.next_group += 1;
        s.groups.insert(id, group);
    }

    /// Reconnects `id` to the default group.
    pub fn rejoin(&self, id: NodeId) {
        self.lock().groups.remove(&id);
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.lock().groups.clear();
    }

    /// What node `id` has sent so far.
    pub fn counters(&self, id: NodeId) -> Counters {
        self.lock().counters.get(&id).copied().unwrap_or_default()
    }

    /// The sum over all nodes.
    pub fn total_counters(&self) -> Counters {
        let s = self.lock();
        s.counters
            .values()
            .fold(Counters::default(), |a, c| Counters {
                requests: a.requests + c.requests,
                messages: a.messages + c.messages,
                bytes: a.bytes + c.bytes,
            })
    }

    fn send(&self, envelope: Envelope) {
        let is_request = envelope.message.is_request();
        let wire = if self.encode.load(Ordering::Relaxed) {
            match rmp_serde::to_vec(&envelope) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!(error = %e, "message does not encode");
                    return;
                }
            }
        } else {
            None
        };
        let (deliveries, deliver) = {
            let mut s = self.lock();
            let c = s.counters.entry(envelope.from).or_default();
            c.messages += 1;
            c.bytes += wire.as_ref().map_or(0, |b| b.len() as u64);
            if is_request {
                c.requests += 1;
            }
            let group = |id| s.groups.get(&id).copied().unwrap_or(0);
            if group(envelope.from) != group(envelope.to) || !s.nodes.contains_key(&envelope.from) {
                return;
            }
            let Some(deliver) = s.nodes.get(&envelope.to).cloned() else {
                return;
            };
            let link = s.link.clone();
            let drop_p = if is_request {
                link.drop_requests
            } else {
                link.drop_replies
            };
            if s.rng.f64() < drop_p {
                return;
            }
            let copies = if s.rng.f64() < link.duplicate { 2 } else { 1 };
            let mut delays = Vec::new();
            for _ in 0..copies {
                let mut d = draw(&mut s.rng, link.delay);
                if !is_request && s.rng.f64() < link.long_delay_replies {
                    d += draw(&mut s.rng, link.long_delay);
                }
                delays.push(d);
            }
            (delays, deliver)
        };
        // Every copy but the last is a clone (or a decoding); the last
        // takes the envelope itself.
        let Some((last, earlier)) = deliveries.split_last() else {
            return;
        };
        for delay in earlier {
            let copy = match &wire {
                Some(bytes) => decode(bytes),
                None => Some(envelope.clone()),
            };
            if let Some(copy) = copy {
                self.deliver_after(*delay, copy, &deliver);
            }
        }
        let last_copy = match &wire {
            Some(bytes) => decode(bytes),
            None => Some(envelope),
        };
        if let Some(copy) = last_copy {
            self.deliver_after(*last, copy, &deliver);
        }
    }

    /// Hands `envelope` to `deliver` after `delay` (at once if zero).
    fn deliver_after(&self, delay: Duration, envelope: Envelope, deliver: &Deliver) {
        if delay.is_zero() {
            deliver(envelope);
            return;
        }
        let net = self.clone();
        self.timers.spawn(async move {
            tokio::time::sleep(delay).await;
            // A partition or crash that began meanwhile still cuts
            // the message off; a restarted node gets it.
            let target = {
                let s = net.lock();
                let g = |id| s.groups.get(&id).copied().unwrap_or(0);
                let connected = g(envelope.from) == g(envelope.to);
                s.nodes.get(&envelope.to).filter(|_| connected).cloned()
            };
            if let Some(deliver) = target {
                deliver(envelope);
            }
        });
    }
}

fn decode(bytes: &[u8]) -> Option<Envelope> {
    let decoded = rmp_serde::from_slice::<Envelope>(bytes);
    if decoded.is_err() {
        tracing::error!("message does not decode");
    }
    decoded.ok()
}

fn draw(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    let us = rng.u64(lo.as_micros() as u64..hi.as_micros() as u64);
    Duration::from_micros(us)
}

/// One node's view of the [`SimNetwork`].
pub struct SimTransport {
    net: SimNetwork,
    from: NodeId,
}

impl Transport for SimTransport {
    fn send(&self, mut envelope: Envelope) {
        envelope.from = self.from;
        self.net.send(envelope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    /// Delivers every envelope sent to node 2 into a shared list.
    fn receiver(net: &SimNetwork) -> Arc<Mutex<Vec<Envelope>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        net.register(1, Arc::new(|_| {}));
        net.register(2, Arc::new(move |e| sink.lock().unwrap().push(e)));
        got
    }

    #[test]
    fn envelopes_arrive_alike_with_and_without_the_wire_encoding() {
        for encode in [true, false] {
            let net = SimNetwork::new(1);
            net.set_encoding(encode);
            let got = receiver(&net);
            let sent = Envelope::new(1, 2, Message::TimeoutNow { term: 7 });
            net.transport(1).send(sent.clone());
            assert_eq!(*got.lock().unwrap(), vec![sent], "encode={encode}");
            let counted = net.counters(1);
            assert_eq!(counted.messages, 1);
            // Bytes are counted only when there is an encoding to count.
            assert_eq!(counted.bytes > 0, encode);
        }
    }

    #[test]
    fn unencoded_duplicates_are_copies() {
        let net = SimNetwork::new(1);
        net.set_encoding(false);
        net.set_link(LinkConfig {
            duplicate: 1.0,
            ..LinkConfig::default()
        });
        let got = receiver(&net);
        let sent = Envelope::new(1, 2, Message::TimeoutNow { term: 3 });
        net.transport(1).send(sent.clone());
        assert_eq!(*got.lock().unwrap(), vec![sent.clone(), sent]);
    }
}
