//! Exactly-once sessions of the client.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::{json, parse, Client, ClientError, Method};
use crate::web::{RECEIVED_HEADER, SEQUENCE_HEADER, SESSION_HEADER};

/// Which sequence numbers have their answers: all up to `floor`, and
/// those above it in `above`.
#[derive(Default)]
pub(super) struct Answered {
    floor: u64,
    above: BTreeSet<u64>,
}

impl Answered {
    fn record(&mut self, seq: u64) {
        self.above.insert(seq);
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
    }
}

/// An exactly-once session: every write gets the next sequence number
/// and is sent again — to any member — while its outcome is unknown, so
/// the service applies it once and answers every copy with the first
/// answer. Several writes may be in flight at once.
pub struct ClientSession {
    pub(super) client: Client,
    pub(super) id: u64,
    pub(super) next: Cell<u64>,
    pub(super) answered: RefCell<Answered>,
}

impl ClientSession {
    /// The session's id (the `Regatta-Session` header).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `POST path` with a JSON body, exactly once.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(json(body)?)).await
    }

    /// `PUT path` with a JSON body, exactly once.
    pub async fn put<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::PUT, path, Some(json(body)?)).await
    }

    /// `DELETE path`, exactly once.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::DELETE, path, None).await
    }

    /// Any method, exactly once: resent with the same sequence number
    /// until the answer is definite or the client's timeout passes
    /// ([`ClientError::Indeterminate`] then: the write may still apply,
    /// once).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let seq = self.next.get();
        self.next.set(seq + 1);
        let deadline = Instant::now() + self.client.0.timeout;
        let answer = self
            .client
            .until_definite(deadline, true, || {
                // Acknowledges only answers already in hand: a write still
                // in flight must not be refused as answered.
                let received = self.answered.borrow().floor.min(seq - 1);
                let headers = vec![
                    (SESSION_HEADER, self.id.to_string()),
                    (SEQUENCE_HEADER, seq.to_string()),
                    (RECEIVED_HEADER, received.to_string()),
                ];
                (method.clone(), path.to_string(), body.clone(), headers)
            })
            .await;
        // Settled either way: this sequence is never sent again, so the
        // service may forget its answer (a late copy of an unknown one is
        // then refused, never applied twice).
        self.answered.borrow_mut().record(seq);
        match answer {
            Ok(body) => parse(&body),
            Err(ClientError::SessionGone(_)) => Err(ClientError::SessionGone(self.id)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acknowledged_floor_waits_for_every_earlier_answer() {
        let mut a = Answered::default();
        a.record(2);
        assert_eq!(a.floor, 0, "1 is still in flight");
        a.record(1);
        assert_eq!(a.floor, 2);
        a.record(4);
        assert_eq!(a.floor, 2);
    }
}
