//! The key-value state machine of the `kv` and `sharded_kv` examples:
//! a map of strings with put, delete and compare-and-swap, typed
//! commands, snapshots, and reads of one key or a prefix.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use regatta::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
use serde::{Deserialize, Serialize};

/// The replicated state. Behind an `Arc` so a snapshot takes a reference
/// in O(1) and serializes it off the actor; the next write after a
/// snapshot copies the map once (`Arc::make_mut`).
#[derive(Default)]
pub struct Kv {
    map: Arc<BTreeMap<String, String>>,
}

/// The commands, one type each: a write of a `Put` answers a `Put`'s
/// response type (see `regatta::Command` below), with no match on
/// `Response` in the handlers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    Put(Put),
    Delete(Delete),
    Cas(Cas),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Put {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delete {
    pub key: String,
}

/// Sets `key` to `new` (`None`: deletes it) if it holds `expected`
/// (`None`: is absent).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cas {
    pub key: String,
    pub expected: Option<String>,
    pub new: Option<String>,
}

/// Put and Delete: the previous value. Cas: whether it swapped, and the
/// value after.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Previous(Option<String>),
    Cas(CasOutcome),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CasOutcome {
    pub swapped: bool,
    pub current: Option<String>,
}

/// Each command type, its variant of `Command` and its answer.
macro_rules! typed_command {
    ($command:ident, $answer:ident => $response:ty) => {
        impl From<$command> for Command {
            fn from(c: $command) -> Self {
                Command::$command(c)
            }
        }
        impl regatta::Command<Kv> for $command {
            type Response = $response;
            fn response(response: Response) -> Option<$response> {
                match response {
                    Response::$answer(answer) => Some(answer),
                    _ => None,
                }
            }
        }
    };
}
typed_command!(Put, Previous => Option<String>);
typed_command!(Delete, Previous => Option<String>);
typed_command!(Cas, Cas => CasOutcome);

impl Actor for Kv {
    type Context = Context<Self>;
}

impl StateMachine for Kv {
    type Command = Command;
    type Response = Response;
}

impl Handler<Apply<Kv>> for Kv {
    type Result = Vec<Response>;
    fn handle(&mut self, batch: Apply<Kv>, _: &mut Context<Self>) -> Vec<Response> {
        let map = Arc::make_mut(&mut self.map);
        let mut apply = |command| match command {
            Command::Put(Put { key, value }) => Response::Previous(map.insert(key, value)),
            Command::Delete(Delete { key }) => Response::Previous(map.remove(&key)),
            Command::Cas(Cas { key, expected, new }) => {
                let swapped = map.get(&key) == expected.as_ref();
                if swapped {
                    match new {
                        Some(value) => map.insert(key.clone(), value),
                        None => map.remove(&key),
                    };
                }
                Response::Cas(CasOutcome {
                    swapped,
                    current: map.get(&key).cloned(),
                })
            }
        };
        batch
            .entries
            .into_iter()
            .map(|(_, command)| apply(command))
            .collect()
    }
}

impl Handler<Snapshot> for Kv {
    type Result = Result<SnapshotData, String>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let map = self.map.clone();
        Ok(SnapshotData::deferred(move || {
            rmp_serde::to_vec(&*map)
                .map(Into::into)
                .map_err(|e| e.to_string())
        }))
    }
}

impl Handler<Restore> for Kv {
    type Result = Result<(), String>;
    fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
        self.map = Arc::new(rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?);
        Ok(())
    }
}

/// Reads: the value of a key, or the keys from a prefix on.
#[derive(Message)]
#[rtype(result = "Vec<(String, String)>")]
pub enum Read {
    Get(String),
    Scan { prefix: String, limit: usize },
}

impl Handler<Read> for Kv {
    type Result = Vec<(String, String)>;
    fn handle(&mut self, read: Read, _: &mut Context<Self>) -> Self::Result {
        match read {
            Read::Get(key) => self
                .map
                .get_key_value(&key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .into_iter()
                .collect(),
            Read::Scan { prefix, limit } => self
                .map
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}
