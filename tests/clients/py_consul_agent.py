"""One step of an agent-API session, as an application registers itself with py-consul
(the Python client people use): driven step by step by tests/it/agent_clients.rs, which
checks DNS between steps. Usage: py_consul_agent.py HOST:PORT STEP.

Exits 0 when py-consul reports success, 1 otherwise (printing what it got)."""

import sys

import consul


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    step = sys.argv[2]
    c = consul.Consul(host=host, port=int(port))
    if step == "leader":
        leader = c.status.leader()
        print(leader)
        return 0 if leader else 1
    if step == "register":
        ok = c.agent.service.register(
            "shop",
            service_id="shop-1",
            address="10.2.5.1",
            port=8080,
            tags=["v1"],
            check=consul.Check.ttl("10s"),
        )
    elif step == "register-second":
        ok = c.agent.service.register(
            "shop",
            service_id="shop-2",
            address="10.2.5.2",
            port=8080,
            tags=["v2"],
            check=consul.Check.ttl("10s"),
        )
    elif step == "pass":
        ok = c.agent.check.ttl_pass("service:shop-1", notes="up")
    elif step == "pass-second":
        ok = c.agent.check.ttl_pass("service:shop-2")
    elif step == "fail":
        ok = c.agent.check.ttl_fail("service:shop-1", notes="down")
    elif step == "maintenance":
        ok = c.agent.service.maintenance("shop-2", True, reason="upgrade")
    elif step == "maintenance-off":
        ok = c.agent.service.maintenance("shop-2", False)
    elif step == "deregister":
        ok = c.agent.service.deregister("shop-1") and c.agent.service.deregister("shop-2")
    elif step == "list":
        services = c.agent.services()
        print(sorted(services))
        return 0 if "shop-1" in services else 1
    else:
        print(f"unknown step {step}")
        return 2
    print(ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
