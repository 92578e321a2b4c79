//! What the applier does for client sessions: sorting a batch of committed
//! entries into commands for the state machine and answers it gives
//! itself (duplicates, refusals, opened sessions), and carrying the
//! session table inside snapshots.

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use serde::de::DeserializeOwned;

use crate::core::session::{Admission, SessionError, SessionLimits, SessionTable};
use crate::core::types::{Entry, LogId, Payload};
use crate::state_machine::SnapshotData;

/// A batch of committed entries, sorted.
pub(super) struct Batch<C> {
    /// For the state machine, in log order, each with its session tag.
    pub commands: Vec<(LogId, C)>,
    pub tags: Vec<Option<(u64, u64)>>,
    /// Commands that did not decode.
    pub undecodable: Vec<(LogId, String)>,
    /// Duplicates answered from the session cache.
    pub answered: Vec<(LogId, Bytes)>,
    /// Duplicates of a command earlier in this batch (duplicate, first
    /// copy): answered with the first copy's response once it is applied.
    pub pending: Vec<(LogId, LogId)>,
    /// Refused session writes.
    pub refused: Vec<(LogId, SessionError)>,
    /// Sessions opened, answered with their id.
    pub opened: Vec<LogId>,
    /// Entries without a command (blank, configuration).
    pub empty: Vec<LogId>,
}

/// Sorts `entries`, updating `table` as every node does.
pub(super) fn sort<C: DeserializeOwned>(
    node: u64,
    entries: Vec<Entry>,
    table: &mut SessionTable,
    limits: &SessionLimits,
) -> Batch<C> {
    let mut batch = Batch {
        commands: Vec::new(),
        tags: Vec::new(),
        undecodable: Vec::new(),
        answered: Vec::new(),
        pending: Vec::new(),
        refused: Vec::new(),
        opened: Vec::new(),
        empty: Vec::new(),
    };
    for e in entries {
        match e.payload {
            Payload::Command(bytes) => match rmp_serde::from_slice::<C>(&bytes) {
                Ok(c) => {
                    batch.commands.push((e.log_id, c));
                    batch.tags.push(None);
                }
                Err(err) => batch.undecodable.push((e.log_id, err.to_string())),
            },
            Payload::Tagged {
                tag,
                time_ms,
                command,
            } => {
                let (session, seq) = (tag.session, tag.seq);
                match table.admit(session, seq, tag.received, time_ms, tag.implicit, limits) {
                    Admission::Apply => match rmp_serde::from_slice::<C>(&command) {
                        Ok(c) => {
                            batch.commands.push((e.log_id, c));
                            batch.tags.push(Some((session, seq)));
                        }
                        Err(err) => {
                            table.forget(session, seq);
                            batch.undecodable.push((e.log_id, err.to_string()));
                        }
                    },
                    Admission::Answered(response) => batch.answered.push((e.log_id, response)),
                    // Its first copy is earlier in this batch: the
                    // duplicate gets that copy's response, even if the
                    // session is evicted or expires later in the batch
                    // (simulator, sessions under pressure). Rare, so
                    // looked up here rather than indexed for every write.
                    Admission::Pending => match first_copy(&batch, session, seq) {
                        Some(first) => batch.pending.push((e.log_id, first)),
                        // The first copy's response did not encode: nor
                        // does this one's.
                        None => batch
                            .undecodable
                            .push((e.log_id, "the response does not encode".into())),
                    },
                    Admission::Refused(why) => batch.refused.push((e.log_id, why)),
                }
            }
            Payload::OpenSession { time_ms } => {
                let evicted = table.open(e.log_id.index, time_ms, limits);
                for victim in evicted {
                    tracing::warn!(
                        node,
                        index = e.log_id.index,
                        session = victim,
                        "session evicted: the session table is full (Config::max_sessions); \
                         its client's next write will be refused"
                    );
                }
                batch.opened.push(e.log_id);
            }
            Payload::Blank | Payload::Membership(_) => batch.empty.push(e.log_id),
        }
    }
    batch
}

/// The entry of the batch that carries write `seq` of `session`.
fn first_copy<C>(batch: &Batch<C>, session: u64, seq: u64) -> Option<LogId> {
    batch
        .tags
        .iter()
        .position(|tag| *tag == Some((session, seq)))
        .map(|i| batch.commands[i].0)
}

/// The answers of duplicates of writes applied in the same batch: each the
/// response its first copy got (`applied`: this batch's responses).
pub(super) fn answer_duplicates(
    pending: Vec<(LogId, LogId)>,
    applied: &HashMap<LogId, Bytes>,
) -> Vec<(LogId, Option<Bytes>)> {
    pending
        .into_iter()
        .map(|(duplicate, first)| (duplicate, applied.get(&first).cloned()))
        .collect()
}

/// Marks a snapshot that carries the session table before the state
/// machine's bytes. Snapshots written before sessions existed lack it.
const MAGIC: &[u8] = b"\0regatta-sessions-v1\0";

/// The state machine's snapshot with the session table in front, framed
/// off the actor (the closure runs where deferred snapshots run).
pub(super) fn wrap(table: SessionTable, data: SnapshotData) -> SnapshotData {
    SnapshotData::deferred(move || {
        let user = data.produce()?;
        let sessions = rmp_serde::to_vec(&table).map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + sessions.len() + user.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(sessions.len() as u64).to_be_bytes());
        out.extend_from_slice(&sessions);
        out.extend_from_slice(&user);
        Ok(out.into())
    })
}

/// Splits a snapshot into the session table and the state machine's bytes.
pub(super) fn split(mut data: Bytes) -> Result<(SessionTable, Bytes), String> {
    if !data.starts_with(MAGIC) {
        return Ok((SessionTable::default(), data));
    }
    data.advance(MAGIC.len());
    if data.len() < 8 {
        return Err("snapshot session table is truncated".into());
    }
    let len = data.get_u64();
    if len > data.len() as u64 {
        return Err(format!(
            "snapshot session table says {len} bytes, {} remain",
            data.len()
        ));
    }
    let sessions = data.split_to(len as usize);
    let table = rmp_serde::from_slice(&sessions)
        .map_err(|e| format!("snapshot session table does not decode: {e}"))?;
    Ok((table, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_table_travels_in_the_snapshot() {
        let limits = SessionLimits {
            timeout_ms: 1_000,
            max_sessions: 10,
            max_cached: 10,
        };
        let mut table = SessionTable::default();
        table.open(5, 100, &limits);
        let framed = wrap(table.clone(), SnapshotData::ready(&b"user state"[..]))
            .produce()
            .unwrap();
        let (restored, user) = split(framed.clone()).unwrap();
        assert_eq!(restored, table);
        assert_eq!(&user[..], b"user state");
        // A snapshot from before sessions is all user bytes.
        let (empty, user) = split(Bytes::from_static(b"old")).unwrap();
        assert!(empty.is_empty());
        assert_eq!(&user[..], b"old");
        // A damaged frame is an error, not a panic.
        let cut = framed.slice(..MAGIC.len() + 4);
        assert!(split(cut).is_err());
        let mut lying = framed.to_vec();
        lying[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(split(lying.into()).is_err());
    }

    /// A write and its duplicate in one batch, and a session opened after
    /// them that evicts their session: the duplicate used to be answered
    /// from the session table — gone by then — with "does not decode",
    /// a definite error for a write that was applied (simulator, sessions
    /// under pressure).
    #[test]
    fn a_duplicate_gets_its_first_copys_answer_even_if_the_session_was_evicted_since() {
        let limits = SessionLimits {
            timeout_ms: 1_000,
            max_sessions: 1,
            max_cached: 10,
        };
        let mut table = SessionTable::default();
        table.open(1, 0, &limits);
        let tagged = |index: u64| Entry {
            log_id: LogId::new(1, index),
            payload: Payload::Tagged {
                tag: crate::core::types::SessionTag {
                    session: 1,
                    seq: 1,
                    received: 0,
                    implicit: false,
                },
                time_ms: 10,
                command: rmp_serde::to_vec(&5u64).unwrap().into(),
            },
        };
        let open = Entry {
            log_id: LogId::new(1, 4),
            payload: Payload::OpenSession { time_ms: 10 },
        };
        let batch = sort::<u64>(1, vec![tagged(2), tagged(3), open], &mut table, &limits);
        assert_eq!(batch.commands.len(), 1, "applied once");
        assert!(!table.contains(1), "evicted by the session opened after");
        let applied: HashMap<LogId, Bytes> = [(LogId::new(1, 2), Bytes::from_static(b"r"))].into();
        assert_eq!(
            answer_duplicates(batch.pending, &applied),
            vec![(LogId::new(1, 3), Some(Bytes::from_static(b"r")))]
        );
    }
}
