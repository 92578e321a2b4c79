//! The replicated FIFO queue of text items: its state, commands, reads and
//! snapshots. Shared by the queue example (`examples/queue.rs`, which
//! serves it over HTTP and runs the demo) and the snapshot bench
//! (`benches/snapshot/`, which loads it with a million items and reads its
//! [`SnapshotProbe`]), so that the bench measures the example's own state
//! machine.
//!
//! `Queue::default()` records nothing; `Queue::with_probe` records, in a
//! probe the caller keeps, how long each snapshot blocked applying, how
//! long its serialization took and when it ended, the bytes of the latest
//! snapshot, and how long each restore took.
// Each side uses a part: the example `Peek`, the bench `Len` and the probe.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use regatta::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
use serde::{Deserialize, Serialize};

/// The replicated state: the items, oldest first. Items are shared
/// (`Arc<str>`) so that a snapshot can copy the queue in a few
/// milliseconds and serialize the copy off the actor (see `Snapshot`).
#[derive(Default)]
pub struct Queue {
    items: VecDeque<Arc<str>>,
    /// Where the snapshot and restore handlers record their timings, when
    /// set.
    probe: Option<Arc<SnapshotProbe>>,
}

impl Queue {
    /// An empty queue that records its snapshots and restores in `probe`.
    pub fn with_probe(probe: Arc<SnapshotProbe>) -> Self {
        Queue {
            items: VecDeque::new(),
            probe: Some(probe),
        }
    }
}

/// What a probed [`Queue`] measures about itself, for the snapshot bench.
/// Each list holds one element per run of what it times, oldest first.
#[derive(Default)]
pub struct SnapshotProbe {
    /// Each `Snapshot` handler run: the time applying was blocked.
    handler: Mutex<Vec<Duration>>,
    /// Each deferred serialization, on regatta's background thread.
    serialize: Mutex<Vec<Duration>>,
    /// When each deferred serialization finished.
    serialized_at: Mutex<Vec<Instant>>,
    /// Each `Restore` handler run.
    restore: Mutex<Vec<Duration>>,
    /// The bytes of the latest snapshot serialized.
    last_data: Mutex<Option<Bytes>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SnapshotProbe {
    /// How long each `Snapshot` handler ran: the time applying waited
    /// (copying the `Arc`s; the serialization is deferred).
    pub fn handler(&self) -> Vec<Duration> {
        lock(&self.handler).clone()
    }

    /// How long each deferred serialization took (rmp-serde, on regatta's
    /// background thread).
    pub fn serialize(&self) -> Vec<Duration> {
        lock(&self.serialize).clone()
    }

    /// When each deferred serialization finished.
    pub fn serialized_at(&self) -> Vec<Instant> {
        lock(&self.serialized_at).clone()
    }

    /// How long each `Restore` handler ran (decoding included).
    pub fn restore(&self) -> Vec<Duration> {
        lock(&self.restore).clone()
    }

    /// The bytes of the latest snapshot serialized, if any.
    pub fn last_data(&self) -> Option<Bytes> {
        lock(&self.last_data).clone()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Append an item; answers the new length.
    Push(String),
    /// Remove the oldest item; answers it, or `None` when empty.
    Pop,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueResponse {
    Len(usize),
    Item(Option<String>),
}

impl Actor for Queue {
    type Context = Context<Self>;
}

impl StateMachine for Queue {
    type Command = QueueCommand;
    type Response = QueueResponse;
}

impl Handler<Apply<Queue>> for Queue {
    type Result = Vec<QueueResponse>;
    fn handle(&mut self, batch: Apply<Queue>, _: &mut Context<Self>) -> Self::Result {
        batch
            .entries
            .into_iter()
            .map(|(_, command)| match command {
                QueueCommand::Push(item) => {
                    self.items.push_back(item.into());
                    QueueResponse::Len(self.items.len())
                }
                QueueCommand::Pop => {
                    QueueResponse::Item(self.items.pop_front().map(|item| item.to_string()))
                }
            })
            .collect()
    }
}

impl Handler<Snapshot> for Queue {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let started = Instant::now();
        // Applying waits only for this copy of pointers; the serialization
        // runs on a background thread.
        let items = self.items.clone();
        let probe = self.probe.clone();
        let data = SnapshotData::deferred(move || {
            let started = Instant::now();
            let items: Vec<&str> = items.iter().map(|item| &**item).collect();
            let bytes: Bytes = rmp_serde::to_vec(&items).map_err(|e| e.to_string())?.into();
            if let Some(probe) = probe {
                lock(&probe.serialize).push(started.elapsed());
                lock(&probe.serialized_at).push(Instant::now());
                *lock(&probe.last_data) = Some(bytes.clone());
            }
            Ok(bytes)
        });
        if let Some(probe) = &self.probe {
            lock(&probe.handler).push(started.elapsed());
        }
        Ok(data)
    }
}

impl Handler<Restore> for Queue {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        let started = Instant::now();
        let items: Vec<String> = rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?;
        self.items = items.into_iter().map(Arc::from).collect();
        if let Some(probe) = &self.probe {
            lock(&probe.restore).push(started.elapsed());
        }
        Ok(())
    }
}

/// A read of the length and the oldest item; linearizable through
/// `Raft::read`.
#[derive(Message)]
#[rtype(result = "QueueView")]
pub struct Peek;

/// What `Peek` sees.
#[derive(Debug, PartialEq, Eq, MessageResponse)]
pub struct QueueView {
    pub len: usize,
    pub head: Option<String>,
}

impl Handler<Peek> for Queue {
    type Result = QueueView;
    fn handle(&mut self, _: Peek, _: &mut Context<Self>) -> Self::Result {
        QueueView {
            len: self.items.len(),
            head: self.items.front().map(|item| item.to_string()),
        }
    }
}

/// The queue's length; linearizable through `Raft::read`.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Len;

impl Handler<Len> for Queue {
    type Result = usize;
    fn handle(&mut self, _: Len, _: &mut Context<Self>) -> usize {
        self.items.len()
    }
}
