//! HTTPS for the emulator: a rustls server configuration from PEM text, optionally
//! requiring client certificates signed by a given CA (Consul's `verify_incoming`).

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Why the emulator's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("emulator TLS: {0}")]
pub struct TlsSetupError(String);

/// A server configuration presenting `cert_chain_pem` (leaf first) with `key_pem`; with
/// `client_ca_pem`, every client must present a certificate signed by that CA.
pub fn server_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let error = |what: &str, e: &dyn std::fmt::Display| TlsSetupError(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| error("key", &e))?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| error("protocol versions", &e))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let cert = cert.map_err(|e| error("client CA", &e))?;
                roots.add(cert).map_err(|e| error("client CA", &e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| error("client verifier", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| error("certificate and key", &e))?;
    Ok(Arc::new(config))
}
