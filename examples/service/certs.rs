//! Certificates for a test cluster over mutual TLS: a CA of its own and,
//! per node, a certificate naming `node-<id>` (what regatta's TLS checks;
//! see `regatta::transport::tls`). `counter certs` writes them; the tests
//! use the same code. Not for production: the keys are written unencrypted
//! next to the certificates.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A certificate authority whose key is in memory.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> String {
    format!("cannot make a certificate: {e}")
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Result<TestCa, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate, in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for node `id`, valid from 2024 to 2036: it names
    /// `node-<id>` (for the Raft transport) and `localhost` and
    /// `127.0.0.1` (so the same pair can serve the HTTP API over HTTPS on
    /// this machine).
    pub fn node(&self, id: u64) -> Result<Issued, String> {
        let names = [format!("node-{id}"), "localhost".into(), "127.0.0.1".into()];
        self.issue_for(&names, false)
    }

    /// A certificate naming `name`; `expired`: its validity ended in 2021.
    #[allow(dead_code)] // for the TLS tests
    pub fn issue(&self, name: &str, expired: bool) -> Result<Issued, String> {
        self.issue_for(&[name.to_owned()], expired)
    }

    fn issue_for(&self, names: &[String], expired: bool) -> Result<Issued, String> {
        let name = &names[0];
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        } else {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `ca.pem` and, per id, `node-<id>.pem` and `node-<id>.key` into
/// `dir` (created if missing).
pub fn write_cluster(dir: &Path, ids: &[u64]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca = TestCa::new("regatta test cluster CA")?;
    let write = |name: String, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("ca.pem".into(), &ca.cert_pem())?;
    for id in ids {
        let issued = ca.node(*id)?;
        write(format!("node-{id}.pem"), &issued.cert_pem)?;
        write(format!("node-{id}.key"), &issued.key_pem)?;
    }
    Ok(())
}
