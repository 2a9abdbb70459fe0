//! Slim serde models of the Consul HTTP API responses we read.
//!
//! Lenient on purpose: unknown fields are ignored, missing fields take defaults and
//! `null` where Go emits a nil map or slice is read as empty. Field names are Consul's
//! (PascalCase); tagged service addresses are read case-insensitively because the
//! documentation samples spell them `address`/`port` while real agents send `Address`/`Port`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Reads `null` as the type's default (Go marshals nil maps and slices as `null`).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `GET /v1/agent/self` (only what we use).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentSelf {
    #[serde(rename = "Config")]
    pub config: AgentConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentConfig {
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "NodeName", default)]
    pub node_name: String,
}

/// `GET /v1/catalog/services`: service name -> every tag seen on it.
pub type ServiceDirectory = BTreeMap<String, Vec<String>>;

/// A node as it appears in `/v1/catalog/nodes` and inside health entries.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Node {
    #[serde(rename = "Node")]
    pub node: String,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
    #[serde(rename = "TaggedAddresses", deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    #[serde(rename = "Meta", deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
}

/// A tagged service address: `{"Address": "...", "Port": n}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

impl<'de> Deserialize<'de> for ServiceAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map =
            Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
        let mut out = ServiceAddress::default();
        for (k, v) in map {
            if k.eq_ignore_ascii_case("address") {
                out.address = v.as_str().unwrap_or_default().to_owned();
            } else if k.eq_ignore_ascii_case("port") {
                out.port = v.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Weights {
    #[serde(rename = "Passing", default = "one")]
    pub passing: u16,
    #[serde(rename = "Warning", default = "one")]
    pub warning: u16,
}

fn one() -> u16 {
    1
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// The service half of a `/v1/health/service/<name>` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Tags", deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "TaggedAddresses", deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    #[serde(rename = "Port")]
    pub port: u16,
    #[serde(rename = "Weights", deserialize_with = "null_default")]
    pub weights: Weights,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckStatus {
    #[default]
    Passing,
    Warning,
    Critical,
    /// `maintenance` or anything Consul may add later.
    Other,
}

impl<'de> Deserialize<'de> for CheckStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(match s.as_str() {
            "passing" => CheckStatus::Passing,
            "warning" => CheckStatus::Warning,
            "critical" => CheckStatus::Critical,
            _ => CheckStatus::Other,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HealthCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Status")]
    pub status: CheckStatus,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "ServiceName")]
    pub service_name: String,
}

/// One element of `GET /v1/health/service/<name>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServiceEntry {
    #[serde(rename = "Node")]
    pub node: Node,
    #[serde(rename = "Service")]
    pub service: AgentService,
    #[serde(rename = "Checks", deserialize_with = "null_default")]
    pub checks: Vec<HealthCheck>,
}

/// `GET /v1/query/<name>/execute`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PreparedQueryResult {
    #[serde(rename = "Service")]
    pub service: String,
    #[serde(rename = "Nodes", deserialize_with = "null_default")]
    pub nodes: Vec<ServiceEntry>,
    #[serde(rename = "DNS")]
    pub dns: QueryDns,
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QueryDns {
    /// A Go duration such as `10s`; empty when not set.
    #[serde(rename = "TTL")]
    pub ttl: String,
}

/// One entry of `GET /v1/query` (only what tells which names resolve).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PreparedQueryListing {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Template")]
    pub template: QueryTemplate,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QueryTemplate {
    /// `name_prefix_match`, or empty for a plain query.
    #[serde(rename = "Type")]
    pub kind: String,
}

/// `GET /v1/catalog/datacenters`.
pub type Datacenters = Vec<String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nulls_and_lowercase_tagged_addresses() {
        let body = r#"[{"Node":{"Node":"n1","Address":"10.0.0.1","TaggedAddresses":null,"Meta":null},
            "Service":{"ID":"web1","Service":"web","Tags":null,"Port":80,
                       "TaggedAddresses":{"lan":{"address":"10.2.0.1","port":81}},"Weights":null},
            "Checks":[{"CheckID":"serfHealth","Status":"passing"},{"CheckID":"m","Status":"maintenance"}],
            "Extra":{"ignored":true}}]"#;
        let entries: Vec<ServiceEntry> = serde_json::from_str(body).expect("parses");
        let e = &entries[0];
        assert!(e.node.tagged_addresses.is_empty());
        assert!(e.service.tags.is_empty());
        assert_eq!(e.service.weights, Weights::default());
        assert_eq!(e.service.tagged_addresses["lan"].address, "10.2.0.1");
        assert_eq!(e.service.tagged_addresses["lan"].port, 81);
        assert_eq!(e.checks[1].status, CheckStatus::Other);
    }
}
