//! Mutual TLS for the TCP transport (feature `tls`): both ends of every
//! connection prove who they are with a certificate signed by the
//! cluster's CA, and everything after the TLS handshake is encrypted.
//!
//! **Node identity.** A node's certificate must carry the DNS name
//! `node-<id>` (for node 3: `node-3`) among its subject alternative names.
//! A dialer verifies that the node it dials presents the name of the id it
//! expects; an acceptor verifies that the id a dialer claims in its `Hello`
//! is named in the dialer's certificate. A peer without a valid
//! certificate (another CA, expired, not yet valid, no client
//! certificate) fails the TLS handshake, before any Raft frame is read.
//! Use one CA per cluster: any certificate of the CA naming `node-<id>`
//! can speak as node `id`.
//!
//! **Reloading.** The CA, certificate and key files are read at start and
//! again whenever one of them changes (checked every `reload_interval`):
//! new connections use the new files, established ones carry on. A reload
//! that fails (a half-written file, a key that does not match) is logged
//! and the previous files stay in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::NodeId;

/// The rustls this module is built on, for configurations passed to it or
/// taken from it.
pub use rustls;

/// Where a node's TLS material is, in PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The cluster's CA certificate(s): peers must present a certificate
    /// signed by one of them.
    pub ca: PathBuf,
    /// This node's certificate chain, naming `node-<id>`.
    pub cert: PathBuf,
    /// This node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for changes. Default 10 s.
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// The files, checked for changes every 10 s.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsConfig {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// A rustls server configuration for serving HTTPS (e.g. with actix-web's
/// `HttpServer::bind_rustls_0_23`) from a certificate chain and key in
/// PEM, on the same crypto provider as the transport. No client
/// certificates are asked for: clients authenticate at the HTTP level.
pub fn https_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_certs(cert, "certificate file")?;
    let key_der = read_key(key)?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            TlsError(format!(
                "certificate {} and key {}: {e}",
                cert.display(),
                key.display()
            ))
        })
}

/// The DNS name a node's certificate must carry.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// The rustls configurations in use, and what they were loaded from.
struct Loaded {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// A node's TLS state, shared by its connections.
pub(crate) struct TlsContext {
    node_id: NodeId,
    config: TlsConfig,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("node_id", &self.node_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Loads the files; fails with a message naming the file and the
    /// problem, or if this node's certificate does not name `node-<id>`.
    pub(crate) fn load(node_id: NodeId, config: TlsConfig) -> Result<Self, TlsError> {
        let loaded = load(node_id, &config, true)?;
        Ok(TlsContext {
            node_id,
            config,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Loads the files without checking that the certificate names this
    /// node: for tests of the other side's checks.
    #[cfg(test)]
    pub(crate) fn load_unchecked(node_id: NodeId, config: TlsConfig) -> Self {
        let loaded = load(node_id, &config, false).expect("loadable TLS files");
        TlsContext {
            node_id,
            config,
            current: RwLock::new(Arc::new(loaded)),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.current().acceptor.clone()
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        self.current().connector.clone()
    }

    pub(crate) fn reload_interval(&self) -> Duration {
        self.config.reload_interval.max(Duration::from_millis(10))
    }

    /// Reloads the files if any changed since they were loaded. `Ok(true)`:
    /// reloaded.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamp(&self.config) == self.current().stamp {
            return Ok(false);
        }
        let loaded = load(self.node_id, &self.config, true)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }
}

/// Checks that `certs` (a peer's chain, end entity first, already verified
/// against the CA) names node `claimed`.
pub(crate) fn check_peer_identity(
    certs: Option<&[CertificateDer<'static>]>,
    claimed: NodeId,
) -> Result<(), String> {
    let Some(end_entity) = certs.and_then(|c| c.first()) else {
        return Err("no client certificate".into());
    };
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    cert.verify_is_valid_for_subject_name(&server_name(claimed)?)
        .map_err(|_| format!("its certificate does not name {}", node_name(claimed)))
}

/// The server name a dialer expects of node `id`.
pub(crate) fn server_name(id: NodeId) -> Result<ServerName<'static>, String> {
    ServerName::try_from(node_name(id)).map_err(|e| e.to_string())
}

fn stamp(config: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [&config.ca, &config.cert, &config.key]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |e: &dyn std::fmt::Display| TlsError(format!("{what} {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    Ok(certs)
}

/// The crypto provider of every configuration here, named rather than
/// taken from the process default (which is ambiguous when another crate
/// enables a second provider).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError(format!("key file {}: {e}", path.display())))
}

fn load(node_id: NodeId, config: &TlsConfig, check_own_name: bool) -> Result<Loaded, TlsError> {
    let stamp = stamp(config);
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&config.ca, "CA file")? {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("CA file {}: {e}", config.ca.display())))?;
    }
    let roots = Arc::new(roots);
    let chain = read_certs(&config.cert, "certificate file")?;
    if check_own_name {
        check_peer_identity(Some(&chain), node_id).map_err(|_| {
            TlsError(format!(
                "certificate file {} does not name {} (this node's id is {node_id})",
                config.cert.display(),
                node_name(node_id)
            ))
        })?;
    }
    let key = read_key(&config.key)?;
    let versions = |e: rustls::Error| TlsError(format!("protocol versions: {e}"));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            TlsError(format!(
                "certificate {} and key {}: {e}",
                config.cert.display(),
                config.key.display()
            ))
        })?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError(format!("client certificate: {e}")))?;
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
        stamp,
    })
}
