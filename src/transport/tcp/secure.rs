//! Plain or mutual-TLS connections: turning an accepted or dialed socket
//! into the two halves the transport reads and writes, checking the
//! peer's certificate against the id it claims, reloading the TLS files,
//! and saying at start which of the two is in use.

// The transport's shared state, constants and imports.
use super::*;

impl Shared {
    /// Logs, once at start, whether connections are encrypted and
    /// authenticated: loudly (`warn`) when they are not and the node
    /// listens beyond loopback.
    pub(super) fn announce_security(&self, local_addr: SocketAddr) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            info!(node_id = self.node_id, %local_addr, security = "mutual TLS", "tcp transport listening");
            return;
        }
        if local_addr.ip().is_loopback() {
            info!(node_id = self.node_id, %local_addr, security = "plain TCP", "tcp transport listening");
        } else {
            warn!(
                node_id = self.node_id,
                %local_addr,
                security = "plain TCP",
                "tcp transport listening WITHOUT encryption or authentication: anyone who reaches \
                 this port and knows the cluster name can speak Raft to this node; configure TLS"
            );
        }
    }

    /// The halves of an accepted connection, after the TLS handshake if
    /// TLS is on; `Err(reason)` if that failed.
    pub(super) async fn accept_halves(
        &self,
        stream: TcpStream,
    ) -> Result<(ReadHalf, WriteHalf, PeerCertificates), String> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let accepted =
                tokio::time::timeout(self.handshake_timeout, tls.acceptor().accept(stream));
            return match accepted.await {
                Ok(Ok(tls_stream)) => {
                    let chain = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(<[_]>::to_vec);
                    let (read, write) = tokio::io::split(tls_stream);
                    Ok((Box::new(read), Box::new(write), PeerCertificates { chain }))
                }
                Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                Err(_) => Err("no TLS handshake in time".into()),
            };
        }
        let (read, write) = stream.into_split();
        Ok((Box::new(read), Box::new(write), PeerCertificates::default()))
    }

    /// The halves of a dialed connection to `peer_id`, after the TLS
    /// handshake (which checks that the peer's certificate names it) if
    /// TLS is on.
    pub(super) async fn dial_halves(
        &self,
        peer_id: NodeId,
        stream: TcpStream,
    ) -> Result<(ReadHalf, WriteHalf), DialError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let name = crate::transport::tls::server_name(peer_id).map_err(DialError::Failed)?;
            let connected = tokio::time::timeout(IO_TIMEOUT, tls.connector().connect(name, stream));
            return match connected.await {
                Ok(Ok(tls_stream)) => {
                    let (read, write) = tokio::io::split(tls_stream);
                    Ok((Box::new(read), Box::new(write)))
                }
                // A certificate problem on either side: retrying will not
                // help until someone fixes the files.
                Ok(Err(e)) => Err(DialError::Refused(format!("TLS handshake failed: {e}"))),
                Err(_) => Err(DialError::Failed("TLS handshake timed out".into())),
            };
        }
        let _ = peer_id;
        let (read, write) = stream.into_split();
        Ok((Box::new(read), Box::new(write)))
    }
}

/// The certificate chain an accepted peer presented (empty without TLS).
#[derive(Default)]
pub(super) struct PeerCertificates {
    #[cfg(feature = "tls")]
    chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl PeerCertificates {
    /// Why a peer claiming to be `claimed` must be refused, if TLS is on
    /// and its certificate does not name it.
    pub(super) fn refuses(&self, shared: &Shared, claimed: NodeId) -> Option<String> {
        #[cfg(feature = "tls")]
        if shared.tls.is_some() {
            return crate::transport::tls::check_peer_identity(self.chain.as_deref(), claimed)
                .err()
                .map(|e| format!("node {claimed} is not who it claims: {e}"));
        }
        let _ = (shared, claimed);
        None
    }
}

/// Reloads the TLS files whenever they change, until the transport stops.
#[cfg(feature = "tls")]
pub(super) async fn reload_tls(shared: Arc<Shared>) {
    let Some(tls) = shared.tls.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(tls.reload_interval()) => {}
        }
        match tls.reload_if_changed() {
            Ok(true) => info!(
                node_id = shared.node_id,
                "TLS files changed; reloaded for new connections"
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(node_id = shared.node_id, error = %e, "TLS files changed but cannot be used; keeping the previous ones")
            }
        }
    }
}
