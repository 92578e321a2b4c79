//! Deleting a group from every member host ([`Host::delete_group`]).
//!
//! The host that deletes it stops its replica, replaces the group's
//! catalog record by a tombstone (its cluster id and members) and deletes
//! its data, then tells every other member (`DeleteGroup`) until each
//! answers (`GroupDeleted`) or a bound passes. A member that was down
//! keeps its replica until it comes back: its replica's first message to
//! a host holding the tombstone is answered by `DeleteGroup`, and it goes
//! then. A tombstoned id is never created again on that host.
//!
//! Only a replica of the deleted group goes: `DeleteGroup` carries the
//! group's cluster id, and a host obeys it only from a member of the
//! group it has under that id.
//!
//! [`Host::delete_group`]: super::Host::delete_group

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{lock, GroupDeletion, HostError, Shared};
use crate::core::types::{GroupId, NodeId};
use crate::message::{Envelope, Message};
use crate::state_machine::StateMachine;
use crate::storage::fjall_host::Tombstone;
use crate::transport::Transport;

/// A deleted group's replica that keeps talking is told again at most
/// this often.
const RETELL_INTERVAL: Duration = Duration::from_secs(1);

/// What the host's thread keeps while deletions are under way.
#[derive(Default)]
pub(super) struct Deletions {
    /// Group → the member hosts that confirmed (kept while the host runs:
    /// a later or concurrent call for the group waits only for the rest).
    confirmed: HashMap<GroupId, BTreeSet<NodeId>>,
    /// (group, host) → when that host was last told.
    told: HashMap<(GroupId, NodeId), Instant>,
}

/// [`super::Host::delete_group`], on the host's thread.
pub(super) async fn delete<SM: StateMachine + Send>(
    shared: &Shared<SM>,
    transport: Arc<dyn Transport>,
    group: GroupId,
) -> Result<GroupDeletion, HostError> {
    let tombstone = match delete_here(shared, group, None).await {
        Ok(tombstone) => tombstone,
        Err(NotDeleted::NotHere | NotDeleted::NotFromAMember) => {
            return Err(HostError::NoSuchGroup(group))
        }
        Err(NotDeleted::Failed(e)) => return Err(e),
    };
    let others: BTreeSet<NodeId> = tombstone
        .members
        .iter()
        .copied()
        .filter(|m| *m != shared.id)
        .collect();
    lock(&shared.deletions).confirmed.entry(group).or_default();
    // Told again every few heartbeats: a message may be lost, a host may
    // be on its way back.
    let retry = shared.config.heartbeat_interval * 4;
    let deadline = Instant::now() + shared.config.election_timeout_max * 10;
    loop {
        let confirmed = lock(&shared.deletions)
            .confirmed
            .get(&group)
            .cloned()
            .unwrap_or_default();
        let waiting: Vec<NodeId> = others.difference(&confirmed).copied().collect();
        if waiting.is_empty() || Instant::now() >= deadline {
            tracing::info!(host = shared.id, group, ?confirmed, unanswered = ?waiting, "group deleted");
            return Ok(GroupDeletion {
                group,
                confirmed: confirmed.into_iter().collect(),
                unanswered: waiting,
            });
        }
        for host in waiting {
            transport.send(delete_message(shared.id, host, group, &tombstone));
        }
        tokio::time::sleep(retry).await;
    }
}

/// Why a replica was not deleted.
enum NotDeleted {
    /// This host has no such group, and no tombstone of it.
    NotHere,
    /// The `DeleteGroup` came from a host that is not a member of this
    /// host's group of that id, or named another cluster id: ignored.
    NotFromAMember,
    Failed(HostError),
}

impl From<HostError> for NotDeleted {
    fn from(e: HostError) -> Self {
        NotDeleted::Failed(e)
    }
}

impl From<crate::storage::StorageError> for NotDeleted {
    fn from(e: crate::storage::StorageError) -> Self {
        NotDeleted::Failed(e.into())
    }
}

/// Deletes this host's replica of `group` (or finds it deleted already)
/// and returns its tombstone. `asked_by`: the member host (and the
/// group's cluster id) a `DeleteGroup` came from, which must match.
async fn delete_here<SM: StateMachine + Send>(
    shared: &Shared<SM>,
    group: GroupId,
    asked_by: Option<(NodeId, u64)>,
) -> Result<Tombstone, NotDeleted> {
    let _guard = shared.lifecycle.lock().await;
    if let Some(tombstone) = lock(&shared.tombstones).get(&group) {
        return Ok(tombstone.clone());
    }
    let raft = shared.switchboard.get(group).ok_or(NotDeleted::NotHere)?;
    // Its founders count too: a replica that has not formed the group yet
    // knows no members.
    let founders = lock(&shared.founders)
        .get(&group)
        .map(|f| f.members())
        .unwrap_or_default();
    let tombstone = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        Tombstone {
            cluster_id: m.cluster_id,
            members: m.membership.members().union(&founders).copied().collect(),
        }
    };
    if let Some((from, cluster_id)) = asked_by {
        if cluster_id != tombstone.cluster_id || !tombstone.members.contains(&from) {
            tracing::warn!(
                host = shared.id,
                group,
                from,
                "refusing to delete a group at the word of a host that is not its member (or of another cluster)"
            );
            return Err(NotDeleted::NotFromAMember);
        }
    }
    shared.switchboard.remove(group);
    // Everything it queued is written before its data is deleted.
    raft.shutdown().await;
    lock(&shared.founders).remove(&group);
    shared.db()?.delete_group(group, &tombstone)?;
    lock(&shared.tombstones).insert(group, tombstone.clone());
    tracing::info!(
        host = shared.id,
        group,
        ?asked_by,
        "group deleted on this host"
    );
    Ok(tombstone)
}

/// Handles, on the host's thread, what the switchboard passed to the host:
/// the deletion messages, and messages of groups this host lacks.
pub(super) async fn serve<SM: StateMachine + Send>(
    shared: Arc<Shared<SM>>,
    transport: Arc<dyn Transport>,
    mut inbox: mpsc::Receiver<Envelope>,
) {
    while let Some(envelope) = inbox.recv().await {
        let (from, group) = (envelope.from, envelope.group);
        match envelope.message {
            Message::DeleteGroup => {
                // A replica this host never had (or has deleted) is gone
                // as far as the asker is concerned.
                let asked_by = Some((from, envelope.cluster_id));
                match delete_here(&shared, group, asked_by).await {
                    Ok(_) | Err(NotDeleted::NotHere) => {
                        let mut answer = Envelope::new(shared.id, from, Message::GroupDeleted);
                        answer.group = group;
                        transport.send(answer);
                    }
                    Err(NotDeleted::NotFromAMember) => {}
                    Err(NotDeleted::Failed(e)) => {
                        tracing::warn!(host = shared.id, group, error = %e, "could not delete the group")
                    }
                }
            }
            Message::GroupDeleted => {
                if let Some(confirmed) = lock(&shared.deletions).confirmed.get_mut(&group) {
                    confirmed.insert(from);
                }
            }
            // A replica of a group deleted here still speaks: it missed
            // the deletion.
            _ => {
                let Some(tombstone) = lock(&shared.tombstones).get(&group).cloned() else {
                    continue;
                };
                if envelope.cluster_id != tombstone.cluster_id {
                    continue;
                }
                let mut deletions = lock(&shared.deletions);
                let last = deletions.told.get(&(group, from)).copied();
                if last.is_some_and(|at| at.elapsed() < RETELL_INTERVAL) {
                    continue;
                }
                deletions.told.insert((group, from), Instant::now());
                drop(deletions);
                tracing::info!(
                    host = shared.id,
                    group,
                    peer = from,
                    "a deleted group's replica spoke: telling it to go"
                );
                transport.send(delete_message(shared.id, from, group, &tombstone));
            }
        }
    }
}

/// `DeleteGroup` for `group`, carrying its cluster id.
fn delete_message(me: NodeId, to: NodeId, group: GroupId, tombstone: &Tombstone) -> Envelope {
    let mut envelope = Envelope::new(me, to, Message::DeleteGroup);
    envelope.group = group;
    envelope.cluster_id = tombstone.cluster_id;
    envelope
}
