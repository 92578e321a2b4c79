//! A session's cached responses: its writes applied but not yet
//! acknowledged by the client. A client session usually has one or two,
//! arriving in sequence order, and drops them from the front as its
//! acknowledgements rise — so a deque sorted by sequence, whose storage is
//! reused write after write, rather than a map that searches and
//! rebalances. It is encoded as the map it replaced (sequence → response),
//! so snapshots read the same either way.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Responses by sequence, ascending; `None` while the write is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Responses(VecDeque<(u64, Option<Bytes>)>);

impl Responses {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The highest sequence held.
    pub(super) fn last_seq(&self) -> Option<u64> {
        self.0.back().map(|(seq, _)| *seq)
    }

    /// Where `seq` is (`Ok`) or would go (`Err`); the newest end first,
    /// where writes arrive.
    fn position(&self, seq: u64) -> Result<usize, usize> {
        match self.0.back() {
            None => Err(0),
            Some((last, _)) if *last < seq => Err(self.0.len()),
            Some((last, _)) if *last == seq => Ok(self.0.len() - 1),
            Some(_) => self.0.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Option<Bytes>> {
        self.position(seq).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Option<Bytes>> {
        self.position(seq).ok().map(|i| &mut self.0[i].1)
    }

    /// Holds `seq` as being applied (no response yet), unless held.
    pub(super) fn insert_pending(&mut self, seq: u64) {
        if let Err(i) = self.position(seq) {
            self.0.insert(i, (seq, None));
        }
    }

    pub(super) fn remove(&mut self, seq: u64) {
        if let Ok(i) = self.position(seq) {
            self.0.remove(i);
        }
    }

    /// Drops every response at or below `floor`.
    pub(super) fn drop_upto(&mut self, floor: u64) {
        while self.0.front().is_some_and(|(seq, _)| *seq <= floor) {
            self.0.pop_front();
        }
    }

    /// The lowest sequence whose response is recorded.
    pub(super) fn oldest_answered(&self) -> Option<u64> {
        self.0
            .iter()
            .find(|(_, response)| response.is_some())
            .map(|(seq, _)| *seq)
    }
}

impl Serialize for Responses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(seq, response)| (seq, response)))
    }
}

impl<'de> Deserialize<'de> for Responses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u64, Option<Bytes>>::deserialize(deserializer)?;
        Ok(Responses(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_writes_stay_sorted_and_the_front_goes_first() {
        let mut r = Responses::default();
        for seq in [2, 5, 3, 4, 1, 5] {
            r.insert_pending(seq);
        }
        assert_eq!(r.len(), 5, "5 held once");
        *r.get_mut(3).unwrap() = Some(Bytes::from_static(b"three"));
        assert_eq!(r.oldest_answered(), Some(3));
        assert_eq!(r.get(3), Some(&Some(Bytes::from_static(b"three"))));
        assert_eq!(r.get(9), None);
        r.drop_upto(2);
        r.remove(4);
        let held: Vec<u64> = r.0.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(held, [3, 5]);
        assert_eq!(r.last_seq(), Some(5));
    }

    #[test]
    fn encoded_as_the_map_it_replaced() {
        let mut r = Responses::default();
        r.insert_pending(7);
        r.insert_pending(8);
        *r.get_mut(7).unwrap() = Some(Bytes::from_static(b"seven"));
        let map: BTreeMap<u64, Option<Bytes>> =
            BTreeMap::from([(7, Some(Bytes::from_static(b"seven"))), (8, None)]);
        let bytes = rmp_serde::to_vec(&r).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec(&map).unwrap());
        assert_eq!(rmp_serde::from_slice::<Responses>(&bytes).unwrap(), r);
    }
}
