//! `add_voter` on the leader's node: the new member joins as a learner,
//! is watched until it has stayed caught up and in contact for the
//! stabilization time (`core::autopilot`), then is promoted by joint
//! consensus. Runs as a task beside the node, asking the leader actor;
//! if leadership ends midway, the outcome is unknown.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Config;
use crate::core::autopilot::{Health, Rules, Stabilizer, Verdict};
use crate::core::types::{Membership, NodeId};
use crate::error::{MembershipError, RaftError};
use crate::leader::{AddLearner, ChangeMembership, ChangeReply, Leader, PeerHealth};

/// Starts adding `id`; `reply` gets the final configuration or why not.
pub(super) fn start(
    leader: Addr<Leader>,
    config: Arc<Config>,
    (id, address, metadata): (NodeId, String, BTreeMap<String, String>),
    reply: ChangeReply,
) {
    actix::spawn(async move {
        let outcome = add_voter(leader, &config, id, address, metadata).await;
        let _ = reply.send(outcome);
    });
}

/// The leader actor stopped (leadership lost, node stopping): whatever
/// was asked of it may or may not have happened.
fn gone<E>(_: E) -> RaftError {
    RaftError::Indeterminate
}

async fn ask<M>(
    leader: &Addr<Leader>,
    make: impl FnOnce(ChangeReply) -> M,
) -> Result<Membership, RaftError>
where
    M: actix::Message<Result = ()> + Send + 'static,
    Leader: Handler<M>,
{
    let (tx, rx) = oneshot::channel();
    leader.send(make(tx)).await.map_err(gone)?;
    rx.await.map_err(gone)?
}

async fn add_voter(
    leader: Addr<Leader>,
    config: &Config,
    id: NodeId,
    address: String,
    metadata: BTreeMap<String, String>,
) -> Result<Membership, RaftError> {
    let (membership, _) = leader.send(PeerHealth(id)).await.map_err(gone)?;
    if membership.is_voter(id) {
        return Ok(membership);
    }
    ask(&leader, |reply| AddLearner {
        id,
        address,
        metadata,
        reply,
    })
    .await?;
    let rules = Rules {
        max_lag: config.learner_max_lag,
        contact_ms: config.election_timeout_min.as_millis() as u64,
        stabilization_ms: config.voter_stabilization.as_millis() as u64,
        give_up_ms: config.voter_catch_up_timeout.as_millis() as u64,
    };
    let started = Instant::now();
    let mut stabilizer = Stabilizer::new(rules, 0);
    loop {
        tokio::time::sleep(config.heartbeat_interval).await;
        let (membership, health) = leader.send(PeerHealth(id)).await.map_err(gone)?;
        let health = health.unwrap_or(Health {
            matched: 0,
            last_index: 0,
            heard_ms_ago: None,
        });
        match stabilizer.observe(started.elapsed().as_millis() as u64, health) {
            Verdict::Wait => {}
            Verdict::Promote => {
                let mut voters = membership.voters.clone();
                voters.insert(id);
                tracing::info!(node = ?id, "new member stable: promoting it to voter");
                return ask(&leader, |reply| ChangeMembership { voters, reply }).await;
            }
            Verdict::Behind(behind) => {
                return Err(RaftError::Membership(MembershipError::LearnerBehind {
                    learner: id,
                    behind,
                }))
            }
            Verdict::Unstable { longest_ms } => {
                return Err(RaftError::Membership(MembershipError::NotStable {
                    learner: id,
                    longest_ms,
                }))
            }
        }
    }
}
