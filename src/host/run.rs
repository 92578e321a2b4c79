//! The host's thread: opening the database, the shared writer and the
//! transport, starting groups (at start-up from the catalog, later on
//! request), routing inbound messages, and the orderly end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{lock, Host, HostError, Shared, StateMachineFactory};
use crate::config::Config;
use crate::core::types::{GroupId, Membership, NodeId};
use crate::error::StartError;
use crate::log_store::SharedWriter;
use crate::message::Envelope;
use crate::raft::Environment;
use crate::raft::Raft;
use crate::state_machine::StateMachine;
use crate::storage::fjall_host::HostDatabase;
use crate::switchboard::Switchboard;
use crate::transport::tcp::{TcpConfig, TcpTransport};
use crate::transport::Transport;

/// What [`super::HostBuilder::start`] checked.
pub(super) struct Plan<SM: StateMachine> {
    pub id: NodeId,
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub peers: BTreeMap<NodeId, String>,
    pub cluster_name: String,
    pub config: Config,
    pub factory: Arc<StateMachineFactory<SM>>,
}

/// The parts the host's thread hands to the [`Host`] handle.
type Started<SM> = Result<(Arc<Shared<SM>>, TcpTransport, actix_rt::ArbiterHandle), StartError>;

/// What starting a group needs besides [`Shared`]: it lives on the host's
/// thread only (the writer handle must not outlive the actors, so the
/// thread can be joined at the end).
pub(super) struct GroupRuntime {
    transport: Arc<dyn Transport>,
    state_machines: actix_rt::ArbiterHandle,
}

pub(super) async fn start<SM: StateMachine + Send>(plan: Plan<SM>) -> Result<Host<SM>, StartError> {
    let (started_tx, started_rx) = oneshot::channel::<Started<SM>>();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("regatta-host-{}", plan.id))
        .spawn(move || {
            let system = crate::park::system(plan.config.idle_spin);
            // The state machines run on a thread of their own, as a
            // single node's does: a long handler must not hold up the
            // heartbeats of every group.
            let state_machines = crate::park::arbiter(plan.config.idle_spin);
            let ran = system.block_on(serve(plan, state_machines.handle(), started_tx, stop_rx));
            // Dropping the system drops every group's actors, and with
            // them their places at the shared writer.
            drop(system);
            state_machines.stop();
            let _ = state_machines.join();
            if let Some(writer) = ran {
                writer.stop_and_join();
            }
            let _ = stopped_tx.send(());
        })
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    match started_rx.await {
        Ok(Ok((shared, transport, arbiter))) => Ok(Host {
            shared,
            transport,
            arbiter,
            end: Mutex::new(Some(super::Ending {
                stop: stop_tx,
                stopped: stopped_rx,
                thread,
            })),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(StartError::Runtime(
                "the host's thread ended during start-up".into(),
            ))
        }
    }
}

/// Runs the host until it is told to stop; returns the shared writer to
/// join once the actors are gone.
async fn serve<SM: StateMachine + Send>(
    plan: Plan<SM>,
    state_machines: actix_rt::ArbiterHandle,
    started: oneshot::Sender<Started<SM>>,
    stop: oneshot::Receiver<()>,
) -> Option<SharedWriter> {
    let (shared, runtime, transport, host_inbox) = match open(plan, state_machines).await {
        Ok(parts) => parts,
        Err((e, writer)) => {
            let _ = started.send(Err(e));
            return writer;
        }
    };
    let arbiter = actix_rt::Arbiter::current();
    let beating = shared.clone();
    actix_rt::spawn(
        shared
            .switchboard
            .clone()
            .run_heartbeat(runtime.transport.clone(), move || {
                beating.stopping.load(Ordering::Relaxed)
            }),
    );
    actix_rt::spawn(super::deletion::serve(
        shared.clone(),
        runtime.transport.clone(),
        host_inbox,
    ));
    RUNTIME.with(|slot| *slot.borrow_mut() = Some(runtime));
    if started
        .send(Ok((shared.clone(), transport.clone(), arbiter)))
        .is_ok()
    {
        // An error means the handle was dropped: stop as asked.
        let _ = stop.await;
    }
    shared.stopping.store(true, Ordering::Relaxed);
    transport.shutdown();
    let _guard = shared.lifecycle.lock().await;
    let groups = shared.switchboard.drain();
    futures_util::future::join_all(groups.iter().map(|raft| raft.shutdown())).await;
    RUNTIME.with(|slot| slot.borrow_mut().take());
    lock(&shared.db).take();
    let writer = lock(&shared.writer).take();
    writer
}

thread_local! {
    /// The host's [`GroupRuntime`], on the host's thread.
    static RUNTIME: std::cell::RefCell<Option<Arc<GroupRuntime>>> = const { std::cell::RefCell::new(None) };
}

/// Messages for the host itself waiting to be handled, at most.
const HOST_INBOX: usize = 1024;

type Opened<SM> = (
    Arc<Shared<SM>>,
    Arc<GroupRuntime>,
    TcpTransport,
    tokio::sync::mpsc::Receiver<Envelope>,
);

async fn open<SM: StateMachine + Send>(
    plan: Plan<SM>,
    state_machines: actix_rt::ArbiterHandle,
) -> Result<Opened<SM>, (StartError, Option<SharedWriter>)> {
    let dir = plan.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| {
        (
            crate::embed::storage_error(&dir, crate::storage::StorageError::Io(e.to_string())),
            None,
        )
    })?;
    let db = HostDatabase::open(&dir, &plan.cluster_name)
        .map_err(|e| (crate::embed::storage_error(&dir, e), None))?;
    let catalog = db
        .groups()
        .map_err(|e| (crate::embed::storage_error(&dir, e), None))?;
    let tombstones = db
        .tombstones()
        .map_err(|e| (crate::embed::storage_error(&dir, e), None))?;
    let syncing = db.clone();
    let writer = SharedWriter::start(
        &format!("regatta-log-host-{}", plan.id),
        Box::new(move || syncing.persist()),
    )
    .map_err(|e| (StartError::Runtime(e.to_string()), None))?;
    let shared = Arc::new(Shared {
        id: plan.id,
        switchboard: Arc::new(Switchboard::new(
            plan.id,
            plan.peers.keys().copied(),
            &plan.config,
        )),
        founders: Mutex::new(BTreeMap::new()),
        db: Mutex::new(Some(db)),
        factory: plan.factory,
        config: plan.config,
        cluster_name: plan.cluster_name.clone(),
        writer: Mutex::new(Some(writer.clone())),
        tombstones: Mutex::new(tombstones),
        deletions: Mutex::default(),
        stopping: Default::default(),
        lifecycle: tokio::sync::Mutex::new(()),
    });
    let mut tcp = TcpConfig::new(plan.id, plan.cluster_name, plan.listen);
    tcp.advertise = plan.advertise;
    tcp.peers = plan.peers.clone();
    // Weak: the groups hold the transport, which holds this delivery.
    let switchboard = Arc::downgrade(&shared.switchboard);
    // Bounded: a flood of messages for unknown groups is dropped, not
    // queued (a deletion message lost is sent again).
    let (to_host, host_inbox) = tokio::sync::mpsc::channel(HOST_INBOX);
    let deliver = Arc::new(move |envelope: Envelope| {
        let unrouted = switchboard.upgrade().and_then(|s| s.route(envelope));
        if let Some(envelope) = unrouted {
            let _ = to_host.try_send(envelope);
        }
    });
    let transport = TcpTransport::start(tcp, deliver).await.map_err(|source| {
        (
            StartError::Listen {
                addr: plan.listen.to_string(),
                source,
            },
            Some(writer.clone()),
        )
    })?;
    let runtime = Arc::new(GroupRuntime {
        transport: Arc::new(transport.clone()),
        state_machines,
    });
    for (group, founders) in catalog {
        if let Err(e) = start_group(&shared, &runtime, &writer, group, founders) {
            transport.shutdown();
            let source = match e {
                HostError::Start { source, .. } => source,
                other => StartError::Runtime(other.to_string()),
            };
            return Err((
                StartError::Runtime(format!("group {group} could not start: {source}")),
                Some(writer),
            ));
        }
    }
    // What the groups wrote while starting (a new incarnation, a log
    // reconciled with its snapshot) went outside the shared writer,
    // unsynced: one fsync for all of them.
    if let Err(e) = shared
        .db()
        .map_err(|e| e.to_string())
        .and_then(|db| db.persist().map_err(|e| e.to_string()))
    {
        transport.shutdown();
        return Err((
            StartError::Runtime(format!("the host's database failed: {e}")),
            Some(writer),
        ));
    }
    Ok((shared, runtime, transport, host_inbox))
}

/// Starts `group`'s node on this thread and lists it.
fn start_group<SM: StateMachine + Send>(
    shared: &Shared<SM>,
    runtime: &GroupRuntime,
    writer: &SharedWriter,
    group: GroupId,
    founders: Membership,
) -> Result<Raft<SM>, HostError> {
    let storage = shared
        .db()?
        .open_group(group, &shared.cluster_name)
        .map_err(|source| HostError::Start {
            group,
            source: crate::embed::storage_error(std::path::Path::new("host database"), source),
        })?;
    let mut config = shared.config.clone();
    // Groups founded by the same hosts would otherwise share a cluster id.
    config.cluster_token = format!("{}#group-{group}", config.cluster_token);
    let state_machine = (shared.factory)(group);
    let sm = SM::start_in_arbiter(&runtime.state_machines, move |_| state_machine);
    let raft = Raft::start_with(
        shared.id,
        config,
        storage,
        runtime.transport.clone(),
        Some(founders.clone()),
        sm,
        Environment {
            shared_writer: Some(writer.clone()),
            ask_founders: true,
            cluster_name: shared.cluster_name.clone(),
            group,
            quiesce: Some(shared.switchboard.host_liveness()),
            ..Default::default()
        },
    )
    .map_err(|source| HostError::Start { group, source })?;
    shared
        .switchboard
        .insert(group, raft.clone(), founders.members());
    lock(&shared.founders).insert(group, founders);
    Ok(raft)
}

/// [`Host::create_group`], on the host's thread.
pub(super) async fn create<SM: StateMachine + Send>(
    shared: &Shared<SM>,
    group: GroupId,
    founders: Membership,
) -> Result<Raft<SM>, HostError> {
    if group == 0 {
        return Err(HostError::InvalidGroup);
    }
    let asked: Vec<NodeId> = founders.voters.iter().copied().collect();
    if !founders.voters.contains(&shared.id) {
        return Err(HostError::NotAFounder {
            id: shared.id,
            group,
            founders: asked,
        });
    }
    let _guard = shared.lifecycle.lock().await;
    if lock(&shared.tombstones).contains_key(&group) {
        return Err(HostError::GroupDeleted(group));
    }
    if let Some(existing) = lock(&shared.founders).get(&group) {
        if existing.voters != founders.voters {
            return Err(HostError::GroupExists {
                group,
                existing: existing.voters.iter().copied().collect(),
                asked,
            });
        }
    }
    if let Some(raft) = shared.switchboard.get(group) {
        return Ok(raft);
    }
    let runtime = RUNTIME
        .with(|slot| slot.borrow().clone())
        .ok_or(HostError::Stopped)?;
    let writer = lock(&shared.writer).clone().ok_or(HostError::Stopped)?;
    let db = shared.db()?;
    db.add_group(group, &founders)?;
    let raft = start_group(shared, &runtime, &writer, group, founders)?;
    // Its start-up writes (its new incarnation) went outside the writer.
    db.persist()?;
    Ok(raft)
}

/// [`Host::remove_group`], on the host's thread.
pub(super) async fn remove<SM: StateMachine + Send>(
    shared: &Shared<SM>,
    group: GroupId,
) -> Result<(), HostError> {
    let _guard = shared.lifecycle.lock().await;
    let raft = shared
        .switchboard
        .remove(group)
        .ok_or(HostError::NoSuchGroup(group))?;
    // Everything it queued is written before its data is deleted, and
    // its place at the writer is released.
    raft.shutdown().await;
    lock(&shared.founders).remove(&group);
    shared.db()?.remove_group(group)?;
    tracing::info!(host = shared.id, group, "group removed from this host");
    Ok(())
}
