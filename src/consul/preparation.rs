//! What the view's records of a datacenter are built with (`view::records::RecordSettings`):
//! the configuration's, the local datacenter once learned, and WAN translation for the
//! others. Shared by the service watches, the other datacenters and the prepared queries.

use std::sync::{Arc, OnceLock};

use super::ConsulError;
use crate::config::ServiceTtl;
use crate::view::records::{RecordSettings, Settings};

#[derive(Debug)]
pub struct Preparation {
    /// From the configuration; `datacenter` is filled in once known.
    base: Settings,
    local: OnceLock<Arc<RecordSettings>>,
    translate_wan_addrs: bool,
    service_ttl: ServiceTtl,
}

impl Preparation {
    pub fn new(base: Settings, translate_wan_addrs: bool, service_ttl: ServiceTtl) -> Self {
        Preparation {
            base,
            local: OnceLock::new(),
            translate_wan_addrs,
            service_ttl,
        }
    }

    /// The local datacenter is `dc`; it never changes afterwards.
    pub fn set_datacenter(&self, dc: &str) {
        let _ = self.local.set(Arc::new(RecordSettings::new(Settings {
            datacenter: dc.to_ascii_lowercase(),
            ..self.base.clone()
        })));
    }

    /// The local datacenter, once learned.
    pub fn local_datacenter(&self) -> Option<&str> {
        self.local.get().map(|s| s.datacenter.as_str())
    }

    /// The settings for a datacenter (None: the local one). `translated`: the agent
    /// already applied WAN translation to the response.
    pub fn settings_for(
        &self,
        dc: Option<&str>,
        translated: bool,
    ) -> Result<Arc<RecordSettings>, ConsulError> {
        let local =
            self.local.get().cloned().ok_or_else(|| {
                ConsulError::Config("the local datacenter is not known yet".into())
            })?;
        Ok(match dc {
            None => local,
            Some(dc) => Arc::new(RecordSettings::new(Settings {
                datacenter: dc.to_owned(),
                wan: self.translate_wan_addrs && !translated,
                ..local.settings().clone()
            })),
        })
    }

    /// Whether answers for other datacenters use WAN addresses (`translate_wan_addrs`).
    pub fn translate_wan_addrs(&self) -> bool {
        self.translate_wan_addrs
    }

    /// The TTL of a service's records (`service_ttl`), by lower-case name.
    pub fn service_ttl(&self, key: &str) -> u32 {
        self.service_ttl.ttl_for(key)
    }
}
