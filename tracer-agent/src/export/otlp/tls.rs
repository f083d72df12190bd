//! TLS for the OTLP exporter: one rustls client configuration (ring, no OpenSSL) built from the
//! PEM files the standard variables name: the CA bundle to trust
//! (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`, else the system's trust store) and, for mutual
//! TLS, a client certificate chain and its key (`..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`).
//!
//! Everything is read and checked while the configuration is resolved, so `--check-config`
//! names a missing file, a file without a PEM certificate or a key without its certificate
//! before the agent loads anything. At run time, [`failure`] finds the rustls error under a
//! failed request so that the log says what the handshake refused (an unknown issuer, a
//! missing client certificate) instead of "transport error".

use std::{error::Error as StdError, fmt, path::PathBuf, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

/// A file setting and where it came from (a flag or a variable name), for the messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFile {
    pub origin: &'static str,
    pub path: PathBuf,
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.origin)
    }
}

/// The TLS files of the exporter, as resolved from flags and variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PemFile>,
    pub client_certificate: Option<PemFile>,
    pub client_key: Option<PemFile>,
}

impl TlsFiles {
    /// The first file given, if any (to refuse TLS settings with a clear-text endpoint).
    #[must_use]
    pub fn any(&self) -> Option<&PemFile> {
        self.ca
            .as_ref()
            .or(self.client_certificate.as_ref())
            .or(self.client_key.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PemFile, std::io::Error),
    #[error("{0} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate(PemFile),
    #[error("{0} is not valid PEM: {1}")]
    Pem(PemFile, rustls::pki_types::pem::Error),
    #[error(
        "{0} holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\", RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey(PemFile),
    #[error("CA certificate in {0} is not usable: {1}")]
    BadCa(PemFile, rustls::Error),
    #[error(
        "the client key {0} is set without a client certificate: set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE or --otlp-client-certificate too"
    )]
    KeyWithoutCertificate(PemFile),
    #[error(
        "the client certificate {0} is set without its key: set OTEL_EXPORTER_OTLP_CLIENT_KEY or --otlp-client-key too"
    )]
    CertificateWithoutKey(PemFile),
    #[error("client certificate {certificate} and key {key} are not usable together: {error}")]
    ClientAuth {
        certificate: PemFile,
        key: PemFile,
        error: Box<rustls::Error>,
    },
    #[error(
        "the system trust store has no usable CA certificate ({0}): set OTEL_EXPORTER_OTLP_CERTIFICATE or --otlp-certificate to the collector's CA"
    )]
    NoSystemRoots(String),
    #[error("TLS setup: {0}")]
    Rustls(rustls::Error),
}

/// The client side of TLS to the collector, ready for both transports.
#[derive(Clone)]
pub struct OtlpTls {
    pub files: TlsFiles,
    /// How many CA certificates are trusted, and from where (for `--check-config`).
    pub trust: String,
    /// Without ALPN: each transport asks for its protocol (h2 for gRPC).
    pub config: Arc<ClientConfig>,
}

impl fmt::Debug for OtlpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpTls")
            .field("files", &self.files)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl OtlpTls {
    /// Reads and checks the files, or the system trust store when no CA file is given.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable PEM item, a key without its certificate
    /// (or the reverse), an empty system trust store.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (roots, trust) = match &files.ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::BadCa(ca.clone(), e))?;
                }
                let trust = format!("{} CA certificate(s) from {ca}", roots.len());
                (roots, trust)
            }
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots);
        let config = match (&files.client_certificate, &files.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (None, Some(key)) => return Err(TlsError::KeyWithoutCertificate(key.clone())),
            (Some(cert), None) => return Err(TlsError::CertificateWithoutKey(cert.clone())),
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| TlsError::ClientAuth {
                    certificate: cert.clone(),
                    key: key.clone(),
                    error: Box::new(e),
                })?,
        };
        Ok(Self {
            files,
            trust,
            config: Arc::new(config),
        })
    }

    /// One line for `--check-config`.
    #[must_use]
    pub fn describe(&self) -> String {
        match (&self.files.client_certificate, &self.files.client_key) {
            (Some(cert), Some(key)) => format!(
                "TLS trusting {}, client certificate {cert}, key {key}",
                self.trust
            ),
            _ => format!("TLS trusting {}, no client certificate", self.trust),
        }
    }
}

/// A configuration that trusts nothing, for the clear-text HTTP client (reqwest wants a TLS
/// backend even for http:// URLs, and this build carries no default one).
#[must_use]
pub fn clear_text_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    std::fs::read(&file.path).map_err(|e| TlsError::Read(file.clone(), e))
}

fn certificates(file: &PemFile) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(file.clone(), e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(file.clone()));
    }
    Ok(certs)
}

fn private_key(file: &PemFile) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(file.clone()),
        e => TlsError::Pem(file.clone(), e),
    })
}

fn system_roots() -> Result<(RootCertStore, String), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok((roots, format!("{added} CA certificate(s) of the system")))
}

/// What went wrong under a failed request, as one line: `head` and the causes under it, each
/// said once (hyper, tonic and reqwest wrap the same cause several times, and often repeat it
/// in their own message).
#[must_use]
pub fn chain(head: &str, source: Option<&(dyn StdError + 'static)>) -> String {
    let mut out = head.to_owned();
    let mut next = source;
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// The TLS error under a failed request, if that is why it failed: retrying cannot help, and
/// the message says which side refused what.
#[must_use]
pub fn failure(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            // tokio-rustls hands rustls errors up inside an io::Error, whose source() skips them.
            e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(format!("TLS: {}: {tls}", hint(tls)));
        }
        next = e.source();
    }
    // h2 keeps only the text of an I/O error (an alert the collector sent after the handshake,
    // as TLS 1.3 servers refuse a client certificate), and tonic turns a failed connection into
    // a status message: recognise rustls' wording there.
    let text = chain(&error.to_string(), error.source());
    let after = |marker: &str| {
        text.split(marker).nth(1).map(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    };
    if let Some(name) = after(CERTIFICATE) {
        return Some(format!(
            "TLS: {}: {CERTIFICATE}{name}",
            certificate_hint(&name)
        ));
    }
    let name = after(ALERT)?;
    Some(format!("TLS: {}: {ALERT}{name}", alert_hint(&name)))
}

/// How rustls words a refused server certificate and a received alert.
const CERTIFICATE: &str = "invalid peer certificate: ";
const ALERT: &str = "received fatal alert: ";

fn hint(e: &rustls::Error) -> &'static str {
    use rustls::Error;
    match e {
        Error::InvalidCertificate(why) => certificate_hint(&format!("{why:?}")),
        Error::AlertReceived(alert) => alert_hint(&format!("{alert:?}")),
        _ => "TLS handshake failed",
    }
}

/// What a refused collector certificate means, by the name of rustls' `CertificateError`.
fn certificate_hint(name: &str) -> &'static str {
    match name {
        "UnknownIssuer" => {
            "certificate verification failed: the collector's certificate is not signed by a trusted CA (OTEL_EXPORTER_OTLP_CERTIFICATE)"
        }
        n if n.starts_with("NotValidForName") => {
            "certificate verification failed: the collector's certificate does not name the endpoint's host"
        }
        _ => "certificate verification failed",
    }
}

/// What an alert from the collector means, by its rustls name.
fn alert_hint(name: &str) -> &'static str {
    match name {
        "CertificateRequired" | "HandshakeFailure" => {
            "the collector requires a client certificate (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_KEY)"
        }
        "BadCertificate"
        | "UnknownCA"
        | "CertificateUnknown"
        | "UnsupportedCertificate"
        | "CertificateExpired"
        | "CertificateRevoked" => "the collector refused the client certificate",
        _ => "the collector ended the TLS session",
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
