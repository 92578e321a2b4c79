//! What the fuzzer feeds: every way bytes from outside the process enter
//! a node. Each target must return (an error is fine) for any input: a
//! panic, a hang or a huge allocation is a finding.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::core::snapshot_transfer::{chunk_is_next, receive_chunk, ChunkStep};
use crate::core::types::{Entry, LogId, Membership, Payload};
use crate::message::{Envelope, Message};
use crate::storage::snapshot::{describe, MemSnapshotStore, SnapshotMeta, SnapshotStore};
use crate::transport::tcp::{codec, decode_envelope, decode_handshake, encode_envelope};

/// One fuzz target.
pub struct Target {
    /// Its name, also the corpus folder's.
    pub name: &'static str,
    /// Feeds one input.
    pub run: fn(&[u8]),
    /// Valid inputs to start mutating from when the corpus is empty.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub fn all() -> Vec<Target> {
    let mut targets = vec![
        Target {
            name: "frames",
            run: frames,
            seeds: stream_seeds,
        },
        Target {
            name: "handshake",
            run: handshake,
            seeds: handshake_seeds,
        },
        Target {
            name: "message",
            run: message,
            seeds: message_seeds,
        },
        Target {
            name: "snapshot",
            run: snapshot,
            seeds: snapshot_seeds,
        },
        Target {
            name: "snapshot_meta",
            run: snapshot_meta,
            seeds: meta_seeds,
        },
    ];
    #[cfg(feature = "fjall")]
    targets.push(Target {
        name: "log_records",
        run: crate::storage::fjall::decode_records_for_fuzzing,
        seeds: record_seeds,
    });
    #[cfg(feature = "web")]
    targets.push(Target {
        name: "http_body",
        run: crate::web::fuzz_admin_bodies,
        seeds: body_seeds,
    });
    targets
}

/// A byte stream from a peer, cut into frames as the transport does; each
/// frame decoded as an envelope and checked as the node checks messages.
fn frames(input: &[u8]) {
    let mut codec = codec(64 * 1024);
    let mut buffer = BytesMut::from(input);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        message(&frame);
    }
}

fn handshake(input: &[u8]) {
    let _ = decode_handshake(input);
}

fn message(input: &[u8]) {
    if let Ok(envelope) = decode_envelope(input) {
        let _ = crate::node::validate(&envelope.message);
        let _ = envelope.message.term();
    }
}

/// A snapshot received in chunks: the meta and the chunk boundaries come
/// from the input, the data from the rest. Whatever arrives, `finish`
/// accepts exactly the data the meta describes.
fn snapshot(input: &[u8]) {
    let Some((&control, rest)) = input.split_first() else {
        return;
    };
    let (cuts, data) = rest.split_at(rest.len().min(4));
    let honest = describe(LogId::new(2, 40), Membership::new([1, 2]), data);
    let meta = if control & 1 == 0 {
        honest.clone()
    } else {
        SnapshotMeta {
            checksum: u32::from(control) << 8 | u32::from(cuts.first().copied().unwrap_or(0)),
            size: u64::from(cuts.get(1).copied().unwrap_or(0)),
            ..honest.clone()
        }
    };
    let store = MemSnapshotStore::default();
    let Ok(mut sink) = store.sink(meta.clone()) else {
        return;
    };
    if receive_chunk(0, meta.last_included.index, false, 0) != ChunkStep::Begin {
        return;
    }
    let step = usize::from(cuts.get(2).copied().unwrap_or(1)).max(1);
    let mut offset = 0;
    for chunk in data.chunks(step) {
        // Duplicates and gaps are answered, not written (the follower's rule).
        if chunk_is_next(offset as u64, sink.written(), chunk.len()) && sink.write(chunk).is_err() {
            return;
        }
        offset += chunk.len();
    }
    let finished = sink.finish();
    if meta == honest {
        assert!(finished.is_ok(), "an honest snapshot was refused");
    } else if finished.is_ok() {
        assert_eq!(
            meta.checksum, honest.checksum,
            "a wrong checksum was accepted"
        );
    }
}

fn snapshot_meta(input: &[u8]) {
    let _ = crate::storage::snapshot::parse_meta(input);
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            log_id: LogId::new(1, 1),
            payload: Payload::Membership(Box::new(Membership::new([1, 2, 3]))),
        },
        Entry {
            log_id: LogId::new(1, 2),
            payload: Payload::Blank,
        },
        Entry {
            log_id: LogId::new(2, 3),
            payload: Payload::Command(Bytes::from_static(b"\x93\x01\x02\x03")),
        },
    ]
}

fn messages() -> Vec<Message> {
    let meta = describe(LogId::new(2, 3), Membership::new([1, 2, 3]), b"state");
    vec![
        Message::AppendEntries {
            term: 2,
            prev: LogId::new(1, 0),
            entries: entries(),
            leader_commit: 2,
            round: 7,
        },
        Message::RequestVote {
            term: 3,
            last_log_id: LogId::new(2, 3),
            pre_vote: true,
            force: false,
        },
        Message::InstallSnapshot {
            term: 2,
            meta,
            offset: 0,
            data: Bytes::from_static(b"state"),
        },
        Message::TimeoutNow { term: 4 },
        Message::Quiesce {
            term: 2,
            last: LogId::new(2, 3),
            leader_commit: 3,
        },
        Message::HostHeartbeat,
        Message::DeleteGroup,
        Message::GroupDeleted,
        Message::AppendEntriesResponse {
            term: 2,
            result: Err(crate::core::log::ConflictHint {
                conflict_term: Some(1),
                first_index: 2,
            }),
            prev_index: 3,
            round: 7,
        },
        Message::RequestVoteResponse {
            term: 3,
            granted: true,
            pre_vote: false,
        },
        Message::InstallSnapshotResponse {
            term: 2,
            last_included: LogId::new(2, 3),
            received: 5,
            done: true,
        },
        Message::ForwardWrite {
            id: 9,
            term: 2,
            command: crate::core::types::ClientCommand::Command(Bytes::from_static(b"\x01")),
        },
        Message::ForwardWriteResponse {
            id: 9,
            result: Err(crate::message::RemoteError::NotLeader(Some(3))),
        },
        Message::ForwardAdmin {
            id: 11,
            term: 2,
            request: crate::message::AdminRequest::SetMetadata {
                id: 2,
                key: "api".into(),
                value: Some("127.0.0.1:8002".into()),
            },
        },
        Message::ForwardAdminResponse {
            id: 11,
            result: Ok(crate::core::types::Membership::new([1, 2, 3])),
        },
        Message::ReadIndexRequest { id: 10 },
        Message::ReadIndexResponse {
            id: 10,
            result: Ok(3),
        },
        Message::Refused {
            reason: "another cluster".into(),
        },
    ]
}

fn encoded(message: Message) -> Vec<u8> {
    encode_envelope(&Envelope::new(1, 2, message))
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn message_seeds() -> Vec<Vec<u8>> {
    messages().into_iter().map(encoded).collect()
}

fn stream_seeds() -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    for frame in message_seeds() {
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(&frame);
    }
    vec![stream]
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    use crate::transport::tcp::{encode_handshake, Handshake, PROTOCOL_VERSION};
    [
        Handshake::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "regatta".into(),
            node_id: 3,
            address: "127.0.0.1:7000".into(),
        },
        Handshake::Accept { node_id: 2 },
        Handshake::Refuse {
            reason: "cluster id mismatch".into(),
        },
    ]
    .iter()
    .filter_map(|h| encode_handshake(h).ok())
    .map(|b| b.to_vec())
    .collect()
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    vec![
        b"\x00\x01\x02\x03the state of a small machine".to_vec(),
        b"\x01\x10\x20\x05another".to_vec(),
    ]
}

fn meta_seeds() -> Vec<Vec<u8>> {
    let meta = describe(LogId::new(2, 3), Membership::new([1, 2, 3]), b"state");
    let mut bytes = rmp_serde::to_vec(&meta).unwrap_or_default();
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    vec![bytes]
}

#[cfg(feature = "fjall")]
fn record_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = entries()
        .iter()
        .filter_map(|e| rmp_serde::to_vec(e).ok())
        .collect();
    seeds.extend(rmp_serde::to_vec(&(LogId::new(2, 3), Membership::new([1]))).ok());
    seeds
}

#[cfg(feature = "web")]
fn body_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"id": 4, "raft_addr": "127.0.0.1:7004", "metadata": {"api": "127.0.0.1:8004"}, "voter": true}"#.to_vec(),
        br#"{"to": 2}"#.to_vec(),
        b"{}".to_vec(),
    ]
}
