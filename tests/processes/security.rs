//! The secure deployment: admin token, HTTPS, and floods of connections.

use super::*;

/// The secure deployment of the README: three `serve` processes over
/// mutual TLS whose admin endpoints need the token from a file.
#[test]
fn a_secure_cluster_guards_its_admin_endpoints_with_a_token() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse\n").expect("token file");
    let token_flag = token_file.to_str().expect("utf-8 path");
    let mut cluster = ProcessCluster::start_tls("counter", 3, &["--admin-token-file", token_flag]);
    let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let addr = cluster.http(leader);
    let mut conn = common::process::HttpConnection::connect(addr).expect("connect");
    let (status, body) = conn
        .request("POST", "/cluster/snapshot", None)
        .expect("answer");
    assert_eq!(status, 401, "{body}");
    let wrong = [("Authorization", "Bearer guess".to_string())];
    let (status, body) = conn
        .request_with("POST", "/cluster/snapshot", None, &wrong)
        .expect("answer");
    assert_eq!(status, 403, "{body}");
    let right = [("Authorization", "Bearer correct-horse".to_string())];
    let (status, body) = conn
        .request_with("POST", "/cluster/snapshot", None, &right)
        .expect("answer");
    assert_eq!(status, 200, "{body}");
    // Client writes and status stay open.
    assert!(matches!(
        write(addr, "/counter/incr", None),
        WriteOutcome::Acked(_)
    ));
    let (status, _) = http(addr, "GET", "/cluster/status", None).expect("status");
    assert_eq!(status, 200);
    let log = std::fs::read_to_string(cluster.log_path(leader)).expect("log");
    assert!(
        !log.contains("correct-horse") && !log.contains("guess"),
        "{log}"
    );
    assert!(log.contains("admin request refused"), "{log}");
    shut_down(&mut cluster);
}

/// One HTTPS exchange (`GET path`) trusting only `ca`; the status code.
fn https_get(addr: std::net::SocketAddr, ca: &std::path::Path, path: &str) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))
}

/// `serve --http-tls-cert/--http-tls-key` serves the API over HTTPS only.
#[test]
fn serve_answers_over_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let binary = common::process::example_binary("counter");
    let certs = dir.path().join("certs");
    let made = std::process::Command::new(&binary)
        .args(["certs", "--nodes", "1", "--dir"])
        .arg(&certs)
        .output()
        .expect("certs");
    assert!(made.status.success(), "{made:?}");
    let cert = certs.join("node-1.pem");
    let key = certs.join("node-1.key");
    let cluster = ProcessCluster::start_with(
        "counter",
        1,
        &[
            "--http-tls-cert",
            cert.to_str().expect("utf-8"),
            "--http-tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let addr = cluster.http(1);
    let ca = certs.join("ca.pem");
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    let status = loop {
        match https_get(addr, &ca, "/cluster/health") {
            Ok(200) => break 200,
            other if std::time::Instant::now() > deadline => panic!("no healthy answer: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(status, 200);
    // Plain HTTP gets no answer from the HTTPS port.
    assert!(http(addr, "GET", "/cluster/status", None).is_err());
}

/// A flood of silent connections and a slow-loris handshake on every
/// node's Raft port do not stop the cluster from committing.
#[test]
fn a_flood_of_silent_connections_does_not_stop_the_cluster_committing() {
    use std::io::Write;
    let mut cluster = ProcessCluster::start("counter", 3);
    let leader = cluster.wait_leader(&[1, 2, 3], LEADER_WAIT);
    let addr = cluster.http(leader);
    assert!(matches!(
        write(addr, "/counter/incr", None),
        WriteOutcome::Acked(_)
    ));
    let mut held = Vec::new();
    for node in cluster.nodes.values() {
        for _ in 0..200 {
            if let Ok(s) = std::net::TcpStream::connect(node.raft) {
                held.push(s);
            }
        }
        // A length prefix, then nothing more: a handshake that never ends.
        let mut slow = std::net::TcpStream::connect(node.raft).expect("connect");
        slow.write_all(&100u32.to_be_bytes()).expect("write");
        held.push(slow);
    }
    println!("holding {} connections", held.len());
    let started = std::time::Instant::now();
    for n in 0..50 {
        let outcome = write(addr, "/counter/incr", None);
        assert!(
            matches!(outcome, WriteOutcome::Acked(_)),
            "write {n} under the flood: {outcome:?}"
        );
    }
    println!("50 writes under the flood in {:?}", started.elapsed());
    drop(held);
    shut_down(&mut cluster);
}
