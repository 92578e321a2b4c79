//! Starting a node's actors on the current arbiter, each inside its
//! group's tracing span: on a host running many groups, every log line of
//! a group's actors then names the group (`group=7`), next to the node id
//! and term the line carries itself. A single-group node's span is
//! disabled, and its lines are as before.

use actix::{Actor, Addr, Context};
use tracing::Instrument;

use crate::core::types::GroupId;

/// The span a group's actors run in (disabled for a single-group node).
/// At error level, so that it is on whenever any logging is.
pub(crate) fn group_span(group: GroupId) -> tracing::Span {
    if group == 0 {
        tracing::Span::none()
    } else {
        tracing::error_span!("group", group)
    }
}

/// Runs `actor` in `ctx` (made beforehand when the actor needs its own
/// address while it is built), every poll inside `span`.
pub(crate) fn run_in<A>(ctx: Context<A>, actor: A, span: &tracing::Span) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    let future = ctx.into_future(actor);
    let addr = future.address();
    actix_rt::spawn(future.instrument(span.clone()));
    addr
}

/// Starts `actor`, every poll inside `span`.
pub(crate) fn start_in<A>(actor: A, span: &tracing::Span) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    run_in(Context::new(), actor, span)
}
