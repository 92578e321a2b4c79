//! Log lines carry what an operator needs to find them: on a host, every
//! line of a group's actors names the group.
//!
//! Alone in its binary: tracing caches per call site whether anyone
//! listens, and other tests' threads logging with no subscriber at the
//! same time can leave a call site switched off for this test's.

use std::time::Duration;

use regatta::testing::sim::HostSimulation;

/// On a host, every log line of a group's actors names the group (a
/// host runs thousands: a line with only the node id would not say which
/// group elected, or failed).
#[test]
fn a_groups_log_lines_name_the_group() {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let sim = HostSimulation::new(3, 2).duration(Duration::from_secs(1));
    tracing::subscriber::with_default(subscriber, || {
        sim.run(1).unwrap_or_else(|f| panic!("{f}"));
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let started: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("node started"))
        .collect();
    assert_eq!(started.len(), 6, "two groups on three hosts:\n{text}");
    for group in [1, 2] {
        let named = format!("group{{group={group}}}");
        assert_eq!(
            started.iter().filter(|l| l.contains(&named)).count(),
            3,
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains(&named) && l.contains("became leader")),
            "group {group}'s election is logged with its group:\n{text}"
        );
    }
}
