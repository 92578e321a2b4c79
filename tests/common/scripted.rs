//! One real node whose peers are scripted by the test: every message it
//! sends is captured, and the test injects the replies.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actix::Actor;
use regatta::storage::{
    InitialState, LogStorage, MemStorage, SnapshotStore, StorageError, WriteBatch,
};
use regatta::transport::Transport;
use regatta::transport::{Envelope, Message};
use regatta::{Config, LogId, Membership, Raft};

use super::Counter;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[derive(Default)]
pub struct Capture(Mutex<Vec<Envelope>>);

impl Transport for Capture {
    fn send(&self, envelope: Envelope) {
        self.0.lock().unwrap().push(envelope);
    }
}

pub struct Harness {
    pub raft: Raft<Counter>,
    pub sent: Arc<Capture>,
    pub storage: MemStorage,
}

/// Storage whose writes wait while the gate is closed: what was written
/// before closing is durable, what comes after is not yet.
#[derive(Clone, Default)]
pub struct GatedStorage {
    pub inner: MemStorage,
    closed: Arc<(Mutex<bool>, Condvar)>,
    /// Snapshots somewhere else than in memory (files, to see them).
    snapshots: Option<Arc<dyn SnapshotStore>>,
}

impl GatedStorage {
    /// Keeps its snapshots in `snapshots` instead of in memory.
    #[allow(dead_code)] // not every test binary uses it
    pub fn with_snapshots(snapshots: impl SnapshotStore) -> Self {
        GatedStorage {
            snapshots: Some(Arc::new(snapshots)),
            ..GatedStorage::default()
        }
    }

    pub fn close(&self) {
        *self.closed.0.lock().unwrap() = true;
    }
    pub fn open(&self) {
        *self.closed.0.lock().unwrap() = false;
        self.closed.1.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.0.lock().unwrap();
        while *closed {
            closed = self.closed.1.wait(closed).unwrap();
        }
    }
}

impl LogStorage for GatedStorage {
    fn load(&mut self) -> Result<InitialState, StorageError> {
        self.inner.load()
    }
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        self.pass();
        self.inner.write(batch)
    }
    fn purge(&mut self, upto: LogId, membership: &Membership) -> Result<(), StorageError> {
        self.pass();
        self.inner.purge(upto, membership)
    }
    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        match &self.snapshots {
            Some(snapshots) => snapshots.clone(),
            None => self.inner.snapshots(),
        }
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
}

impl Harness {
    pub fn start(config: Config) -> Harness {
        Self::start_on(config, GatedStorage::default())
    }

    /// Node 1 of {1, 2, 3} on `storage`.
    pub fn start_on(config: Config, storage: GatedStorage) -> Harness {
        let sent = Arc::new(Capture::default());
        let raft = Raft::start(
            1,
            config,
            storage.clone(),
            sent.clone(),
            Some(Membership::new([1, 2, 3])),
            Counter::default().start(),
        )
        .unwrap();
        Harness {
            raft,
            sent,
            storage: storage.inner,
        }
    }

    /// Waits for a sent message matching `pred`, removing everything before it.
    pub async fn expect(&self, what: &str, pred: impl Fn(&Envelope) -> bool) -> Envelope {
        self.expect_after(what, pred).await.0
    }

    /// Like [`Harness::expect`], also returning what was sent before it.
    pub async fn expect_after(
        &self,
        what: &str,
        pred: impl Fn(&Envelope) -> bool,
    ) -> (Envelope, Vec<Envelope>) {
        let deadline = tokio::time::Instant::now() + SECS(5);
        loop {
            {
                let mut sent = self.sent.0.lock().unwrap();
                if let Some(pos) = sent.iter().position(&pred) {
                    let mut before: Vec<Envelope> = sent.drain(..=pos).collect();
                    let found = before.pop().expect("drained up to it");
                    return (found, before);
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "never sent: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Makes node 1 leader of term 2 with the vote of node 2.
    pub async fn elect(&self) {
        self.expect("RequestVote", |e| {
            matches!(e.message, Message::RequestVote { .. })
        })
        .await;
        self.inject(
            2,
            Message::RequestVoteResponse {
                term: 2,
                granted: true,
                pre_vote: false,
            },
        );
        self.raft
            .wait_for(SECS(5), |m| m.role == regatta::Role::Leader)
            .await
            .expect("node 1 leads term 2");
    }

    pub fn inject(&self, from: u64, message: Message) {
        self.raft.deliver(Envelope::new(from, 1, message));
    }

    pub fn clear(&self) {
        self.sent.0.lock().unwrap().clear();
    }
}
