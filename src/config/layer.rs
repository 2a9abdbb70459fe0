//! A layer of configuration: what one source (the Consul agent's files, the config file,
//! the flags) sets, as a [`ConfigPatch`] (every field `None` unless set), and where each
//! setting came from, to name it in an error. `resolve.rs` makes one `Config` of them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{ConfigError, ConfigPatch, FileLocation, Secret};

/// What one source of configuration sets.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Layer {
    pub settings: ConfigPatch,
    /// Where each setting came from, by its config-file key (`alt_domain`, `cert_file`).
    pub origins: BTreeMap<&'static str, Origin>,
    /// The ACL token, or the file holding it (read once the winning layer is known).
    pub token: Option<TokenSource>,
    /// The Consul agent's configuration files and directories (`consul_config`).
    pub consul_config: Option<Vec<PathBuf>>,
}

impl Layer {
    /// Whether this layer sets `key`.
    pub fn sets(&self, key: &str) -> bool {
        self.origins.contains_key(key)
    }
}

/// Where a setting came from: the flag or key that set it, and the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    /// `--alt-domain` for a flag, `alt_domain` for a file's key.
    pub key: String,
    pub file: Option<FileLocation>,
}

impl Origin {
    pub fn flag(flag: &str) -> Origin {
        Origin {
            key: flag.to_string(),
            file: None,
        }
    }

    pub fn invalid(&self, value: Option<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.key.clone(),
            value,
            file: self.file.clone(),
            reason: reason.into(),
        }
    }
}

/// Where the ACL token is: given, or in a file (its first line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenSource {
    Value(Secret),
    /// The file, and the flag or key that named it.
    File(PathBuf, &'static str),
}
