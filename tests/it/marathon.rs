//! Marathon app ids as DNS names (issue 17): an app `/web/customer1/site1` is registered by
//! the bridges with its path or dotted (`web.customer1.site1`, allegro/marathon-consul's
//! default separator). Consul reads `web.customer1.site1.service.consul` as tag
//! `web.customer1` on service `site1` (hashicorp/consul#215, #1010), so it cannot reach
//! a dotted name; consul-dns takes the longest known service name first, and answers both
//! spellings in the app's DNS form, its path reversed (`site1.customer1.web`). Rows asked
//! over UDP with EDNS, UDP without and TCP.

use crate::common;

use common::case::*;
use common::*;
use hickory_proto::rr::RecordType;

async fn catalog(consul: &str) {
    let regs = [
        Instance::new("/web/customer1/site1", "site1-a")
            .on("n1", "192.168.0.1")
            .at("10.2.4.1", 80)
            .tags(&["canary"]),
        Instance::new("web.customer1.site2", "site2-a")
            .on("n2", "192.168.0.2")
            .at("10.2.4.2", 80)
            .tags(&["v2"]),
        // What Consul's reading of `web.customer1.site2` would find: service `site2`
        // with tag `web.customer1`.
        Instance::new("site2", "plain-site2")
            .on("n3", "192.168.0.3")
            .at("10.2.9.2", 80)
            .tags(&["web.customer1"]),
        Instance::new("db", "db1")
            .on("n4", "192.168.0.4")
            .at("10.2.3.1", 5432)
            .tags(&["primary"]),
    ];
    for r in regs {
        http_register(consul, &r.json()).await;
    }
}

fn cases() -> Vec<Case> {
    use RecordType::*;
    vec![
        ok(
            "an app registered with its path answers in its DNS form",
            "site1.customer1.web.service.consul.",
            A,
            &["site1.customer1.web.service.consul. 0 IN A 10.2.4.1"],
        ),
        ok(
            "tags may precede it",
            "canary.site1.customer1.web.service.consul.",
            A,
            &["canary.site1.customer1.web.service.consul. 0 IN A 10.2.4.1"],
        ),
        ok(
            "a dotted name answers as itself: the longest known name wins over Consul's reading (service site2, tag web.customer1)",
            "web.customer1.site2.service.consul.",
            A,
            &["web.customer1.site2.service.consul. 0 IN A 10.2.4.2"],
        ),
        ok(
            "and in the app's DNS form, its path reversed",
            "site2.customer1.web.service.dc1.consul.",
            A,
            &["site2.customer1.web.service.dc1.consul. 0 IN A 10.2.4.2"],
        ),
        ok(
            "a tag before a dotted name",
            "v2.web.customer1.site2.service.consul.",
            A,
            &["v2.web.customer1.site2.service.consul. 0 IN A 10.2.4.2"],
        ),
        nxdomain(
            "a tag the dotted service does not carry",
            "v9.web.customer1.site2.service.consul.",
            A,
        ),
        with_extra(
            ok(
                "SRV of a dotted name",
                "web.customer1.site2.service.consul.",
                SRV,
                &["web.customer1.site2.service.consul. 0 IN SRV 1 1 80 0a020402.addr.dc1.consul."],
            ),
            &[
                "0a020402.addr.dc1.consul. 0 IN A 10.2.4.2",
                "n2.node.dc1.consul. 0 IN TXT rack=r1",
            ],
        ),
        ok(
            "the plain service is still itself",
            "site2.service.consul.",
            A,
            &["site2.service.consul. 0 IN A 10.2.9.2"],
        ),
        nxdomain(
            "no longer name known: Consul's reading (service site2, tag customer1, unknown)",
            "customer1.site2.service.consul.",
            A,
        ),
        ok(
            "Consul's reading of an ordinary tag is unchanged",
            "primary.db.service.consul.",
            A,
            &["primary.db.service.consul. 0 IN A 10.2.3.1"],
        ),
        nxdomain(
            "an app that does not exist",
            "site3.customer1.web.service.consul.",
            A,
        ),
    ]
}

#[tokio::test]
async fn marathon_app_ids_answer_as_dns_names() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        query(dns, "db.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 1
    })
    .await;
    check_cases(dns, &cases(), false).await;
    running.shutdown().await;
}
