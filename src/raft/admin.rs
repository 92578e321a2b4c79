//! Cluster administration through the handle: membership changes,
//! leadership transfer, member metadata and snapshots on request. Every
//! administrative call works on any node: a follower forwards it to the
//! leader, and its failures are classified as a write's are (definite
//! until the request has left the node, indeterminate after).

use super::*;
use crate::error::MembershipError;
use crate::message::AdminRequest;

/// How often a membership call asked while another change is still being
/// carried out looks again: changes take a round trip or two.
const CHANGE_POLL: Duration = Duration::from_millis(50);

impl<SM: StateMachine> Raft<SM> {
    /// Adds node `id`, listening at `address` (as the transport expects
    /// it; may be empty for transports that route by id), as a learner: it
    /// receives the log but does not vote. Returns once the configuration
    /// with the learner has committed. Any node takes it (a follower
    /// forwards it to the leader).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<Membership, RaftError> {
        self.add_learner_with_metadata(id, address, BTreeMap::new())
            .await
    }

    /// [`Raft::add_learner`], also recording the node's metadata in the
    /// configuration (its API address under [`crate::API_ADDRESS`], say).
    /// Adding a learner again replaces its address and metadata.
    pub async fn add_learner_with_metadata(
        &self,
        id: NodeId,
        address: impl Into<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Membership, RaftError> {
        let request = AdminRequest::AddLearner {
            id,
            address: address.into(),
            metadata,
        };
        self.membership_request(request).await
    }

    /// Removes learner `id` from the configuration; returns once that has
    /// committed (the leader then stops replicating to it). Voters are
    /// removed with [`Raft::change_membership`].
    pub async fn remove_learner(&self, id: NodeId) -> Result<Membership, RaftError> {
        self.membership_request(AdminRequest::RemoveLearner { id })
            .await
    }

    /// Makes `voters` the voting members, by joint consensus (C_old →
    /// C_old,new → C_new, each a log entry). Returns the new configuration
    /// once C_new has committed. Every new voter must already be a learner;
    /// the leader waits up to an election timeout for each to be at most
    /// [`Config::learner_max_lag`] entries behind (and to have acknowledged
    /// something), then refuses. A refusal, or another change in progress,
    /// gives [`RaftError::Membership`] and nothing changes. A leader that is not
    /// in `voters` manages the change, then steps down.
    ///
    /// [`RaftError::Indeterminate`] means the leader was lost mid-change:
    /// the next leader finishes a change whose joint entry it has.
    pub async fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<Membership, RaftError> {
        let request = AdminRequest::Change {
            voters: voters.into_iter().collect(),
        };
        self.membership_request(request).await
    }

    /// Replaces voter `id` after its data directory was lost: the node has
    /// been started again on a new directory with `--join` (a joining
    /// node, same id and address), and this call re-admits it. Until then
    /// the configuration names the lost directory's incarnation, so the
    /// node on its new disk neither votes nor counts toward any quorum: it
    /// may have lost entries it acknowledged.
    ///
    /// The leader makes `id` a learner (a joint change), waits up to an
    /// election timeout for its new incarnation to catch up, and promotes
    /// it with that incarnation pinned (a second joint change). Returns the
    /// final configuration. [`MembershipError::NotReplaced`] (definite,
    /// nothing changed) if the leader has not heard from a new incarnation
    /// of `id`. [`RaftError::Indeterminate`] if leadership was lost midway,
    /// and a [`MembershipError::LearnerBehind`] after the first step
    /// leaves `id` a learner: then promote it with
    /// [`Raft::change_membership`] once it has caught up.
    ///
    /// [`MembershipError::NotReplaced`]: crate::MembershipError::NotReplaced
    /// [`MembershipError::LearnerBehind`]: crate::MembershipError::LearnerBehind
    pub async fn replace(&self, id: NodeId) -> Result<Membership, RaftError> {
        self.membership_request(AdminRequest::Replace { id }).await
    }

    /// Hands leadership to voter `to` (dissertation §3.10): the leader
    /// stops accepting writes (clients get [`RaftError::NotLeader`] naming
    /// `to` and retry), brings `to` up to date, and sends it TimeoutNow; `to`
    /// campaigns at once and wins. Returns once this node has stepped down.
    /// If `to` does not take over within an election timeout the transfer
    /// fails with [`RaftError::Transfer`] and the leader carries on.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), RaftError> {
        match self.membership_request(AdminRequest::Transfer { to }).await {
            Ok(_) => Ok(()),
            // Forwarded from a follower, the answer can lose the race with
            // the news of the new leader itself (which fails the forward as
            // unknown): the outcome is whoever leads now.
            Err(RaftError::Indeterminate) => self
                .wait_for(self.config.election_timeout_max, |m| m.leader == Some(to))
                .await
                .map(|_| ())
                .map_err(|_| RaftError::Indeterminate),
            Err(e) => Err(e),
        }
    }

    /// Adds node `id` as a voter the careful way (raft-autopilot's): as a
    /// learner first, promoted by joint consensus only once it has stayed
    /// caught up (within [`Config::learner_max_lag`]) and in contact for
    /// [`Config::voter_stabilization`] — a node still receiving a large
    /// snapshot, or on a flapping link, never weakens a quorum. Returns
    /// the final configuration (at once if `id` already votes). Fails with
    /// [`MembershipError::LearnerBehind`] if it was never caught up within
    /// [`Config::voter_catch_up_timeout`], [`MembershipError::NotStable`]
    /// if it was but never for a whole stabilization time (either way it
    /// stays a learner: retry, or remove it), the refusal of either step
    /// otherwise, or [`RaftError::Indeterminate`] if leadership was lost
    /// midway.
    ///
    /// [`MembershipError::LearnerBehind`]: crate::MembershipError::LearnerBehind
    /// [`MembershipError::NotStable`]: crate::MembershipError::NotStable
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: impl Into<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Membership, RaftError> {
        let request = AdminRequest::AddVoter {
            id,
            address: address.into(),
            metadata,
        };
        let within = crate::node::admin_timeout(&request, &self.config);
        self.membership_request_within(request, within).await
    }

    /// Sets metadata `key` of member `id` to `value` (`None` removes it)
    /// through the log, so every node learns it — a member whose API
    /// address changed updates [`crate::API_ADDRESS`] instead of being
    /// removed and added again. Returns the configuration once the change
    /// has committed; voters and learners stay as they are.
    pub async fn update_member_metadata(
        &self,
        id: NodeId,
        key: impl Into<String>,
        value: Option<String>,
    ) -> Result<Membership, RaftError> {
        self.membership_request(AdminRequest::SetMetadata {
            id,
            key: key.into(),
            value,
        })
        .await
    }

    pub(super) async fn membership_request(
        &self,
        request: AdminRequest,
    ) -> Result<Membership, RaftError> {
        self.membership_request_within(request, self.config.client_timeout)
            .await
    }

    async fn membership_request_within(
        &self,
        request: AdminRequest,
        within: Duration,
    ) -> Result<Membership, RaftError> {
        let deadline = Instant::now() + within;
        loop {
            // Another change under way (an operator's, or a node
            // publishing its metadata as it starts) is refused before
            // anything is proposed, so waiting for it and asking again is
            // safe.
            match self.membership_request_once(&request, deadline).await {
                Err(RaftError::Membership(MembershipError::ChangeInProgress))
                    if Instant::now() + CHANGE_POLL < deadline =>
                {
                    tokio::time::sleep(CHANGE_POLL).await;
                }
                answer => return answer,
            }
        }
    }

    async fn membership_request_once(
        &self,
        request: &AdminRequest,
        deadline: Instant,
    ) -> Result<Membership, RaftError> {
        self.retry_until_leader(deadline, |reply| ClientAdmin {
            request: request.clone(),
            reply,
        })
        .await
    }

    /// Takes a snapshot of the state machine now (besides the automatic
    /// ones every [`Config::snapshot_every`] applied entries), makes it
    /// durable and compacts the log behind it. Returns the last entry the
    /// snapshot covers; if a snapshot is already being taken, its result.
    pub async fn snapshot(&self) -> Result<LogId, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.snapshotter
            .send(TakeSnapshot(tx))
            .await
            .map_err(|_| RaftError::ShuttingDown)?;
        rx.await.map_err(|_| RaftError::ShuttingDown)?
    }
}
