//! The transport over real sockets on 127.0.0.1: exchange, reconnects,
//! refusals, limits.

use super::*;
use crate::core::types::ClientCommand;
use crate::message::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::timeout;

/// Upper bound for every wait in the integration tests.
pub(super) const WAIT: Duration = Duration::from_secs(10);

// --- integration tests ----------------------------------------------

pub(super) type Inbox = mpsc::UnboundedReceiver<Envelope>;

pub(super) fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An address nothing listens on (a port the OS just handed out).
fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind(local()).unwrap();
    listener.local_addr().unwrap()
}

pub(super) fn config(id: NodeId, cluster: &str, listen: SocketAddr) -> TcpConfig {
    let mut config = TcpConfig::new(id, cluster, listen);
    config.connect_backoff_min = Duration::from_millis(5);
    config.connect_backoff_max = Duration::from_millis(100);
    config
}

pub(super) async fn start(config: TcpConfig) -> std::io::Result<(TcpTransport, Inbox)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let deliver = Arc::new(move |e: Envelope| {
        let _ = tx.send(e);
    });
    Ok((TcpTransport::start(config, deliver).await?, rx))
}

async fn node(id: NodeId, cluster: &str) -> (TcpTransport, Inbox) {
    start(config(id, cluster, local())).await.unwrap()
}

pub(super) fn msg(from: NodeId, to: NodeId, term: u64) -> Envelope {
    Envelope::new(from, to, Message::TimeoutNow { term })
}

pub(super) async fn recv(inbox: &mut Inbox) -> Envelope {
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

/// A dialer waiting out a long backoff to a peer that was down dials at
/// once when that peer connects to it: a restarted node is reached as
/// soon as it is back, not after the backoff.
#[tokio::test]
async fn a_peer_that_connects_to_us_is_dialed_without_waiting_out_the_backoff() {
    let spot = dead_addr();
    let mut slow = config(1, "c", local());
    // Far beyond the test's bound: only the signal can end the wait.
    slow.connect_backoff_min = Duration::from_secs(60);
    slow.connect_backoff_max = Duration::from_secs(60);
    let (a, _ra) = start(slow).await.unwrap();
    a.set_address(2, &spot.to_string());
    // The first dial fails: a now sleeps 60 s before the next.
    a.send(msg(1, 2, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (b, mut rb) = start(config(2, "c", spot)).await.unwrap();
    b.set_address(1, &a.local_addr().to_string());
    b.send(msg(2, 1, 0));
    send_until_received(&a, &mut rb, 1, 2).await;
    a.shutdown();
    b.shutdown();
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
    // Both sides counted the megabyte: b sent it to 1, a received it from 2.
    let sent = b.traffic()[&1].sent;
    let received = a.traffic()[&2].received;
    assert!(sent > 1 << 20 && received == sent, "{sent} {received}");
    assert!(a.traffic()[&2].sent > 0 && b.traffic()[&1].received > 0);

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
pub(super) struct Logs(Arc<Mutex<Vec<u8>>>);

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
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
    pub(super) fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
    pub(super) async fn wait_for(&self, needle: &str, times: usize) {
        timeout(WAIT, async {
            while self.count(needle) < times {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("log never showed {needle:?} {times}x:\n{}", self.text()));
    }
}

/// Captures this thread's logs until the guard drops (the tests run on a
/// current-thread runtime: every task logs on this thread).
pub(super) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn wrong_cluster_is_refused_and_logged_once() {
    let (logs, _guard) = capture_logs();

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

#[tokio::test]
async fn a_peer_that_shuts_down_is_noted_and_warned_of_only_if_it_stays_away() {
    let (logs, _guard) = capture_logs();
    let ((a, _ra), (b, mut rb)) = pair().await;
    send_until_received(&a, &mut rb, 1, 2).await;
    b.shutdown();
    logs.wait_for("peer closed the connection; reconnecting", 1)
        .await;
    // The redial finds nobody: that is worth a warning.
    logs.wait_for("cannot connect to peer; will keep retrying", 1)
        .await;
    let text = logs.text();
    let closed = text
        .lines()
        .find(|l| l.contains("peer closed the connection"))
        .unwrap_or_default();
    assert!(closed.contains("INFO"), "{text}");
    assert_eq!(logs.count("connection to peer lost"), 0, "{text}");
    let redial = text
        .lines()
        .find(|l| l.contains("cannot connect to peer"))
        .unwrap_or_default();
    assert!(redial.contains("WARN"), "{text}");
    a.shutdown();
}

pub(super) async fn raw_frame(stream: &mut TcpStream, body: &[u8]) {
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

/// A pair whose acceptor `b` closes handshakes after 300 ms and admits at
/// most 8 at once (4 per address).
async fn limited_pair() -> ((TcpTransport, Inbox), (TcpTransport, Inbox)) {
    let (a, ra) = node(1, "c").await;
    let mut cb = config(2, "c", local());
    cb.handshake_timeout = Duration::from_millis(300);
    cb.max_pending_connections = 8;
    cb.max_pending_connections_per_ip = 4;
    let (b, rb) = start(cb).await.unwrap();
    a.set_address(2, &b.local_addr().to_string());
    b.set_address(1, &a.local_addr().to_string());
    ((a, ra), (b, rb))
}

/// How many of `streams` the server has closed (read returns at once).
async fn closed_count(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for s in streams.iter_mut() {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(20), s.read(&mut byte)).await {
            closed += 1;
        }
    }
    closed
}

#[tokio::test]
async fn a_flood_of_silent_connections_is_capped_and_timed_out_while_peers_talk() {
    let (mut a, mut b) = limited_pair().await;
    still_works(&mut a, &mut b, 0).await;
    let addr = b.0.local_addr();
    // 100 connections that never say a word.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    // All but the per-address cap are closed on accept...
    timeout(WAIT, async {
        while closed_count(&mut flood).await < 96 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connections over the cap were not closed");
    assert!(b.0.inner.shared.admission.pending() <= 4);
    // ...the established peer connection is untouched...
    for term in 1..20 {
        still_works(&mut a, &mut b, term).await;
    }
    // ...and the rest are closed at the handshake timeout, freeing their
    // slots: nothing stays behind.
    timeout(WAIT, async {
        while closed_count(&mut flood).await < 100 || b.0.inner.shared.admission.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("silent connections were not timed out");
    still_works(&mut a, &mut b, 100).await;
}

#[tokio::test]
async fn a_slow_loris_handshake_is_closed_at_the_handshake_timeout() {
    let (mut a, mut b) = limited_pair().await;
    let addr = b.0.local_addr();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // A length prefix promising a frame, then a byte every 50 ms.
    slow.write_all(&100u32.to_be_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let closed = timeout(WAIT, async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(&[0x90]).await.is_err() {
                return;
            }
            if closed_count(std::slice::from_mut(&mut slow)).await == 1 {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow client was never disconnected");
    assert!(started.elapsed() >= Duration::from_millis(250));
    still_works(&mut a, &mut b, 1).await;
}

#[tokio::test]
async fn a_new_connection_from_a_peer_replaces_its_old_one() {
    let (_a, b) = limited_pair().await;
    let addr = b.0.local_addr();
    let first = raw_client(addr, 1).await;
    let _second = raw_client(addr, 1).await;
    // The older connection's task ends: the server closes it.
    assert_disconnected(first).await;
}

/// Issue 23, finding 7: every handshake claiming a new node id used to add
/// a peer for good (a send queue, a task, byte counters). Beyond
/// `MAX_PEERS` nothing more is kept.
#[tokio::test]
async fn strangers_claiming_ever_new_ids_are_bounded() {
    let (t, _inbox) = node(1, "c").await;
    let shared = &t.inner.shared;
    for id in 2..(3 * MAX_PEERS as u64) {
        shared.learn(id, format!("127.0.0.1:{}", 20_000 + id));
        drop(shared.traffic_of(id));
    }
    t.send(msg(1, 2, 1)); // adopts what was learned
    assert!(lock(&t.inner.peers).len() <= MAX_PEERS);
    assert!(lock(&shared.traffic).len() <= MAX_PEERS);
    assert!(lock(&shared.learned).is_empty());
}
