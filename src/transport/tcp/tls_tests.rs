//! Mutual TLS between transports: peers with certificates of the cluster's
//! CA naming their ids talk; every other certificate is refused before a
//! Raft frame is read, with a log line saying why; changed files are
//! picked up without a restart.

use std::path::{Path, PathBuf};

use super::tests::{capture_logs, config, local, msg, recv, start, Inbox, WAIT};
use super::*;
use crate::transport::tls::TlsConfig;
use tokio::time::timeout;

#[path = "../../../examples/service/certs.rs"]
#[allow(dead_code)]
mod certs;
use certs::{Issued, TestCa};

/// Writes `issued` and the CA into `dir` as `<name>.pem`, `<name>.key`
/// and `ca-<name>.pem`; returns the TLS config pointing at them.
fn files(dir: &Path, name: &str, ca: &TestCa, issued: &Issued) -> TlsConfig {
    let path = |file: String| -> PathBuf { dir.join(file) };
    std::fs::write(path(format!("ca-{name}.pem")), ca.cert_pem()).unwrap();
    std::fs::write(path(format!("{name}.pem")), &issued.cert_pem).unwrap();
    std::fs::write(path(format!("{name}.key")), &issued.key_pem).unwrap();
    let mut tls = TlsConfig::new(
        path(format!("ca-{name}.pem")),
        path(format!("{name}.pem")),
        path(format!("{name}.key")),
    );
    tls.reload_interval = Duration::from_millis(50);
    tls
}

async fn tls_node(id: NodeId, tls: TlsConfig) -> (TcpTransport, Inbox) {
    let mut c = config(id, "c", local());
    c.tls = Some(tls);
    start(c).await.unwrap()
}

#[tokio::test]
async fn peers_with_certificates_of_the_cluster_ca_talk_over_mutual_tls() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster").unwrap();
    let (a, mut ra) = tls_node(1, files(dir.path(), "a", &ca, &ca.node(1).unwrap())).await;
    let (b, mut rb) = tls_node(2, files(dir.path(), "b", &ca, &ca.node(2).unwrap())).await;
    a.set_address(2, &b.local_addr().to_string());
    b.set_address(1, &a.local_addr().to_string());
    for term in 0..50 {
        a.send(msg(1, 2, term));
        b.send(msg(2, 1, term));
    }
    for term in 0..50 {
        assert_eq!(recv(&mut rb).await, msg(1, 2, term));
        assert_eq!(recv(&mut ra).await, msg(2, 1, term));
    }
    assert!(
        logs.text().contains("security=\"mutual TLS\""),
        "{}",
        logs.text()
    );
    a.shutdown();
    b.shutdown();
}

/// Node 1 dials node 2 with `dialer`'s certificate; node 2 must refuse it
/// with a log line containing `reason`, and deliver nothing.
async fn refused(ca: &TestCa, dialer_ca: &TestCa, dialer: Issued, reason: &str) {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    // The dialer trusts the cluster CA (so it accepts node 2), but its own
    // certificate comes from `dialer_ca`.
    let mut dialer_files = files(dir.path(), "a", dialer_ca, &dialer);
    std::fs::write(dir.path().join("ca-a.pem"), ca.cert_pem()).unwrap();
    dialer_files.ca = dir.path().join("ca-a.pem");
    let mut c = config(1, "c", local());
    c.tls = Some(dialer_files);
    // Skip the dialer's own-identity check: it must be the acceptor that
    // refuses.
    let tls = crate::transport::tls::TlsContext::load_unchecked(1, c.tls.clone().unwrap());
    let (a, _ra) = start_with_context(c, tls).await;
    let (b, mut rb) = tls_node(2, files(dir.path(), "b", ca, &ca.node(2).unwrap())).await;
    a.set_address(2, &b.local_addr().to_string());
    for term in 0..5 {
        a.send(msg(1, 2, term));
    }
    logs.wait_for("refusing inbound connection", 1).await;
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("refusing inbound connection") && l.contains(reason)),
        "{text}"
    );
    assert!(
        timeout(Duration::from_millis(300), rb.recv())
            .await
            .is_err(),
        "a refused peer's message was delivered"
    );
    a.shutdown();
    b.shutdown();
}

async fn start_with_context(
    config: TcpConfig,
    tls: crate::transport::tls::TlsContext,
) -> (TcpTransport, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let deliver = Arc::new(move |e: Envelope| {
        let _ = tx.send(e);
    });
    let t = TcpTransport::start_inner(config, deliver, Some(Arc::new(tls)))
        .await
        .unwrap();
    (t, rx)
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("cluster").unwrap();
    let other = TestCa::new("another").unwrap();
    let issued = other.node(1).unwrap();
    refused(&ca, &other, issued, "UnknownIssuer").await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = TestCa::new("cluster").unwrap();
    let issued = ca.issue("node-1", true).unwrap();
    refused(&ca, &ca, issued, "certificate expired").await;
}

#[tokio::test]
async fn a_certificate_for_another_node_id_is_refused() {
    let ca = TestCa::new("cluster").unwrap();
    // A valid certificate of the cluster's CA, but naming node 3.
    let issued = ca.node(3).unwrap();
    refused(&ca, &ca, issued, "does not name node-1").await;
}

#[tokio::test]
async fn a_node_refuses_to_start_with_a_certificate_that_does_not_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster").unwrap();
    let mut c = config(1, "c", local());
    c.tls = Some(files(dir.path(), "a", &ca, &ca.node(7).unwrap()));
    let error = start(c).await.unwrap_err();
    assert!(error.to_string().contains("node-1"), "{error}");
}

#[tokio::test]
async fn the_dialer_refuses_a_node_whose_certificate_names_another_id() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster").unwrap();
    let (a, _ra) = tls_node(1, files(dir.path(), "a", &ca, &ca.node(1).unwrap())).await;
    // Node 3 listens where node 1 believes node 2 is.
    let (c, mut rc) = tls_node(3, files(dir.path(), "c", &ca, &ca.node(3).unwrap())).await;
    a.set_address(2, &c.local_addr().to_string());
    a.send(msg(1, 2, 0));
    logs.wait_for("will keep retrying", 1).await;
    let text = logs.text();
    assert!(text.contains("not valid for name \"node-2\""), "{text}");
    assert!(timeout(Duration::from_millis(300), rc.recv())
        .await
        .is_err());
    a.shutdown();
    c.shutdown();
}

#[tokio::test]
async fn changed_certificate_files_are_used_without_a_restart() {
    let (logs, _guard) = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster").unwrap();
    let other = TestCa::new("another").unwrap();
    let (a, _ra) = tls_node(1, files(dir.path(), "a", &ca, &ca.node(1).unwrap())).await;
    // Node 2 starts with a certificate node 1 does not trust.
    let b_files = files(dir.path(), "b", &ca, &other.node(2).unwrap());
    let (b, mut rb) = tls_node(2, b_files).await;
    a.set_address(2, &b.local_addr().to_string());
    a.send(msg(1, 2, 0));
    logs.wait_for("UnknownIssuer", 1).await;
    // The operator installs a certificate of the cluster CA.
    let good = ca.node(2).unwrap();
    std::fs::write(dir.path().join("b.key"), &good.key_pem).unwrap();
    std::fs::write(dir.path().join("b.pem"), &good.cert_pem).unwrap();
    logs.wait_for("reloaded for new connections", 1).await;
    timeout(WAIT, async {
        for term in 1.. {
            a.send(msg(1, 2, term));
            if let Ok(Some(_)) = timeout(Duration::from_millis(100), rb.recv()).await {
                return;
            }
        }
    })
    .await
    .expect("no message after the certificate was replaced");
    a.shutdown();
    b.shutdown();
}
