//! Consul's JSON bodies through the serde models, the preparation of records and the
//! answer assembly; every answer built must encode as a DNS message.
//!
//! Input: one selector byte (bits 0-1: the endpoint; bit 2: the alternative settings;
//! bit 7: the rest is `arbitrary` data turned into well-typed JSON, else raw JSON), then
//! the body.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use consul_dns::fuzzing::{consul_body, Body};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let endpoint = match sel & 3 {
        0 => Body::Health,
        1 => Body::Services,
        2 => Body::Nodes,
        _ => Body::PreparedQuery,
    };
    let structured;
    let body = if sel & 0x80 != 0 {
        let Ok(v) = structured_body(endpoint, &mut Unstructured::new(rest)) else {
            return;
        };
        structured = v.to_string().into_bytes();
        &structured[..]
    } else {
        rest
    };
    for answer in consul_body(endpoint, body, (sel >> 2) & 1) {
        // Record by record: one that cannot be written makes the whole response SERVFAIL
        // (a long answer is cut by the encoder, so the message as a whole may not fit).
        let sections = [&answer.answers, &answer.authority, &answer.additionals];
        for record in sections.into_iter().flatten() {
            let bytes = match record.to_bytes() {
                Ok(b) => b,
                Err(e) => panic!("a record does not encode: {e}\n{record:?}"),
            };
            if let Err(e) = Record::from_bytes(&bytes) {
                panic!("a record does not decode: {e}\n{record:?}");
            }
        }
    }
});

#[derive(Arbitrary, Debug)]
enum Addr {
    Empty,
    V4([u8; 4]),
    V6([u8; 16]),
    Host(Vec<Label>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Label {
    Web,
    Example,
    Com,
    Long(u8),
    Raw(String),
}

impl Addr {
    fn json(&self) -> String {
        match self {
            Addr::Empty => String::new(),
            Addr::V4(b) => std::net::Ipv4Addr::from(*b).to_string(),
            Addr::V6(b) => std::net::Ipv6Addr::from(*b).to_string(),
            Addr::Host(labels) => labels
                .iter()
                .map(|l| match l {
                    Label::Web => "web".to_string(),
                    Label::Example => "example".to_string(),
                    Label::Com => "com".to_string(),
                    Label::Long(n) => "x".repeat(usize::from(*n)),
                    Label::Raw(s) => s.clone(),
                })
                .collect::<Vec<_>>()
                .join("."),
            Addr::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Key {
    Lan,
    Wan,
    LanV4,
    LanV6,
    WanV4,
    WanV6,
    Virtual,
    Raw(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Lan => "lan",
            Key::Wan => "wan",
            Key::LanV4 => "lan_ipv4",
            Key::LanV6 => "lan_ipv6",
            Key::WanV4 => "wan_ipv4",
            Key::WanV6 => "wan_ipv6",
            Key::Virtual => "consul-virtual",
            Key::Raw(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Text {
    Short(u8),
    Long(u16),
    Raw(String),
}

impl Text {
    fn get(&self) -> String {
        match self {
            Text::Short(n) => format!("t{}", n % 8),
            Text::Long(n) => "v".repeat(usize::from(*n % 1024)),
            Text::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct NodeIn {
    name: Text,
    address: Addr,
    tagged: Vec<(Key, Addr)>,
    meta: Vec<(Text, Text)>,
}

impl NodeIn {
    fn json(&self) -> Value {
        let tagged: Map<String, Value> = self
            .tagged
            .iter()
            .map(|(k, a)| (k.name().to_string(), Value::String(a.json())))
            .collect();
        let meta: Map<String, Value> = self
            .meta
            .iter()
            .map(|(k, v)| (k.get(), Value::String(v.get())))
            .collect();
        json!({"Node": self.name.get(), "Address": self.address.json(), "Datacenter": "dc1",
               "TaggedAddresses": tagged, "Meta": meta})
    }
}

#[derive(Arbitrary, Debug)]
enum Status {
    Passing,
    Warning,
    Critical,
    Maintenance,
}

#[derive(Arbitrary, Debug)]
struct EntryIn {
    node: NodeIn,
    id: Text,
    service: Text,
    tags: Vec<Text>,
    address: Addr,
    tagged: Vec<(Key, Addr, u16)>,
    port: u16,
    weights: Option<(u16, u16)>,
    checks: Vec<(Status, bool)>,
}

impl EntryIn {
    fn json(&self) -> Value {
        let tagged: Map<String, Value> = self
            .tagged
            .iter()
            .map(|(k, a, p)| {
                (
                    k.name().to_string(),
                    json!({"Address": a.json(), "Port": p}),
                )
            })
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|(s, own)| {
                let status = match s {
                    Status::Passing => "passing",
                    Status::Warning => "warning",
                    Status::Critical => "critical",
                    Status::Maintenance => "maintenance",
                };
                let sid = if *own { self.id.get() } else { String::new() };
                json!({"CheckID": "c", "Status": status, "ServiceID": sid})
            })
            .collect();
        let mut service = json!({"ID": self.id.get(), "Service": self.service.get(),
            "Tags": self.tags.iter().map(Text::get).collect::<Vec<_>>(),
            "Address": self.address.json(), "TaggedAddresses": tagged, "Port": self.port});
        if let Some((passing, warning)) = self.weights {
            service["Weights"] = json!({"Passing": passing, "Warning": warning});
        }
        json!({"Node": self.node.json(), "Service": service, "Checks": checks})
    }
}

fn structured_body(endpoint: Body, u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(match endpoint {
        Body::Health => Value::Array(
            Vec::<EntryIn>::arbitrary(u)?
                .iter()
                .map(EntryIn::json)
                .collect(),
        ),
        Body::Services => {
            let services: Vec<(Text, Vec<Text>)> = Arbitrary::arbitrary(u)?;
            Value::Object(
                services
                    .iter()
                    .map(|(name, tags)| {
                        (
                            name.get(),
                            json!(tags.iter().map(Text::get).collect::<Vec<_>>()),
                        )
                    })
                    .collect(),
            )
        }
        Body::Nodes => Value::Array(
            Vec::<NodeIn>::arbitrary(u)?
                .iter()
                .map(NodeIn::json)
                .collect(),
        ),
        Body::PreparedQuery => {
            let ttl = Text::arbitrary(u)?.get();
            let dc = Text::arbitrary(u)?.get();
            let nodes: Vec<Value> = Vec::<EntryIn>::arbitrary(u)?
                .iter()
                .map(EntryIn::json)
                .collect();
            json!({"Service": "web", "Nodes": nodes, "DNS": {"TTL": ttl}, "Datacenter": dc})
        }
    })
}
