//! DNS over TLS (RFC 7858): the certificate served (read at start, read again on reload),
//! the rustls server configuration offering ALPN "dot" (RFC 7858 §3.1, registered by RFC
//! 8310), and the handshake that makes an accepted connection a stream `tcp.rs` serves as
//! it serves DNS over TCP: same answers, same pipelining, the listener's own limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use rustls::crypto::ring;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::query_log::Transport;
use super::tcp::Handshake;
use crate::metrics::Metrics;
use crate::pem::{self, PemError};

/// The ALPN protocol of DNS over TLS. A client offering others but not this one is
/// refused; one offering none is served.
pub const ALPN: &[u8] = b"dot";

/// The longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the certificate cannot be served. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(
        "DNS-over-TLS certificate {} with key {}: {reason}",
        .cert_file.display(),
        .key_file.display()
    )]
    Unusable {
        cert_file: PathBuf,
        key_file: PathBuf,
        reason: String,
    },
}

/// The certificate and key files, and the server configuration made of them, replaced
/// whole by a reload that succeeds; each handshake takes the configuration current when it
/// starts.
#[derive(Debug)]
pub struct Certificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    config: ArcSwap<ServerConfig>,
}

impl Certificate {
    /// Reads the certificate chain and its key.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Certificate, CertificateError> {
        let config = server_config(cert_file, key_file)?;
        Ok(Certificate {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            config: ArcSwap::from_pointee(config),
        })
    }

    /// Reads the files again; on an error the certificate served stays as it was.
    pub fn reload(&self) -> Result<(), CertificateError> {
        let config = server_config(&self.cert_file, &self.key_file)?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The configuration new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }
}

/// The rustls server configuration presenting `cert_file` with `key_file` (TLS 1.2 and
/// 1.3, the ring provider's safe defaults, no client certificates), offering ALPN "dot".
fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, CertificateError> {
    let chain = pem::read_certificates("DNS-over-TLS certificate", cert_file)?;
    let key = pem::read_key("DNS-over-TLS key", key_file)?;
    let unusable = |reason: String| CertificateError::Unusable {
        cert_file: cert_file.to_path_buf(),
        key_file: key_file.to_path_buf(),
        reason,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            unusable(match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "the key does not belong to the certificate".to_string()
                }
                other => other.to_string(),
            })
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The TLS handshake of a DNS-over-TLS connection, within [`HANDSHAKE_TIMEOUT`], with the
/// certificate current when it starts.
#[derive(Debug)]
pub struct TlsHandshake {
    certificate: Arc<Certificate>,
    timeouts: Counter,
    errors: Counter,
}

impl TlsHandshake {
    pub fn new(certificate: Arc<Certificate>, metrics: &Metrics) -> Self {
        TlsHandshake {
            certificate,
            timeouts: metrics.tls_handshake_timeouts.clone(),
            errors: metrics.tls_handshake_errors.clone(),
        }
    }
}

impl Handshake for TlsHandshake {
    type Stream = TlsStream<TcpStream>;
    const TRANSPORT: Transport = Transport::Tls;

    async fn handshake(&self, stream: TcpStream, src: SocketAddr) -> Option<Self::Stream> {
        let acceptor = TlsAcceptor::from(self.certificate.server_config());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                self.errors.inc();
                debug!(%src, error = %e, "DNS-over-TLS handshake failed");
                None
            }
            Err(_) => {
                self.timeouts.inc();
                debug!(%src, "DNS-over-TLS handshake not done within {HANDSHAKE_TIMEOUT:?}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(PathBuf);

    impl Files {
        fn new(name: &str) -> Files {
            let dir =
                std::env::temp_dir().join(format!("consul-dns-dot-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            Files(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate for localhost and its key, PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    fn error(cert: &Path, key: &Path) -> String {
        match Certificate::load(cert, key) {
            Ok(_) => panic!("{} should not load", cert.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loads_a_certificate_and_offers_dot() {
        let files = Files::new("load");
        let (cert, key) = self_signed();
        let cert = files.write("cert.pem", &cert);
        let key = files.write("key.pem", &key);
        let loaded = Certificate::load(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.server_config().alpn_protocols, [b"dot".to_vec()]);
        assert_eq!(loaded.cert_file(), cert);
    }

    #[test]
    fn bad_files_name_the_file() {
        let files = Files::new("bad");
        let (cert_pem, key_pem) = self_signed();
        let cert = files.write("cert.pem", &cert_pem);
        let key = files.write("key.pem", &key_pem);
        let missing = Path::new("/nonexistent/dot.pem");
        let e = error(missing, &key);
        assert!(
            e.starts_with("DNS-over-TLS certificate /nonexistent/dot.pem: cannot read: "),
            "{e}"
        );
        let e = error(&cert, missing);
        assert!(
            e.starts_with("DNS-over-TLS key /nonexistent/dot.pem: cannot read: "),
            "{e}"
        );
        let text = files.write("text.pem", "not a certificate\n");
        let e = error(&text, &key);
        assert_eq!(
            e,
            format!(
                "DNS-over-TLS certificate {}: not PEM: no \"-----BEGIN\" section",
                text.display()
            )
        );
        // The key where the certificate should be, and the other way round.
        let e = error(&key, &cert);
        assert!(
            e.ends_with("no certificate in it (found: PRIVATE KEY)"),
            "{e}"
        );
        let e = error(&cert, &cert);
        assert!(
            e.ends_with("no private key in it (found: CERTIFICATE)"),
            "{e}"
        );
        let (_, other_key) = self_signed();
        let other_key = files.write("other-key.pem", &other_key);
        let e = error(&cert, &other_key);
        assert_eq!(
            e,
            format!(
                "DNS-over-TLS certificate {} with key {}: the key does not belong to the \
                 certificate",
                cert.display(),
                other_key.display()
            )
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_served() {
        let files = Files::new("reload");
        let (cert_pem, key_pem) = self_signed();
        let cert = files.write("cert.pem", &cert_pem);
        let key = files.write("key.pem", &key_pem);
        let loaded = Certificate::load(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        let before = loaded.server_config();
        files.write("cert.pem", "garbage\n");
        assert!(loaded.reload().is_err());
        assert!(Arc::ptr_eq(&before, &loaded.server_config()), "unchanged");
        let (cert_pem, key_pem) = self_signed();
        files.write("cert.pem", &cert_pem);
        files.write("key.pem", &key_pem);
        loaded.reload().unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&before, &loaded.server_config()), "replaced");
    }
}
