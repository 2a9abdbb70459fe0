//! TLS to Consul: the rustls client configuration built from the CA, the client
//! certificate, the server name and `ssl_verify`, as Consul's Go client (`api.TLSConfig`)
//! reads them. Files are read once, at start-up; any problem is an error naming the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ConsulTls;
use crate::pem::{read_certificates, read_key, PemError};

/// Why the TLS configuration could not be built. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{what} {}: cannot read: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: unusable certificate: {reason}", .path.display())]
    BadCertificate {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("CA path {}: no certificate files in the directory", .0.display())]
    EmptyCaPath(PathBuf),
    #[error("client certificate {} with key {}: {reason}", .cert.display(), .key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The rustls client configuration for `tls`, on the ring provider reqwest uses.
pub fn client_config(tls: &ConsulTls) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let roots = root_store(tls)?;
    let verifier: Arc<dyn ServerCertVerifier> = if !tls.verify {
        Arc::new(NoVerification {
            provider: Arc::clone(&provider),
        })
    } else {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
        match &tls.server_name {
            Some(name) => Arc::new(NamedVerifier {
                inner: webpki,
                name: ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::Setup(format!("tls_server_name {name:?}: {e}")))?,
            }),
            None => webpki,
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates("client certificate", cert)?;
            let private_key = read_key("client key", key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| TlsError::ClientAuth {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: match e {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            "the key does not belong to the certificate".to_string()
                        }
                        other => other.to_string(),
                    },
                })
        }
        // The config layer rejects one without the other.
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The CAs of `ca_file` and `ca_path` when either is given (and only those, as Consul's
/// client), else the built-in web roots (reqwest's default).
fn root_store(tls: &ConsulTls) -> Result<RootCertStore, TlsError> {
    if tls.ca_file.is_none() && tls.ca_path.is_none() {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    }
    let mut roots = RootCertStore::empty();
    let mut add = |what: &'static str, path: &Path| -> Result<(), TlsError> {
        for cert in read_certificates(what, path)? {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                what,
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    };
    if let Some(file) = &tls.ca_file {
        add("CA file", file)?;
    }
    if let Some(dir) = &tls.ca_path {
        let files = ca_path_files(dir)?;
        if files.is_empty() {
            return Err(TlsError::EmptyCaPath(dir.clone()));
        }
        for file in files {
            add("CA file", &file)?;
        }
    }
    Ok(roots)
}

/// The regular files (symbolic links followed) directly in `dir`, sorted; hidden files are
/// skipped.
fn ca_path_files(dir: &Path) -> Result<Vec<PathBuf>, TlsError> {
    let read_error = |source| TlsError::Read {
        what: "CA path",
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What to check, for a request that failed on a TLS error somewhere in `error`'s chain.
pub(crate) fn failure_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::AlertDescription as Alert;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = as_rustls(e) {
            return match tls {
                rustls::Error::InvalidCertificate(_) => Some(
                    "the Consul server's certificate is not trusted: check --ca-file, --ca-path \
                     and --tls-server-name",
                ),
                rustls::Error::AlertReceived(Alert::CertificateRequired) => Some(
                    "the Consul server requires a client certificate: set --client-cert and \
                     --client-key",
                ),
                rustls::Error::AlertReceived(
                    Alert::BadCertificate
                    | Alert::UnknownCA
                    | Alert::CertificateUnknown
                    | Alert::CertificateExpired
                    | Alert::CertificateRevoked
                    | Alert::UnsupportedCertificate
                    | Alert::AccessDenied,
                ) => Some(
                    "the Consul server refused the client certificate (or wants one): check \
                     --client-cert and --client-key",
                ),
                _ => None,
            };
        }
        next = e.source();
    }
    None
}

/// rustls's error reaches reqwest wrapped in an io::Error, itself wrapped in another by
/// hyper-rustls; io::Error's `source()` skips the wrapped error, so unwrap them here.
fn as_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    as_rustls(inner)
}

/// Verifies the chain as usual, but against the configured `tls_server_name` instead of the
/// name the connection was made to.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `ssl_verify = false`: any certificate is accepted (Go's `InsecureSkipVerify`); the
/// handshake signatures are still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("consul-dns-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    fn ca_error(ca_file: PathBuf) -> String {
        let tls = ConsulTls {
            ca_file: Some(ca_file),
            ..ConsulTls::default()
        };
        match client_config(&tls) {
            Ok(_) => panic!("should fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_use_the_built_in_roots() {
        assert!(client_config(&ConsulTls::default()).is_ok());
    }

    #[test]
    fn bad_ca_files_name_the_file_and_the_reason() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let e = ca_error(missing);
        assert!(
            e.starts_with("CA file /nonexistent/ca.pem: cannot read: "),
            "{e}"
        );

        let text = temp("text.pem", "just some text\n");
        let e = ca_error(text.clone());
        assert_eq!(
            e,
            format!(
                "CA file {}: not PEM: no \"-----BEGIN\" section",
                text.display()
            )
        );

        let key_only = temp(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let e = ca_error(key_only);
        assert!(
            e.ends_with(": no certificate in it (found: PRIVATE KEY)"),
            "{e}"
        );

        let cut = temp("cut.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let e = ca_error(cut);
        assert!(
            e.contains("not PEM: a section has no \"-----END\" line"),
            "{e}"
        );

        let garbage = temp(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = ca_error(garbage.clone());
        if let Some(dir) = garbage.parent() {
            std::fs::remove_dir_all(dir).ok();
        }
        assert!(e.contains("unusable certificate"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn empty_ca_path_is_an_error() {
        let dir = std::env::temp_dir().join(format!("consul-dns-tls-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let tls = ConsulTls {
            ca_path: Some(dir.clone()),
            ..ConsulTls::default()
        };
        let e = client_config(&tls).err().map(|e| e.to_string());
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            e,
            Some(format!(
                "CA path {}: no certificate files in the directory",
                dir.display()
            ))
        );
    }
}
