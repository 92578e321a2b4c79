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
        any::<u64>().prop_map(|to| RemoteError::Transfer(TransferError::TargetDidNotTakeOver(to))),
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
