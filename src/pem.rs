//! PEM files of certificates and keys (TLS to Consul, DNS over TLS): read within a size
//! limit, every problem an error of one line naming the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The largest PEM file read (a CA bundle is a few hundred KB): a mistaken path such as a
/// device or a huge log cannot stall the start.
pub const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;

/// Why a PEM file gave nothing usable. `Display` is one line: `<what> <path>: <reason>`.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{what} {}: cannot read: {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: larger than {MAX_PEM_BYTES} bytes, not a PEM file", .path.display())]
    TooLarge { what: &'static str, path: PathBuf },
    #[error("{what} {}: not PEM: {reason}", .path.display())]
    NotPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {}: no {expected} in it{}", .path.display(), found_note(.found))]
    Missing {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
        found: Vec<String>,
    },
}

fn found_note(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found: {})", found.join(", "))
    }
}

/// The certificates of `path`, in file order; `what` names the file in errors ("CA file").
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let sections = read_pem(what, path)?;
    let found = kind_names(&sections);
    let certs: Vec<CertificateDer<'static>> = sections
        .into_iter()
        .filter_map(|(kind, der)| CertificateDer::from_pem(kind, der))
        .collect();
    if certs.is_empty() {
        return Err(PemError::Missing {
            what,
            path: path.to_path_buf(),
            expected: "certificate",
            found,
        });
    }
    Ok(certs)
}

/// The first private key of `path` (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let sections = read_pem(what, path)?;
    let found = kind_names(&sections);
    sections
        .into_iter()
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .ok_or_else(|| PemError::Missing {
            what,
            path: path.to_path_buf(),
            expected: "private key",
            found,
        })
}

/// Every PEM section of a file, with its kind.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, PemError> {
    let read_error = |source| PemError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(PemError::TooLarge {
            what,
            path: path.to_path_buf(),
        });
    }
    let not_pem = |reason: String| PemError::NotPem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(pem_reason(&e)))?;
    if sections.is_empty() {
        return Err(not_pem("no \"-----BEGIN\" section".to_string()));
    }
    Ok(sections)
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no \"-----END\" line".to_string(),
        pem::Error::IllegalSectionStart { .. } => "a malformed \"-----BEGIN\" line".to_string(),
        other => other.to_string(),
    }
}

fn kind_names(sections: &[(SectionKind, Vec<u8>)]) -> Vec<String> {
    let mut names: Vec<String> = sections.iter().map(|(kind, _)| pem_label(*kind)).collect();
    names.dedup();
    names
}

/// The label PEM gives a section ("-----BEGIN <label>-----").
fn pem_label(kind: SectionKind) -> String {
    match kind {
        SectionKind::Certificate => "CERTIFICATE".to_string(),
        SectionKind::PublicKey => "PUBLIC KEY".to_string(),
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY".to_string(),
        SectionKind::PrivateKey => "PRIVATE KEY".to_string(),
        SectionKind::EcPrivateKey => "EC PRIVATE KEY".to_string(),
        SectionKind::Crl => "X509 CRL".to_string(),
        SectionKind::Csr => "CERTIFICATE REQUEST".to_string(),
        other => format!("{other:?}"),
    }
}
