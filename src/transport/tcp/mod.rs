//! A [`Transport`] over plain TCP.
//!
//! Wire format: every frame is a 4-byte big-endian length followed by that
//! many bytes of MessagePack (rmp-serde), cut with
//! [`tokio_util::codec::LengthDelimitedCodec`]. A connection starts with a
//! handshake: the dialer sends `Hello { version, cluster_id, node_id }`, the
//! acceptor answers `Accept { node_id }` or `Refuse { reason }`. After an
//! `Accept` the dialer sends one [`Envelope`] per frame and the acceptor
//! never writes again.
//!
//! Topology: each node dials every peer it knows an address for and sends
//! only over that outbound connection; connections it accepts are only read
//! from. A pair of nodes therefore shares two connections, one per direction,
//! which keeps reconnection logic one-sided and free of dial races.
//!
//! Limits against hostile or broken clients (each a [`TcpConfig`] value):
//! a connection must complete its handshake within `handshake_timeout`;
//! at most `max_pending_connections` handshakes run at once, at most
//! `max_pending_connections_per_ip` from one address (more are closed on
//! accept, before anything is read); handshake frames are capped at 64 KiB
//! and later frames at `max_frame_bytes`; each peer keeps one inbound
//! connection (a new one replaces the old); each peer's send queue holds
//! `send_queue` messages. Established peer connections are not affected
//! by a flood of new ones.
//!
//! There is no authentication or encryption: the handshake catches
//! misconfiguration (wrong cluster, wrong version, wrong address), not
//! attackers. Run it on a trusted network.

mod inbound;
mod limits;
mod outbound;
mod secure;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::message::Envelope;
use crate::transport::Transport;
use crate::NodeId;

use self::inbound::*;
use self::outbound::*;
pub(crate) use self::wire::*;

/// Version of the wire protocol, exchanged in the handshake. Nodes only
/// talk to nodes speaking exactly the same version.
pub const PROTOCOL_VERSION: u32 = 5;

/// Handshake frames are tiny; capping them well below `max_frame_bytes`
/// means an unauthenticated client cannot make us buffer megabytes.
const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// Bound on connecting, on each handshake step and on writing one batch:
/// a peer that vanished without a reset must not wedge its sender forever.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on any redial delay, whatever the configuration says.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How many queued messages are written before one flush.
const MAX_BATCH: usize = 64;

/// An acceptor logs the same refusal at `warn` at most this often; the
/// refused dialer keeps retrying and would otherwise flood the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Longest advertised address accepted from a handshake.
const MAX_ADVERTISED_LEN: usize = 256;

/// Received strings are echoed in logs and refusals; this keeps a hostile
/// or broken peer from inflating them.
const MAX_ECHOED_CHARS: usize = 128;

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id, announced in every handshake.
    pub node_id: NodeId,
    /// Cluster name; connections between different clusters are refused.
    pub cluster_id: String,
    /// Address to listen on (port 0 picks a free port, see
    /// [`TcpTransport::local_addr`]).
    pub listen: SocketAddr,
    /// The address other nodes reach this one at, announced in every
    /// handshake (default: the listen address as bound).
    pub advertise: Option<String>,
    /// Initial peer addresses (`"host:port"`) by node id. An entry for this
    /// node itself is ignored. More can be added with
    /// [`Transport::set_address`].
    pub peers: BTreeMap<NodeId, String>,
    /// Largest accepted frame (one encoded message), in bytes. Larger
    /// inbound frames close the connection; larger outbound messages are
    /// dropped. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Capacity, in messages, of each peer's send queue; messages sent while
    /// it is full are dropped. Default 1024.
    pub send_queue: usize,
    /// First delay before redialing a peer after a failure. Default 50 ms.
    pub connect_backoff_min: Duration,
    /// Cap of the exponentially growing redial delay (at most one hour).
    /// Default 5 s.
    pub connect_backoff_max: Duration,
    /// An inbound connection that has not completed its handshake within
    /// this is closed (a client that connects and sends nothing holds
    /// nothing for long). Default 5 s.
    pub handshake_timeout: Duration,
    /// Most inbound connections in their handshake at once; more are
    /// closed on accept. Established peer connections do not count (each
    /// peer keeps one; a new one replaces the old). Default 64.
    pub max_pending_connections: usize,
    /// Most inbound connections in their handshake from one IP address.
    /// Default 16.
    pub max_pending_connections_per_ip: usize,
    /// Mutual TLS on every connection (see [`crate::transport::tls`]);
    /// `None`: plain TCP, neither encrypted nor authenticated.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::transport::tls::TlsConfig>,
}

impl TcpConfig {
    /// A configuration with no peers and default limits.
    pub fn new(node_id: NodeId, cluster_id: impl Into<String>, listen: SocketAddr) -> Self {
        TcpConfig {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            advertise: None,
            peers: BTreeMap::new(),
            max_frame_bytes: 16 * 1024 * 1024,
            send_queue: 1024,
            connect_backoff_min: Duration::from_millis(50),
            connect_backoff_max: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_pending_connections: 64,
            max_pending_connections_per_ip: 16,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn `send` into a panic too; the guarded
    // maps stay consistent at every await-free step.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_ECHOED_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_ECHOED_CHARS).collect();
        out.push('…');
        out
    }
}

/// Randomizes a delay to between half and all of it, so peers that failed
/// together do not redial in lockstep.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// State shared by the background tasks. Tasks hold this rather than
/// [`Inner`] so that dropping the last [`TcpTransport`] handle stops them.
struct Shared {
    node_id: NodeId,
    cluster_id: String,
    /// Announced in our handshakes.
    advertise: String,
    /// Peers learned from inbound handshakes, for the transport to add.
    learned: Mutex<Vec<(NodeId, String)>>,
    max_frame_bytes: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    deliver: Arc<dyn Fn(Envelope) + Send + Sync>,
    dropped: AtomicU64,
    /// Last `warn` per refusal reason, for rate limiting.
    refusals_logged: Mutex<HashMap<String, Instant>>,
    cancel: CancellationToken,
    /// Bytes to and from each peer, for the metrics.
    traffic: Mutex<BTreeMap<NodeId, Arc<PeerTraffic>>>,
    /// Limits on inbound connections.
    admission: Arc<limits::Admission>,
    handshake_timeout: Duration,
    /// Woken when a peer connects to us: it is up again, so the dialer
    /// waiting out its backoff to that peer dials at once (a restarted
    /// node is then reached in milliseconds, not after up to
    /// `connect_backoff_max`).
    peer_up: Mutex<HashMap<NodeId, Arc<tokio::sync::Notify>>>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::transport::tls::TlsContext>>,
}

impl Shared {
    /// The signal [`Shared::peer_connected`] gives the dialer of `peer`.
    fn peer_up_signal(&self, peer: NodeId) -> Arc<tokio::sync::Notify> {
        lock(&self.peer_up).entry(peer).or_default().clone()
    }

    /// `peer` completed a handshake with us: cut short the backoff of our
    /// own dialer to it.
    fn peer_connected(&self, peer: NodeId) {
        if let Some(signal) = lock(&self.peer_up).get(&peer) {
            signal.notify_one();
        }
    }
}

/// The TLS state a transport starts with.
#[cfg(feature = "tls")]
type TlsSlot = Option<Arc<crate::transport::tls::TlsContext>>;
/// Without the `tls` feature there is none.
#[cfg(not(feature = "tls"))]
type TlsSlot = ();

/// One direction of a connection, plain or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// See [`ReadHalf`].
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Byte counters of one peer, shared by its connections.
#[derive(Debug, Default)]
struct PeerTraffic {
    sent: AtomicU64,
    received: AtomicU64,
}

/// The length prefix each frame carries on the wire.
const FRAME_PREFIX: u64 = 4;

/// Most peers a transport keeps state for (a send queue and task, byte
/// counters) beyond those it is given addresses for: each handshake that
/// claims a new node id would otherwise add one for good.
pub(crate) const MAX_PEERS: usize = 256;

impl Shared {
    /// The byte counters of `peer`, created on first use while fewer than
    /// [`MAX_PEERS`] peers are counted (beyond that, a new peer's traffic
    /// goes uncounted).
    fn traffic_of(&self, peer: NodeId) -> Arc<PeerTraffic> {
        let mut traffic = lock(&self.traffic);
        if traffic.len() >= MAX_PEERS && !traffic.contains_key(&peer) {
            return Arc::default();
        }
        traffic.entry(peer).or_default().clone()
    }

    /// Records a peer's address heard in its handshake, unless as many are
    /// already waiting to be adopted as the transport would keep.
    fn learn(&self, peer: NodeId, address: String) {
        let mut learned = lock(&self.learned);
        if learned.len() < MAX_PEERS {
            learned.push((peer, address));
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn should_warn_refusal(&self, reason: &str) -> bool {
        let now = Instant::now();
        let mut logged = lock(&self.refusals_logged);
        if logged.len() >= 256 {
            // Reasons echo what clients send, so the map must stay bounded.
            logged.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
            if logged.len() >= 256 {
                logged.clear();
            }
        }
        match logged.get(reason) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => false,
            _ => {
                logged.insert(reason.to_owned(), now);
                true
            }
        }
    }

    /// Why a `Hello` must be refused, if it must.
    fn check_hello(&self, version: u32, cluster_id: &str, node_id: NodeId) -> Option<String> {
        if version != PROTOCOL_VERSION {
            Some(format!(
                "protocol version mismatch: expected {PROTOCOL_VERSION}, received {version}"
            ))
        } else if cluster_id != self.cluster_id {
            Some(format!(
                "cluster id mismatch: expected {:?}, received {:?}",
                self.cluster_id,
                shorten(cluster_id)
            ))
        } else if node_id == self.node_id {
            Some(format!(
                "node id collision: the dialer claims id {node_id}, which is the acceptor's own"
            ))
        } else {
            None
        }
    }
}

struct PeerHandle {
    queue: mpsc::Sender<Envelope>,
    address: watch::Sender<String>,
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    send_queue: usize,
    /// Captured in `start` so `set_address` can spawn peer tasks even when
    /// called from outside the runtime's context.
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<NodeId, PeerHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// A [`Transport`] sending length-delimited MessagePack frames over TCP.
///
/// Cheap to clone; all clones share the same listener, connections and
/// queues. Background tasks stop on [`TcpTransport::shutdown`] or when the
/// last clone is dropped.
///
/// Messages addressed to this node itself are dropped (and counted), not
/// looped back: Raft never needs to message itself, and delivering from
/// inside `send` would re-enter the caller.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("node_id", &self.inner.shared.node_id)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Binds the listener and starts background tasks on the current tokio
    /// runtime (a current-thread runtime, e.g. an actix Arbiter, is fine).
    /// Every inbound envelope that passes the checks (sent by the node that
    /// performed the handshake, addressed to this node) is passed to
    /// `deliver`, on a runtime task; `deliver` should not block.
    ///
    /// Fails if the listener cannot be bound, if called outside a tokio
    /// runtime, or if `send_queue` or `max_frame_bytes` is zero.
    pub async fn start(
        config: TcpConfig,
        deliver: Arc<dyn Fn(Envelope) + Send + Sync>,
    ) -> std::io::Result<TcpTransport> {
        #[cfg(feature = "tls")]
        let tls = match config.tls.clone() {
            Some(tls) => Some(Arc::new(
                crate::transport::tls::TlsContext::load(config.node_id, tls)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            )),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let tls = ();
        Self::start_inner(config, deliver, tls).await
    }

    async fn start_inner(
        config: TcpConfig,
        deliver: Arc<dyn Fn(Envelope) + Send + Sync>,
        tls: TlsSlot,
    ) -> std::io::Result<TcpTransport> {
        use std::io::{Error, ErrorKind};
        if config.send_queue == 0
            || config.max_frame_bytes == 0
            || config.max_pending_connections == 0
            || config.max_pending_connections_per_ip == 0
            || config.handshake_timeout.is_zero()
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "send_queue, max_frame_bytes, max_pending_connections, \
                 max_pending_connections_per_ip and handshake_timeout must be positive",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(Error::other)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        // A zero minimum would never grow and redial in a hot loop; the hour
        // cap keeps the jitter arithmetic far from Duration overflow.
        let backoff_min = config
            .connect_backoff_min
            .clamp(Duration::from_millis(1), MAX_BACKOFF);
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            advertise: config
                .advertise
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            learned: Mutex::new(Vec::new()),
            max_frame_bytes: config.max_frame_bytes,
            backoff_min,
            backoff_max: config.connect_backoff_max.clamp(backoff_min, MAX_BACKOFF),
            deliver,
            dropped: AtomicU64::new(0),
            refusals_logged: Mutex::new(HashMap::new()),
            traffic: Mutex::new(BTreeMap::new()),
            cancel: CancellationToken::new(),
            admission: limits::Admission::new(
                config.max_pending_connections,
                config.max_pending_connections_per_ip,
            ),
            handshake_timeout: config.handshake_timeout,
            peer_up: Mutex::new(HashMap::new()),
            #[cfg(feature = "tls")]
            tls,
        });
        #[cfg(not(feature = "tls"))]
        let () = tls;
        shared.announce_security(local_addr);
        #[cfg(feature = "tls")]
        if shared.tls.is_some() {
            runtime.spawn(secure::reload_tls(shared.clone()));
        }
        runtime.spawn(run_listener(shared.clone(), listener));
        let transport = TcpTransport {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                send_queue: config.send_queue,
                runtime,
                peers: Mutex::new(HashMap::new()),
            }),
        };
        for (id, address) in &config.peers {
            transport.set_address(*id, address);
        }
        Ok(transport)
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Stops all tasks and closes the listener and every connection. Closing
    /// happens asynchronously, as each task observes the stop. Later sends
    /// are dropped and later `set_address` calls ignored.
    pub fn shutdown(&self) {
        info!(
            node_id = self.inner.shared.node_id,
            "tcp transport shutting down"
        );
        self.inner.shared.cancel.cancel();
        lock(&self.inner.peers).clear();
    }

    /// How many messages were dropped so far: full queue, unknown or self
    /// addressee, too large to send, or sent after shutdown.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting in the send queue of `peer`.
    #[cfg(test)]
    fn queue_len(&self, peer: NodeId) -> Option<usize> {
        lock(&self.inner.peers)
            .get(&peer)
            .map(|p| p.queue.max_capacity() - p.queue.capacity())
    }
}

impl TcpTransport {
    /// Adds peers learned from inbound handshakes whose address we did
    /// not know (a configured or configuration address always wins).
    fn adopt_learned(&self) {
        let learned = std::mem::take(&mut *lock(&self.inner.shared.learned));
        for (id, address) in learned {
            let peers = lock(&self.inner.peers).len();
            if peers >= MAX_PEERS {
                if self.inner.shared.should_warn_refusal("too many peers") {
                    warn!(
                        node_id = self.inner.shared.node_id,
                        peer_id = id,
                        "not adopting a peer's address from its handshake: {MAX_PEERS} peers known already"
                    );
                }
                continue;
            }
            if !lock(&self.inner.peers).contains_key(&id) {
                info!(
                    node_id = self.inner.shared.node_id,
                    peer_id = id,
                    address,
                    "learned a peer's address from its handshake"
                );
                self.set_address(id, &address);
            }
        }
    }
}

impl Transport for TcpTransport {
    fn traffic(&self) -> BTreeMap<NodeId, crate::Traffic> {
        lock(&self.inner.shared.traffic)
            .iter()
            .map(|(id, t)| {
                let traffic = crate::Traffic {
                    sent: t.sent.load(Ordering::Relaxed),
                    received: t.received.load(Ordering::Relaxed),
                };
                (*id, traffic)
            })
            .collect()
    }

    fn send(&self, envelope: Envelope) {
        if !lock(&self.inner.shared.learned).is_empty() {
            self.adopt_learned();
        }
        let shared = &self.inner.shared;
        let peer_id = envelope.to;
        if peer_id == shared.node_id {
            debug!(
                node_id = shared.node_id,
                "dropping message addressed to self"
            );
            shared.count_drop();
            return;
        }
        let peers = lock(&self.inner.peers);
        let Some(peer) = peers.get(&peer_id) else {
            debug!(
                node_id = shared.node_id,
                peer_id, "dropping message: no address known for peer"
            );
            shared.count_drop();
            return;
        };
        if let Err(e) = peer.queue.try_send(envelope) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "send queue full",
                mpsc::error::TrySendError::Closed(_) => "peer task stopped",
            };
            debug!(node_id = shared.node_id, peer_id, "dropping message: {why}");
            shared.count_drop();
        }
    }

    fn set_address(&self, id: NodeId, address: &str) {
        let shared = &self.inner.shared;
        // Membership address maps include this node; we never dial ourselves.
        if id == shared.node_id || shared.cancel.is_cancelled() {
            return;
        }
        let mut peers = lock(&self.inner.peers);
        if let Some(peer) = peers.get(&id) {
            if *peer.address.borrow() != address {
                info!(
                    node_id = shared.node_id,
                    peer_id = id,
                    address,
                    "peer address changed; reconnecting"
                );
                peer.address.send_replace(address.to_owned());
            }
            return;
        }
        debug!(node_id = shared.node_id, peer_id = id, address, "new peer");
        let (queue, queue_rx) = mpsc::channel(self.inner.send_queue);
        let (address_tx, address_rx) = watch::channel(address.to_owned());
        self.inner
            .runtime
            .spawn(run_peer(shared.clone(), id, queue_rx, address_rx));
        peers.insert(
            id,
            PeerHandle {
                queue,
                address: address_tx,
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Outbound side: one task per peer dials, handshakes and drains the queue.

#[cfg(test)]
mod tests;
#[cfg(all(test, feature = "tls"))]
mod tls_tests;
#[cfg(test)]
mod wire_tests;
