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
//! There is no authentication or encryption: the handshake catches
//! misconfiguration (wrong cluster, wrong version, wrong address), not
//! attackers. Run it on a trusted network.

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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::message::Envelope;
use crate::transport::Transport;
use crate::NodeId;

/// Version of the wire protocol, exchanged in the handshake. Nodes only
/// talk to nodes speaking exactly the same version.
pub const PROTOCOL_VERSION: u32 = 3;

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
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The bytes are not a valid MessagePack encoding of the expected type.
    #[error("undecodable frame: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A frame must hold exactly one value; extra bytes mean the peer and we
    /// disagree on the format.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("could not encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Frames exchanged before any [`Envelope`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Handshake {
    /// Dialer → acceptor, first frame of every connection.
    Hello {
        version: u32,
        cluster_id: String,
        node_id: NodeId,
        /// Where the dialer listens, so the acceptor can answer a node it
        /// has no address for (one that joined after what it has read of
        /// the configuration). Empty if unknown.
        #[serde(default)]
        address: String,
    },
    /// Acceptor → dialer: go ahead. Carries the acceptor's id so the dialer
    /// notices an address that points at the wrong node.
    Accept { node_id: NodeId },
    /// Acceptor → dialer: the connection is about to be closed.
    Refuse { reason: String },
}

/// Encodes an envelope as one frame body. Envelopes use the compact
/// (positional) encoding: they are hot, and the protocol version in the
/// handshake already guarantees both sides agree on their layout.
pub(crate) fn encode_envelope(envelope: &Envelope) -> Result<Bytes, FrameError> {
    Ok(rmp_serde::to_vec(envelope)?.into())
}

/// Decodes one frame body into an envelope.
pub(crate) fn decode_envelope(frame: &[u8]) -> Result<Envelope, FrameError> {
    decode_exact(frame)
}

/// Encodes a handshake frame body. Handshakes use named fields so a future
/// version can add fields and still have its `Hello` understood well enough
/// to be refused with a clear version mismatch.
pub(crate) fn encode_handshake(handshake: &Handshake) -> Result<Bytes, FrameError> {
    Ok(rmp_serde::to_vec_named(handshake)?.into())
}

/// Decodes one handshake frame body.
pub(crate) fn decode_handshake(frame: &[u8]) -> Result<Handshake, FrameError> {
    decode_exact(frame)
}

fn decode_exact<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let mut rest = frame;
    // Reading through `&mut &[u8]` lets us see what is left afterwards;
    // rmp-serde only reads as many bytes as actually present, so a bogus
    // length prefix inside the frame cannot trigger a huge allocation.
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let value = T::deserialize(&mut de)?;
    drop(de);
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(FrameError::TrailingBytes(rest.len()))
    }
}

fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
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
}

impl Shared {
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
        use std::io::{Error, ErrorKind};
        if config.send_queue == 0 || config.max_frame_bytes == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "send_queue and max_frame_bytes must be positive",
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
            cancel: CancellationToken::new(),
        });
        info!(node_id = shared.node_id, %local_addr, "tcp transport listening");
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

struct Outbound {
    reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

enum DialError {
    /// The peer answered but will not talk to us (or is not who we expected).
    Refused(String),
    /// Network or protocol failure.
    Failed(String),
}

async fn run_peer(
    shared: Arc<Shared>,
    peer_id: NodeId,
    mut queue: mpsc::Receiver<Envelope>,
    mut address: watch::Receiver<String>,
) {
    let node_id = shared.node_id;
    let mut backoff = shared.backoff_min;
    // The last problem logged at warn: a peer that stays down or keeps
    // refusing is reported once, not at every attempt.
    let mut last_problem: Option<String> = None;
    loop {
        let addr = address.borrow_and_update().clone();
        let dialed = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
                // Abandon a dial to the old address that may hang until
                // IO_TIMEOUT.
                continue;
            }
            dialed = dial(&shared, peer_id, &addr) => dialed,
        };
        match dialed {
            Ok(conn) => {
                info!(node_id, peer_id, address = %addr, "connected to peer");
                last_problem = None;
                backoff = shared.backoff_min;
                let reason = tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    changed = address.changed() => match changed {
                        Ok(()) => None,
                        Err(_) => return,
                    },
                    ended = pump(&shared, peer_id, conn, &mut queue) => match ended {
                        Some(reason) => Some(reason),
                        None => return,
                    },
                };
                match reason {
                    // New address: dial it right away.
                    None => continue,
                    Some(reason) => {
                        warn!(node_id, peer_id, address = %addr, %reason, "connection to peer lost; reconnecting");
                    }
                }
            }
            Err(DialError::Refused(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    warn!(
                        node_id,
                        peer_id,
                        address = %addr,
                        local_cluster_id = %shared.cluster_id,
                        local_version = PROTOCOL_VERSION,
                        %reason,
                        "peer refused the connection; will keep retrying"
                    );
                    last_problem = Some(reason);
                } else {
                    debug!(node_id, peer_id, address = %addr, %reason, "peer refused the connection again");
                }
            }
            Err(DialError::Failed(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    warn!(node_id, peer_id, address = %addr, %reason, "cannot connect to peer; will keep retrying");
                    last_problem = Some(reason);
                } else {
                    debug!(node_id, peer_id, address = %addr, %reason, "cannot connect to peer");
                }
            }
        }
        let delay = jitter(backoff);
        backoff = backoff.saturating_mul(2).min(shared.backoff_max);
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
                // A reconfigured peer deserves a fresh start.
                backoff = shared.backoff_min;
                last_problem = None;
            }
        }
    }
}

async fn dial(shared: &Shared, peer_id: NodeId, addr: &str) -> Result<Outbound, DialError> {
    let failed = |what: &str, e: &dyn fmt::Display| DialError::Failed(format!("{what}: {e}"));
    let stream = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(failed("connect failed", &e)),
        Err(_) => return Err(DialError::Failed("connect timed out".into())),
    };
    // Raft messages are small and latency-bound.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    // The acceptor only ever sends one handshake frame.
    let mut reader = FramedRead::new(read, codec(HANDSHAKE_MAX_FRAME));
    let mut writer = FramedWrite::new(write, codec(shared.max_frame_bytes));
    let hello = encode_handshake(&Handshake::Hello {
        version: PROTOCOL_VERSION,
        cluster_id: shared.cluster_id.clone(),
        node_id: shared.node_id,
        address: shared.advertise.clone(),
    })
    .map_err(|e| failed("cannot encode hello", &e))?;
    match tokio::time::timeout(IO_TIMEOUT, writer.send(hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed("sending hello failed", &e)),
        Err(_) => return Err(DialError::Failed("sending hello timed out".into())),
    }
    let frame = match tokio::time::timeout(IO_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return Err(failed("reading handshake reply failed", &e)),
        Ok(None) => return Err(DialError::Failed("peer closed during handshake".into())),
        Err(_) => return Err(DialError::Failed("handshake reply timed out".into())),
    };
    match decode_handshake(&frame) {
        Ok(Handshake::Accept { node_id }) if node_id == peer_id => Ok(Outbound { reader, writer }),
        Ok(Handshake::Accept { node_id }) => Err(DialError::Refused(format!(
            "node id mismatch: expected node {peer_id} at {addr}, found node {node_id}"
        ))),
        Ok(Handshake::Refuse { reason }) => Err(DialError::Refused(shorten(&reason))),
        Ok(Handshake::Hello { .. }) => Err(DialError::Failed(
            "peer answered with a hello instead of accept/refuse".into(),
        )),
        Err(e) => Err(failed("undecodable handshake reply", &e)),
    }
}

/// Sends queued messages until the connection fails (`Some(reason)`) or the
/// queue is closed because the transport is going away (`None`).
async fn pump(
    shared: &Shared,
    peer_id: NodeId,
    mut conn: Outbound,
    queue: &mut mpsc::Receiver<Envelope>,
) -> Option<String> {
    loop {
        tokio::select! {
            // Watching the read side notices a closed connection right away
            // instead of at the next write.
            frame = conn.reader.next() => {
                return Some(match frame {
                    None => "peer closed the connection".to_owned(),
                    Some(Err(e)) => format!("read error: {e}"),
                    Some(Ok(_)) => "unexpected frame from acceptor".to_owned(),
                });
            }
            first = queue.recv() => {
                let first = first?;
                let write = async {
                    let mut next = Some(first);
                    let mut written = 0;
                    while let Some(envelope) = next {
                        if let Some(frame) = encode_for_wire(shared, peer_id, &envelope) {
                            conn.writer.feed(frame).await?;
                        }
                        written += 1;
                        next = if written < MAX_BATCH { queue.try_recv().ok() } else { None };
                    }
                    // Spelled out because the codec also encodes `&[u8]`.
                    SinkExt::<Bytes>::flush(&mut conn.writer).await
                };
                match tokio::time::timeout(IO_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(format!("write error: {e}")),
                    Err(_) => return Some("write timed out".to_owned()),
                }
            }
        }
    }
}

fn encode_for_wire(shared: &Shared, peer_id: NodeId, envelope: &Envelope) -> Option<Bytes> {
    let node_id = shared.node_id;
    match encode_envelope(envelope) {
        Ok(frame) if frame.len() <= shared.max_frame_bytes => Some(frame),
        Ok(frame) => {
            warn!(
                node_id,
                peer_id,
                size = frame.len(),
                max = shared.max_frame_bytes,
                "dropping message larger than max_frame_bytes"
            );
            shared.count_drop();
            None
        }
        Err(e) => {
            warn!(node_id, peer_id, error = %e, "dropping message that cannot be encoded");
            shared.count_drop();
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Inbound side: accept, handshake, then decode and deliver.

async fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(serve_inbound(shared.clone(), stream, remote));
            }
            Err(e) => {
                // Typically out of file descriptors: pause rather than spin.
                warn!(node_id = shared.node_id, error = %e, "accept failed");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn serve_inbound(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    let node_id = shared.node_id;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, codec(HANDSHAKE_MAX_FRAME));
    // Kept alive until the function returns: dropping the write half would
    // half-close the socket, which the dialer reads as a lost connection.
    let mut writer = FramedWrite::new(write, codec(HANDSHAKE_MAX_FRAME));

    let first = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        first = tokio::time::timeout(IO_TIMEOUT, reader.next()) => first,
    };
    let frame = match first {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            warn!(node_id, %remote, error = %e, "closing inbound connection: bad handshake frame");
            return;
        }
        Ok(None) => {
            debug!(node_id, %remote, "inbound connection closed before the handshake");
            return;
        }
        Err(_) => {
            warn!(node_id, %remote, "closing inbound connection: no handshake in time");
            return;
        }
    };
    let (version, cluster_id, peer_id, address) = match decode_handshake(&frame) {
        Ok(Handshake::Hello {
            version,
            cluster_id,
            node_id,
            address,
        }) => (version, cluster_id, node_id, address),
        Ok(other) => {
            warn!(node_id, %remote, frame = ?other, "closing inbound connection: expected a hello");
            return;
        }
        Err(e) => {
            warn!(node_id, %remote, error = %e, "closing inbound connection: undecodable handshake");
            return;
        }
    };

    if let Some(reason) = shared.check_hello(version, &cluster_id, peer_id) {
        if shared.should_warn_refusal(&reason) {
            warn!(
                node_id,
                peer_id,
                %remote,
                expected_version = PROTOCOL_VERSION,
                received_version = version,
                expected_cluster_id = %shared.cluster_id,
                received_cluster_id = %shorten(&cluster_id),
                %reason,
                "refusing inbound connection"
            );
        } else {
            debug!(node_id, peer_id, %remote, %reason, "refusing inbound connection again");
        }
        if let Ok(frame) = encode_handshake(&Handshake::Refuse { reason }) {
            // Best effort: the dialer learns why; we close either way.
            let _ = tokio::time::timeout(IO_TIMEOUT, writer.send(frame)).await;
        }
        return;
    }

    let accept = match encode_handshake(&Handshake::Accept { node_id }) {
        Ok(frame) => frame,
        Err(e) => {
            warn!(node_id, peer_id, %remote, error = %e, "cannot encode accept");
            return;
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, writer.send(accept)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(node_id, peer_id, %remote, error = %e, "sending accept failed");
            return;
        }
        Err(_) => {
            debug!(node_id, peer_id, %remote, "sending accept timed out");
            return;
        }
    }
    reader
        .decoder_mut()
        .set_max_frame_length(shared.max_frame_bytes);
    debug!(node_id, peer_id, %remote, "accepted inbound connection");
    if !address.is_empty() && address.len() <= MAX_ADVERTISED_LEN {
        // Picked up by the transport on its next send: a node can answer
        // whoever talks to it, even before the configuration names it.
        lock(&shared.learned).push((peer_id, address));
    }

    loop {
        let frame = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // Oversized length prefix, or EOF in the middle of a frame.
                warn!(node_id, peer_id, %remote, error = %e, "closing inbound connection: bad frame");
                return;
            }
            None => {
                debug!(node_id, peer_id, %remote, "inbound connection closed by peer");
                return;
            }
        };
        let envelope = match decode_envelope(&frame) {
            Ok(envelope) => envelope,
            Err(e) => {
                // After a bad frame we can no longer trust the stream.
                warn!(node_id, peer_id, %remote, error = %e, "closing inbound connection: undecodable message");
                return;
            }
        };
        if envelope.from != peer_id {
            warn!(
                node_id,
                peer_id,
                %remote,
                from = envelope.from,
                "dropping message whose sender differs from the handshake"
            );
        } else if envelope.to != node_id {
            warn!(
                node_id,
                peer_id,
                %remote,
                to = envelope.to,
                "dropping message addressed to another node"
            );
        } else {
            (shared.deliver)(envelope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::ConflictHint;
    use crate::core::types::{ClientCommand, SessionTag};
    use crate::core::types::{Entry, LogId, Membership, Payload};
    use crate::error::{MembershipError, TransferError};
    use crate::message::{Message, RemoteError};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc::error::TryRecvError;
    use tokio::time::timeout;
    use tokio_util::codec::Decoder;

    /// Upper bound for every wait in the integration tests.
    const WAIT: Duration = Duration::from_secs(10);

    // --- property tests -------------------------------------------------

    fn arb_log_id() -> impl Strategy<Value = LogId> {
        (any::<u64>(), any::<u64>()).prop_map(|(term, index)| LogId { term, index })
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let payload = prop_oneof![
            Just(Payload::Blank),
            arb_bytes().prop_map(Payload::Command),
            (
                proptest::collection::btree_set(any::<u64>(), 0..5),
                proptest::option::of(proptest::collection::btree_set(any::<u64>(), 0..5)),
                proptest::collection::btree_map(any::<u64>(), ".{0,12}", 0..3),
                proptest::collection::btree_map(
                    any::<u64>(),
                    proptest::collection::btree_map(".{0,4}", ".{0,12}", 0..2),
                    0..2,
                ),
            )
                .prop_map(|(voters, old_voters, addresses, metadata)| {
                    Payload::Membership(Membership {
                        voters,
                        old_voters,
                        learners: Default::default(),
                        addresses,
                        metadata,
                    })
                }),
        ];
        (arb_log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
    }

    fn arb_client_command() -> impl Strategy<Value = ClientCommand> {
        prop_oneof![
            Just(ClientCommand::Empty),
            Just(ClientCommand::OpenSession),
            arb_bytes().prop_map(ClientCommand::Command),
            (any::<(u64, u64, u64, bool)>(), arb_bytes()).prop_map(
                |((session, seq, received, implicit), command)| {
                    let tag = SessionTag {
                        session,
                        seq,
                        received,
                        implicit,
                    };
                    ClientCommand::Tagged(tag, command)
                }
            ),
        ]
    }

    fn arb_remote_error() -> impl Strategy<Value = RemoteError> {
        prop_oneof![
            proptest::option::of(any::<u64>()).prop_map(RemoteError::NotLeader),
            Just(RemoteError::Indeterminate),
            Just(RemoteError::ShuttingDown),
            ".{0,16}".prop_map(RemoteError::BadCommand),
            Just(RemoteError::Membership(MembershipError::ChangeInProgress)),
            (any::<u64>(), any::<u64>()).prop_map(|(learner, behind)| {
                RemoteError::Membership(MembershipError::LearnerBehind { learner, behind })
            }),
            any::<u64>()
                .prop_map(|to| RemoteError::Transfer(TransferError::TargetDidNotTakeOver(to))),
            ".{0,16}".prop_map(RemoteError::Snapshot),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                any::<u64>(),
                arb_log_id(),
                proptest::collection::vec(arb_entry(), 0..4),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(term, prev, entries, leader_commit, round)| {
                    Message::AppendEntries {
                        term,
                        prev,
                        entries,
                        leader_commit,
                        round,
                    }
                }),
            (
                any::<u64>(),
                prop_oneof![
                    arb_log_id().prop_map(Ok),
                    (proptest::option::of(any::<u64>()), any::<u64>()).prop_map(
                        |(conflict_term, first_index)| Err(ConflictHint {
                            conflict_term,
                            first_index
                        })
                    ),
                ],
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(term, result, prev_index, round)| {
                    Message::AppendEntriesResponse {
                        term,
                        result,
                        prev_index,
                        round,
                    }
                }),
            (any::<u64>(), arb_log_id(), any::<bool>(), any::<bool>()).prop_map(
                |(term, last_log_id, pre_vote, force)| Message::RequestVote {
                    term,
                    last_log_id,
                    pre_vote,
                    force
                }
            ),
            (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(term, granted, pre_vote)| {
                Message::RequestVoteResponse {
                    term,
                    granted,
                    pre_vote,
                }
            }),
            any::<u64>().prop_map(|term| Message::TimeoutNow { term }),
            ".{0,16}".prop_map(|reason| Message::Refused { reason }),
            (any::<u64>(), any::<u64>(), arb_client_command())
                .prop_map(|(id, term, command)| Message::ForwardWrite { id, term, command }),
            (
                any::<u64>(),
                prop_oneof![
                    (arb_log_id(), arb_bytes()).prop_map(Ok),
                    arb_remote_error().prop_map(Err)
                ]
            )
                .prop_map(|(id, result)| Message::ForwardWriteResponse { id, result }),
            any::<u64>().prop_map(|id| Message::ReadIndexRequest { id }),
            (
                any::<u64>(),
                prop_oneof![any::<u64>().prop_map(Ok), arb_remote_error().prop_map(Err)]
            )
                .prop_map(|(id, result)| Message::ReadIndexResponse { id, result }),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (
            any::<u64>(),
            any::<u64>(),
            arb_message(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(from, to, message, cluster_id, incarnation)| Envelope {
                cluster_id,
                incarnation,
                ..Envelope::new(from, to, message)
            })
    }

    fn arb_handshake() -> impl Strategy<Value = Handshake> {
        prop_oneof![
            (any::<u32>(), ".{0,32}", any::<u64>(), ".{0,32}").prop_map(
                |(version, cluster_id, node_id, address)| Handshake::Hello {
                    version,
                    cluster_id,
                    node_id,
                    address,
                }
            ),
            any::<u64>().prop_map(|node_id| Handshake::Accept { node_id }),
            ".{0,32}".prop_map(|reason| Handshake::Refuse { reason }),
        ]
    }

    /// Feeds `chunks` through the frame codec and the envelope decoder the
    /// way a connection does, stopping at the first framing error.
    fn decode_stream(chunks: &[Vec<u8>], max: usize) -> Vec<Result<Envelope, ()>> {
        let mut codec = codec(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => out.push(decode_envelope(&frame).map_err(drop)),
                    Ok(None) => break,
                    Err(_) => return out,
                }
            }
        }
        if let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
            out.push(decode_envelope(&frame).map_err(drop));
        }
        out
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_envelope(&bytes);
            let _ = decode_handshake(&bytes);
        }

        #[test]
        fn envelope_round_trips(envelope in arb_envelope()) {
            let frame = encode_envelope(&envelope).unwrap();
            prop_assert_eq!(decode_envelope(&frame).unwrap(), envelope);
            // A frame carries exactly one message.
            let mut longer = frame.to_vec();
            longer.push(0xc0);
            prop_assert!(decode_envelope(&longer).is_err());
            if !frame.is_empty() {
                prop_assert!(decode_envelope(&frame[..frame.len() - 1]).is_err());
            }
        }

        #[test]
        fn handshake_round_trips(handshake in arb_handshake()) {
            let frame = encode_handshake(&handshake).unwrap();
            prop_assert_eq!(decode_handshake(&frame).unwrap(), handshake);
        }

        #[test]
        fn arbitrary_stream_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            max in 0usize..256,
        ) {
            let _ = decode_stream(&chunks, max);
        }

        #[test]
        fn chunked_valid_stream_round_trips(
            envelopes in proptest::collection::vec(arb_envelope(), 0..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = Vec::new();
            for e in &envelopes {
                let frame = encode_envelope(e).unwrap();
                wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                wire.extend_from_slice(&frame);
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points.into_iter().chain([wire.len()]) {
                chunks.push(wire[start..p].to_vec());
                start = p;
            }
            let decoded = decode_stream(&chunks, 1 << 20);
            let expected: Vec<Result<Envelope, ()>> = envelopes.into_iter().map(Ok).collect();
            prop_assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn deeply_nested_input_is_rejected() {
        // Unknown fields are skipped recursively; 100k nested arrays in one
        // must hit the decoder's depth limit rather than overflow the stack.
        let mut hello = vec![0x81u8, 0xa5];
        hello.extend_from_slice(b"Hello");
        hello.extend_from_slice(&[0x81, 0xa1, b'x']);
        hello.extend(std::iter::repeat_n(0x91u8, 100_000));
        hello.push(0xc0);
        let err = decode_handshake(&hello).unwrap_err();
        assert!(err.to_string().contains("depth limit"), "{err}");
        let mut nested = vec![0x91u8; 100_000];
        nested.push(0xc0);
        assert!(decode_envelope(&nested).is_err());
    }

    // --- integration tests ----------------------------------------------

    type Inbox = mpsc::UnboundedReceiver<Envelope>;

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// An address nothing listens on (a port the OS just handed out).
    fn dead_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind(local()).unwrap();
        listener.local_addr().unwrap()
    }

    fn config(id: NodeId, cluster: &str, listen: SocketAddr) -> TcpConfig {
        let mut config = TcpConfig::new(id, cluster, listen);
        config.connect_backoff_min = Duration::from_millis(5);
        config.connect_backoff_max = Duration::from_millis(100);
        config
    }

    async fn start(config: TcpConfig) -> std::io::Result<(TcpTransport, Inbox)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let deliver = Arc::new(move |e: Envelope| {
            let _ = tx.send(e);
        });
        Ok((TcpTransport::start(config, deliver).await?, rx))
    }

    async fn node(id: NodeId, cluster: &str) -> (TcpTransport, Inbox) {
        start(config(id, cluster, local())).await.unwrap()
    }

    fn msg(from: NodeId, to: NodeId, term: u64) -> Envelope {
        Envelope::new(from, to, Message::TimeoutNow { term })
    }

    async fn recv(inbox: &mut Inbox) -> Envelope {
        timeout(WAIT, inbox.recv())
            .await
            .expect("timed out waiting for a message")
            .expect("inbox closed")
    }

    /// Sends `term`-numbered messages until one arrives; for paths where a
    /// message may be lost on a connection that is just going away.
    async fn send_until_received(t: &TcpTransport, inbox: &mut Inbox, from: NodeId, to: NodeId) {
        timeout(WAIT, async {
            for term in 0.. {
                t.send(msg(from, to, term));
                if let Ok(Some(e)) = timeout(Duration::from_millis(50), inbox.recv()).await {
                    assert_eq!((e.from, e.to), (from, to));
                    return;
                }
            }
        })
        .await
        .expect("message never arrived");
    }

    async fn pair() -> ((TcpTransport, Inbox), (TcpTransport, Inbox)) {
        let (a, ra) = node(1, "c").await;
        let (b, rb) = node(2, "c").await;
        a.set_address(2, &b.local_addr().to_string());
        b.set_address(1, &a.local_addr().to_string());
        ((a, ra), (b, rb))
    }

    #[tokio::test]
    async fn two_nodes_exchange_messages_both_ways() {
        let ((a, mut ra), (b, mut rb)) = pair().await;
        for term in 0..100 {
            a.send(msg(1, 2, term));
        }
        for term in 0..100 {
            assert_eq!(recv(&mut rb).await, msg(1, 2, term));
        }
        let big = Envelope::new(
            2,
            1,
            Message::ForwardWrite {
                id: 9,
                term: 1,
                command: ClientCommand::Command(Bytes::from(vec![7u8; 1 << 20])),
            },
        );
        b.send(big.clone());
        assert_eq!(recv(&mut ra).await, big);

        // Self-addressed and unknown-peer messages are dropped, not delivered.
        let before = a.dropped_messages();
        a.send(msg(1, 1, 0));
        a.send(msg(1, 42, 0));
        assert_eq!(a.dropped_messages(), before + 2);
        b.send(msg(2, 1, 5));
        assert_eq!(recv(&mut ra).await, msg(2, 1, 5));
        assert!(matches!(ra.try_recv(), Err(TryRecvError::Empty)));
        a.shutdown();
        b.shutdown();
    }

    #[tokio::test]
    async fn late_and_restarted_peer_is_reached() {
        let addr = dead_addr();
        let mut cfg = config(1, "c", local());
        cfg.peers.insert(2, addr.to_string());
        let (a, _ra) = start(cfg).await.unwrap();
        // Queued while the peer is down, delivered once it comes up.
        a.send(msg(1, 2, 7));
        let (b, mut rb) = start(config(2, "c", addr)).await.unwrap();
        assert_eq!(recv(&mut rb).await, msg(1, 2, 7));

        // Restart the peer on the same port: the old connection breaks and
        // node 1 redials.
        b.shutdown();
        drop(b);
        let (b2, mut rb2) = timeout(WAIT, async {
            loop {
                match start(config(2, "c", addr)).await {
                    Ok(started) => return started,
                    // The old listener closes once its task sees the stop.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        })
        .await
        .expect("could not rebind");
        send_until_received(&a, &mut rb2, 1, 2).await;
        a.shutdown();
        b2.shutdown();
    }

    #[tokio::test]
    async fn changed_address_reconnects() {
        let (a, _ra) = node(1, "c").await;
        a.set_address(2, &dead_addr().to_string());
        a.send(msg(1, 2, 3));
        let (b, mut rb) = node(2, "c").await;
        a.set_address(2, &b.local_addr().to_string());
        assert_eq!(recv(&mut rb).await, msg(1, 2, 3));
        a.shutdown();
        b.shutdown();
    }

    /// Collects formatted log output of the current thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
        fn count(&self, needle: &str) -> usize {
            self.text().lines().filter(|l| l.contains(needle)).count()
        }
        async fn wait_for(&self, needle: &str, times: usize) {
            timeout(WAIT, async {
                while self.count(needle) < times {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("log never showed {needle:?} {times}x:\n{}", self.text()));
        }
    }

    #[tokio::test]
    async fn wrong_cluster_is_refused_and_logged_once() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // Current-thread runtime: every task logs on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);

        let (a, _ra) = node(1, "alpha").await;
        let (b, mut rb) = node(2, "beta").await;
        a.set_address(2, &b.local_addr().to_string());
        for term in 0..10 {
            a.send(msg(1, 2, term));
        }
        // Wait for several retries, each refused.
        logs.wait_for("peer refused the connection again", 3).await;
        logs.wait_for("refusing inbound connection again", 3).await;
        let text = logs.text();
        let expected = r#"cluster id mismatch: expected "beta", received "alpha""#;
        assert!(text.contains(expected), "{text}");
        assert!(text.contains("expected_cluster_id=beta received_cluster_id=alpha"));
        // One warning per side despite the retries.
        assert_eq!(logs.count("WARN"), 2, "{text}");
        assert_eq!(logs.count("will keep retrying"), 1);
        assert!(matches!(rb.try_recv(), Err(TryRecvError::Empty)));
        a.shutdown();
        b.shutdown();
    }

    async fn raw_frame(stream: &mut TcpStream, body: &[u8]) {
        stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(body).await.unwrap();
    }

    /// Connects and completes the handshake as node `id`.
    async fn raw_client(addr: SocketAddr, id: NodeId) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let hello = encode_handshake(&Handshake::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "c".into(),
            node_id: id,
            address: String::new(),
        })
        .unwrap();
        raw_frame(&mut stream, &hello).await;
        let reply = timeout(WAIT, async {
            let len = stream.read_u32().await.unwrap() as usize;
            let mut body = vec![0; len];
            stream.read_exact(&mut body).await.unwrap();
            body
        })
        .await
        .expect("no handshake reply");
        assert_eq!(
            decode_handshake(&reply).unwrap(),
            Handshake::Accept { node_id: 2 }
        );
        stream
    }

    /// The server closed the connection: reading ends (EOF or reset).
    async fn assert_disconnected(mut stream: TcpStream) {
        let mut sink = Vec::new();
        let read = timeout(WAIT, stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "connection was not closed");
    }

    async fn still_works(
        (a, ra): &mut (TcpTransport, Inbox),
        (b, rb): &mut (TcpTransport, Inbox),
        term: u64,
    ) {
        a.send(msg(1, 2, term));
        assert_eq!(recv(rb).await, msg(1, 2, term));
        b.send(msg(2, 1, term));
        assert_eq!(recv(ra).await, msg(2, 1, term));
    }

    #[tokio::test]
    async fn bad_clients_are_disconnected_without_disturbing_peers() {
        let (mut a, mut b) = pair().await;
        still_works(&mut a, &mut b, 0).await;
        let addr = b.0.local_addr();

        // Not our protocol at all: "GET " reads as a ~1 GB length prefix.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_disconnected(s).await;
        still_works(&mut a, &mut b, 1).await;

        // A well-framed but undecodable handshake.
        let mut s = TcpStream::connect(addr).await.unwrap();
        raw_frame(&mut s, b"\xc1garbage").await;
        assert_disconnected(s).await;

        // Garbage after a valid handshake.
        let mut s = raw_client(addr, 7).await;
        raw_frame(&mut s, &[0xff, 0x00, 0x12, 0x34]).await;
        assert_disconnected(s).await;
        still_works(&mut a, &mut b, 2).await;

        // An oversized length prefix after a valid handshake.
        let mut s = raw_client(addr, 7).await;
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert_disconnected(s).await;

        // A truncated frame, then end of stream.
        let mut s = raw_client(addr, 7).await;
        let frame = encode_envelope(&msg(7, 2, 1)).unwrap();
        s.write_all(&(frame.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&frame[..frame.len() / 2]).await.unwrap();
        s.shutdown().await.unwrap();
        assert_disconnected(s).await;
        still_works(&mut a, &mut b, 3).await;

        // Spoofed sender and wrong addressee are dropped; the connection
        // stays usable.
        let mut s = raw_client(addr, 7).await;
        raw_frame(&mut s, &encode_envelope(&msg(1, 2, 100)).unwrap()).await;
        raw_frame(&mut s, &encode_envelope(&msg(7, 3, 101)).unwrap()).await;
        raw_frame(&mut s, &encode_envelope(&msg(7, 2, 102)).unwrap()).await;
        assert_eq!(recv(&mut b.1).await, msg(7, 2, 102));
        still_works(&mut a, &mut b, 4).await;
        drop(s);
        assert!(matches!(b.1.try_recv(), Err(TryRecvError::Empty)));
        a.0.shutdown();
        b.0.shutdown();
    }

    #[tokio::test]
    async fn send_queue_is_bounded_for_a_dead_peer() {
        let mut cfg = config(1, "c", local());
        cfg.peers.insert(2, dead_addr().to_string());
        let capacity = cfg.send_queue;
        let (a, _ra) = start(cfg).await.unwrap();
        let total = 100_000;
        for term in 0..total {
            a.send(msg(1, 2, term));
            if term % 1000 == 0 {
                assert!(a.queue_len(2).unwrap() <= capacity);
            }
        }
        assert!(a.queue_len(2).unwrap() <= capacity);
        assert!(a.dropped_messages() >= total - capacity as u64);
        // Give the peer task a chance to run; still bounded.
        tokio::task::yield_now().await;
        assert!(a.queue_len(2).unwrap() <= capacity);
        a.shutdown();
        // After shutdown everything is dropped, nothing panics.
        a.send(msg(1, 2, 0));
        a.set_address(3, "127.0.0.1:1");
        assert_eq!(a.queue_len(2), None);
    }
}
