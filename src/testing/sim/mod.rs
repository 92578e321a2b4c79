//! A deterministic simulator: whole clusters of real regatta nodes — the
//! real actors, log store, applier and your state machine — on one thread,
//! in virtual time, under faults drawn from one seed.
//!
//! - **Deterministic.** Every node runs on the calling thread under
//!   tokio's paused clock, which jumps ahead whenever every task is idle;
//!   log writes become durable after a simulated delay instead of on a
//!   writer thread; every random choice (election timeouts, faults,
//!   clients) comes from the run's seed. The same seed replays the same
//!   run: [`Report::trace`] is a digest of every message delivery and
//!   client outcome, with its virtual time.
//! - **Faults.** Message loss, duplication, delay and reordering;
//!   partitions and healing; crashes at any point (a crash drops every
//!   task of the node at once: writes not yet durable are lost, entries
//!   and hard state alike) and restarts on the surviving storage; slow
//!   storage; snapshots and membership changes, all under the others.
//! - **Invariants, checked as the run goes** ([`Failure`] names the seed
//!   and the virtual time): at most one leader per term, across crashes;
//!   a new leader's log holds every entry applied anywhere (leader
//!   completeness); every node applies the same entry at each index (state
//!   machine safety); log matching between every two durable logs. After
//!   the faults stop the network heals, every node restarts, and a last
//!   write must commit; the client history is returned for a
//!   linearizability check ([`crate::testing::linearizability`]).
//!
//! Run your own state machine under it: give a factory for it and a
//! generator of commands.
//!
//! ```
//! use actix::prelude::*;
//! use regatta::testing::sim::{Faults, Simulation};
//! use regatta::{Apply, Restore, Snapshot, SnapshotData, StateMachine};
//!
//! #[derive(Default)]
//! struct Sum(u64);
//! impl Actor for Sum {
//!     type Context = Context<Self>;
//! }
//! impl StateMachine for Sum {
//!     type Command = u64;
//!     type Response = u64;
//! }
//! impl Handler<Apply<Sum>> for Sum {
//!     type Result = Vec<u64>;
//!     fn handle(&mut self, batch: Apply<Sum>, _: &mut Context<Self>) -> Vec<u64> {
//!         batch.entries.into_iter().map(|(_, n)| { self.0 += n; self.0 }).collect()
//!     }
//! }
//! impl Handler<Snapshot> for Sum {
//!     type Result = Result<SnapshotData, String>;
//!     fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
//!         Ok(self.0.to_be_bytes().to_vec().into())
//!     }
//! }
//! impl Handler<Restore> for Sum {
//!     type Result = Result<(), String>;
//!     fn handle(&mut self, r: Restore, _: &mut Context<Self>) -> Self::Result {
//!         self.0 = u64::from_be_bytes(r.data[..].try_into().map_err(|_| "bad snapshot")?);
//!         Ok(())
//!     }
//! }
//!
//! // Call from a plain thread (not inside an actix or tokio runtime).
//! let sim = Simulation::new(3, |_| Sum::default(), |rng, _client, _seq| rng.u64(1..10))
//!     .faults(Faults::all());
//! for seed in 0..3 {
//!     let report = sim.run(seed).unwrap_or_else(|failure| panic!("{failure}"));
//!     assert!(report.acknowledged() > 0);
//! }
//! ```

mod check;
mod client;
mod counter;
mod hosts;
mod net;
mod world;

pub use counter::{counter, counter_with, run_counter, Counter};
pub use hosts::{HostReport, HostSimulation};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use self::world::World;
use crate::config::Config;
use crate::core::types::NodeId;
use crate::state_machine::StateMachine;

/// Which faults a run injects.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Every message is delayed by a uniform draw from this range.
    pub delay: (Duration, Duration),
    /// Probability that a message is held back longer (reordering).
    pub long_delay: f64,
    /// The range of that longer delay.
    pub long_delay_range: (Duration, Duration),
    /// Crash nodes (losing writes not yet durable) and restart them.
    pub crashes: bool,
    /// Split the network into groups and heal it.
    pub partitions: bool,
    /// Make a node's storage slow for a while.
    pub slow_storage: bool,
    /// Take snapshots (and compact the log) often, so that lagging nodes
    /// catch up by InstallSnapshot.
    pub snapshots: bool,
    /// Replace voters through joint consensus, with spare nodes.
    pub membership: bool,
    /// Replace a member's disk (its directory is lost): the node is
    /// started again with its old flags (a founder must then refuse to
    /// found, a joiner counts for nothing until replaced), or with --join
    /// and replaced in one call, or the operator removes it first and
    /// adds it back.
    pub disk_replacement: bool,
    /// Run each node's clock at its own rate (50%–200% of true time, drawn
    /// at every start): leaders stamp session entries with skewed time.
    pub clock_skew: bool,
    /// Sessions under pressure: a short session timeout (1.5 s), room for
    /// only two client sessions, and clients that go idle for longer than
    /// the timeout — sessions expire and are evicted while copies of their
    /// writes are still in flight.
    pub session_pressure: bool,
}

impl Faults {
    /// A perfect network and no crashes.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            delay: (Duration::from_micros(100), Duration::from_millis(2)),
            long_delay: 0.0,
            long_delay_range: (Duration::ZERO, Duration::ZERO),
            crashes: false,
            partitions: false,
            slow_storage: false,
            snapshots: false,
            membership: false,
            disk_replacement: false,
            clock_skew: false,
            session_pressure: false,
        }
    }

    /// Every fault at once.
    pub fn all() -> Faults {
        Faults {
            drop: 0.05,
            duplicate: 0.05,
            delay: (Duration::from_micros(100), Duration::from_millis(5)),
            long_delay: 0.03,
            long_delay_range: (Duration::from_millis(20), Duration::from_millis(400)),
            crashes: true,
            partitions: true,
            slow_storage: true,
            snapshots: true,
            membership: true,
            disk_replacement: true,
            clock_skew: true,
            session_pressure: true,
        }
    }

    /// The same fault kinds on a network that loses nothing (the phase
    /// after the faults, when the cluster must make progress).
    fn calm(&self) -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            ..self.clone()
        }
    }
}

/// One client write as the client saw it. Times are nanoseconds of
/// virtual time since the start of the run.
#[derive(Clone, Debug)]
pub struct ClientWrite<C, R> {
    /// Which client issued it.
    pub client: u64,
    /// What was written.
    pub command: C,
    /// When it was issued.
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown (indeterminate).
    pub ret: Option<u64>,
    /// The state machine's response, if acknowledged.
    pub response: Option<R>,
}

/// What a run did.
#[derive(Debug)]
pub struct Report<SM: StateMachine> {
    /// The seed of the run.
    pub seed: u64,
    /// Virtual time the run covered.
    pub simulated: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
    /// Digest of every message delivery and client outcome with its
    /// virtual time: equal for two runs of one seed.
    pub trace: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Leaders elected.
    pub elections: u64,
    /// Nodes crashed.
    pub crashes: u64,
    /// Every client write whose outcome is known or unknown (writes that
    /// were definitely not submitted are left out), in call order.
    pub history: Vec<ClientWrite<SM::Command, SM::Response>>,
}

impl<SM: StateMachine> Report<SM> {
    /// Writes the cluster acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.history.iter().filter(|w| w.ret.is_some()).count()
    }
}

/// An invariant broke (or the cluster made no progress once healed).
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// Nodes (hosts, in a run of several groups) in the run.
    pub nodes: u64,
    /// Raft groups in the run (1 but for [`HostSimulation`]).
    pub groups: u64,
    /// Virtual time at which it was found.
    pub at: Duration,
    /// What broke.
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at {:?} of virtual time: {}\nreplay with: cargo run --release --example simulate -- --seed {} --nodes {}",
            self.seed, self.at, self.reason, self.seed, self.nodes
        )?;
        if self.groups > 1 {
            write!(f, " --groups {}", self.groups)?;
        }
        write!(f, " --log debug")
    }
}

impl std::error::Error for Failure {}

/// An actix system on this thread whose tokio clock is paused from the
/// start: timers are then placed relative to the same virtual instant in
/// every run, not to wherever the real clock was when it was paused.
fn paused_system() -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("cannot build the simulator's runtime")
    })
}

pub(super) type Factory<SM> = Arc<dyn Fn(NodeId) -> SM + Send + Sync>;
pub(super) type Commands<SM> =
    Arc<dyn Fn(&mut fastrand::Rng, u64, u64) -> <SM as StateMachine>::Command + Send + Sync>;

/// A simulated cluster and its workload; [`Simulation::run`] runs one seed.
pub struct Simulation<SM: StateMachine> {
    nodes: u64,
    faults: Faults,
    config: Config,
    duration: Duration,
    clients: u64,
    factory: Factory<SM>,
    commands: Commands<SM>,
    sessions: bool,
}

impl<SM: StateMachine> Simulation<SM>
where
    SM::Command: Clone,
{
    /// `nodes` founding members, each with the state machine `factory`
    /// makes (again on every restart); clients write commands made by
    /// `commands(rng, client, sequence)`. No faults until
    /// [`Simulation::faults`] says so.
    pub fn new(
        nodes: u64,
        factory: impl Fn(NodeId) -> SM + Send + Sync + 'static,
        commands: impl Fn(&mut fastrand::Rng, u64, u64) -> SM::Command + Send + Sync + 'static,
    ) -> Self {
        Simulation {
            nodes,
            faults: Faults::none(),
            config: Config {
                client_timeout: Duration::from_secs(2),
                ..Config::default()
            },
            duration: Duration::from_secs(5),
            clients: 3,
            factory: Arc::new(factory),
            commands: Arc::new(commands),
            sessions: false,
        }
    }

    /// The faults to inject.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The nodes' configuration (snapshot settings are overridden when
    /// [`Faults::snapshots`] is on).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Virtual time under faults, before the healing phase (default 5 s).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Clients write in client sessions and retry every write whose
    /// outcome is unknown, with the same sequence number, until the answer
    /// is definite: the history then shows whether any write applied twice.
    pub fn sessions(mut self, on: bool) -> Self {
        self.sessions = on;
        self
    }

    /// Concurrent clients (default 3).
    pub fn clients(mut self, clients: u64) -> Self {
        self.clients = clients;
        self
    }

    /// Runs the seed `seed` to the end. Must be called outside any actix
    /// or tokio runtime: it builds its own, with a paused clock.
    pub fn run(&self, seed: u64) -> Result<Report<SM>, Failure> {
        // Election timeouts and everything else drawn from the global
        // generator of this thread follow the seed.
        fastrand::seed(seed);
        let wall = std::time::Instant::now();
        let system = paused_system();
        let result = system.block_on(async {
            let world = World::new(self, seed);
            world.run().await
        });
        result.map(|mut report| {
            report.wall = wall.elapsed();
            report
        })
    }
}
