//! Bounds on what unauthenticated and authenticated inbound connections
//! may hold, so a hostile or broken client cannot grow the node's memory
//! or task count: connections still in their handshake are capped in total
//! and per remote address (and closed after the handshake timeout), and
//! each peer keeps at most one established inbound connection — a new one
//! replaces the old, whose task ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::lock;
use crate::NodeId;

/// The inbound connections of one transport.
#[derive(Debug)]
pub(super) struct Admission {
    max_pending: usize,
    max_pending_per_ip: usize,
    pending: Mutex<HashMap<IpAddr, usize>>,
    /// Per peer: the serial number and cancel token of its connection.
    established: Mutex<HashMap<NodeId, (u64, CancellationToken)>>,
    serial: std::sync::atomic::AtomicU64,
}

/// Why a connection was closed before its handshake was read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_pending_connections` handshakes are under way.
    TooManyPending,
    /// `max_pending_connections_per_ip` handshakes from this address.
    TooManyFromAddress,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::TooManyPending => "too many connections in their handshake",
            Refusal::TooManyFromAddress => {
                "too many connections in their handshake from this address"
            }
        })
    }
}

/// A slot for one connection in its handshake; freed on drop.
#[derive(Debug)]
pub(super) struct Pending {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = lock(&self.admission.pending);
        if let Some(n) = pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

/// A peer's established connection: cancelled when a newer one from the
/// same peer arrives; its entry is removed on drop.
#[derive(Debug)]
pub(super) struct Established {
    admission: Arc<Admission>,
    peer: NodeId,
    serial: u64,
    /// Cancelled when this connection is replaced.
    pub(super) replaced: CancellationToken,
}

impl Drop for Established {
    fn drop(&mut self) {
        let mut established = lock(&self.admission.established);
        if established
            .get(&self.peer)
            .is_some_and(|(s, _)| *s == self.serial)
        {
            established.remove(&self.peer);
        }
    }
}

impl Admission {
    pub(super) fn new(max_pending: usize, max_pending_per_ip: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_pending,
            max_pending_per_ip,
            pending: Mutex::new(HashMap::new()),
            established: Mutex::new(HashMap::new()),
            serial: Default::default(),
        })
    }

    /// Admits a new connection from `ip` into its handshake, if the limits
    /// allow.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Refusal> {
        let mut pending = lock(&self.pending);
        let total: usize = pending.values().sum();
        if total >= self.max_pending {
            return Err(Refusal::TooManyPending);
        }
        let from_ip = pending.entry(ip).or_insert(0);
        if *from_ip >= self.max_pending_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *from_ip += 1;
        Ok(Pending {
            admission: self.clone(),
            ip,
        })
    }

    /// The handshake of `pending` succeeded for `peer`: it becomes the
    /// peer's one established connection, replacing (cancelling) an older
    /// one.
    pub(super) fn establish(self: &Arc<Self>, pending: Pending, peer: NodeId) -> Established {
        drop(pending);
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = CancellationToken::new();
        if let Some((_, older)) = lock(&self.established).insert(peer, (serial, replaced.clone())) {
            older.cancel();
        }
        Established {
            admission: self.clone(),
            peer,
            serial,
            replaced,
        }
    }

    /// Connections in their handshake now, for tests.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        lock(&self.pending).values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_capped_in_total_and_per_address_and_freed_on_drop() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = a.admit(one).unwrap();
        let _p2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::TooManyFromAddress);
        let _p3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::TooManyPending);
        drop(p1);
        assert_eq!(a.pending(), 2);
        assert!(a.admit(one).is_ok());
    }

    #[test]
    fn a_peer_keeps_one_established_connection_the_newest() {
        let a = Admission::new(8, 8);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = a.establish(a.admit(ip).unwrap(), 7);
        assert_eq!(
            a.pending(),
            0,
            "established connections leave the handshake count"
        );
        let second = a.establish(a.admit(ip).unwrap(), 7);
        assert!(first.replaced.is_cancelled());
        assert!(!second.replaced.is_cancelled());
        // The replaced connection ending does not remove the newer entry.
        drop(first);
        let third = a.establish(a.admit(ip).unwrap(), 7);
        assert!(second.replaced.is_cancelled());
        drop(third);
        assert!(lock(&a.established).is_empty());
    }
}
