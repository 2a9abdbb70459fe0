#!/usr/bin/env python3
"""consul-dns benchmarks side by side with NSD and Knot (issue 3). Run through bench/run,
which builds the binaries and checks the tools first; this file does the measuring and
writes bench/RESULTS.md. Python 3 standard library only.

Everything listens on 127.0.0.1, on free ports picked at start; configs, zones and state
live in a temporary directory; every process started here is stopped on exit, error or
Ctrl-C. Every load is bounded in time (dnsperf -l, -n) and sent to 127.0.0.1 only.
"""

import argparse
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
CONSUL_DNS = os.path.join(RELEASE, "consul-dns")
EMULATOR = os.path.join(RELEASE, "examples", "emulator")
BENCHTOOL = os.path.join(RELEASE, "examples", "benchtool")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")

SERVER_CPU = "0"  # servers (consul-dns: its whole tokio runtime) on core 0
LOAD_CPU = "1"  # dnsperf, the emulator and the helpers on core 1
SERVERS = ("consul-dns", "NSD", "Knot")
DNSPERF_LOAD = ["-c", "4", "-q", "100", "-t", "2"]  # -q 200 overflows default rcvbufs
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# processes


class Procs:
    """Every process started here, stopped (whole process group) on exit."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.live = []
        self.pidfile = os.path.join(tmp, "pids")

    def start(self, name, argv, cpu=None, stdout=None):
        if cpu is not None:
            argv = ["taskset", "-c", cpu] + argv
        out = open(os.path.join(self.tmp, f"{name}.out"), "ab")
        err = open(os.path.join(self.tmp, f"{name}.err"), "ab")
        p = subprocess.Popen(
            argv,
            stdout=stdout if stdout is not None else out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp,
            start_new_session=True,
        )
        p.bench_name = name
        p.bench_files = (out, err)
        self.live.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p, timeout=10):
        if p not in self.live:
            return
        self.live.remove(p)
        with open(self.pidfile, "w") as f:
            f.write("".join(f"{q.pid}\n" for q in self.live))
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        else:
            # The group may still hold children (NSD's server processes).
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for f in p.bench_files:
            f.close()

    def stop_all(self):
        for p in list(reversed(self.live)):
            try:
                self.stop(p, timeout=5)
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.bench_name}: {e}")


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1, not one a developer may use."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        if port not in (53, 8500, 8600):
            return port
    raise BenchError("no free port")


def proc_tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime + stime of pid and its descendants (all threads), in seconds."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def thread_cpu(pid):
    """utime + stime per thread of pid (and its descendants), in seconds, by thread id."""
    out = {}
    for p in proc_tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/stat") as f:
                    s = f.read()
                with open(f"/proc/{p}/task/{tid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2 :].split()
            out[(tid, comm)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def peak_memory_kb(pid):
    """VmHWM of a single process: the most of its memory resident at once so far."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def memory_kb(pid):
    """VmRSS of a single process; for a tree (NSD forks its server and xfrd processes),
    the sum of Pss, so shared pages are not counted twice."""
    tree = proc_tree(pid)
    if len(tree) == 1:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_busy_seconds(cpu):
    """Busy time of one CPU (everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = list(map(int, line.split()[1:]))
                return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return 0.0


def udp_errors():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Udp:")]
    row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return row.get("RcvbufErrors", 0)


def run(argv, timeout, cpu=None, check=True, stdout_path=None):
    """Runs `argv`; with `stdout_path`, its output goes to that file (read it afterwards)
    instead of a pipe this process would read while it runs."""
    if cpu is not None:
        argv = ["taskset", "-c", cpu] + argv
    if stdout_path:
        with open(stdout_path, "w") as out:
            r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        with open(stdout_path) as f:
            r.stdout = f.read()
    else:
        r = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


def benchtool(args, timeout):
    r = run([BENCHTOOL] + args, timeout=timeout, cpu=LOAD_CPU)
    return json.loads(r.stdout.strip().splitlines()[-1])


def path_delta(before, after):
    """Requests per path between two `/_emulator/stats` readings (non-zero only)."""
    b = before.get("by_path", {})
    return {k: v - b.get(k, 0) for k, v in after.get("by_path", {}).items() if v != b.get(k, 0)}


def http_json(port, path):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------------------------------
# zone transfers (§8)


def dig_xfr(port, qtype):
    """`dig AXFR` (or `IXFR=<serial>`) of consul. from consul-dns: wall time and dig's
    XFR size line."""
    t = time.time()
    out = os.path.join(tempfile.gettempdir(), f"consul-dns-bench-dig-{os.getpid()}.txt")
    r = run(["dig", "@127.0.0.1", "-p", str(port), "consul.", qtype, "+tries=1",
             "+time=600"], timeout=900, cpu=LOAD_CPU, stdout_path=out)
    os.unlink(out)
    took = time.time() - t
    m = re.search(r"XFR size: (\d+) records \(messages (\d+), bytes (\d+)\)", r.stdout)
    if not m:
        raise BenchError(f"dig {qtype}: no XFR size in {r.stdout[-500:]!r}")
    return {"seconds": took, "records": int(m.group(1)), "messages": int(m.group(2)),
            "bytes": int(m.group(3))}


def soa_serial(port):
    try:
        r = run(["dig", "@127.0.0.1", "-p", str(port), "consul.", "SOA", "+short", "+tries=1",
                 "+time=1"], timeout=10, check=False)
        return int(r.stdout.split()[2])
    except (IndexError, ValueError, BenchError):
        return None


def wait_for(check, timeout, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(every)
    return False


def prometheus(port):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def wait_zone_settled(http, quiet=5, timeout=900):
    """Seconds until the transferable zone's record count has not moved for `quiet` s."""
    t0 = time.time()
    last, since = None, time.time()
    while time.time() - t0 < timeout:
        n = prometheus(http).get("consul_dns_zone_records")
        if n and n == last:
            if time.time() - since >= quiet:
                return since - t0
        else:
            last, since = n, time.time()
        time.sleep(0.5)
    raise BenchError("the zone never settled")


def register_instance(emu, service, sid, address):
    import urllib.request

    body = json.dumps({"Node": "bench-ixfr", "Address": "10.250.255.1",
                       "Service": {"ID": sid, "Service": service, "Address": address,
                                   "Port": 80}}).encode()
    req = urllib.request.Request(f"{emu.url}/v1/catalog/register", data=body, method="PUT")
    urllib.request.urlopen(req, timeout=30).read()


def deregister_instance(emu, node, sid):
    import urllib.request

    body = json.dumps({"Node": node, "ServiceID": sid}).encode()
    req = urllib.request.Request(f"{emu.url}/v1/catalog/deregister", data=body, method="PUT")
    urllib.request.urlopen(req, timeout=30).read()


class Secondary:
    """NSD or Knot as a secondary of consul-dns (unpinned)."""

    def __init__(self, kind, procs, port, primary_port, tag):
        d = os.path.join(procs.tmp, f"{kind.lower()}-secondary-{tag}")
        os.makedirs(os.path.join(d, "db"), exist_ok=True)
        cfg = os.path.join(d, "conf")
        primary = f"127.0.0.1@{primary_port}"
        if kind == "NSD":
            text = NSD_SECONDARY.format(port=port, dir=d, primary=primary)
            argv = ["nsd", "-d", "-c", cfg]
        else:
            import grp
            import pwd

            user = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
            text = KNOT_SECONDARY.format(port=port, dir=d, primary=primary, user=user)
            argv = ["knotd", "-c", cfg]
        with open(cfg, "w") as f:
            f.write(text)
        self.procs = procs
        self.p = procs.start(f"{kind}-secondary-{tag}", argv)

    def stop(self):
        self.procs.stop(self.p)


NSD_SECONDARY = """server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{dir}"
  database: ""
  pidfile: "{dir}/nsd.pid"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  zonelistfile: "{dir}/zone.list"
  logfile: "{dir}/nsd.log"
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  # NSD reloads at most once a second after transfers by default: 0 applies each at once.
  xfrd-reload-timeout: 0
remote-control:
  control-enable: no
zone:
  name: "consul."
  zonefile: "{dir}/consul.zone"
  request-xfr: {primary} NOKEY
  allow-notify: 127.0.0.1 NOKEY
"""

KNOT_SECONDARY = """server:
    rundir: "{dir}"
    user: {user}
    pidfile: "{dir}/knot.pid"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{dir}/db"
remote:
  - id: primary
    address: {primary}
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: "{dir}"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: consul.
    master: primary
    acl: notify_from_primary
"""


# ---------------------------------------------------------------------------------------
# servers


class Emulator:
    def __init__(self, procs, shape, nodes=256):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        t = time.time()
        self.p = procs.start(
            f"emulator-{shape}",
            [EMULATOR, "--listen", f"127.0.0.1:{self.port}", "--synthetic", shape,
             "--nodes", str(nodes)],
            cpu=LOAD_CPU,
            stdout=subprocess.PIPE,
        )
        # The line is printed once the synthetic catalog is registered.
        line = self.p.stdout.readline().decode()
        if "listening" not in line:
            raise BenchError(f"emulator did not start: {line!r}; see {procs.tmp}")
        self.register_s = time.time() - t
        self.procs = procs

    def requests(self):
        return http_json(self.port, "/_emulator/stats")

    def stop(self):
        self.procs.stop(self.p)


# `max_watches` of the run that holds every one of the 100,000 services (its default).
HELD_WATCHES = 150


class Server:
    """One DNS server under test, pinned to SERVER_CPU."""

    def __init__(self, kind, procs, zone, emulator=None, max_watches=None, tag="",
                 blocking_wait=None, max_services=None, extra=(), workers=1,
                 cpu=SERVER_CPU, binary=None):
        self.kind, self.procs = kind, procs
        self.port = free_port()
        tmp = procs.tmp
        name = f"{kind}{tag}".replace(" ", "")
        if kind == "consul-dns":
            argv = [binary or CONSUL_DNS, "--consul-addr", emulator.url,
                    "--listen", f"127.0.0.1:{self.port}", "--datacenter", "dc1"]
            lines = []
            if max_watches:
                lines.append(f"max_watches = {max_watches}")
            if max_services:
                lines.append(f"max_services = {max_services}")
            if blocking_wait:
                lines.append(f'blocking_wait = "{blocking_wait}"')
            lines += list(extra)
            if cpu is None:
                # Unpinned: as many workers as asked (pinned, the default sees one CPU).
                lines.append(f"workers = {workers}")
            if lines:
                cfg = os.path.join(tmp, f"consul-dns{tag}.toml")
                with open(cfg, "w") as f:
                    f.write("\n".join(lines) + "\n")
                argv += ["--config", cfg]
        elif kind == "NSD":
            d = os.path.join(tmp, f"nsd{tag}")
            os.makedirs(d, exist_ok=True)
            cfg = os.path.join(d, "nsd.conf")
            with open(cfg, "w") as f:
                f.write(NSD_CONF.format(port=self.port, dir=d, zone=zone, server_count=workers,
                                        reuseport="yes" if workers > 1 else "no"))
            argv = ["nsd", "-d", "-c", cfg]
        elif kind == "Knot":
            d = os.path.join(tmp, f"knot{tag}")
            os.makedirs(d, exist_ok=True)
            cfg = os.path.join(d, "knot.conf")
            import grp
            import pwd

            user = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
            with open(cfg, "w") as f:
                f.write(KNOT_CONF.format(port=self.port, dir=d, zone=zone, user=user,
                                         udp_workers=workers))
            argv = ["knotd", "-c", cfg]
        else:
            raise ValueError(kind)
        self.spawn_unix_ms = time.time() * 1000
        self.p = procs.start(name, argv, cpu=cpu)
        self.addr = f"127.0.0.1:{self.port}"

    def wait_ready(self, name="svc-0.service.consul.", timeout=300):
        """Start to ready: the first NOERROR answer with records for a known name."""
        try:
            r = benchtool(["ready", "--dns", self.addr, "--name", name,
                           "--timeout-s", str(timeout)], timeout=timeout + 30)
        except BenchError as e:
            raise BenchError(f"{self.kind} not ready: {e}\n{self.stderr_tail()}")
        self.ready_ms = r["ready_unix_ms"] - self.spawn_unix_ms
        return self.ready_ms

    def stderr_tail(self):
        try:
            with open(os.path.join(self.procs.tmp, f"{self.p.bench_name}.err")) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def cpu(self):
        return cpu_seconds(self.p.pid)

    def memory_kb(self):
        return memory_kb(self.p.pid)

    def peak_memory_kb(self):
        return peak_memory_kb(self.p.pid)

    def fd_count(self):
        try:
            return len(os.listdir(f"/proc/{self.p.pid}/fd"))
        except OSError:
            return None

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        self.procs.stop(self.p)


NSD_CONF = """server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  server-count: {server_count}
  reuseport: {reuseport}
  username: ""
  chroot: ""
  zonesdir: "{dir}"
  database: ""
  pidfile: "{dir}/nsd.pid"
  xfrdfile: "{dir}/xfrd.state"
  zonelistfile: "{dir}/zone.list"
  logfile: "{dir}/nsd.log"
  hide-version: yes
  tcp-count: 256
  # Debian's NSD limits responses per client (RRL): off to benchmark.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "consul."
  zonefile: "{zone}"
"""

KNOT_CONF = """server:
    rundir: "{dir}"
    user: {user}
    pidfile: "{dir}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: {udp_workers}
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: notice
database:
    storage: "{dir}/db"
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: consul.
    file: "{zone}"
"""


# ---------------------------------------------------------------------------------------
# query files and dnsperf


def write_queries(path, n, services, mix, seed, unknown_prefix="nosvc-", distinct=False):
    """n lines; mix = (A%, SRV%, unknown%) of `svc-<i>.service.consul` names."""
    r = random.Random(seed)
    a, srv, _ = mix
    with open(path, "w") as f:
        for k in range(n):
            x = k % 100
            if x < a:
                f.write(f"svc-{r.randrange(services)}.service.consul A\n")
            elif x < a + srv:
                f.write(f"svc-{r.randrange(services)}.service.consul SRV\n")
            else:
                u = k if distinct else r.randrange(1_000_000)
                f.write(f"{unknown_prefix}{u}.service.consul A\n")
    return path


def parse_dnsperf(text):
    def num(pattern, cast=float, default=None):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else default

    out = {
        "sent": num(r"Queries sent:\s+(\d+)", int, 0),
        "completed": num(r"Queries completed:\s+(\d+)", int, 0),
        "lost": num(r"Queries lost:\s+(\d+)", int, 0),
        "qps": num(r"Queries per second:\s+([\d.]+)", float, 0.0),
        "avg_latency_ms": num(r"Average Latency \(s\):\s+([\d.]+)", float, 0.0) * 1000,
        "runtime_s": num(r"Run time \(s\):\s+([\d.]+)", float, 0.0),
    }
    m = re.search(r"Response codes:\s+(.*)", text)
    out["rcodes"] = m.group(1).strip() if m else ""
    return out


def dnsperf(server, qfile, seconds, tcp=False, qps=None, verbose=False, once=False):
    """One dnsperf run against `server`, with the server's CPU time around it."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", qfile, "-e"]
    argv += DNSPERF_LOAD
    argv += ["-l", str(seconds)]
    if once:
        argv += ["-n", "1"]
    if tcp:
        argv += ["-m", "tcp"]
    if qps:
        argv += ["-Q", str(qps)]
    if verbose:
        argv += ["-v"]
    rcv0, cpu0, core0 = udp_errors(), server.cpu(), cpu_busy_seconds(SERVER_CPU)
    # With -v, dnsperf prints a line per query (~10 MB a run): to a file, so that this
    # process does not read and decode it while the server is being measured.
    out = os.path.join(server.procs.tmp, "dnsperf-verbose.out") if verbose else None
    r = run(argv, timeout=seconds + 60, cpu=LOAD_CPU, stdout_path=out)
    cpu1, rcv1, core1 = server.cpu(), udp_errors(), cpu_busy_seconds(SERVER_CPU)
    res = parse_dnsperf(r.stdout)
    res["server_cpu_s"] = cpu1 - cpu0
    # Time core 0 spent on anything but the server under test (other processes, interrupts):
    # the noise indicator of the run.
    res["core0_others_s"] = max(0.0, (core1 - core0) - res["server_cpu_s"])
    res["rcvbuf_errors"] = rcv1 - rcv0
    res["cpu_per_100k"] = (
        res["server_cpu_s"] / res["completed"] * 100_000 if res["completed"] else float("nan")
    )
    if verbose:
        lat = sorted(
            float(l.rsplit(None, 1)[1]) * 1000
            for l in r.stdout.splitlines()
            if l.startswith("> ")
        )
        res["latencies"] = len(lat)
        res["p50_ms"] = pct(lat, 50)
        res["p99_ms"] = pct(lat, 99)
        res["p999_ms"] = pct(lat, 99.9)
        res["max_ms"] = lat[-1] if lat else float("nan")
    if not server.alive():
        raise BenchError(f"{server.kind} died during dnsperf:\n{server.stderr_tail()}")
    return res


def dnsperf_unpinned(server, qfile, seconds, clients=8):
    """dnsperf with `clients` sockets, nothing pinned: qps, the server's CPU per 100k
    queries, and its threads' shares of that CPU."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", qfile, "-e",
            "-c", str(clients), "-q", "100", "-t", "2", "-l", str(seconds)]
    threads0, cpu0, rcv0 = thread_cpu(server.p.pid), server.cpu(), udp_errors()
    r = run(argv, timeout=seconds + 60)
    threads1, cpu1, rcv1 = thread_cpu(server.p.pid), server.cpu(), udp_errors()
    res = parse_dnsperf(r.stdout)
    res["rcvbuf_errors"] = rcv1 - rcv0
    res["server_cpu_s"] = cpu1 - cpu0
    res["cpu_per_100k"] = (
        res["server_cpu_s"] / res["completed"] * 100_000 if res["completed"] else float("nan"))
    used = {k: threads1[k] - threads0.get(k, 0.0) for k in threads1}
    total = sum(used.values()) or float("nan")
    res["threads"] = sorted(([k[1], v / total] for k, v in used.items() if v / total >= 0.01),
                            key=lambda x: -x[1])
    return res


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(1, int(-(-p * len(sorted_values) // 100)))
    return sorted_values[min(k, len(sorted_values)) - 1]


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------
# answers must be the same


def dig(server, name, qtype):
    r = run(["dig", f"@127.0.0.1", "-p", str(server.port), name, qtype, "+norec", "+tries=1",
             "+time=3", "+noall", "+comments", "+answer", "+edns=0", "+bufsize=1232"],
            timeout=20, check=False)
    status = None
    records = []
    for line in r.stdout.splitlines():
        m = re.search(r"status: (\w+)", line)
        if m:
            status = m.group(1)
        if line and not line.startswith(";"):
            records.append(" ".join(line.lower().split()))
    if status is None:
        raise BenchError(f"dig {name} {qtype} @{server.kind}: no answer\n{r.stdout}{r.stderr}")
    return status, sorted(records)


def check_same_answers(servers, services):
    names = []
    for i in sorted({0, 1, services // 2, services - 1}):
        names += [(f"svc-{i}.service.consul", "A"), (f"svc-{i}.service.consul", "SRV")]
    names += [("nosvc-1.service.consul", "A"), ("consul", "SOA")]
    checked = 0
    for name, qtype in names:
        got = {s.kind: dig(s, name, qtype) for s in servers}
        ref = got[servers[0].kind]
        for kind, ans in got.items():
            a, b = ans, ref
            if qtype == "SOA":  # the serial differs (consul-dns: the Consul index)
                a = (a[0], [re.sub(r"soa (\S+) (\S+) \d+", r"soa \1 \2 N", x) for x in a[1]])
                b = (b[0], [re.sub(r"soa (\S+) (\S+) \d+", r"soa \1 \2 N", x) for x in b[1]])
            if a != b:
                raise BenchError(
                    f"answers differ for {name} {qtype}:\n  {servers[0].kind}: {ref}\n"
                    f"  {kind}: {ans}"
                )
        checked += 1
    return checked


# ---------------------------------------------------------------------------------------
# the measurements


QTYPE_CODES = {"A": 1, "NS": 2, "SOA": 6, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255}
AMPLIFICATION_SHAPES = [
    ("svc-0.service.consul", "A", None), ("svc-0.service.consul", "A", 512),
    ("svc-0.service.consul", "A", 1232), ("svc-0.service.consul", "A", 4096),
    ("svc-0.service.consul", "AAAA", 1232), ("svc-0.service.consul", "ANY", 1232),
    ("svc-0.service.consul", "SRV", 1232), ("svc-0.service.consul", "SRV", 4096),
    ("_svc-0._tcp.service.consul", "SRV", 1232), ("consul", "SOA", 1232),
    ("consul", "NS", 1232), ("nosvc-1.service.consul", "A", 1232),
    ("consul-dev.node.dc1.consul", "A", 1232), ("consul-dev.node.dc1.consul", "ANY", 1232),
]


def udp_query(name, qtype, payload):
    """A query in wire format: RD clear, EDNS with `payload` unless None."""
    import struct
    q = struct.pack(">HHHHHH", random.randrange(65536), 0, 1, 0, 0, 1 if payload else 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", QTYPE_CODES[qtype], 1)
    if payload:
        q += b"\0" + struct.pack(">HHIH", 41, payload, 0, 0)
    return q


def udp_exchange(port, q):
    """The size of the UDP reply to `q`, and whether TC was set (None: no reply in 2 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(q, ("127.0.0.1", port))
        try:
            reply = sock.recv(65535)
        except socket.timeout:
            return None
    return {"bytes": len(reply), "tc": bool(reply[2] & 0x02)}


class Bench:
    def __init__(self, args, procs):
        self.a = args
        self.procs = procs
        self.tmp = procs.tmp
        self.quick = args.quick
        self.reps = args.reps or (1 if self.quick else 3)
        self.secs = args.seconds or (5 if self.quick else 10)
        self.r = {"notes": []}

    def zone(self, shape):
        path = os.path.join(self.tmp, f"consul-{shape}.zone")
        if not os.path.exists(path):
            run([EMULATOR, "--synthetic", shape, "--write-zone", path, "--zone-only"], timeout=600)
        return path

    # §1–§4 on the 1000 × 3 catalog
    def main_catalog(self):
        shape, services = "1000x3", 1000
        log(f"catalog {shape}: emulator, consul-dns, NSD, Knot")
        emu = Emulator(self.procs, shape)
        zone = self.zone(shape)
        # The longest blocking wait (10 min): the watches' blocking queries then do not
        # expire and get renewed during the measured window, so every request the emulator
        # sees there was caused by a DNS query.
        # Every service asked for holds a watch, as with an agent whose
        # limits.http_max_conns_per_client was raised to match (the default max_watches is 150).
        cd = Server("consul-dns", self.procs, zone, emulator=emu, blocking_wait="10m",
                    max_watches=services + 1000)
        nsd = Server("NSD", self.procs, zone)
        knot = Server("Knot", self.procs, zone)
        servers = [cd, nsd, knot]
        for s in servers:
            s.wait_ready()
        self.r["ready_main"] = {s.kind: s.ready_ms for s in servers}

        # §4c: the cold stampede, before anything but svc-0 was asked.
        log("stampede: 1000 concurrent queries of a cold service")
        before = emu.requests()
        st = benchtool(["stampede", "--dns", cd.addr, "--name", "svc-500.service.consul",
                        "--concurrency", "1000"], timeout=120)
        time.sleep(0.3)
        after = emu.requests()
        path = "/v1/health/service/svc-500"
        st["consul_requests"] = after["requests"] - before["requests"]
        st["consul_requests_service"] = after["by_path"].get(path, 0) - before["by_path"].get(path, 0)
        st["by_path"] = path_delta(before, after)
        self.r["stampede"] = st

        log("warming consul-dns (every service asked once)")
        self.r["warm_main"] = benchtool(["warm", "--dns", cd.addr, "--count", str(services)],
                                        timeout=600)
        self.r["same_answers"] = check_same_answers(servers, services)
        log(f"same answers from the three servers ({self.r['same_answers']} questions)")

        qdir = self.tmp
        files = {
            "mix": write_queries(os.path.join(qdir, "mix.txt"), 100_000, services, (70, 20, 10), 1),
            "hits": write_queries(os.path.join(qdir, "hits.txt"), 100_000, services, (78, 22, 0), 2),
            "unknown": write_queries(os.path.join(qdir, "unknown.txt"), 100_000, services, (0, 0, 100), 3),
        }
        flood = write_queries(os.path.join(qdir, "flood.txt"), 100_000, services, (0, 0, 100), 4,
                              unknown_prefix="flood-", distinct=True)

        # Warm-up runs, not recorded.
        for s in servers:
            dnsperf(s, files["mix"], 2)

        cd_queries, stats0 = 0, emu.requests()
        workloads = [("mix", files["mix"], False), ("hits", files["hits"], False),
                     ("unknown", files["unknown"], False), ("mix-tcp", files["mix"], True)]
        tp = {w: {s.kind: [] for s in servers} for w, _, _ in workloads}
        for w, qf, tcp in workloads:
            for rep in range(self.reps):
                for s in servers:
                    log(f"throughput {w} rep {rep + 1}/{self.reps}: {s.kind}")
                    res = dnsperf(s, qf, self.secs, tcp=tcp)
                    tp[w][s.kind].append(res)
                    if s is cd:
                        cd_queries += res["completed"]
        self.r["throughput"] = tp

        lat = {s.kind: [] for s in servers}
        for rep in range(self.reps):
            for s in servers:
                log(f"latency at 20k qps rep {rep + 1}/{self.reps}: {s.kind}")
                res = dnsperf(s, files["mix"], self.secs, qps=20000, verbose=True)
                lat[s.kind].append(res)
                if s is cd:
                    cd_queries += res["completed"]
        self.r["latency"] = lat
        stats1 = emu.requests()
        self.r["steady"] = {"queries": cd_queries,
                            "consul_requests": stats1["requests"] - stats0["requests"],
                            "by_path": path_delta(stats0, stats1)}

        log("unknown-name flood: 100k distinct unknown names")
        before = emu.requests()
        res = dnsperf(cd, flood, 60, once=True)
        after = emu.requests()
        self.r["flood"] = {"queries": res["completed"], "qps": res["qps"],
                           "consul_requests": after["requests"] - before["requests"],
                           "by_path": path_delta(before, after)}

        log("prepared-query name flood: 100k distinct .query. names")
        qflood = os.path.join(qdir, "query-flood.txt")
        r = random.Random(5)
        with open(qflood, "w") as f:
            for k in range(100_000):
                f.write(f"pq-{k}-{r.getrandbits(32):08x}.query.consul A\n")
        rss0, before = cd.memory_kb(), emu.requests()
        res = dnsperf(cd, qflood, 60, once=True)
        time.sleep(1)
        after, rss1 = emu.requests(), cd.memory_kb()
        self.r["query_flood"] = {"queries": res["completed"], "qps": res["qps"],
                                 "consul_requests": after["requests"] - before["requests"],
                                 "by_path": path_delta(before, after),
                                 "rss_before_kb": rss0, "rss_after_kb": rss1}

        if self.a.perf:
            self.profile(cd, files["mix"])

        log("freshness with the 1000 services watched")
        self.r["freshness_loaded"] = benchtool(
            ["freshness", "--consul", emu.url, "--dns", cd.addr, "--changes", str(self.a.changes)],
            timeout=600)
        for s in servers:
            s.stop()
        emu.stop()

        # §3 on a fresh pair: only the changed services are watched.
        log("freshness on a fresh emulator and consul-dns")
        emu = Emulator(self.procs, shape)
        cd = Server("consul-dns", self.procs, zone, emulator=emu, tag="-fresh",
                    max_watches=services + 1000)
        cd.wait_ready()
        self.r["freshness"] = benchtool(
            ["freshness", "--consul", emu.url, "--dns", cd.addr, "--changes", str(self.a.changes)],
            timeout=600)
        cd.stop()
        emu.stop()

    def profile(self, cd, qfile):
        if not shutil.which("perf"):
            self.r["notes"].append("perf not installed (Debian package linux-perf): no profile")
            return
        log("perf profile of consul-dns under the mix")
        data = os.path.join(self.tmp, "perf.data")
        load = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(cd.port), "-d",
             qfile, "-e", "-l", "8"] + DNSPERF_LOAD,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(1)
            r = run(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(cd.p.pid),
                     "-o", data, "--", "sleep", "5"], timeout=60, check=False)
            if r.returncode != 0:
                self.r["notes"].append(f"perf record failed: {r.stderr.strip()[-200:]}")
                return
        finally:
            load.wait(30)
        rep = run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "symbol",
                   "-g", "none", "--percent-limit", "0.7"], timeout=120, check=False)
        lines = [re.sub(r"[\s-]+$", "", l) for l in rep.stdout.splitlines()
                 if re.match(r"^\s+\d+\.\d+%", l)]
        self.r["profile"] = lines[:30]

    # §5
    def cores(self):
        """Every core (issue 19), nothing pinned: consul-dns with 1 and N (--workers, 2)
        workers, NSD with server-count N and reuseport, Knot with N UDP workers, on the 1000 x 3 catalog under
        dnsperf with 8 sockets; then 1,000 simultaneous TCP connections, one query each."""
        shape, services = "1000x3", 1000
        log("every core: consul-dns 1 and 2 workers, NSD and Knot with 2, unpinned")
        emu = Emulator(self.procs, shape)
        zone = self.zone(shape)
        n = self.a.workers
        servers = [
            ("consul-dns, 1 worker", Server("consul-dns", self.procs, zone, emulator=emu,
                                            tag="-w1", cpu=None, workers=1,
                                            max_watches=services + 1000)),
            (f"consul-dns, {n} workers", Server("consul-dns", self.procs, zone, emulator=emu,
                                                tag=f"-w{n}", cpu=None, workers=n,
                                                max_watches=services + 1000)),
            (f"NSD, server-count {n}", Server("NSD", self.procs, zone, tag=f"-w{n}", cpu=None,
                                              workers=n)),
            (f"Knot, udp-workers {n}", Server("Knot", self.procs, zone, tag=f"-w{n}", cpu=None,
                                              workers=n)),
        ]
        for _, s in servers:
            s.wait_ready()
        for _, s in servers[:2]:
            benchtool(["warm", "--dns", s.addr, "--count", str(services)], timeout=600)
        qf = write_queries(os.path.join(self.tmp, "mix-cores.txt"), 100_000, services,
                           (70, 20, 10), 1)
        runs = {label: [] for label, _ in servers}
        for rep in range(self.reps):
            for label, s in servers:
                log(f"every core rep {rep + 1}/{self.reps}: {label}")
                runs[label].append(dnsperf_unpinned(s, qf, self.secs))
        burst = {}
        for label, s in servers[1:]:
            log(f"TCP burst: 1,000 connections at once: {label}")
            burst[label] = benchtool(["tcp-burst", "--dns", s.addr, "--name",
                                      "svc-0.service.consul.", "--connections", "1000"],
                                     timeout=120)
            time.sleep(1)
        for _, s in servers:
            s.stop()
        emu.stop()
        self.r["cores"] = {"runs": runs, "burst": burst}

    def query_log(self):
        """The query log's cost (issue 21): consul-dns with `query_log` off and on (every
        query, 1 in 1, its stdout a file), pinned as in section 1, side by side under the
        mix of the 1000 x 3 catalog."""
        shape, services = "1000x3", 1000
        log("query log: consul-dns with query_log off and on")
        emu = Emulator(self.procs, shape)
        zone = self.zone(shape)
        servers = [
            ("query log off", Server("consul-dns", self.procs, zone, emulator=emu,
                                     tag="-qlog-off", max_watches=services + 1000)),
            ("query log on, every query", Server("consul-dns", self.procs, zone, emulator=emu,
                                                 tag="-qlog-on", max_watches=services + 1000,
                                                 extra=["query_log = true"])),
        ]
        if self.a.baseline:
            servers.insert(0, (f"baseline `{self.a.baseline}`, no query log option",
                               Server("consul-dns", self.procs, zone, emulator=emu,
                                      tag="-qlog-base", max_watches=services + 1000,
                                      binary=self.a.baseline)))
        for _, s in servers:
            s.wait_ready()
            benchtool(["warm", "--dns", s.addr, "--count", str(services)], timeout=600)
        qf = write_queries(os.path.join(self.tmp, "mix-qlog.txt"), 100_000, services,
                           (70, 20, 10), 1)
        for _, s in servers:
            dnsperf(s, qf, 2)
        runs = {label: [] for label, _ in servers}
        for rep in range(self.reps):
            for label, s in servers:
                log(f"query log rep {rep + 1}/{self.reps}: {label}")
                runs[label].append(dnsperf(s, qf, self.secs))
        lines = {}
        for label, s in servers:
            try:
                with open(os.path.join(self.procs.tmp, f"{s.p.bench_name}.out"), "rb") as f:
                    lines[label] = sum(1 for _ in f)
            except OSError:
                lines[label] = None
            s.stop()
        emu.stop()
        self.r["query_log"] = {"runs": runs, "lines": lines}

    def amplification(self):
        """Bytes out per byte in over UDP, per query shape: consul-dns to a client in
        allow_recursion (trusted: Consul's partial answers) and outside it (untrusted: at
        most 4x, all or nothing), NSD and Knot, on a catalog of 10 services x 60 instances."""
        shape = "10x60"
        log(f"amplification {shape}: consul-dns trusted and untrusted, NSD, Knot")
        emu = Emulator(self.procs, shape)
        zone = self.zone(shape)
        servers = [
            Server("consul-dns", self.procs, zone, emulator=emu, tag="-trusted"),
            Server("consul-dns", self.procs, zone, emulator=emu, tag="-untrusted",
                   extra=['allow_recursion = ["10.99.0.0/16"]']),
            Server("NSD", self.procs, zone, tag="-amp"),
            Server("Knot", self.procs, zone, tag="-amp"),
        ]
        labels = ["consul-dns, trusted", "consul-dns, untrusted", "NSD", "Knot"]
        for s in servers:
            # 60 addresses do not fit in 4x a query: a node's one address does.
            s.wait_ready(name="consul-dev.node.dc1.consul.")
        rows = []
        for name, qtype, payload in AMPLIFICATION_SHAPES:
            q = udp_query(name, qtype, payload)
            row = {"name": name, "qtype": qtype, "payload": payload, "query": len(q)}
            for label, s in zip(labels, servers):
                row[label] = udp_exchange(s.port, q)
            rows.append(row)
        for s in servers:
            s.stop()
        emu.stop()
        self.r["amplification"] = {"labels": labels, "rows": rows}

    def scale(self):
        shapes = [("1000x1", 1000, True), ("1000x10", 1000, True)]
        if not self.quick:
            shapes += [("10000x10", 10000, True), ("100000x3", 100000, False)]
        rows = []
        for shape, services, answer_all in shapes:
            log(f"scale {shape}")
            emu = Emulator(self.procs, shape)
            zone = self.zone(shape)
            row = {"shape": shape, "services": services,
                   "instances": services * int(shape.split("x")[1]),
                   "emulator_register_s": emu.register_s}
            # At most 1,000 services hold a watch (a blocking query is a connection); every
            # service asked stays in memory, the others re-read on a timer. Except at first
            # at 100k x 3: there the default `max_services` (10,000) keeps the last asked.
            watches = 1000
            held = None if shape == "100000x3" else services + 1000
            cd = Server("consul-dns", self.procs, zone, emulator=emu, max_watches=watches,
                        max_services=held, tag=f"-{shape}")
            row["cd_ready_ms"] = cd.wait_ready()
            time.sleep(1)
            row["cd_rss_sync_kb"] = cd.memory_kb()
            if answer_all:
                w = benchtool(["warm", "--dns", cd.addr, "--count", str(services),
                               "--concurrency", "32"], timeout=1200)
                row["cd_warm_s"] = w["seconds"]
                time.sleep(1)
                row["cd_rss_all_kb"] = cd.memory_kb()
                row["answered"] = services
            if shape == "100000x3":
                # The mix's 1,000 services first (watched), the throughput on them, then
                # every one of the 100,000 asked once.
                w = benchtool(["warm", "--dns", cd.addr, "--count", "1000", "--concurrency", "32"],
                              timeout=1200)
                row["cd_warm_s"] = w["seconds"]
                time.sleep(1)
                row["cd_rss_all_kb"] = cd.memory_kb()
                row["answered"] = 1000
                self.scale_throughput(cd, zone, row)
                log("scale 100000x3: asking every service once")
                self.ask_every_service(cd, services, row, "every")
                cd.stop()
                # The same, every service kept in memory (the records Knot holds), as one
                # would run it: the default `max_watches` (Consul accepts 200 connections per
                # client by default), the others re-read every `watch_poll_interval`.
                cd = Server("consul-dns", self.procs, zone, emulator=emu,
                            max_watches=HELD_WATCHES, max_services=services,
                            tag=f"-{shape}-held")
                cd.wait_ready()
                log("scale 100000x3: every service asked once and held in memory")
                self.ask_every_service(cd, services, row, "held")
            cd.stop()
            for kind, key in (("Knot", "knot"), ("NSD", "nsd")):
                s = Server(kind, self.procs, zone, tag=f"-{shape}")
                row[f"{key}_ready_ms"] = s.wait_ready(timeout=600)
                time.sleep(1)
                row[f"{key}_mem_kb"] = s.memory_kb()
                s.stop()
            emu.stop()
            rows.append(row)
            log(f"scale {shape}: {row}")
        self.r["scale"] = rows

    def transfers(self):
        """§8: consul-dns as the primary of NSD and Knot: zone size, AXFR time, the first
        transfer, IXFR bytes of a one-instance change, freshness at the secondaries."""
        shapes = ["1000x3"] if self.quick else ["1000x3", "100000x3"]
        rows = []
        for shape in shapes:
            log(f"transfers {shape}")
            emu = Emulator(self.procs, shape)
            zone = self.zone(shape)
            nsd_port, knot_port, http = free_port(), free_port(), free_port()
            extra = ['allow_transfer = ["127.0.0.1/32"]',
                     f'notify = ["127.0.0.1:{nsd_port}", "127.0.0.1:{knot_port}"]',
                     f'http_addr = "127.0.0.1:{http}"']
            services = int(shape.split("x")[0])
            # Every service watched at 1,000 x 3, as in §3 (a polled one changes in DNS only
            # every `watch_poll_interval`); at 100,000 the default `max_watches`.
            watches = services + 1000 if services <= 1000 else None
            cd = Server("consul-dns", self.procs, zone, emulator=emu, tag=f"-xfr-{shape}",
                        extra=extra, max_watches=watches)
            cd.wait_ready()
            row = {"shape": shape}
            row["zone_ready_s"] = wait_zone_settled(http)
            row["cd_rss_kb"] = cd.memory_kb()
            row["cd_peak_before_axfr_kb"] = cd.peak_memory_kb()
            axfrs = [dig_xfr(cd.port, "AXFR") for _ in range(3)]
            row["cd_peak_after_axfr_kb"] = cd.peak_memory_kb()
            row["axfr_s"] = median([a["seconds"] for a in axfrs])
            row.update({k: axfrs[-1][k] for k in ("records", "messages", "bytes")})
            secondaries = {}
            for kind, port in (("NSD", nsd_port), ("Knot", knot_port)):
                t = time.time()
                secondaries[kind] = Secondary(kind, self.procs, port, cd.port, shape)
                serial = soa_serial(cd.port)
                waited = wait_for(lambda: soa_serial(port) == serial, timeout=900)
                if not waited:
                    raise BenchError(f"{kind} never transferred the zone at {shape}")
                row[f"{kind.lower()}_first_transfer_s"] = time.time() - t
                row[f"{kind.lower()}_rss_kb"] = memory_kb(secondaries[kind].p.pid)
            before = soa_serial(cd.port)
            register_instance(emu, "svc-0", "svc-0-ixfr", "10.250.0.1")
            if not wait_for(lambda: soa_serial(cd.port) != before, timeout=60):
                raise BenchError("the serial did not move with a registration")
            ixfr = dig_xfr(cd.port, f"IXFR={before}")
            row["ixfr_records"], row["ixfr_bytes"] = ixfr["records"], ixfr["bytes"]
            for kind, port in (("NSD", nsd_port), ("Knot", knot_port)):
                if watches is None:
                    break
                # Each run starts from 2 passing instances per service: the instance the
                # previous run left registered goes.
                for n in range(20):
                    deregister_instance(emu, f"fresh-node-{n}", f"fresh-{n}-new")
                # The secondary caught up with the changes made so far (the other's run).
                if not wait_for(lambda: soa_serial(port) == soa_serial(cd.port), timeout=60):
                    raise BenchError(f"{kind} is behind the primary before its freshness run")
                log(f"transfers {shape}: freshness at {kind}")
                row[f"{kind.lower()}_freshness"] = benchtool(
                    ["freshness", "--consul", emu.url, "--dns", f"127.0.0.1:{port}",
                     "--changes", str(self.a.changes)], timeout=1800)
            metrics = prometheus(http)
            row["journal_bytes"] = metrics.get("consul_dns_transfer_journal_bytes")
            row["transfers_incremental"] = metrics.get("consul_dns_transfers_incremental_total")
            row["transfers_full"] = metrics.get("consul_dns_transfers_full_total")
            row["cd_rss_end_kb"] = cd.memory_kb()
            for s in secondaries.values():
                s.stop()
            cd.stop()
            emu.stop()
            rows.append(row)
            log(f"transfers {shape}: {row}")
        self.r["transfers"] = rows

    @staticmethod
    def ask_every_service(cd, services, row, key):
        """Asks svc-0..svc-<services-1> once; records the time, memory and descriptors."""
        w = benchtool(["warm", "--dns", cd.addr, "--count", str(services),
                       "--concurrency", "32"], timeout=1200)
        row[f"cd_warm_{key}_s"] = w["seconds"]
        time.sleep(1)
        row[f"cd_rss_{key}_kb"] = cd.memory_kb()
        row[f"fds_{key}"] = cd.fd_count()

    def scale_throughput(self, cd, zone, row):
        """Throughput on 100k services × 3 (1,000 of them asked for), against the 1k figure."""
        qf = write_queries(os.path.join(self.tmp, "mix-scale.txt"), 100_000, 1000, (70, 20, 10), 1)
        others = [Server(k, self.procs, zone, tag="-scale") for k in ("NSD", "Knot")]
        for s in others:
            s.wait_ready(timeout=600)
        servers = [cd] + others
        for s in servers:
            dnsperf(s, qf, 2)
        res = {s.kind: [] for s in servers}
        for rep in range(self.reps):
            for s in servers:
                log(f"throughput at 100k services rep {rep + 1}/{self.reps}: {s.kind}")
                res[s.kind].append(dnsperf(s, qf, self.secs))
        row["throughput"] = res
        for s in others:
            s.stop()


# ---------------------------------------------------------------------------------------
# the report


def fmt(x, digits=0):
    if x is None or x != x:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return a / b if b else float("nan")


def tool_versions():
    def first(argv, pattern=None):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = r.stdout + r.stderr
            if pattern:
                m = re.search(pattern, text)
                return m.group(0) if m else "?"
            return text.strip().splitlines()[0]
        except Exception:
            return "?"

    return {
        "dnsperf": first(["dnsperf", "-h"], r"Version [\d.]+"),
        "NSD": first(["nsd", "-v"], r"NSD version [\d.]+"),
        "Knot": first(["knotd", "--version"], r"version [\d.]+"),
        "dig": first(["dig", "-v"]),
        "rustc": first(["rustc", "--version"]),
        "perf": first(["perf", "--version"]) if shutil.which("perf") else "not installed",
    }


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024 + 1} GiB"
    return {"cpu": model, "cores": os.cpu_count(), "kernel": os.uname().release, "memory": mem,
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def git_commit():
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                           capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + (" (with uncommitted changes)" if dirty else "")
    except Exception:
        return "?"


def summary_row(runs):
    return {
        "qps": median([r["qps"] for r in runs]),
        "cpu": median([r["cpu_per_100k"] for r in runs]),
        "lost": sum(r["lost"] for r in runs),
        "others": median([r.get("core0_others_s", float("nan")) for r in runs]),
        "rcvbuf": sum(r["rcvbuf_errors"] for r in runs),
    }


def report(b, started, argv, elapsed):
    r = b.r
    m = machine_info
    out = []
    w = out.append
    mode = (f"quick: {b.reps} repetition(s), {b.secs} s runs, scale at 1k and 10k instances only, "
            "no profile" if b.quick else f"full: {b.reps} interleaved repetitions, {b.secs} s runs")
    w("# consul-dns benchmark results")
    w("")
    w(f"- command: `{argv}` ({mode}; took {elapsed / 60:.1f} min)")
    w(f"- date: {started}")
    w(f"- commit: {git_commit()}")
    w(f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}; "
      f"load average at start {' '.join(m['loadavg'])}, at the end "
      f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    w("- tools: " + ", ".join(f"{k} {v}" if not v.startswith(k) else v
                              for k, v in tool_versions().items()))
    w(f"- setup: servers pinned to core {SERVER_CPU} (`taskset`; NSD `server-count: 1`, Knot "
      f"1 UDP and 1 TCP worker, consul-dns's tokio runtime then has one worker), dnsperf, the "
      f"emulator and the helpers on core {LOAD_CPU}; dnsperf `{' '.join(DNSPERF_LOAD)} -e` "
      "(EDNS, so no answer is cut); TTL 0 everywhere; medians of the repetitions, run "
      "interleaved (consul-dns, NSD, Knot, consul-dns, …)")
    w("")

    tp = r.get("throughput")
    if tp:
        w(f"## 1. Throughput, 1,000 services × 3 instances (saturation, {b.secs} s runs)")
        w("")
        w("CPU = the server's own CPU seconds (utime+stime of all its threads/processes) per "
          "100k answered queries. Ratios > 1 mean consul-dns answers more per second; CPU "
          "ratios > 1 mean it spends more per query.")
        w("")
        w("| workload | consul-dns qps | NSD qps | Knot qps | qps ÷ NSD | qps ÷ Knot | "
          "consul-dns CPU | NSD CPU | Knot CPU | CPU ÷ NSD | CPU ÷ Knot | lost (c/N/K) | "
          "core 0 busy with others s (c/N/K) |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        names = {"mix": "mix UDP (70% A, 20% SRV, 10% unknown)", "hits": "hits only (A, SRV)",
                 "unknown": "unknown names only", "mix-tcp": "mix over TCP"}
        for wl, by in tp.items():
            c, n, k = (summary_row(by[s]) for s in SERVERS)
            w(f"| {names[wl]} | {fmt(c['qps'])} | {fmt(n['qps'])} | {fmt(k['qps'])} | "
              f"{fmt(ratio(c['qps'], n['qps']), 2)} | {fmt(ratio(c['qps'], k['qps']), 2)} | "
              f"{fmt(c['cpu'], 3)} | {fmt(n['cpu'], 3)} | {fmt(k['cpu'], 3)} | "
              f"{fmt(ratio(c['cpu'], n['cpu']), 2)} | {fmt(ratio(c['cpu'], k['cpu']), 2)} | "
              f"{c['lost']}/{n['lost']}/{k['lost']} | "
              f"{fmt(c['others'], 1)}/{fmt(n['others'], 1)}/{fmt(k['others'], 1)} |")
        w("")

    lat = r.get("latency")
    if lat:
        w(f"## 2. Latency at a fixed 20,000 qps (mix, {b.secs} s, dnsperf `-Q 20000 -v`)")
        w("")
        w("| server | p50 ms | p99 ms | p99.9 ms | max ms | lost |")
        w("|---|---:|---:|---:|---:|---:|")
        for s in SERVERS:
            runs = lat[s]
            w(f"| {s} | {fmt(median([x['p50_ms'] for x in runs]), 3)} | "
              f"{fmt(median([x['p99_ms'] for x in runs]), 3)} | "
              f"{fmt(median([x['p999_ms'] for x in runs]), 3)} | "
              f"{fmt(median([x['max_ms'] for x in runs]), 3)} | {sum(x['lost'] for x in runs)} |")
        w("")

    if "freshness" in r:
        w(f"## 3. Freshness ({r['freshness']['changes']} catalog changes through the HTTP API)")
        w("")
        w("Time from the HTTP response of the change to the first DNS answer reflecting it "
          "(UDP polling in a tight loop). Changes rotate over 20 watched services: register a "
          "new instance, its neighbour's check critical, passing again, deregister the new "
          "instance; 10 ms between changes.")
        w("")
        w("| setup | p50 ms | p99 ms | max ms | timeouts | register p99 | critical p99 | "
          "passing p99 | deregister p99 |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, label in (("freshness", "only the 20 changed services watched"),
                           ("freshness_loaded", "1,000 more services watched (after §1)")):
            f = r.get(key)
            if not f:
                continue
            k = f["by_kind"]
            kp = lambda n: fmt(k.get(n, {}).get("p99_ms"), 2)
            w(f"| {label} | {fmt(f['p50_ms'], 2)} | {fmt(f['p99_ms'], 2)} | "
              f"{fmt(f['max_ms'], 2)} | {f['timeouts']} | {kp('register')} | "
              f"{kp('check_critical')} | {kp('check_passing')} | {kp('deregister')} |")
        w("")
        w("With 1,000 more services watched, each change wakes every blocked query in the "
          "emulator (each checks its own index and, for most, blocks again): that emulator "
          "cost is part of the second row.")
        w("")

    if "steady" in r:
        w("## 4. Load on Consul (requests the emulator received)")
        w("")
        w("| situation | DNS queries | Consul requests | per 1M queries |")
        w("|---|---:|---:|---:|")
        s, f, st = r["steady"], r["flood"], r["stampede"]
        w(f"| steady state (every run of §1 and §2 on consul-dns; `blocking_wait = \"10m\"`) | "
          f"{fmt(s['queries'])} | "
          f"{s['consul_requests']} | {fmt(ratio(s['consul_requests'], s['queries']) * 1e6, 2)} |")
        w(f"| 100k distinct unknown names (dnsperf `-n 1`, {fmt(f['qps'])} qps) | "
          f"{fmt(f['queries'])} | {f['consul_requests']} | "
          f"{fmt(ratio(f['consul_requests'], f['queries']) * 1e6, 2)} |")
        w(f"| 1,000 concurrent queries of one cold service | {st['concurrency']} | "
          f"{st['consul_requests']} | – |")
        qf = r.get("query_flood")
        if qf:
            w(f"| 100k distinct prepared-query names `pq-<n>-<random>.query.consul` "
              f"(dnsperf `-n 1`, {fmt(qf['qps'])} qps) | {fmt(qf['queries'])} | "
              f"{qf['consul_requests']} | "
              f"{fmt(ratio(qf['consul_requests'], qf['queries']) * 1e6, 2)} |")
        w("")
        if qf:
            w(f"Prepared-query flood: consul-dns RSS {fmt(qf['rss_before_kb'] / 1024, 1)} MB "
              f"before, {fmt(qf['rss_after_kb'] / 1024, 1)} MB after; by path "
              + (paths(qf.get("by_path")) or "none") + ". Names not in the watched query "
              "list (`GET /v1/query`) are NXDOMAIN without a request.")
            w("")
        w("By path: steady state " + (paths(s.get("by_path")) or "none") + "; flood "
          + (paths(f.get("by_path")) or "none") + "; stampede "
          + (paths(st.get("by_path")) or "none") + ". `/v1/catalog/datacenters` is polled "
          "on a timer (the list of datacenters), whatever the DNS load.")
        w("")
        w(f"Stampede: {st['answered_with_records']} of {st['concurrency']} answered with "
          f"records, rcodes {st['rcodes']}, {st['unanswered']} unanswered; the last answer "
          f"came {fmt(st['max_ms'], 1)} ms after the first query. A cold service costs the "
          "load of the service and the first blocking query of its watch, which then waits "
          "for a change.")
        w("")

    if "scale" in r:
        w("## 5. Scale")
        w("")
        w("Memory: VmRSS (NSD: the sum of Pss of its processes, as it forks). Start to ready: "
          "from spawning the server to the first NOERROR answer with records for "
          "`svc-0.service.consul` (the emulator already serving: for consul-dns this is the "
          "datacenter, service list and node list synced and svc-0 loaded).")
        w("")
        w("| catalog (services × instances) | instances | consul-dns ready ms | consul-dns RSS "
          "after sync MB | services asked | time to ask them s | consul-dns RSS then MB | "
          "Knot ready ms | Knot RSS MB | NSD ready ms | NSD mem MB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        mb = lambda kb: fmt(kb / 1024, 1) if kb else "–"
        for row in r["scale"]:
            w(f"| {row['shape']} | {fmt(row['instances'])} | {fmt(row['cd_ready_ms'])} | "
              f"{mb(row['cd_rss_sync_kb'])} | {fmt(row.get('answered'))} | "
              f"{fmt(row.get('cd_warm_s'), 1)} | {mb(row.get('cd_rss_all_kb'))} | "
              f"{fmt(row['knot_ready_ms'])} | {mb(row['knot_mem_kb'])} | "
              f"{fmt(row['nsd_ready_ms'])} | {mb(row['nsd_mem_kb'])} |")
            if "cd_rss_every_kb" in row:
                w(f"| {row['shape']}, then every service asked | {fmt(row['instances'])} | | | "
                  f"{fmt(row['services'])} | {fmt(row.get('cd_warm_every_s'), 1)} | "
                  f"{mb(row['cd_rss_every_kb'])} | | | | |")
            if "cd_rss_held_kb" in row:
                w(f"| {row['shape']}, every service asked and held (`max_services = "
                  f"{row['services']}`) | {fmt(row['instances'])} | | | "
                  f"{fmt(row['services'])} | {fmt(row.get('cd_warm_held_s'), 1)} | "
                  f"{mb(row['cd_rss_held_kb'])} | | | | |")
        w("")
        for row in r["scale"]:
            if "cd_rss_every_kb" in row:
                w(f"At {row['shape']} consul-dns watches 1,000 services (`max_watches = 1000`) "
                  f"and keeps 10 times as many in memory (the default `max_services`); of the "
                  f"{fmt(row['services'])} asked, the 10,000 asked last stay, and one asked "
                  f"again after that is read from Consul again. "
                  f"{row.get('fds_every', '?')} open descriptors after.")
                if "cd_rss_held_kb" in row:
                    w(f"With `max_services = {row['services']}` every service stays in memory "
                      f"(the records Knot holds): {HELD_WATCHES} watched (`max_watches`, its "
                      f"default), the others re-read every `watch_poll_interval` (30 s) by one "
                      f"task. {row.get('fds_held', '?')} open descriptors after.")
                w("")
        big = [row for row in r["scale"] if "throughput" in row]
        for row in big:
            t = row["throughput"]
            c, n, k = (summary_row(t[s]) for s in SERVERS)
            base_row = summary_row(r["throughput"]["mix"]["consul-dns"]) if tp else None
            base = base_row["qps"] if base_row else float("nan")
            base_cpu = base_row["cpu"] if base_row else float("nan")
            w(f"Throughput at {row['shape']} ({fmt(row['instances'])} instances; the mix over "
              f"1,000 of its services, asked before): consul-dns {fmt(c['qps'])} qps "
              f"({fmt(c['cpu'], 3)} CPU s/100k), {fmt(ratio(c['qps'], base), 2)}× its 1k-service "
              f"qps and {fmt(ratio(c['cpu'], base_cpu), 2)}× its CPU per query; "
              f"NSD {fmt(n['qps'])} ({fmt(n['cpu'], 3)}), Knot {fmt(k['qps'])} "
              f"({fmt(k['cpu'], 3)}).")
            w("")

    amp = r.get("amplification")
    if amp:
        labels = amp["labels"]
        w("## 6. Amplification (UDP bytes out per byte in, 10 services × 60 instances)")
        w("")
        w("One query per shape, RD clear; `TC` marks a truncated reply. consul-dns "
          "*trusted*: the client is in `allow_recursion` (the default, loopback); "
          "*untrusted*: it is not (`allow_recursion = [\"10.99.0.0/16\"]`), so its replies "
          "are held to 4× its query, answers all or nothing.")
        w("")
        w("| query | EDNS | bytes in | " + " | ".join(labels) + " |")
        w("|---|---:|---:|" + "---:|" * len(labels))
        worst = {label: 0.0 for label in labels}
        for row in amp["rows"]:
            cells = []
            for label in labels:
                res = row[label]
                if res is None:
                    cells.append("no reply")
                    continue
                x = res["bytes"] / row["query"]
                worst[label] = max(worst[label], x)
                cells.append(f"{res['bytes']} ({fmt(x, 1)}×{', TC' if res['tc'] else ''})")
            w(f"| {row['name']} {row['qtype']} | {row['payload'] or 'none'} | {row['query']} | "
              + " | ".join(cells) + " |")
        w("| **worst ratio** | | | " + " | ".join(f"**{fmt(worst[l], 1)}×**" for l in labels)
          + " |")
        w("")

    cores = r.get("cores")
    if cores:
        w(f"## 7. Every core (nothing pinned, dnsperf with 8 sockets, 1,000 services × 3, "
          f"`--workers {b.a.workers}`)")
        w("")
        w("The servers share the machine's cores with dnsperf: the CPU per query is the "
          "figure to compare; qps depends on what dnsperf leaves. Medians of the runs.")
        w("")
        w("| server | qps | CPU s/100k | lost | busiest threads (share of the server's CPU) |")
        w("|---|---:|---:|---:|---|")
        for label, runs in cores["runs"].items():
            c = summary_row(runs)
            shares = ", ".join(f"{n} {fmt(x * 100)}%" for n, x in runs[-1]["threads"][:4])
            w(f"| {label} | {fmt(c['qps'])} | {fmt(c['cpu'], 3)} | {c['lost']} | {shares} |")
        w("")
        if cores.get("burst"):
            w("TCP: 1,000 connections opened at once, one query each (`benchtool tcp-burst`): "
              "time until the last answer, and connections that took a second or more (a "
              "SYN retransmitted).")
            w("")
            w("| server | answered | failed | ≥ 1 s | p50 ms | last ms |")
            w("|---|---:|---:|---:|---:|---:|")
            for label, b_ in cores["burst"].items():
                w(f"| {label} | {b_['answered']} | {b_['failed']} | {b_['over_1s']} | "
                  f"{fmt(b_['p50_ms'], 1)} | {fmt(b_['max_ms'], 1)} |")
            w("")

    transfers = r.get("transfers")
    if transfers:
        w("## 8. Zone transfers (consul-dns the primary, NSD and Knot its secondaries)")
        w("")
        w("consul-dns with `allow_transfer` and `notify` naming both secondaries; AXFR time "
          "is `dig AXFR` wall time (dig decoding and printing included, median of 3); the "
          "first transfer is from starting the secondary to it answering the primary's "
          "serial; IXFR is `dig IXFR=<serial>` after registering one instance; freshness is "
          "`benchtool freshness` (catalog change through the HTTP API to the secondary "
          "answering it: NOTIFY, then IXFR), at 1,000 × 3 with every service watched (at "
          "100,000 services most are polled every `watch_poll_interval` with the default "
          "`max_watches`, which then bounds freshness; not measured there). NSD runs with "
          "`xfrd-reload-timeout: 0` (its default applies transfers once a second).")
        w("")
        w("| catalog | records | AXFR MB | messages | AXFR s | zone ready s | consul-dns RSS MB | "
          "peak RSS MB before → after the AXFRs | IXFR records | IXFR bytes | journal KB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in transfers:
            peak = "–"
            if t.get("cd_peak_before_axfr_kb") is not None:
                peak = (f"{fmt(t['cd_peak_before_axfr_kb'] / 1024)} → "
                        f"{fmt(t['cd_peak_after_axfr_kb'] / 1024)}")
            w(f"| {t['shape']} | {t['records']} | {fmt(t['bytes'] / 1e6, 1)} | {t['messages']} | "
              f"{fmt(t['axfr_s'], 2)} | {fmt(t['zone_ready_s'], 1)} | "
              f"{fmt(t['cd_rss_end_kb'] / 1024)} | {peak} | {t['ixfr_records']} | "
              f"{t['ixfr_bytes']} | {fmt((t['journal_bytes'] or 0) / 1024)} |")
        w("")
        w("| catalog | secondary | first transfer s | RSS MB | freshness p50 ms | p99 ms | "
          "max ms | timeouts |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for t in transfers:
            for kind in ("NSD", "Knot"):
                k = kind.lower()
                f = t.get(f"{k}_freshness") or {}
                w(f"| {t['shape']} | {kind} | {fmt(t[f'{k}_first_transfer_s'], 1)} | "
                  f"{fmt((t[f'{k}_rss_kb'] or 0) / 1024)} | {fmt(f.get('p50_ms'), 1)} | "
                  f"{fmt(f.get('p99_ms'), 1)} | {fmt(f.get('max_ms'), 1)} | "
                  f"{f.get('timeouts', '')} |")
        w("")

    qlog = r.get("query_log")
    if qlog:
        w("## 9. Query log (consul-dns pinned to one core, mix of 1,000 services × 3, "
          "`query_log` off and on for every query, its stdout a file)")
        w("")
        w("| server | qps | CPU s/100k | lost | lines written | CPU vs off |")
        w("|---|---:|---:|---:|---:|---:|")
        base = summary_row(qlog["runs"]["query log off"])["cpu"]
        for label, runs in qlog["runs"].items():
            c = summary_row(runs)
            w(f"| {label} | {fmt(c['qps'])} | {fmt(c['cpu'], 3)} | {c['lost']} | "
              f"{qlog['lines'].get(label)} | {fmt(ratio(c['cpu'], base), 2)}× |")
        w("")

    w("## Targets (issue 3)")
    w("")
    for line in targets(r):
        w(f"- {line}")
    w("")

    if r.get("profile"):
        w("## Where consul-dns spends its time (perf, cpu-clock, mix at saturation)")
        w("")
        w("```")
        out.extend(r["profile"])
        w("```")
        w("")

    if r["notes"]:
        w("## Notes")
        w("")
        for n in r["notes"]:
            w(f"- {n}")
        w("")

    w("<details><summary>Every run (JSON)</summary>")
    w("")
    w("```json")
    w(json.dumps(strip_lists(r), separators=(",", ":"), default=str))
    w("```")
    w("</details>")
    return "\n".join(out) + "\n"


def paths(by_path):
    return ", ".join(f"`{k}` {v}" for k, v in sorted((by_path or {}).items()))


def strip_lists(r):
    return {k: v for k, v in r.items() if k != "profile"}


def targets(r):
    out = []
    mark = lambda ok: "**met**" if ok else "**not met**"
    tp = r.get("throughput")
    if tp:
        for wl in ("hits", "unknown", "mix"):
            c, n, k = (summary_row(tp[wl][s]) for s in SERVERS)
            ok = c["qps"] >= n["qps"] and c["qps"] >= k["qps"]
            okc = c["cpu"] <= n["cpu"] and c["cpu"] <= k["cpu"]
            out.append(f"throughput ≥ NSD and Knot ({wl}): {mark(ok)} "
                       f"({fmt(ratio(c['qps'], n['qps']), 2)}× NSD, "
                       f"{fmt(ratio(c['qps'], k['qps']), 2)}× Knot); CPU per query ≤ theirs: "
                       f"{mark(okc)} ({fmt(ratio(c['cpu'], n['cpu']), 2)}× NSD, "
                       f"{fmt(ratio(c['cpu'], k['cpu']), 2)}× Knot)")
    lat = r.get("latency")
    if lat:
        c = median([x["p99_ms"] for x in lat["consul-dns"]])
        n = median([x["p99_ms"] for x in lat["NSD"]])
        out.append(f"p99 at 20k qps ≤ NSD's + 0.1 ms: {mark(c <= n + 0.1)} "
                   f"({fmt(c, 3)} vs {fmt(n, 3)} ms)")
    f = r.get("freshness")
    if f:
        ok = f["p99_ms"] <= 20 and f["max_ms"] <= 100 and f["timeouts"] == 0
        out.append(f"freshness p99 ≤ 20 ms, max ≤ 100 ms: {mark(ok)} "
                   f"(p99 {fmt(f['p99_ms'], 2)}, max {fmt(f['max_ms'], 2)} ms)")
    if "steady" in r:
        s, fl, st = r["steady"], r["flood"], r["stampede"]
        timer = "/v1/catalog/datacenters"
        per_query = {k: v for k, v in s.get("by_path", {}).items() if k != timer}
        out.append(f"0 Consul requests per query at steady state: {mark(not per_query)} "
                   f"({s['consul_requests']} in {fmt(s['queries'])} queries: "
                   f"{paths(s.get('by_path')) or 'none'}; only the timer's `{timer}` is allowed)")
        fl_query = {k: v for k, v in fl.get("by_path", {}).items() if k != timer}
        out.append(f"0 during an unknown-name flood: {mark(not fl_query)} "
                   f"({fl['consul_requests']}: {paths(fl.get('by_path')) or 'none'})")
        out.append(f"1 load for a cold stampede: {mark(st['consul_requests_service'] <= 2)} "
                   f"({st['consul_requests_service']} requests: the load and the watch's first "
                   "blocking query)")
    for row in r.get("scale", []):
        if row["shape"] == "100000x3":
            every = row.get("cd_rss_every_kb")
            held = row.get("cd_rss_held_kb")
            if held:
                out.append(f"100k × 3, every service answered and held in memory, memory ≤ "
                           f"Knot's: {mark(held <= row['knot_mem_kb'])} (consul-dns "
                           f"{fmt(held / 1024, 1)} MB, Knot "
                           f"{fmt(row['knot_mem_kb'] / 1024, 1)} MB)")
            if every:
                out.append(f"100k × 3, every service answered once, default working set "
                           f"(10,000 kept), memory ≤ Knot's: "
                           f"{mark(every <= row['knot_mem_kb'])} (consul-dns "
                           f"{fmt(every / 1024, 1)} MB; 1,000 asked: "
                           f"{fmt(row.get('cd_rss_all_kb', 0) / 1024, 1)} MB)")
            out.append(f"start to ready ≤ 1 s at 100k × 3: {mark(row['cd_ready_ms'] <= 1000)} "
                       f"({fmt(row['cd_ready_ms'])} ms)")
            if "throughput" in row and tp:
                c = summary_row(row["throughput"]["consul-dns"])
                base = summary_row(tp["mix"]["consul-dns"])
                out.append(f"throughput at 100k × 3 within 10% of 1k: "
                           f"{mark(c['qps'] >= 0.9 * base['qps'])} "
                           f"({fmt(ratio(c['qps'], base['qps']), 2)}× the qps; CPU per query "
                           f"{fmt(ratio(c['cpu'], base['cpu']), 2)}×)")
    return out


def keep_previous(new_text):
    old = ""
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            old = f.read()
    if not old.strip():
        return new_text
    m = re.search(r"^- date: (.+)$", old, re.M)
    when = m.group(1).strip() if m else "an earlier run"
    # The last run goes one level down, under its date; older ones stay as they are.
    last, sep, older = old.partition("\n---\n\n# Previous results")
    demoted = re.sub(r"^(#{1,5}) ", r"#\1 ", last, flags=re.M)
    return new_text + f"\n---\n\n# Previous results ({when})\n\n" + demoted + sep + older


machine_info = {}


def main():
    global machine_info
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--perf", action="store_true", help="profile consul-dns with perf")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-main", action="store_true")
    ap.add_argument("--skip-amplification", action="store_true")
    ap.add_argument("--skip-cores", action="store_true")
    ap.add_argument("--skip-transfers", action="store_true")
    ap.add_argument("--skip-query-log", action="store_true")
    ap.add_argument("--baseline", help="section 9: also a consul-dns binary built before "
                    "the query log existed, to see that the log off costs nothing")
    ap.add_argument("--workers", type=int, default=2,
                    help="workers of consul-dns, NSD and Knot in section 7 (default 2)")
    ap.add_argument("--argv", default="bench/run")
    ap.add_argument("--workdir", help="an empty directory for configs, zones, logs")
    args = ap.parse_args()

    machine_info = machine()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    t0 = time.time()
    tmp = args.workdir or tempfile.mkdtemp(prefix="consul-dns-bench.")
    procs = Procs(tmp)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    b = Bench(args, procs)
    ok = False
    try:
        log(f"work directory {tmp}")
        if not args.skip_main:
            b.main_catalog()
        if not args.skip_amplification:
            b.amplification()
        if not args.skip_cores:
            b.cores()
        if not args.skip_scale:
            b.scale()
        if not args.skip_transfers:
            b.transfers()
        if not args.skip_query_log:
            b.query_log()
        ok = True
    except BenchError as e:
        log(f"FAILED: {e}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        procs.stop_all()
    if not ok:
        log(f"logs kept in {tmp}")
        return 1
    text = report(b, started, args.argv, time.time() - t0)
    with open(RESULTS + ".new", "w") as f:
        f.write(keep_previous(text))
    os.replace(RESULTS + ".new", RESULTS)
    with open(os.path.join(tmp, "results.json"), "w") as f:
        json.dump(b.r, f, default=str)
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
