//! [`InitialCluster`]: the founding members of a cluster, as etcd's
//! `--initial-cluster` gives them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::core::types::{Membership, NodeId};

/// The founding members of a cluster: each voter's id, Raft address and
/// optional metadata. Parses from, and prints as,
/// `ID=HOST:PORT[;KEY=VALUE]...` entries separated by commas:
///
/// ```
/// use regatta::InitialCluster;
///
/// let cluster: InitialCluster =
///     "1=127.0.0.1:7001;api=127.0.0.1:8001,2=127.0.0.1:7002,3=127.0.0.1:7003".parse().unwrap();
/// assert_eq!(cluster.ids().collect::<Vec<_>>(), [1, 2, 3]);
/// assert_eq!(cluster.address(1), Some("127.0.0.1:7001"));
/// assert_eq!(cluster.membership().api_address(1), Some("127.0.0.1:8001"));
/// assert!("1=127.0.0.1:7001,1=127.0.0.1:7002".parse::<InitialCluster>().is_err());
/// ```
///
/// Every founder must be given the same initial cluster (the cluster id
/// is derived from it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialCluster {
    members: BTreeMap<NodeId, Founder>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Founder {
    /// Empty for a transport that routes by id (or a node whose port the
    /// OS picks; see [`crate::Node::set_peer_address`]).
    address: String,
    metadata: BTreeMap<String, String>,
}

/// Why an initial-cluster string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid initial cluster: {0} (expected ID=HOST:PORT[;KEY=VALUE]..., comma-separated)")]
pub struct ParseClusterError(String);

impl InitialCluster {
    /// No members yet; add them with [`InitialCluster::member`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds voter `id` listening for Raft traffic at `address` (empty for
    /// transports that route by id). Adding an id again replaces it.
    pub fn member(mut self, id: NodeId, address: impl Into<String>) -> Self {
        self.members.insert(
            id,
            Founder {
                address: address.into(),
                metadata: BTreeMap::new(),
            },
        );
        self
    }

    /// Sets metadata `key` of member `id` (added first if missing), e.g.
    /// its API address under [`crate::API_ADDRESS`].
    pub fn metadata(
        mut self,
        id: NodeId,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.members
            .entry(id)
            .or_default()
            .metadata
            .insert(key.into(), value.into());
        self
    }

    /// The member ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// The Raft address of member `id`, if it has one.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.members
            .get(&id)
            .map(|f| f.address.as_str())
            .filter(|a| !a.is_empty())
    }

    /// Whether `id` is a founding member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// The founding configuration: every member a voter. An address with
    /// port 0 (picked when the node starts) is left out: no peer could
    /// dial it.
    pub fn membership(&self) -> Membership {
        let mut m = Membership::new(self.ids());
        for (id, founder) in &self.members {
            if !founder.address.is_empty() && !founder.address.ends_with(":0") {
                m.addresses.insert(*id, founder.address.clone());
            }
            if !founder.metadata.is_empty() {
                m.metadata.insert(*id, founder.metadata.clone());
            }
        }
        m
    }
}

impl FromStr for InitialCluster {
    type Err = ParseClusterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ParseClusterError(why);
        let mut cluster = InitialCluster::new();
        for entry in s.split(',').map(str::trim) {
            let mut fields = entry.split(';').map(str::trim);
            let head = fields.next().unwrap_or_default();
            let (id, address) = head
                .split_once('=')
                .ok_or_else(|| bad(format!("`{entry}` is not ID=HOST:PORT")))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{id}` is not a node id")))?;
            if id == 0 {
                return Err(bad("node ids start at 1".into()));
            }
            let address = address.trim();
            if !is_host_port(address) {
                return Err(bad(format!("`{address}` is not a HOST:PORT address")));
            }
            if cluster.contains(id) {
                return Err(bad(format!("node {id} is listed twice")));
            }
            cluster = cluster.member(id, address);
            for field in fields {
                let (key, value) = field
                    .split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| bad(format!("`{field}` is not KEY=VALUE")))?;
                cluster = cluster.metadata(id, key.trim(), value.trim());
            }
        }
        Ok(cluster)
    }
}

/// `host:port` with a numeric port and a non-empty host.
fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

impl fmt::Display for InitialCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (id, founder)) in self.members.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}={}", founder.address)?;
            for (key, value) in &founder.metadata {
                write!(f, ";{key}={value}")?;
            }
        }
        Ok(())
    }
}

impl From<Membership> for InitialCluster {
    /// The voters of `membership`, with their addresses and metadata.
    fn from(membership: Membership) -> Self {
        let mut cluster = InitialCluster::new();
        for id in &membership.voters {
            let address = membership.addresses.get(id).cloned().unwrap_or_default();
            cluster = cluster.member(*id, address);
            for (key, value) in membership.metadata.get(id).into_iter().flatten() {
                cluster = cluster.metadata(*id, key, value);
            }
        }
        cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let text = "1=127.0.0.1:7001;api=127.0.0.1:8001,2=db-2.example:7002,3=[::1]:7003";
        let cluster: InitialCluster = text.parse().unwrap();
        assert_eq!(cluster.to_string(), text);
        assert_eq!(cluster.address(2), Some("db-2.example:7002"));
        let m = cluster.membership();
        assert_eq!(m.voters, [1, 2, 3].into());
        assert_eq!(m.api_address(1), Some("127.0.0.1:8001"));
        assert_eq!(InitialCluster::from(m), cluster);
    }

    #[test]
    fn refuses_what_is_not_an_initial_cluster() {
        for bad in [
            "",
            "1",
            "0=127.0.0.1:1",
            "x=127.0.0.1:1",
            "1=127.0.0.1",
            "1=:7001",
            "1=127.0.0.1:99999",
            "1=127.0.0.1:1,1=127.0.0.1:2",
            "1=127.0.0.1:1;api",
            "1=127.0.0.1:1;=x",
        ] {
            let parsed = bad.parse::<InitialCluster>();
            assert!(parsed.is_err(), "`{bad}` parsed as {parsed:?}");
        }
    }
}
