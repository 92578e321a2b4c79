//! The library's node: built in one call, its inputs checked (each bad
//! input its own typed error), durable across restarts, and started from a
//! plain tokio runtime as well as from actix.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use regatta::{Config, InitialCluster, Node, NodeBuilder, StartError};

const LIMIT: Duration = Duration::from_secs(60);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn solo(dir: &std::path::Path) -> NodeBuilder<Counter> {
    Node::builder(1, Counter::default())
        .cluster_name("embed-test")
        .data_dir(dir)
        .listen(any_port())
        .initial_cluster("1=127.0.0.1:0".parse().unwrap())
        .config(test_config())
}

async fn start_error(builder: NodeBuilder<Counter>) -> StartError {
    match builder.start().await {
        Ok(node) => {
            node.shutdown().await;
            panic!("the node started")
        }
        Err(e) => {
            // Every error says what to do in its message.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

#[actix_rt::test]
async fn bad_builder_inputs_each_give_their_typed_error() {
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n");
        let three: InitialCluster = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
            .parse()
            .unwrap();

        let e = start_error(Node::builder(0, Counter::default()).data_dir(&dir)).await;
        assert!(matches!(e, StartError::InvalidId), "{e}");
        let e = start_error(Node::builder(1, Counter::default()).listen(any_port())).await;
        assert!(matches!(e, StartError::Missing("data_dir")), "{e}");
        let e = start_error(Node::builder(1, Counter::default()).data_dir(&dir)).await;
        assert!(matches!(e, StartError::Missing("listen")), "{e}");
        let e = start_error(solo(&dir).join()).await;
        assert!(matches!(e, StartError::InitialClusterAndJoin), "{e}");
        let e = start_error(solo(&dir).initial_cluster(InitialCluster::new())).await;
        assert!(matches!(e, StartError::EmptyInitialCluster), "{e}");
        let e = start_error(
            Node::builder(4, Counter::default())
                .data_dir(&dir)
                .listen("127.0.0.1:7104".parse().unwrap())
                .initial_cluster(three.clone()),
        )
        .await;
        assert!(matches!(e, StartError::NotInInitialCluster { id: 4 }), "{e}");
        let e = start_error(
            Node::builder(1, Counter::default())
                .data_dir(&dir)
                .listen("127.0.0.1:7111".parse().unwrap())
                .initial_cluster(three.clone()),
        )
        .await;
        assert!(
            matches!(&e, StartError::AddressMismatch { id: 1, listed, .. } if listed == "127.0.0.1:7101"),
            "{e}"
        );
        let e = start_error(
            Node::builder(1, Counter::default())
                .data_dir(&dir)
                .listen(any_port()),
        )
        .await;
        assert!(matches!(e, StartError::NoInitialState { .. }), "{e}");
        let mut config = test_config();
        config.election_timeout_max = config.election_timeout_min;
        let e = start_error(solo(&dir).config(config)).await;
        assert!(matches!(e, StartError::Config(_)), "{e}");
        let config = Config {
            idle_spin: Duration::from_secs(1),
            ..test_config()
        };
        let e = start_error(solo(&dir).config(config)).await;
        assert!(
            matches!(&e, StartError::Config(why) if why.contains("idle_spin")),
            "{e}"
        );
        // None of the refusals above wrote anything.
        assert!(!dir.join("log").exists(), "a refused start wrote state");

        // A port already taken.
        let taken = std::net::TcpListener::bind(any_port()).unwrap();
        let e = start_error(solo(&dir).listen(taken.local_addr().unwrap())).await;
        assert!(matches!(e, StartError::Listen { .. }), "{e}");

        // A directory held by a running node.
        let running = solo(&dir).start().await.expect("start");
        let e = start_error(solo(&dir)).await;
        assert!(matches!(e, StartError::DirectoryInUse { .. }), "{e}");
        running.shutdown().await;

        // A directory of another application's cluster.
        let e = start_error(solo(&dir).cluster_name("another")).await;
        assert!(matches!(e, StartError::OtherCluster { .. }), "{e}");
    })
    .await
}

#[actix_rt::test]
async fn a_node_resumes_from_its_directory_and_its_flags_are_not_needed_again() {
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let node = solo(tmp.path()).start().await.expect("start");
        assert_eq!(node.id(), 1);
        assert_ne!(node.raft_addr().port(), 0);
        node.raft().wait_leader(LIMIT).await.expect("leader");
        assert_eq!(node.raft().write(Add(3)).await.unwrap(), 3);
        assert_eq!(node.raft().write(Add(4)).await.unwrap(), 7);
        node.shutdown().await;

        // Restarted without an initial cluster: the directory has it all.
        let node = Node::builder(1, Counter::default())
            .cluster_name("embed-test")
            .data_dir(tmp.path())
            .listen(any_port())
            .config(test_config())
            .start()
            .await
            .expect("restart");
        node.raft().wait_leader(LIMIT).await.expect("leader");
        assert_eq!(node.raft().read(Get).await.unwrap(), 7);
        // An aborted node (a crash) frees its directory too.
        node.abort().await;
        let node = solo(tmp.path()).start().await.expect("start after abort");
        node.raft().wait_leader(LIMIT).await.expect("leader");
        assert_eq!(node.raft().read(Get).await.unwrap(), 7);
        node.shutdown().await;
    })
    .await
}

/// A node started from `#[tokio::main]` (no actix system, no LocalSet):
/// the node runs on its own thread, and its handle works from tokio
/// tasks. A three-node cluster whose ports the OS picked.
#[test]
fn a_cluster_runs_from_a_plain_tokio_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_three(tmp.path(), Counter::default).await;
        // Writes through every node, from tokio tasks on other threads.
        let mut tasks = Vec::new();
        for node in &nodes {
            let raft = node.raft().clone();
            tasks.push(tokio::spawn(async move { raft.write(Add(1)).await }));
        }
        for task in tasks {
            task.await.unwrap().expect("write");
        }
        for node in &nodes {
            assert_eq!(node.raft().read(Get).await.unwrap(), 3);
        }
        for node in nodes {
            node.shutdown().await;
        }
    }));
}

/// Three nodes on OS-picked ports under `dir`, with a leader.
async fn start_three<SM: regatta::StateMachine + Send>(
    dir: &std::path::Path,
    make: impl Fn() -> SM,
) -> Vec<Node<SM>> {
    let founders: InitialCluster = "1=127.0.0.1:0,2=127.0.0.1:0,3=127.0.0.1:0".parse().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let node = Node::builder(id, make())
            .cluster_name("embed-test")
            .data_dir(dir.join(id.to_string()))
            .listen(any_port())
            .initial_cluster(founders.clone())
            .config(test_config())
            .start()
            .await
            .expect("start");
        nodes.push(node);
    }
    for node in &nodes {
        for peer in &nodes {
            node.set_peer_address(peer.id(), peer.raft_addr());
        }
    }
    for node in &nodes {
        node.raft().wait_leader(LIMIT).await.expect("leader");
    }
    nodes
}

/// The handle of the leader of `nodes`.
async fn leader_of<SM: regatta::StateMachine>(nodes: &[Node<SM>]) -> regatta::Raft<SM> {
    let leader = nodes[0].raft().wait_leader(LIMIT).await.unwrap();
    nodes[(leader - 1) as usize].raft().clone()
}

/// A state machine whose handler blocks its thread: each command is the
/// milliseconds to block for.
#[derive(Default)]
struct Slow;

impl actix::Actor for Slow {
    type Context = actix::Context<Self>;
}

impl regatta::StateMachine for Slow {
    type Command = u64;
    type Response = ();
}

impl actix::Handler<regatta::Apply<Slow>> for Slow {
    type Result = Vec<()>;
    fn handle(&mut self, batch: regatta::Apply<Slow>, _: &mut actix::Context<Self>) -> Vec<()> {
        batch
            .entries
            .into_iter()
            .map(|(_, ms)| std::thread::sleep(Duration::from_millis(ms)))
            .collect()
    }
}

impl actix::Handler<regatta::Snapshot> for Slow {
    type Result = Result<regatta::SnapshotData, String>;
    fn handle(&mut self, _: regatta::Snapshot, _: &mut actix::Context<Self>) -> Self::Result {
        Ok(regatta::SnapshotData::ready(Vec::new()))
    }
}

impl actix::Handler<regatta::Restore> for Slow {
    type Result = Result<(), String>;
    fn handle(&mut self, _: regatta::Restore, _: &mut actix::Context<Self>) -> Self::Result {
        Ok(())
    }
}

/// Found by the kv backup bench: a state machine that blocks (there, the
/// kv example copying a 150 MB map after each snapshot) held up its
/// node's heartbeats, and the cluster held elections under load. A node
/// runs the state machine on a thread of its own: a handler that blocks
/// for three election timeouts costs no election.
#[actix_rt::test]
async fn a_state_machine_that_blocks_does_not_hold_up_heartbeats() {
    init_tracing();
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_three(tmp.path(), Slow::default).await;
        let raft = leader_of(&nodes).await;
        let term = raft.metrics().borrow().term;
        let blocks = 3 * test_config().election_timeout_max;
        raft.write(blocks.as_millis() as u64)
            .await
            .expect("the slow write");
        // Every node applies it (and blocks) in turn. The target is read
        // first: a `borrow()` inside the call would hold the leader's
        // metrics lock across the wait, and the leader's thread, publishing
        // its metrics, would block on it (this test's own deadlock, one run
        // in fifteen).
        let target = raft.metrics().borrow().commit_index;
        for node in &nodes {
            node.raft().wait_applied(target, LIMIT).await.unwrap();
        }
        for node in &nodes {
            let m = node.raft().metrics().borrow().clone();
            assert_eq!(
                (m.term, m.leader),
                (term, Some(raft.id())),
                "node {} saw an election",
                node.id()
            );
        }
        for node in nodes {
            node.shutdown().await;
        }
    })
    .await
}

/// Batches are answered in log order, whatever the state machine takes:
/// a batch that needs no state machine (an empty entry), ready at once,
/// must not be answered before a slow batch ahead of it — its end would
/// settle that batch's waiting client with "indeterminate" for a write
/// that was applied. (A pipelining applier tried on 2026-12-07 did so
/// until it chained its batches; this keeps any later one honest.)
#[actix_rt::test]
async fn a_batch_is_answered_only_after_the_one_before_it() {
    init_tracing();
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_three(tmp.path(), Slow::default).await;
        let raft = leader_of(&nodes).await;
        let before = raft.metrics().borrow().commit_index;
        let slow = {
            let raft = raft.clone();
            actix_rt::spawn(async move { raft.write(300).await })
        };
        // Once the slow write has committed, every empty entry comes after
        // it, in a later batch, committed while the slow write applies.
        raft.wait_for(LIMIT, |m| m.commit_index > before)
            .await
            .unwrap();
        let mut empties = 0;
        while !slow.is_finished() {
            raft.commit_empty_entry().await.expect("an empty entry");
            empties += 1;
        }
        slow.await
            .unwrap()
            .expect("the slow write was applied, and its client hears so");
        assert!(empties >= 1);
        for node in nodes {
            node.shutdown().await;
        }
    })
    .await
}

/// The low-level `Raft::start` outside an actix system: a clear error,
/// not a panic inside tokio.
#[test]
fn raft_start_outside_actix_is_an_error_that_says_what_to_do() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // An address for the state machine, without starting it.
        let sm = {
            use actix::AsyncContext;
            actix::Context::<Counter>::new().address()
        };
        let started = regatta::Raft::start(
            1,
            test_config(),
            regatta::storage::MemStorage::new(),
            regatta::transport::sim::SimNetwork::new(1).transport(1),
            Some(regatta::Membership::new([1])),
            sm,
        );
        match started {
            Err(StartError::Runtime(why)) => assert!(why.contains("regatta::Node"), "{why}"),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("started outside an actix system"),
        }
    });
}

/// A free port on 127.0.0.1 (bound and released: fine for a test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Issue 23: a founder whose directory was lost and that is started again
/// with the same initial cluster asks the other founder, learns that the
/// cluster exists, and stops with a cause that says what to do; and
/// stopping the node then returns (a node that failed on its own left its
/// log writer running, so `Node::shutdown` waited forever).
#[actix_rt::test]
async fn a_founder_on_a_lost_directory_refuses_to_found_and_shuts_down() {
    init_tracing();
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let (p1, p2) = (free_port(), free_port());
        let cluster: InitialCluster = format!("1=127.0.0.1:{p1},2=127.0.0.1:{p2}")
            .parse()
            .unwrap();
        let node = |id: u64, port: u16, dir: &str| {
            Node::builder(id, Counter::default())
                .cluster_name("refound-test")
                .data_dir(tmp.path().join(dir))
                .listen(format!("127.0.0.1:{port}").parse().unwrap())
                .initial_cluster(cluster.clone())
                .config(test_config())
        };
        let one = node(1, p1, "one").start().await.expect("node 1 starts");
        let two = node(2, p2, "two").start().await.expect("node 2 starts");
        one.raft()
            .wait_for(Duration::from_secs(20), |m| m.commit_index >= 2)
            .await
            .expect("the two founders commit");
        two.shutdown().await;
        // Node 2's disk is replaced: a new, empty directory.
        let again = node(2, p2, "two-new-disk")
            .start()
            .await
            .expect("it starts");
        let cause = again.raft().stopped().await.expect("it stops with a cause");
        assert!(
            cause.contains("refusing to found") && cause.contains("--join"),
            "{cause}"
        );
        again.shutdown().await;
        one.shutdown().await;
    })
    .await;
}

/// A backup ships the snapshot already on disk and the committed entries
/// after it — it takes no snapshot of its own — and a node restored from
/// it holds every write, sessions included, with the entries after the
/// snapshot committed again in the new cluster.
#[actix_rt::test]
async fn a_backup_ships_the_latest_snapshot_and_the_log_after_it() {
    bounded(LIMIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let config = regatta::Config {
            snapshot_every: 40,
            ..test_config()
        };
        let node = solo(tmp.path())
            .config(config.clone())
            .start()
            .await
            .expect("start");
        let raft = node.raft().clone();
        raft.wait_leader(LIMIT).await.expect("leader");
        for _ in 0..100 {
            raft.write(Add(1)).await.unwrap();
        }
        let snapshot = raft
            .wait_for(LIMIT, |m| m.snapshot_index > 0)
            .await
            .unwrap()
            .snapshot_index;
        // Writes after the latest snapshot, one of them in a session.
        let session = raft.open_session().await.unwrap();
        assert_eq!(session.write(Add(5)).await.unwrap(), 105);
        for _ in 0..3 {
            raft.write(Add(1)).await.unwrap();
        }
        let commit = raft.metrics().borrow().commit_index;
        assert!(commit > snapshot);

        let mut backup = raft.backup().await.expect("a backup");
        assert_eq!(
            raft.metrics().borrow().snapshot_index,
            snapshot,
            "the backup took a snapshot of its own"
        );
        assert_eq!(backup.header.snapshot.index, snapshot);
        assert!(backup.header.last_included.index >= commit);
        let file = tmp.path().join("counter.backup");
        let mut out = std::fs::File::create(&file).unwrap();
        let size = std::io::copy(&mut backup.reader, &mut out).unwrap();
        assert_eq!(size, backup.file_size());
        node.shutdown().await;

        let restored_dir = tempfile::tempdir().unwrap();
        let node = solo(restored_dir.path())
            .config(config)
            .restore_from(&file)
            .start()
            .await
            .expect("restored");
        let raft = node.raft().clone();
        raft.wait_leader(LIMIT).await.expect("leader");
        assert_eq!(raft.read(Get).await.unwrap(), 108);
        // The session opened after the snapshot lives on.
        let resumed = regatta::Session::resume(raft.clone(), session.id(), 1);
        assert_eq!(resumed.write(Add(2)).await.unwrap(), 110);
        node.shutdown().await;
    })
    .await
}
