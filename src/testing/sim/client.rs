//! The simulated clients: each writes random commands through random
//! nodes and records what it saw for the linearizability check; with
//! sessions, it retries an unknown outcome until it is definite.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ClientWrite, Commands};
use crate::core::types::NodeId;
use crate::error::RaftError;
use crate::raft::Raft;
use crate::state_machine::StateMachine;

/// The running nodes' handles, by id (a crashed node has none).
pub(super) type Handles<SM> = Rc<RefCell<BTreeMap<NodeId, Raft<SM>>>>;
/// Every write the clients made, for the linearizability check.
pub(super) type History<SM> =
    Rc<RefCell<Vec<ClientWrite<<SM as StateMachine>::Command, <SM as StateMachine>::Response>>>>;

/// What every client of a run shares.
pub(super) struct Workload<SM: StateMachine> {
    pub(super) seed: u64,
    pub(super) handles: Handles<SM>,
    pub(super) history: History<SM>,
    pub(super) stop: Rc<std::cell::Cell<bool>>,
    pub(super) commands: Commands<SM>,
    pub(super) epoch: Instant,
    /// Clients write in sessions, retrying until definite.
    pub(super) sessions: bool,
    /// Clients sometimes go idle for longer than a session lives.
    pub(super) idle_gaps: bool,
}

pub(super) async fn client_loop<SM: StateMachine>(client: u64, workload: Workload<SM>)
where
    SM::Command: Clone,
{
    let Workload {
        seed,
        handles,
        history,
        stop,
        commands,
        epoch,
        sessions,
        idle_gaps,
    } = workload;
    let mut rng = fastrand::Rng::with_seed(seed ^ (client + 1).wrapping_mul(0x9e37_79b9));
    let mut seq = 0;
    let mut session = None;
    while !stop.get() {
        let pause = if idle_gaps && rng.u32(0..40) == 0 {
            Duration::from_millis(rng.u64(1_000..4_000))
        } else {
            Duration::from_micros(rng.u64(0..20_000))
        };
        tokio::time::sleep(pause).await;
        let raft = {
            let h = handles.borrow();
            if h.is_empty() {
                continue;
            }
            h.values().nth(rng.usize(..h.len())).cloned()
        };
        let Some(raft) = raft else { continue };
        seq += 1;
        let command = commands(&mut rng, client, seq);
        let call = epoch.elapsed().as_nanos() as u64;
        let result = if sessions {
            let to = SessionWrite {
                handles: &handles,
                stop: &stop,
            };
            to.write(&mut rng, &mut session, seq, command.clone()).await
        } else {
            raft.write(command.clone()).await
        };
        let now = epoch.elapsed().as_nanos() as u64;
        let (ret, response) = match result {
            Ok(r) => (Some(now), Some(r)),
            Err(e) if e.is_indeterminate() => (None, None),
            // Definitely not applied: it did not happen.
            Err(_) => continue,
        };
        history.borrow_mut().push(ClientWrite {
            client,
            command,
            call,
            ret,
            response,
        });
    }
}

/// A client in a session: retries a write whose outcome is unknown with
/// the same sequence number, through random nodes, until the answer is
/// definite (or, once the run is stopping, a few more tries).
struct SessionWrite<'a, SM: StateMachine> {
    handles: &'a Handles<SM>,
    stop: &'a std::cell::Cell<bool>,
}

impl<SM: StateMachine> SessionWrite<'_, SM>
where
    SM::Command: Clone,
{
    async fn write(
        &self,
        rng: &mut fastrand::Rng,
        session: &mut Option<u64>,
        seq: u64,
        command: SM::Command,
    ) -> Result<SM::Response, RaftError> {
        let mut after_stop = 0;
        // Whether an earlier attempt of this write may have taken effect.
        let mut unknown = false;
        loop {
            if self.stop.get() {
                after_stop += 1;
                if after_stop > 20 {
                    return Err(RaftError::Indeterminate);
                }
            }
            let raft = {
                let h = self.handles.borrow();
                (!h.is_empty()).then(|| h.values().nth(rng.usize(..h.len())).cloned())
            };
            let Some(Some(raft)) = raft else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let id = match *session {
                Some(id) => id,
                None => match raft.open_session().await {
                    Ok(s) => *session.insert(s.id()),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let attempt = crate::session::Session::resume(raft, id, seq - 1)
                .retry_for(Duration::from_millis(300))
                .write(command.clone())
                .await;
            tracing::debug!(
                session = id,
                seq,
                outcome = ?attempt.as_ref().err(),
                "simulator: session write attempt"
            );
            match attempt {
                // The session expired or was evicted: the next write opens
                // a new one; this one stays unknown if an attempt may have
                // been applied.
                Err(RaftError::Session(e)) => {
                    *session = None;
                    return Err(if unknown {
                        RaftError::Indeterminate
                    } else {
                        RaftError::Session(e)
                    });
                }
                Err(e) if e.is_indeterminate() || e.is_retryable() => {
                    unknown |= e.is_indeterminate();
                    tokio::time::sleep(Duration::from_millis(rng.u64(10..100))).await
                }
                other => return other,
            }
        }
    }
}
