//! The wire format: length-delimited frames of MessagePack, the
//! handshake, and the errors of decoding them.

// The transport's shared state, constants and imports.
use super::*;

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

pub(super) fn decode_exact<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
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

pub(crate) fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}
