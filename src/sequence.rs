//! Sequence numbers for session writes, on the client side: which are
//! handed out and which still wait for an answer (the `received`
//! watermark), for explicit sessions and for a node's own forwarding
//! session.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::core::types::SessionTag;

/// Sequence numbers handed out and those still waiting for an answer.
#[derive(Default)]
pub(crate) struct Sequence {
    last: u64,
    outstanding: BTreeSet<u64>,
}

impl Sequence {
    /// Continues after `last`, with nothing outstanding.
    pub(crate) fn after(last: u64) -> Self {
        Sequence {
            last,
            outstanding: BTreeSet::new(),
        }
    }

    /// Every sequence at or below this has its answer (or was given up).
    pub(crate) fn received(&self) -> u64 {
        self.outstanding
            .first()
            .map_or(self.last, |first| first - 1)
    }

    /// The next sequence number, now outstanding.
    pub(crate) fn begin(&mut self) -> u64 {
        self.last += 1;
        self.outstanding.insert(self.last);
        self.last
    }

    /// `seq` has its answer (or is given up).
    pub(crate) fn end(&mut self, seq: u64) {
        self.outstanding.remove(&seq);
    }
}

/// A node's own session, for the plain writes it forwards: copies of a
/// forwarded write (duplicated by the network, or retried after a "not
/// leader" that raced the real outcome) carry the same tag, so they are
/// applied once. Opened implicitly by its first write; a new one per run
/// of the node.
pub(crate) struct ForwardingSession {
    key: u64,
    sequence: Mutex<Sequence>,
}

impl ForwardingSession {
    pub(crate) fn new() -> Self {
        ForwardingSession {
            // Above every log index, which explicit sessions use as ids.
            key: fastrand::u64(1 << 63..),
            sequence: Mutex::new(Sequence::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sequence> {
        self.sequence.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin(&self) -> u64 {
        self.lock().begin()
    }

    pub(crate) fn end(&self, seq: u64) {
        self.lock().end(seq)
    }

    /// The tag of write `seq`, with the current watermark.
    pub(crate) fn tag(&self, seq: u64) -> SessionTag {
        SessionTag {
            session: self.key,
            seq,
            received: self.lock().received(),
            implicit: true,
        }
    }
}
