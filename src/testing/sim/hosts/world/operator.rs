//! The simulated operator's side of a group replica that refused to
//! found (it lost its founding state in a crash): emptied, restarted with
//! `--join`, replaced, and promoted if a replacement was cut short.

use std::time::Duration;

use tokio::time::Instant;

use super::HostWorld;
use crate::core::types::GroupId;
use crate::metrics::Role;
use crate::storage::MemStorage;
use crate::testing::sim::Failure;

impl HostWorld<'_> {
    /// The operator's side of a replica that refused to found (it lost
    /// its founding state in a crash, so it cannot know what it promised):
    /// its directory is emptied, it starts again with --join, and the
    /// group's leader is asked to replace it (one call, repeated each
    /// second) until the configuration counts its new incarnation.
    pub(super) async fn operator(&mut self) -> Result<(), Failure> {
        let ids: Vec<GroupId> = self.groups.keys().copied().collect();
        for id in ids {
            let refused = std::mem::take(
                &mut self.groups[&id]
                    .checker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .refused_founding,
            );
            for host in refused {
                tracing::debug!(
                    host,
                    group = id,
                    "simulator: replica refused to found; restarting it with --join"
                );
                if let Some(group) = self.groups.get_mut(&id) {
                    group.handles.borrow_mut().remove(&host);
                    group.storages.insert(host, MemStorage::new());
                    group.joiners.insert(host);
                }
                if let Some(running) = self.running.get(&host) {
                    running.switchboard.remove(id);
                }
                self.start_replicas(host, &[id]).await?;
            }
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            if group.joiners.is_empty()
                || group
                    .replace_asked
                    .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
            {
                continue;
            }
            let handles = group.handles.borrow();
            let leader = handles.values().find_map(|r| {
                let m = r.metrics().borrow().clone();
                (m.role == Role::Leader && !m.membership.is_joint())
                    .then(|| (r.clone(), m.membership))
            });
            let Some((leader, membership)) = leader else {
                continue;
            };
            let uncounted = group.joiners.iter().copied().find(|host| {
                handles.get(host).is_some_and(|replica| {
                    let incarnation = replica.metrics().borrow().incarnation;
                    membership.incarnations.get(host) != Some(&incarnation)
                })
            });
            drop(handles);
            let Some(host) = uncounted else {
                continue;
            };
            group.replace_asked = Some(Instant::now());
            if membership.learners.contains(&host) {
                // A replacement cut short (the learner was behind, or the
                // leader changed) left it a learner: promote it.
                tracing::debug!(
                    host,
                    group = id,
                    "simulator: promoting the replaced replica"
                );
                let mut voters = membership.voters.clone();
                voters.insert(host);
                tokio::task::spawn_local(async move {
                    let _ = leader.change_membership(voters).await;
                });
            } else {
                tracing::debug!(
                    host,
                    group = id,
                    "simulator: replacing the replica's incarnation"
                );
                tokio::task::spawn_local(async move {
                    let _ = leader.replace(host).await;
                });
            }
        }
        Ok(())
    }

    /// Whether every replica the operator restarted with --join is a
    /// voter again under its new incarnation, in every group's leader's
    /// configuration (none joint).
    pub(super) fn replacements_done(&self) -> bool {
        self.groups.values().all(|group| {
            let handles = group.handles.borrow();
            let leader = handles.values().find_map(|r| {
                let m = r.metrics().borrow().clone();
                (m.role == Role::Leader).then_some(m.membership)
            });
            group.joiners.iter().all(|host| {
                let incarnation = handles.get(host).map(|r| r.metrics().borrow().incarnation);
                leader.as_ref().is_some_and(|m| {
                    !m.is_joint()
                        && m.voters.contains(host)
                        && incarnation.is_some_and(|i| m.incarnations.get(host) == Some(&i))
                })
            })
        })
    }
}
