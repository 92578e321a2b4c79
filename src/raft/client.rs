//! Client writes and reads through the handle: submitted to this node,
//! which proposes them if it leads and forwards them otherwise, retried
//! while no leader is known, until the client timeout.

use super::*;

impl<SM: StateMachine> Raft<SM> {
    /// Proposes `command` and returns the state machine's response once it
    /// is committed and applied. Any node accepts writes: a follower
    /// forwards them to the leader. While no leader is known the call waits
    /// (up to the client timeout) for one.
    ///
    /// On [`RaftError::Timeout`] or [`RaftError::Indeterminate`] the command
    /// may or may not have been applied.
    pub async fn write(&self, command: SM::Command) -> Result<SM::Response, RaftError> {
        Ok(self.write_entry(command).await?.response)
    }

    /// [`Raft::write`] of a typed command: the answer has the command's
    /// own response type (see [`crate::Command`]), not the state
    /// machine's whole response enum.
    pub async fn execute<C: crate::Command<SM>>(
        &self,
        command: C,
    ) -> Result<C::Response, RaftError> {
        crate::command::typed::<SM, C>(self.write(command.into()).await?)
    }

    /// [`Raft::write`], also returning where the command sits in the log:
    /// for read-your-writes tokens (wait until a node has applied
    /// `log_id.index`), idempotency records and tests.
    pub async fn write_entry(
        &self,
        command: SM::Command,
    ) -> Result<Written<SM::Response>, RaftError> {
        let bytes = encode(&command)?;
        let seq = self.forwarding.begin();
        let (submitted, _) = self
            .attempt_write(|| ClientCommand::Tagged(self.forwarding.tag(seq), bytes.clone()))
            .await;
        self.forwarding.end(seq);
        let submitted = submitted.map_err(|e| match e {
            // Only copies of a write already answered (or given up) are
            // stale: this one may have been applied.
            RaftError::Session(_) => RaftError::Indeterminate,
            e => e,
        });
        Written::decode(self.counted(submitted)?)
    }

    /// Commits an empty entry through the log (through the leader, from
    /// any node, like a write) and returns its position once this node's
    /// state machine has reached it: proof that the cluster can commit
    /// right now. Harmless to retry: an empty entry changes nothing.
    pub async fn commit_empty_entry(&self) -> Result<LogId, RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        let (log_id, _) = self.submit(ClientCommand::Empty).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_applied(log_id.index, remaining)
            .await
            .map_err(|_| RaftError::Timeout)?;
        Ok(log_id)
    }

    pub(crate) async fn submit(
        &self,
        command: ClientCommand,
    ) -> Result<(LogId, bytes::Bytes), RaftError> {
        let (submitted, earlier_forwarded) = self.submit_tracked(command).await;
        match submitted {
            // A session refusal of a later copy (the session expired or
            // was evicted since, its floor passed) proves nothing about an
            // earlier forwarded one (simulator, seed 156).
            Err(RaftError::Session(_)) if earlier_forwarded => Err(RaftError::Indeterminate),
            other => other,
        }
    }

    /// [`Raft::submit`] with its raw session refusals, and whether a copy
    /// before the one that answered was forwarded (so may have been
    /// applied, whatever the answer says): for [`crate::Session`], which
    /// knows a refusal is final.
    pub(crate) async fn submit_tracked(
        &self,
        command: ClientCommand,
    ) -> (Result<(LogId, bytes::Bytes), RaftError>, bool) {
        let (submitted, earlier_forwarded) = self.attempt_write(|| command.clone()).await;
        (self.counted(submitted), earlier_forwarded)
    }

    /// Hands a write to this node until a leader takes it or the client
    /// timeout passes; `command` makes each attempt's copy. Once any
    /// attempt has been forwarded, a copy may be applied by the leader it
    /// reached even if a later answer says "not leader" (a network
    /// duplicate's answer can beat the real outcome back), a later copy
    /// is refused by its session, or this node stops: those failures are
    /// then indeterminate, not definite.
    async fn attempt_write(
        &self,
        command: impl Fn() -> ClientCommand,
    ) -> (Result<(LogId, bytes::Bytes), RaftError>, bool) {
        let deadline = Instant::now() + self.config.client_timeout;
        let span = write_span(self.id);
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Whether a copy before the latest one left this node.
        let earlier_forwarded = std::sync::atomic::AtomicBool::new(false);
        let submitted = self
            .retry_until_leader(deadline, |reply| {
                if forwarded.load(std::sync::atomic::Ordering::Relaxed) {
                    earlier_forwarded.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                ClientWrite {
                    command: command(),
                    forwarded: forwarded.clone(),
                    reply,
                    span: span.clone(),
                }
            })
            .instrument(span.clone())
            .await;
        let submitted = match submitted {
            Err(RaftError::NotLeader(_) | RaftError::ShuttingDown)
                if forwarded.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Err(RaftError::Indeterminate)
            }
            other => other,
        };
        (
            submitted,
            earlier_forwarded.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Counts a client write and, if it failed, how.
    pub(super) fn counted<T>(&self, result: Result<T, RaftError>) -> Result<T, RaftError> {
        Counters::bump(&self.counters.writes_submitted);
        if let Err(e) = &result {
            self.counters.write_failed(e);
        }
        result
    }

    /// Appends `command` if this node leads and returns its position as
    /// soon as it is in the leader's log, without waiting for the commit;
    /// never forwarded or retried. Fails with [`RaftError::NotLeader`]
    /// (definite: nothing was appended) on any other node. The entry may
    /// still be lost if leadership is lost before it commits: watch
    /// [`Metrics::last_applied`] and the applied entries to learn its
    /// fate. For callers that route requests themselves, and test
    /// harnesses.
    pub async fn propose(&self, command: SM::Command) -> Result<LogId, RaftError> {
        let command = encode(&command)?;
        let (appended, rx) = oneshot::channel();
        self.node
            .send(ClientPropose { command, appended })
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        rx.await.map_err(|_| RaftError::ShuttingDown)?
    }

    /// Waits until this node's state machine reflects every write committed
    /// before the call (ReadIndex: the leader confirms its leadership with
    /// one heartbeat round, then this node waits to apply up to the leader's
    /// commit index). Returns that index.
    pub async fn read_barrier(&self) -> Result<u64, RaftError> {
        let deadline = Instant::now() + self.config.client_timeout;
        let index = self
            .retry_until_leader(deadline, |reply| ClientRead { reply })
            .await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_for(remaining, |m| m.last_applied >= index)
            .await
            .map_err(|_| RaftError::Timeout)?;
        Ok(index)
    }

    /// A linearizable read: passes the [`Raft::read_barrier`], then sends
    /// `query` to the local state machine. Works on any node.
    pub async fn read<M>(&self, query: M) -> Result<M::Result, RaftError>
    where
        SM: Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        self.read_barrier().await?;
        self.sm
            .send(query)
            .await
            .map_err(|_| RaftError::ShuttingDown)
    }

    /// A read of this node's state machine as it is now, asking no one:
    /// fast and available without a leader, but possibly stale — it may
    /// miss writes acknowledged elsewhere (a follower behind, or cut off).
    /// The answer carries the index applied before the query ran, so a
    /// caller can compare it with the index of a write it made.
    pub async fn read_local<M>(&self, query: M) -> Result<LocalRead<M::Result>, RaftError>
    where
        SM: Handler<M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        // Read before the query is sent: the state machine has applied at
        // least this far by the time it handles the query.
        let applied = self.metrics.borrow().last_applied;
        let value = self
            .sm
            .send(query)
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        Ok(LocalRead { value, applied })
    }

    pub(super) async fn retry_until_leader<T, M>(
        &self,
        deadline: Instant,
        make: impl Fn(oneshot::Sender<Result<T, RaftError>>) -> M,
    ) -> Result<T, RaftError>
    where
        M: actix::Message<Result = ()> + Send + 'static,
        Node: Handler<M>,
    {
        loop {
            // The leader as known before asking: if it changes before we
            // wait below, we retry at once instead of missing the news.
            let leader_before = self.metrics.borrow().leader;
            let (tx, rx) = oneshot::channel();
            if !self.node.connected() {
                return Err(RaftError::ShuttingDown);
            }
            // One message in, one answer out: no acknowledgement of the
            // delivery itself (a thread hand-off each way). A node that
            // stops meanwhile drops the request, answered below.
            self.node.do_send(make(tx));
            let outcome = match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => return Err(RaftError::Timeout),
                // The node dropped the request: it stopped.
                Ok(Err(_)) => return Err(RaftError::Indeterminate),
                Ok(Ok(r)) => r,
            };
            match outcome {
                Err(RaftError::NotLeader(hint)) => {
                    // Nothing was submitted: wait for news of a leader and
                    // try again, until the deadline.
                    let pause =
                        (self.config.election_timeout_min / 4).max(Duration::from_millis(5));
                    let wait_until = (Instant::now() + pause).min(deadline);
                    if Instant::now() >= deadline {
                        return Err(RaftError::NotLeader(hint));
                    }
                    // Registered only now, not for every request: waking
                    // every waiting client on each metrics change costs
                    // the node time on every commit.
                    let changed = self.notices.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if self.metrics.borrow().leader == leader_before {
                        let _ = tokio::time::timeout_at(wait_until, changed).await;
                    }
                    // Too little time left for another attempt to be
                    // answered: nothing was submitted, so say so — an
                    // attempt sent now would race the deadline into an
                    // indeterminate timeout.
                    if Instant::now() + pause >= deadline {
                        return Err(RaftError::NotLeader(hint));
                    }
                }
                other => return other,
            }
        }
    }
}

/// The span of one client write on the node that took it: its term and
/// index are filled in by the leader when the write is appended there, and
/// the leader's `appended` and the applier's `applied` events are its
/// children. At debug level only, so it costs nothing by default.
fn write_span(node: NodeId) -> tracing::Span {
    tracing::debug_span!(
        "write",
        node,
        term = tracing::field::Empty,
        index = tracing::field::Empty
    )
}
