//! The simulated operator's side of disk replacement: replacing a
//! member's disk (its directory lost) in one of three ways, and carrying
//! each procedure through — `replace` in one call, or remove, `--join`
//! and add back — as a careful operator would.

use std::time::Duration;

use tokio::time::Instant;

use super::super::Failure;
use super::World;
use crate::core::types::NodeId;
use crate::metrics::Role;
use crate::state_machine::StateMachine;
use crate::storage::MemStorage;

impl<SM: StateMachine> World<'_, SM>
where
    SM::Command: Clone,
{
    /// A member's disk is replaced: its directory is lost. Half the time
    /// it is started again with its old flags — a founder asks the other
    /// founders and must refuse to found — half the time the operator
    /// follows the procedure. One replacement at a time.
    pub(super) async fn replace_disk(&mut self) -> Result<(), Failure> {
        if !self.awaiting_removal.is_empty() || self.readding.is_some() || self.changing.get() {
            return Ok(());
        }
        // As an operator would: while the leader's configuration has three
        // voters or more and no change under way, so that the others can
        // remove the lost copy.
        let healthy = self.running.values().find_map(|r| {
            let m = r.raft.metrics().borrow().clone();
            (m.role == Role::Leader).then_some(m.membership)
        });
        let Some(membership) = healthy else {
            return Ok(());
        };
        if membership.is_joint() || membership.voters.len() < 3 || !membership.learners.is_empty() {
            return Ok(());
        }
        // And every voter up with state (a founder that crashed before its
        // founding entry was durable has lost its state too: two lost
        // disks of three are a lost quorum, not a replacement).
        // And the configuration settled on all of them: replacing a disk
        // while C_new is not yet everywhere can leave the old half
        // without a majority (seeds 57,813 and 32,656 in sessions mode).
        let whole = membership.voters.iter().all(|id| {
            self.running.get(id).is_some_and(|r| {
                let m = r.raft.metrics().borrow().clone();
                m.last_applied >= 1 && m.membership == membership
            })
        });
        if !whole {
            return Ok(());
        }
        let members: Vec<NodeId> = membership.voters.iter().copied().collect();
        if members.is_empty() {
            return Ok(());
        }
        let id = members[self.rng.usize(..members.len())];
        self.crash(id);
        self.storages.insert(id, MemStorage::new());
        self.readding = Some(id);
        match self.rng.u32(0..3) {
            0 => {
                tracing::debug!(
                    node = id,
                    "simulator: disk replaced; restarted with its old flags"
                );
                self.start(id).await
            }
            1 => {
                tracing::debug!(
                    node = id,
                    "simulator: disk replaced; restarted with --join, to be replaced in one call"
                );
                self.joiners.insert(id);
                self.start(id).await
            }
            _ => {
                tracing::debug!(
                    node = id,
                    "simulator: disk replaced; removing it before it comes back"
                );
                self.awaiting_removal.insert(id);
                self.joiners.insert(id);
                Ok(())
            }
        }
    }

    /// The operator's procedure for a replaced disk: remove the member,
    /// then start it with --join and add it back (learner, then voter).
    /// A founder that refused to found on its replaced disk enters it.
    pub(super) async fn replacement_procedure(&mut self) -> Result<(), Failure> {
        self.take_refusals();
        let leader = self.running.values().find_map(|r| {
            let m = r.raft.metrics().borrow().clone();
            (m.role == Role::Leader).then(|| (r.raft.clone(), m.membership, m.commit_index))
        });
        let Some((raft, membership, commit)) = leader else {
            return Ok(());
        };
        // A founder restarted with its old flags is not back before it has
        // refused to found and gone through the procedure.
        let back = |id: &NodeId| {
            !self.awaiting_removal.contains(id)
                && (!self.founders.voters.contains(id) || self.joiners.contains(id))
        };
        if let Some(id) = self.readding.filter(back) {
            let node = self
                .running
                .get(&id)
                .map(|r| r.raft.metrics().borrow().clone());
            let caught_up = node.as_ref().is_some_and(|m| m.last_applied >= commit);
            // Its new incarnation votes only once a configuration pins it
            // (on a new disk it joined: unpinned, it does not vote).
            let counts = node
                .as_ref()
                .is_some_and(|m| membership.incarnations.get(&id) == Some(&m.incarnation));
            if (membership.voters.contains(&id) && caught_up && counts) || !membership.is_member(id)
            {
                // A voter again with a full copy (or dropped by another
                // change): the next disk may go.
                self.readding = None;
            } else if node.is_some()
                && !counts
                && !membership.is_joint()
                && self
                    .replace_asked
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
            {
                // The voter is back on its new disk, counting for nothing
                // until the operator replaces it (one call).
                self.replace_asked = Some(Instant::now());
                tracing::debug!(node = id, "simulator: replacing the voter's incarnation");
                let raft = raft.clone();
                tokio::task::spawn_local(async move {
                    let _ = raft.replace(id).await;
                });
            }
        }
        let Some(id) = self.awaiting_removal.first().copied() else {
            return Ok(());
        };
        if membership.is_joint() {
            return Ok(());
        }
        if membership.is_member(id) {
            let mut next = membership.voters.clone();
            tokio::task::spawn_local(async move {
                if next.remove(&id) {
                    if !next.is_empty() {
                        let _ = raft.change_membership(next).await;
                    }
                } else {
                    let _ = raft.remove_learner(id).await;
                }
            });
            return Ok(());
        }
        tracing::debug!(
            node = id,
            "simulator: replaced node removed; adding it back"
        );
        self.awaiting_removal.remove(&id);
        if !self.running.contains_key(&id) {
            self.start(id).await?;
        }
        let mut next = membership.voters.clone();
        next.insert(id);
        tokio::task::spawn_local(async move {
            if raft.add_learner(id, "").await.is_ok() {
                let _ = raft.change_membership(next).await;
            }
        });
        Ok(())
    }

    /// Founders that refused to found on a replaced disk stop; the
    /// operator removes them before they come back with --join.
    pub(super) fn take_refusals(&mut self) {
        let refused = std::mem::take(
            &mut self
                .checker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refused_founding,
        );
        for id in refused {
            tracing::debug!(
                node = id,
                "simulator: node refused to found on its replaced disk"
            );
            self.crash(id);
            self.awaiting_removal.insert(id);
            self.joiners.insert(id);
        }
    }
}
