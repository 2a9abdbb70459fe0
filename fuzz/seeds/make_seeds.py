#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/): real questions
against the demo catalog, the test fixtures' Consul bodies, the example zone file."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16,
         "AAAA": 28, "SRV": 33, "AXFR": 252, "ANY": 255}


def wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qid, name, qtype, edns=None, rd=True):
    flags = 0x0100 if rd else 0
    arcount = 1 if edns else 0
    msg = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, arcount)
    msg += wire(name) + struct.pack(">HH", TYPES[qtype], 1)
    if edns:
        msg += b"\0" + struct.pack(">HHIH", 41, edns, 0, 0)
    return msg


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


QUESTIONS = [
    ("web.service.dc1.consul", "A"), ("web.service.consul", "AAAA"),
    ("_web._tcp.service.consul", "SRV"), ("web.service.consul", "SRV"),
    ("v1.http.web.service.consul", "A"), ("primary.db.service.consul", "ANY"),
    ("0a020101.addr.dc1.consul", "A"), ("node1.node.consul", "TXT"),
    ("node1.node.dc1.consul", "ANY"), ("consul", "SOA"), ("consul", "NS"),
    ("web.connect.consul", "SRV"), ("api.ingress.consul", "A"),
    ("web.virtual.consul", "A"), ("primary-db.query.consul", "A"),
    ("_primary-db._tcp.query.consul", "SRV"), ("redis.service.consul", "A"),
    ("1.1.2.10.in-addr.arpa", "PTR"), ("11.56.168.192.in-addr.arpa", "PTR"),
    ("node1.cluster.internal", "A"), ("cluster.internal", "ANY"),
    ("gateway.cluster.internal", "A"), ("example.com", "A"),
    ("nope.service.consul", "A"), ("service.dc1.consul", "A"),
    ("web.service.dc2.consul", "A"), ("consul", "AXFR"),
]
for i, (name, qtype) in enumerate(QUESTIONS):
    write("request", f"q{i:02}", query(0x1000 + i, name, qtype))
    write("request", f"e{i:02}", query(0x2000 + i, name, qtype, edns=4096))
    write("qname", f"q{i:02}", bytes([1 if qtype == "SRV" else 0]) + wire(name))

# Prepared-query names a client controls: unknown, control bytes, dots inside a label.
RAW_QUERY_NAMES = [b"flood-1", b"pri\tmary-db", b"primary-db\r", b".", b"..", b"a/b",
                   b"%41", b"\x00", b"geo-web"]
for i, label in enumerate(RAW_QUERY_NAMES):
    qname = bytes([len(label)]) + label + b"\x05query\x06consul\x00"
    msg = struct.pack(">HHHHHH", 0x3000 + i, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    write("request", f"pq{i:02}", msg)


def framed(*messages):
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


# TCP streams: one query, pipelined queries, a frame cut short, a zero length, a length
# longer than what follows.
q0, q1 = query(0x4000, "web.service.consul", "SRV"), query(0x4001, "consul", "SOA", edns=4096)
write("request_tcp", "one", framed(q0))
write("request_tcp", "pipelined", framed(q0, q1, query(0x4002, "nope.service.consul", "A")))
write("request_tcp", "cut", framed(q0) + framed(q1)[:-5])
write("request_tcp", "zero", framed(q0) + b"\0\0" + framed(q1))
write("request_tcp", "long", struct.pack(">H", 600) + q0)
write("request_tcp", "big", framed(query(0x4003, "web.service.consul", "ANY", edns=65535)))

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "consul")
for sel, fixture in [(0, "health-service-my-service.json"), (1, "catalog-services.json"),
                     (2, "catalog-nodes.json"), (0, "real-catalog-service-order-ms.json")]:
    path = os.path.join(FIXTURES, fixture)
    if os.path.exists(path):
        with open(path, "rb") as f:
            body = f.read()
        write("consul_json", fixture, bytes([sel]) + body)
        write("consul_json", "alt-" + fixture, bytes([sel | 4]) + body)
write("consul_json", "query.json", bytes([3]) + b'{"Service":"db","Nodes":[{"Node":{"Node":"n1",'
      b'"Address":"10.0.0.1"},"Service":{"ID":"db1","Service":"db","Tags":["primary"],'
      b'"Port":5432},"Checks":[]}],"DNS":{"TTL":"10s"},"Datacenter":"dc1"}')

with open(os.path.join(ROOT, "zones", "cluster.internal.zone"), "rb") as f:
    write("zone_file", "cluster.internal", b"cluster.internal\n" + f.read())
write("zone_file", "records", b"""example.internal
$ORIGIN example.internal.
$TTL 60
@ IN SOA ns hostmaster ( 1 3600 600 86400 60 )
  IN NS ns
  IN MX 10 mail
ns IN A 192.0.2.1
mail IN AAAA 2001:db8::1
_http._tcp IN SRV 1 1 80 www
www 30 IN CNAME ns
t IN TXT "a" "b c" \\065
c IN CAA 0 issue "ca.example"
* IN A 192.0.2.9
""")
