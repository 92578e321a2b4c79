//! Typed commands: a command type that names its own response type, so a
//! caller of [`crate::Raft::execute`] gets that type back instead of the
//! state machine's whole response enum.

use crate::error::RaftError;
use crate::state_machine::StateMachine;

/// One kind of command of the state machine `SM`, with the response it
/// gets (as an actix `Message` names its `Result`). The command travels
/// in the log as `SM::Command` (`Into`); [`Command::response`] picks this
/// command's answer out of `SM::Response`, once, here, instead of in
/// every caller.
///
/// ```
/// use regatta::{Command, StateMachine};
/// # use actix::prelude::*;
/// # use regatta::{Apply, Restore, Snapshot, SnapshotData};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum KvCommand { Put(Put), Len }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Put { key: String, value: String }
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum KvResponse { Previous(Option<String>), Len(usize) }
///
/// impl From<Put> for KvCommand {
///     fn from(put: Put) -> Self { KvCommand::Put(put) }
/// }
/// impl Command<Kv> for Put {
///     type Response = Option<String>;
///     fn response(response: KvResponse) -> Option<Option<String>> {
///         match response {
///             KvResponse::Previous(previous) => Some(previous),
///             _ => None,
///         }
///     }
/// }
/// # #[derive(Default)] struct Kv(std::collections::BTreeMap<String, String>);
/// # impl Actor for Kv { type Context = Context<Self>; }
/// # impl StateMachine for Kv { type Command = KvCommand; type Response = KvResponse; }
/// # impl Handler<Apply<Kv>> for Kv { type Result = Vec<KvResponse>;
/// #     fn handle(&mut self, b: Apply<Kv>, _: &mut Context<Self>) -> Vec<KvResponse> {
/// #         b.entries.into_iter().map(|(_, c)| match c {
/// #             KvCommand::Put(p) => KvResponse::Previous(self.0.insert(p.key, p.value)),
/// #             KvCommand::Len => KvResponse::Len(self.0.len()),
/// #         }).collect() } }
/// # impl Handler<Snapshot> for Kv { type Result = Result<SnapshotData, String>;
/// #     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
/// #         Ok(rmp_serde::to_vec(&self.0).map_err(|e| e.to_string())?.into()) } }
/// # impl Handler<Restore> for Kv { type Result = Result<(), String>;
/// #     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
/// #         self.0 = rmp_serde::from_slice(&r.data).map_err(|e| e.to_string())?; Ok(()) } }
///
/// // `previous` is an Option<String>: no match on KvResponse here.
/// async fn put(raft: &regatta::Raft<Kv>) -> Result<(), regatta::RaftError> {
///     let previous = raft.execute(Put { key: "a".into(), value: "1".into() }).await?;
///     println!("a was {previous:?}");
///     Ok(())
/// }
/// ```
pub trait Command<SM: StateMachine>: Into<SM::Command> {
    /// What the state machine answers to this command.
    type Response;

    /// This command's answer out of the state machine's response; `None`
    /// if the state machine answered with another kind (a bug in it).
    fn response(response: SM::Response) -> Option<Self::Response>;
}

/// `C`'s answer out of `response`; a response of another kind is an error
/// that says the write was applied.
pub(crate) fn typed<SM: StateMachine, C: Command<SM>>(
    response: SM::Response,
) -> Result<C::Response, RaftError> {
    C::response(response).ok_or_else(|| {
        RaftError::Codec(format!(
            "the write was applied, but the state machine answered a {} with a response of another kind (a bug in the state machine's Apply or in Command::response)",
            std::any::type_name::<C>()
        ))
    })
}
