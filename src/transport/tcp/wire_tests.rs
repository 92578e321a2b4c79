//! Property tests of the wire format: every message round-trips through
//! the codec, and no byte sequence makes a decoder panic.

use super::*;
use crate::core::log::ConflictHint;
use crate::core::types::{ClientCommand, SessionTag};
use crate::core::types::{Entry, LogId, Membership, Payload};
use crate::error::{MembershipError, TransferError};
use crate::message::{Message, RemoteError};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

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
                Payload::Membership(Box::new(Membership {
                    voters,
                    old_voters,
                    learners: Default::default(),
                    addresses,
                    metadata,
                    incarnations: Default::default(),
                }))
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
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(term, last_term, index, leader_commit)| Message::Quiesce {
                term,
                last: LogId::new(last_term, index),
                leader_commit,
            }
        ),
        Just(Message::HostHeartbeat),
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
        (any::<u64>(), any::<u64>(), arb_admin_request())
            .prop_map(|(id, term, request)| Message::ForwardAdmin { id, term, request }),
        (
            any::<u64>(),
            prop_oneof![
                proptest::collection::btree_set(1u64..9, 0..5)
                    .prop_map(|voters| Ok(Membership::new(voters))),
                arb_remote_error().prop_map(Err)
            ]
        )
            .prop_map(|(id, result)| Message::ForwardAdminResponse { id, result }),
        any::<u64>().prop_map(|id| Message::ReadIndexRequest { id }),
        (
            any::<u64>(),
            prop_oneof![any::<u64>().prop_map(Ok), arb_remote_error().prop_map(Err)]
        )
            .prop_map(|(id, result)| Message::ReadIndexResponse { id, result }),
    ]
}

fn arb_admin_request() -> impl Strategy<Value = crate::message::AdminRequest> {
    use crate::message::AdminRequest;
    prop_oneof![
        (any::<u64>(), ".{0,12}").prop_map(|(id, address)| AdminRequest::AddLearner {
            id,
            address,
            metadata: Default::default(),
        }),
        proptest::collection::btree_set(any::<u64>(), 0..5)
            .prop_map(|voters| AdminRequest::Change { voters }),
        any::<u64>().prop_map(|id| AdminRequest::RemoveLearner { id }),
        (any::<u64>(), ".{0,12}").prop_map(|(id, address)| AdminRequest::AddVoter {
            id,
            address,
            metadata: Default::default(),
        }),
        any::<u64>().prop_map(|id| AdminRequest::Replace { id }),
        any::<u64>().prop_map(|to| AdminRequest::Transfer { to }),
        (any::<u64>(), ".{0,8}", proptest::option::of(".{0,8}"))
            .prop_map(|(id, key, value)| AdminRequest::SetMetadata { id, key, value }),
    ]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        any::<u64>(),
        arb_message(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(from, to, message, cluster_id, incarnation, group)| Envelope {
                cluster_id,
                incarnation,
                group,
                ..Envelope::new(from, to, message)
            },
        )
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
