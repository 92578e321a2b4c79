//! Observability: a client write followed in one tracing span, and (with
//! processes) the dashboard and the operator commands.

mod common;

use common::*;
use std::time::Duration;

use regatta::testing::Cluster;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_write_is_traced_from_append_to_apply_in_one_span() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // Global, because the nodes run on arbiter threads of their own: the
    // only test in this binary that installs a subscriber.
    tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    bounded(SECS(60), async {
        let c = Cluster::new(3, test_config(), seed("write_span"), |_| {
            Counter::default()
        })
        .await;
        let leader = c.wait_leader(SECS(10)).await.unwrap();
        let written = c.raft(leader).write_entry(Add(7)).await.unwrap();
        let regatta::LogId { term, index } = written.log_id;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        // The span carries the node, and the leader filled in the
        // position; its events are the append and the apply.
        let span = format!("write{{node={leader} term={term} index={index}}}");
        for event in ["appended", "applied"] {
            assert!(
                text.lines()
                    .any(|l| l.contains(&span) && l.contains(event)),
                "no {event} event in {span}:\n{text}"
            );
        }
    })
    .await;
}
