//! The qname parser (`dns::name`) on arbitrary names, fed as the handler feeds it: a wire
//! name under the Consul domain, lower-cased, split into UTF-8 labels.
//!
//! Input: one flags byte (bit 0: qtype SRV; bit 1: the rest is `.`-separated raw labels
//! instead of a wire-format name), then the name.
#![no_main]

use std::borrow::Cow;

use consul_dns::dns::name::{parse, relative_labels, ConsulName, Locality};
use consul_dns::view::records::hex_ip;
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let srv = flags & 1 == 1;
    let name = if flags & 2 == 0 {
        match Name::read(&mut BinDecoder::new(rest)) {
            Ok(n) => n,
            Err(_) => return,
        }
    } else {
        match Name::from_labels(rest.split(|b| *b == b'.')) {
            Ok(n) => n,
            Err(_) => return,
        }
    };
    let Ok(consul) = Name::from_ascii("consul.") else {
        return;
    };
    let Ok(full) = name.append_domain(&consul) else {
        return;
    };
    let mut buf = [0u8; 255];
    let Some(labels) = relative_labels(&full, consul.num_labels(), &mut buf) else {
        return;
    };
    let parsed = parse(&labels, srv);
    assert_eq!(parsed, parse(&labels, srv), "parsing is deterministic");
    check(&labels, &parsed);
});

/// Everything a parsed name names comes from the question: strings are pieces of it,
/// localities are whole labels, an address is the hex label it was written as.
fn check(labels: &[&str], parsed: &ConsulName<'_>) {
    let joined = labels.join(".");
    let piece = |s: &str| {
        assert!(!s.is_empty(), "{labels:?}: empty name in {parsed:?}");
        assert!(joined.contains(s), "{labels:?}: {s:?} is not in the name");
    };
    let label = |s: Option<&str>| {
        if let Some(s) = s {
            assert!(labels.contains(&s), "{labels:?}: {s:?} is not a label");
        }
    };
    let locality = |l: &Locality<'_>| {
        assert!(l.datacenter.is_none() || l.peer.is_none(), "{parsed:?}");
        label(l.datacenter);
        label(l.peer);
    };
    match parsed {
        ConsulName::Apex => assert!(labels.is_empty(), "{labels:?}: apex"),
        ConsulName::Service {
            service,
            tag,
            locality: l,
            ..
        } => {
            piece(service);
            if let Some(tag) = tag {
                piece(tag);
            }
            locality(l);
        }
        ConsulName::Connect {
            service,
            locality: l,
        }
        | ConsulName::Ingress {
            service,
            locality: l,
        } => {
            piece(service);
            locality(l);
        }
        ConsulName::Virtual { service, peer } => {
            piece(service);
            label(*peer);
        }
        ConsulName::Node { node, locality: l } => {
            piece(node);
            if let Cow::Borrowed(n) = node {
                label(Some(n));
            }
            locality(l);
        }
        ConsulName::Addr { ip } => label(Some(hex_ip(*ip).as_str())),
        ConsulName::PreparedQuery { name, datacenter } => {
            piece(name);
            label(*datacenter);
        }
        ConsulName::EmptyNonTerminal { datacenter } => label(*datacenter),
        ConsulName::Invalid => {}
    }
}
