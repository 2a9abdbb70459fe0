//! Everything that talks to Consul: the HTTP client, the response models, the blocking-query
//! watch loop and the sync of the in-memory view.

pub mod client;
pub mod model;
pub mod queries;
pub mod remote;
pub mod sync;
pub mod watch;

pub use client::{ClientOptions, ConsulClient, QueryMeta};

/// Why a request to Consul failed. Never carries the ACL token.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid Consul client configuration: {0}")]
    Config(String),
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
}

impl ConsulError {
    fn from_transport(path: &str, e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return ConsulError::Timeout { path: path.into() };
        }
        // Walk to the root cause (e.g. "Connection refused") without the URL.
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
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
