//! A throwaway certificate authority for the TLS tests (feature `pki`): a CA, a server
//! certificate for `127.0.0.1` and `localhost` and a client certificate, all signed by it, as
//! PEM text and as files in a directory of their own that goes away on drop. Each `TestPki` is a
//! new CA, so a second one is the "wrong CA" a client must refuse.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Tells apart the directories of one test process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA with one server and one client certificate, written under a temporary directory.
pub struct TestPki {
    dir: PathBuf,
    pub ca_pem: String,
    pub server: Pair,
    pub client: Pair,
}

impl TestPki {
    /// Makes the CA and the two certificates, and writes `ca.crt`, `server.crt`, `server.key`,
    /// `client.crt` and `client.key` into a new directory.
    ///
    /// # Panics
    /// If a key cannot be generated or a file cannot be written.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let issue = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("certificate params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signing");
            Pair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        };
        let server = issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            "otlp receiver",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = issue(
            Vec::new(),
            "tracer-agent",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = std::env::temp_dir().join(format!(
            "tracer-pki-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the PKI directory");
        let pki = Self {
            dir,
            ca_pem: ca.pem(),
            server,
            client,
        };
        for (file, text) in [
            ("ca.crt", &pki.ca_pem),
            ("server.crt", &pki.server.cert_pem),
            ("server.key", &pki.server.key_pem),
            ("client.crt", &pki.client.cert_pem),
            ("client.key", &pki.client.key_pem),
        ] {
            fs::write(pki.dir.join(file), text).expect("write a PEM file");
        }
        pki
    }

    /// The directory holding the files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the directory: `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    #[must_use]
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
