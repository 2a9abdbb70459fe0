//! Everything that talks to Consul, and nothing of DNS messages: the HTTP client, the
//! blocking-query watch loop, and the sync that writes the view (`crate::view`) and
//! answers the DNS side's requests through `view::Source`.

pub mod body;
pub mod client;
mod polled;
pub mod preparation;
pub mod queries;
pub mod remote;
pub mod sync;
pub mod tls;
pub mod watch;

pub use client::{ClientOptions, ConsulClient, QueryMeta};

/// Why a request to Consul failed. Never carries the ACL token.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid Consul client configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("GET /{path}: timed out")]
    Timeout { path: String },
    #[error("GET /{path}: {reason}")]
    Transport { path: String, reason: String },
    #[error("GET /{path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("GET /{path}: unreadable response: {reason}")]
    Decode { path: String, reason: String },
    #[error("GET /{path}: response larger than {limit} bytes, refused")]
    TooLarge { path: String, limit: usize },
    #[error("GET /{path}: refused, bodies being read would exceed {budget} bytes")]
    OverBodyBudget { path: String, budget: usize },
    #[error("{0}: not asked, too many such requests in the last second")]
    OverBudget(&'static str),
}

impl ConsulError {
    pub(crate) fn from_transport(path: &str, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return ConsulError::Timeout { path: path.into() };
        }
        // The whole chain without the URL, e.g. "error sending request: client error
        // (Connect): invalid peer certificate: UnknownIssuer"; a cause whose text its
        // parent already shows is skipped.
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !reason.ends_with(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = s.source();
        }
        if let Some(hint) = tls::failure_hint(&e) {
            reason.push_str(" (");
            reason.push_str(hint);
            reason.push(')');
        }
        ConsulError::Transport {
            path: path.into(),
            reason,
        }
    }

    /// 403: the token is missing, unknown or lacks rights.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ConsulError::Status { status: 403, .. })
    }
}
