#!/usr/bin/python3
"""tlswall transparent TLS upgrade proxy against stunnel4 and haproxy (a
benchmark, not a test).

In one run, on the same machine and the same private namespaces
(tests/e2e/sandbox.py: nothing touches the host's interfaces), a plaintext
HTTP client reaches HTTPS nginx in the server namespace through each of:

  tlswall   tlswalld with an [[upgrades]] rule; the client runs in the upgrade
            cgroup (a child cgroup made here) and speaks plain HTTP to the
            server's port 443; the kernel redirects its connect() to the
            proxy, which speaks TLS to nginx, verifying chain and name
  haproxy   TCP mode, frontend on 127.0.0.1, backend `ssl verify required
            ca-file ... sni str(<name>) verifyhost <name>`
  stunnel4  client mode, accept on 127.0.0.1, verifyChain + CAfile + checkHost
  direct    the client speaks HTTPS to nginx itself (latency reference)

and measures, changing the order of the four every round (a Latin square):

  bulk      wrk -c4 keep-alive GETs of a large static file, MB/s of payload
  conn      wrk -c8 with "Connection: close" (one short request per
            connection, a TLS handshake per request upstream), requests/s
  lat       one short request per new connection, sequential (our own timer:
            connect to end of response), p50/p99; added latency = p99 of the
            side minus p99 of the direct baseline in the same round
  ka        wrk -c1 keep-alive (a request on an open connection), p99

Also per proxy: its CPU per GB and per connection (the throughput
comparison that still holds when nginx and the client, not the proxy, are
the bottleneck), and what nginx saw (TLS version, cipher, resumed sessions).

CPU budget: every proxy gets one CPU (--proxy-cpu, all its threads pinned;
tlswall [upgrade] workers = 1: the daemon and its unprivileged proxy worker
process, which asks the daemon for each connection's original destination,
both pinned and both counted as the proxy's CPU; haproxy nbthread 1,
stunnel4 as packaged: a thread per connection); nginx (1 worker) and the load generator share the
other (--load-cpu). After each tlswall run the daemon's Prometheus counters
must show the connections went through the upgrade proxy (else the run
aborts).

    /usr/bin/python3 tests/bench/bench_upgrade.py [--build-dir build] [--rounds 5]
        [--seconds 3] [--write] [--strict]

--write replaces the bench_upgrade section of BENCHMARKS.md with the results.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
import sandbox as S  # noqa: E402
from bench_report import med, proc_cpu_s, write_section  # noqa: E402

SELF = str(Path(__file__).resolve())
SRV = S.SRV_BOUNDARY_V4
# The certificate nginx serves: a leaf for this DNS name (and the server's IP
# addresses), issued by a CA made for the run. All three proxies send it as
# SNI and verify the chain against the CA and the name against the leaf
# (haproxy's verifyhost only checks DNS names, hence not an IP literal).
NAME = "upgrade-bench.tlswall.test"
WRONG_NAME = "wrong-name.tlswall.test"
PORT = {"tlswall": 15443, "stunnel4": 15444, "haproxy": 15445}
WRONG_PORT = {"stunnel4": 15454, "haproxy": 15455}
METRICS_LISTEN = "127.0.0.1:19466"
RULE = "bench-upgrade"
SIDES = ["tlswall", "haproxy", "stunnel4", "direct"]
PROXIES = ["tlswall", "haproxy", "stunnel4"]

# key, label, unit
METRICS = [
    ("bulk", "bulk: large responses, keep-alive (wrk)", "MB/s"),
    ("conn", "conn rate: 1 request per connection (wrk)", "req/s"),
    ("lat_p50", "new connection + 1 request, sequential: p50", "ms"),
    ("lat_p99", "new connection + 1 request, sequential: p99", "ms"),
    ("ka_p99", "request on an open connection (wrk -c1): p99", "ms"),
]
# (metric, label, baseline, target paired ratio tlswall/baseline; None = informational)
TARGETS = [
    ("bulk", "bulk MB/s", "haproxy", 1.0),
    ("bulk", "bulk MB/s", "stunnel4", 1.3),
    ("conn", "conn req/s", "haproxy", 1.0),
    ("conn", "conn req/s", "stunnel4", None),
    # How much work a proxy gets out of its CPU: the comparison that still
    # holds when the load CPU, not the proxy, limits a throughput.
    ("bulk_eff", "bulk GB per proxy CPU-second", "haproxy", None),
    ("bulk_eff", "bulk GB per proxy CPU-second", "stunnel4", None),
    ("conn_eff", "conns per proxy CPU-second", "haproxy", None),
    ("conn_eff", "conns per proxy CPU-second", "stunnel4", None),
]

POLICY = f"""# tlswall upgrade benchmark policy (generated)
version = "bench-upgrade-1"
default_mode = "monitor"

[boundaries.remote]
cidrs = ["{SRV}/32"]

[[upgrades]]
name = "{RULE}"
boundary = "remote"
ports = [443]
server_name = "{NAME}"
ca_file = "{{ca}}"
"""

# wrk reports through this script (exact byte and request counts, latency
# percentiles in microseconds); only done() is defined, so wrk keeps its
# static request and runs no Lua per request.
WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# The latency client: `bench_upgrade.py lat-client ...`, run inside the
# client namespace (and, for tlswall, inside the upgrade cgroup).
# --------------------------------------------------------------------------
def lat_client(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_upgrade.py lat-client")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--max", type=int, default=20000)
    p.add_argument("--tls-name", default="", help="speak TLS, verify against this name")
    p.add_argument("--ca", default="")
    a = p.parse_args(argv)
    if a.host != "127.0.0.1":
        S.check_addr(a.host)
    ctx = None
    if a.tls_name:
        # Verified like the proxies verify; the session is reused from one
        # connection to the next, as the proxies' own session caches do.
        ctx = ssl.create_default_context(cafile=a.ca)
    host_hdr = a.tls_name or NAME
    req = f"GET / HTTP/1.1\r\nHost: {host_hdr}\r\nConnection: close\r\n\r\n".encode()
    samples, errors, resumed, sess = [], 0, 0, None
    last_error = ""
    end = time.perf_counter() + min(a.seconds, 60)
    while time.perf_counter() < end and len(samples) < a.max:
        t0 = time.perf_counter_ns()
        data = bytearray()
        try:
            s = socket.create_connection((a.host, a.port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname=a.tls_name, session=sess)
            with s:
                s.sendall(req)
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    data += d
                if ctx:
                    # Keep the session of the last full handshake: nginx
                    # accepts its ticket again and again, as it does for
                    # the proxies (a session from a resumed connection is
                    # not always resumable again).
                    if s.session_reused:
                        resumed += 1
                    else:
                        sess = s.session
        except (OSError, ssl.SSLError) as e:
            errors += 1
            last_error = f"{type(e).__name__}: {e}"
            continue
        t1 = time.perf_counter_ns()
        if not data.startswith(b"HTTP/1.1 200"):
            errors += 1
            last_error = f"unexpected response {bytes(data[:40])!r}"
            continue
        samples.append((t1 - t0) / 1e6)  # ms
    samples.sort()

    def pct(q):
        return samples[max(0, math.ceil(q * len(samples)) - 1)] if samples else None

    print(json.dumps({"n": len(samples), "errors": errors, "resumed": resumed, "p50_ms": pct(0.50),
                      "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": samples[-1] if samples else None,
                      "last_error": last_error}))
    return 0


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def pin_threads(pid: int, cpu: int, nice: int) -> list[int]:
    """Pins every thread of pid to cpu and sets its niceness; threads made
    later inherit both from their creator. Returns the thread ids."""
    tids = []
    for t in os.listdir(f"/proc/{pid}/task"):
        tid = int(t)
        try:
            os.sched_setaffinity(tid, {cpu})
            if nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            tids.append(tid)
        except ProcessLookupError:
            pass
    return tids


def cpu_busy_s(cpus: list[int]) -> list[float]:
    """Busy time (all but idle and iowait) of each given CPU, seconds."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *v = line.split()
                n = [int(x) for x in v]
                out[int(name[3:])] = (sum(n[:8]) - n[3] - n[4]) / os.sysconf("SC_CLK_TCK")
    return [out.get(c, 0.0) for c in cpus]


def thread_cpus(pid: int) -> set[str]:
    out = set()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in open(f"/proc/{pid}/task/{t}/status"):
                if line.startswith("Cpus_allowed_list:"):
                    out.add(line.split(":", 1)[1].strip())
        except OSError:
            pass
    return out


def tool_version(cmd: list[str], pick=lambda s: s.splitlines()[0] if s else "?") -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return pick((r.stdout + r.stderr).strip())
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def pkg_version(pkg: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def ensure_packages() -> None:
    """stunnel4, haproxy, wrk, nginx, openssl, taskset, curl: installed with
    apt-get when missing; a failure stops the benchmark."""
    need = {"stunnel4": "stunnel4", "haproxy": "haproxy", "wrk": "wrk", "nginx": "nginx-light",
            "openssl": "openssl", "taskset": "util-linux", "curl": "curl"}
    missing = sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    S.apt_install(missing)
    still = [t for t in need if shutil.which(t) is None]
    if still:
        raise S.ToolMissing(f"still missing after apt-get install: {', '.join(still)}")


def env_info() -> dict:
    cpu_model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(["git", "-C", str(S.REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(S.REPO), "status", "--porcelain"], capture_output=True, text=True)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model or "unknown",
        "git": (rev.stdout.strip() or "no commit yet") + (" (dirty tree)" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "openssl": tool_version(["openssl", "version"]),
        "nginx": pkg_version("nginx-light") if pkg_version("nginx-light") != "?" else pkg_version("nginx"),
        "haproxy": pkg_version("haproxy"),
        "stunnel4": pkg_version("stunnel4"),
        "wrk": pkg_version("wrk"),
    }


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------
class Bench:
    def __init__(self, sb: S.Sandbox, cg: S.Cgroups, bdir: Path, a: argparse.Namespace):
        self.sb, self.cg, self.bdir, self.a = sb, cg, bdir, a
        self.nice = ["nice", "-n", str(a.nice)] if a.nice else []
        self.load_cpu, self.proxy_cpu = str(a.load_cpu), str(a.proxy_cpu)
        self.cg_legacy = cg.make("legacy")
        self.dir = sb.tmp / "bench"
        self.dir.mkdir()
        self.ca = self.dir / "ca.crt"
        self.wrk_script = self.dir / "report.lua"
        self.wrk_script.write_text(WRK_REPORT)
        self.access_log = self.dir / "nginx-access.log"
        self.bulk_path = "/bulk.bin"
        self.d: S.Daemon | None = None
        self.procs: dict[str, S.Proc] = {}
        self.windows: list[tuple[str, str, float, float]] = []  # side, metric, t0, t1 (nginx log)
        self.checks: list[dict] = []  # per tlswall run: Prometheus deltas
        self.agent_version = "?"
        self.errors: list[str] = []

    # -- set-up ----------------------------------------------------------------
    def make_certs(self) -> None:
        """A CA and a leaf for NAME (plus the server's addresses) signed by it;
        the leaf goes where the sandbox's helpers expect the server cert."""
        d, sb = self.dir, self.sb
        cakey = d / "ca.key"
        san = ",".join([f"DNS:{NAME}"] + [f"IP:{x}" for x in S.SERVER_V4 + S.SERVER_V6])
        (d / "leaf.ext").write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                    f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n")
        steps = [
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=tlswall bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(cakey), "-out", str(self.ca)],
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={NAME}", "-keyout", str(sb.key), "-out", str(d / "leaf.csr")],
            ["openssl", "x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(self.ca), "-CAkey", str(cakey),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "leaf.ext"), "-out", str(sb.cert)],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise BenchError(f"{' '.join(cmd[:3])} failed: {r.stderr.strip()}")

    def start_nginx(self) -> None:
        """HTTPS nginx in the server namespace: one worker pinned to the load
        CPU, `/` a short body, /bulk.bin a large static file (tmpfs or page
        cache), an access log (buffered) of the TLS parameters of every
        request, so the report can say what each side negotiated."""
        d = self.sb.tmp / "nginx-bench"
        (d / "html").mkdir(parents=True)
        with open(d / "html" / "bulk.bin", "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(self.a.bulk_mib):
                f.write(chunk)
        mask = bin(1 << int(self.load_cpu))[2:]
        conf = d / "nginx.conf"
        # Workers run as root: the sandbox's temp dir is private (0700).
        conf.write_text(f"""
user root;
worker_processes 1;
worker_cpu_affinity {mask};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    log_format tlsinfo '$msec $ssl_protocol $ssl_cipher $ssl_session_reused $status $body_bytes_sent';
    access_log {self.access_log} tlsinfo buffer=64k flush=1s;
    server {{
        listen {SRV}:443 ssl backlog=8192;
        ssl_certificate {self.sb.cert};
        ssl_certificate_key {self.sb.key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {d}/html;
        location = / {{ default_type text/plain; return 200 "upgrade-bench ok\\n"; }}
    }}
}}
""")
        p = self.sb.spawn(self.sb.server_ns, "nginx", self.nice + [
            "nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf), "-g", "daemon off;"])
        try:
            self.sb.wait_listen(443)
        except S.SandboxError:
            raise BenchError(f"nginx did not start:\n{p.log_tail()}")
        self.procs["nginx"] = p

    def start_haproxy(self) -> None:
        conf = self.dir / "haproxy.cfg"
        srv = f"{SRV}:443 ssl verify required ca-file {self.ca}"
        conf.write_text(f"""
global
    nbthread 1
    maxconn 8000

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend bench
    bind 127.0.0.1:{PORT['haproxy']}
    default_backend nginx_tls

backend nginx_tls
    server nginx {srv} sni str({NAME}) verifyhost {NAME}

# Same, but verifying against another name: must fail (verification is on).
frontend bench_wrong_name
    bind 127.0.0.1:{WRONG_PORT['haproxy']}
    default_backend nginx_tls_wrong_name

backend nginx_tls_wrong_name
    server nginx {srv} sni str({WRONG_NAME}) verifyhost {WRONG_NAME}
""")
        p = self.sb.spawn(self.sb.client_ns, "haproxy", ["taskset", "-c", self.proxy_cpu] + self.nice
                          + ["haproxy", "-db", "-f", str(conf)])
        self._wait_proxy(p, "haproxy")

    def start_stunnel(self) -> None:
        conf = self.dir / "stunnel.conf"

        def service(name, port, host):
            return f"""
[{name}]
client = yes
accept = 127.0.0.1:{port}
connect = {SRV}:443
sni = {host}
verifyChain = yes
CAfile = {self.ca}
checkHost = {host}
"""
        # Logging at warning: per-connection notices off (haproxy logs
        # nothing here either).
        conf.write_text("foreground = yes\npid =\ndebug = warning\n"
                        + service("bench", PORT["stunnel4"], NAME)
                        + service("bench-wrong-name", WRONG_PORT["stunnel4"], WRONG_NAME))
        p = self.sb.spawn(self.sb.client_ns, "stunnel4", ["taskset", "-c", self.proxy_cpu] + self.nice
                          + ["stunnel4", str(conf)])
        self._wait_proxy(p, "stunnel4")

    def _wait_proxy(self, p: S.Proc, side: str) -> None:
        try:
            self.sb.wait_listen(PORT[side], ns=self.sb.client_ns)
            self.sb.wait_listen(WRONG_PORT[side], ns=self.sb.client_ns)
        except S.SandboxError:
            raise BenchError(f"{side} did not start:\n{p.log_tail()}")
        self.procs[side] = p

    def setup(self) -> None:
        sb = self.sb
        sb.client(["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"])
        for ns in (sb.client_ns, sb.server_ns):
            sb.run(ns, ["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=262144"])
            sb.run(ns, ["sysctl", "-qw", "net.core.somaxconn=8192"])
        self.make_certs()
        self.start_nginx()
        self.start_haproxy()
        self.start_stunnel()
        pdir = sb.tmp / "policy.d"
        pdir.mkdir()
        (pdir / "bench.toml").write_text(POLICY.replace("{ca}", str(self.ca)))
        self.d = S.Daemon(sb, self.bdir, name="tlswalld-upgrade-bench")
        self.d.write_config(str(pdir), log_level="warn", extra={
            "on_stop": "detach",
            "upgrade": {"cgroup": self.cg.rel("legacy"), "port": PORT["tlswall"], "workers": 1},
            "metrics": {"listen": METRICS_LISTEN},
        })

    def verify_setup(self) -> None:
        """Each side answers; haproxy and stunnel4 refuse a wrong name (their
        verification is on); tlswall's proxy verifies always (no switch)."""
        ok = "upgrade-bench ok"
        curl = ["curl", "-sS", "--max-time", "8"]
        r = self.sb.client(curl + ["--cacert", str(self.ca), "--resolve", f"{NAME}:443:{SRV}", f"https://{NAME}/"])
        if r.rc != 0 or ok not in r.stdout:
            raise BenchError(f"direct HTTPS with verification failed: rc={r.rc} {r.brief()}")
        for side in ("haproxy", "stunnel4"):
            r = self.sb.client(curl + [f"http://127.0.0.1:{PORT[side]}/"])
            if r.rc != 0 or ok not in r.stdout:
                raise BenchError(f"{side}: request failed: rc={r.rc} {r.brief()}\n{self.procs[side].log_tail()}")
            r = self.sb.client(curl + [f"http://127.0.0.1:{WRONG_PORT[side]}/"])
            if r.rc == 0 and ok in r.stdout:
                raise BenchError(f"{side}: a wrong server name was accepted: its verification is off")
        self.tlswall_start()
        try:
            r = self.client("tlswall", curl + [f"http://{SRV}:443/"])
            if r.rc != 0 or ok not in r.stdout:
                raise BenchError(f"tlswall: upgraded request failed: rc={r.rc} {r.brief()}\n"
                                 f"{self.d.proc.log_tail()}")
            m = self.prometheus()
            if m.get("connections", 0) < 1:
                raise BenchError(f"tlswall: the request did not go through the upgrade proxy: {m}")
        finally:
            self.tlswall_stop()

    # -- tlswall lifecycle -------------------------------------------------------
    def tlswall_start(self) -> None:
        self.d.start(log_level="warn")
        st = self.d.status()
        self.agent_version = st.get("version", "?")
        # The daemon and its proxy worker process (which does the proxying;
        # the daemon answers its original-destination queries) share the
        # proxy CPU, and both count as the proxy's CPU time.
        for pid in self.tlswall_pids():
            pin_threads(pid, int(self.proxy_cpu), self.a.nice)
            cpus = thread_cpus(pid)
            if cpus != {self.proxy_cpu}:
                raise BenchError(f"tlswall threads of {pid} not all on CPU {self.proxy_cpu}: {cpus}")
        self.sb.wait_listen(PORT["tlswall"], ns=self.sb.client_ns)

    def tlswall_stop(self) -> None:
        rc = self.d.stop()
        if rc != 0:
            self.errors.append(f"tlswalld exited {rc} on SIGTERM")

    def prometheus(self) -> dict:
        """The upgrade counters of the rule, from the daemon's /metrics."""
        r = self.sb.client(["curl", "-sS", "--max-time", "5", f"http://{METRICS_LISTEN}/metrics"])
        if r.rc != 0:
            raise BenchError(f"tlswall /metrics unreachable: {r.brief()}")
        out = {"redirected": 0.0, "connections": 0.0, "failures": 0.0, "bytes_down": 0.0, "active": 0.0}
        for line in r.stdout.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, _, val = line.rpartition(" ")
            v = float(val)
            if key == "tlswall_upgrade_redirected_total":
                out["redirected"] = v
            elif key == f'tlswall_upgrade_connections_total{{rule="{RULE}",side="client"}}':
                out["connections"] = v
            elif key.startswith("tlswall_upgrade_failures_total{"):
                out["failures"] += v
            elif key == f'tlswall_upgrade_bytes_total{{rule="{RULE}",direction="down"}}':
                out["bytes_down"] = v
            elif key == f'tlswall_upgrade_active{{rule="{RULE}"}}':
                out["active"] = v
        return out

    # -- running clients -----------------------------------------------------------
    def client(self, side: str, cmd: list[str], timeout: float = 30) -> S.Result:
        """Runs cmd in the client namespace; tlswall's clients run from inside
        the upgrade cgroup (that is what selects them for the redirect)."""
        if side == "tlswall":
            return self.sb.run_in_cgroup(self.sb.client_ns, self.cg_legacy, cmd, timeout=timeout)
        return self.sb.client(cmd, timeout=timeout)

    def base_url(self, side: str) -> str:
        if side == "direct":
            return f"https://{SRV}"
        if side == "tlswall":
            return f"http://{SRV}:443"  # plain HTTP to the HTTPS port; the kernel redirects it
        return f"http://127.0.0.1:{PORT[side]}"

    def wrk(self, side: str, path: str, conns: int, seconds: float, close: bool) -> dict:
        cmd = self.nice + ["taskset", "-c", self.load_cpu, "wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s",
                           "--timeout", "5s", "-s", str(self.wrk_script)]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append(self.base_url(side) + path)
        r = self.client(side, cmd, timeout=seconds + 30)
        j = None
        for line in (r.stdout or "").splitlines():
            if line.startswith("WRKJSON "):
                j = json.loads(line[8:])
        if r.rc != 0 or j is None or j["requests"] <= 0:
            raise BenchError(f"{side}: wrk {path} failed: rc={r.rc} {r.brief()}")
        errs = j["connect"] + j["read"] + j["write"] + j["timeout"] + j["status"]
        if j["status"] or errs > max(2, 0.001 * j["requests"]):
            raise BenchError(f"{side}: wrk {path} errors: {j}")
        return j

    def lat(self, side: str, seconds: float) -> dict:
        if side == "direct":
            target = ["--host", SRV, "--port", "443", "--tls-name", NAME, "--ca", str(self.ca)]
        elif side == "tlswall":
            target = ["--host", SRV, "--port", "443"]
        else:
            target = ["--host", "127.0.0.1", "--port", str(PORT[side])]
        cmd = self.nice + ["taskset", "-c", self.load_cpu, S.PYTHON, SELF, "lat-client",
                           "--seconds", f"{seconds:g}"] + target
        r = self.client(side, cmd, timeout=seconds + 30)
        try:
            j = json.loads((r.stdout or "").strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise BenchError(f"{side}: latency client failed: rc={r.rc} {r.brief()}")
        if j["n"] < 20 or j["errors"] > max(2, 0.001 * j["n"]):
            raise BenchError(f"{side}: latency client: {j}")
        return j

    def tlswall_pids(self) -> list[int]:
        """tlswalld and its proxy worker (its child named tlswall-proxy)."""
        for _ in range(50):
            worker = self.d.proxy_worker_pid()
            if worker is not None:
                return [self.d.proc.pid, worker]
            time.sleep(0.1)
        raise BenchError("tlswalld runs no proxy worker (tlswall-proxy)")

    def proxy_pids(self, side: str) -> list[int]:
        if side == "tlswall":
            return self.tlswall_pids()
        if side in self.procs:
            return [self.procs[side].pid]
        return []

    def measure(self, side: str, seconds: float) -> dict:
        """All metrics for one side, back to back; with the proxy's CPU use."""
        a = self.a
        pids = self.proxy_pids(side)
        cpus = [a.load_cpu, a.proxy_cpu]
        out: dict = {}

        def timed(metric, fn):
            if any(not os.path.exists(f"/proc/{pid}") for pid in pids):
                raise BenchError(f"{side}: proxy process gone:\n{self.procs.get(side) and self.procs[side].log_tail()}")
            c0 = sum(proc_cpu_s(pid) for pid in pids)
            busy0 = cpu_busy_s(cpus)
            rec = None
            if a.perf and metric in ("bulk", "conn"):
                # perf on the proxy CPU only, for this side and metric
                os.makedirs(a.perf, exist_ok=True)
                rec = subprocess.Popen(["perf", "record", "-q", "-g", "-C", str(a.proxy_cpu), "-o",
                                        os.path.join(a.perf, f"{side}-{metric}.data")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0w, t0 = time.time(), time.monotonic()
            res = fn()
            dt = time.monotonic() - t0
            if rec:
                rec.send_signal(signal.SIGINT)
                rec.wait(timeout=60)
            self.windows.append((side, metric, t0w, time.time()))
            cpu = (sum(proc_cpu_s(pid) for pid in pids) - c0) if pids else None
            busy = [(x - y) / dt for x, y in zip(cpu_busy_s(cpus), busy0)]
            out[f"{metric}_busy_load"], out[f"{metric}_busy_proxy"] = busy
            return res, cpu, dt

        j, cpu, dt = timed("bulk", lambda: self.wrk(side, self.bulk_path, a.bulk_conns, seconds, close=False))
        out["bulk"] = j["bytes"] / (j["duration_us"] / 1e6) / 1e6
        out["bulk_bytes"] = j["bytes"]
        out["bulk_cpu"] = cpu / dt if cpu is not None else None
        out["bulk_cpu_s_per_gb"] = cpu / (j["bytes"] / 1e9) if cpu is not None else None
        out["bulk_eff"] = j["bytes"] / 1e9 / cpu if cpu else None
        j, cpu, dt = timed("conn", lambda: self.wrk(side, "/", a.conn_conns, seconds, close=True))
        out["conn"] = j["requests"] / (j["duration_us"] / 1e6)
        out["conn_requests"] = j["requests"]
        out["conn_cpu"] = cpu / dt if cpu is not None else None
        out["conn_cpu_us"] = cpu / j["requests"] * 1e6 if cpu is not None else None
        out["conn_eff"] = j["requests"] / cpu if cpu else None
        j, _, _ = timed("lat", lambda: self.lat(side, seconds))
        out["lat_p50"], out["lat_p99"], out["lat_n"] = j["p50_ms"], j["p99_ms"], j["n"]
        out["lat_resumed"] = j["resumed"]
        j, _, _ = timed("ka", lambda: self.wrk(side, "/", 1, seconds, close=False))
        out["ka_p99"] = j["p99_us"] / 1000
        out["ka_requests"] = j["requests"]
        return out

    def run_side(self, side: str, seconds: float, rnd: int) -> dict:
        if side != "tlswall":
            return self.measure(side, seconds)
        self.tlswall_start()
        try:
            m0 = self.prometheus()
            res = self.measure(side, seconds)
            deadline = time.monotonic() + 5
            while True:
                m1 = self.prometheus()
                if m1["active"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            self.tlswall_stop()
        delta = {k: m1[k] - m0[k] for k in m0 if k != "active"}
        want = res["conn_requests"] + res["lat_n"]
        self.checks.append({"round": rnd, **{k: int(v) for k, v in delta.items()}, "expected_min": want})
        if (delta["connections"] < want or delta["redirected"] < want or delta["failures"] > 0
                or delta["bytes_down"] < 0.99 * res["bulk_bytes"]):
            raise BenchError(f"round {rnd}: the tlswall run did not go through the upgrade proxy as expected: "
                             f"counter deltas {delta}, expected >= {want} connections and >= "
                             f"{res['bulk_bytes']} bytes down, no failures")
        return res

    # -- nginx's view ----------------------------------------------------------------
    def nginx_view(self) -> dict:
        """Per side and metric, from nginx's access log: requests, TLS
        versions and ciphers, share of resumed sessions."""
        time.sleep(1.5)  # the log buffer flushes every second
        if not self.access_log.exists():
            return {}
        entries = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            f = line.split()
            if len(f) >= 6:
                try:
                    entries.append((float(f[0]), f[1], f[2], f[3]))
                except ValueError:
                    pass
        entries.sort()
        times = [e[0] for e in entries]
        view: dict = {}
        for side, metric, t0, t1 in self.windows:
            # $msec is when nginx logged the request: inside the client's run.
            lo, hi = bisect.bisect_left(times, t0), bisect.bisect_right(times, t1)
            v = view.setdefault((side, metric), {"requests": 0, "reused": 0, "tls": {}})
            for _, proto, cipher, reused in entries[lo:hi]:
                v["requests"] += 1
                v["reused"] += 1 if reused == "r" else 0
                k = f"{proto} {cipher}"
                v["tls"][k] = v["tls"].get(k, 0) + 1
        return view


def round_order(rnd: int) -> list[str]:
    """A 4x4 Latin square, repeated: every side takes every position once in
    four rounds, and each pair of sides runs in either order equally often
    (rotations by 0, 2, 2, 0, every other one reversed):
    T H S D / H T D S / S D T H / D S H T."""
    k = (0, 2, 2, 0)[(rnd - 1) % 4]
    order = SIDES[k:] + SIDES[:k]
    return order if rnd % 2 else order[::-1]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "lat-client":
        return lat_client(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each measuring every side (default 5)")
    ap.add_argument("--seconds", type=float, default=3, help="seconds per measurement (default 3)")
    ap.add_argument("--bulk-mib", type=int, default=8, help="size of the bulk file, MiB (default 8)")
    ap.add_argument("--bulk-conns", type=int, default=4, help="wrk connections for bulk (default 4)")
    ap.add_argument("--conn-conns", type=int, default=8, help="wrk connections for the conn rate (default 8)")
    ap.add_argument("--proxy-cpu", type=int, default=1, help="the CPU every proxy gets (default 1)")
    ap.add_argument("--load-cpu", type=int, default=0, help="the CPU of nginx and the load generator (default 0)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of proxies, nginx and load generator (default -10; 0 = unchanged)")
    ap.add_argument("--write", action="store_true", help="write the bench_upgrade section of BENCHMARKS.md")
    ap.add_argument("--perf", metavar="DIR", default="",
                    help="record perf profiles of the proxy CPU during bulk and conn into DIR/<side>-<metric>.data")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        print("bench FAILED: needs 2 CPUs (one for the proxy, one for nginx and the load)", file=sys.stderr)
        return 1
    a.proxy_cpu = max(0, min(a.proxy_cpu, ncpu - 1))
    a.load_cpu = max(0, min(a.load_cpu, ncpu - 1))
    if a.proxy_cpu == a.load_cpu:
        print("bench FAILED: --proxy-cpu and --load-cpu must differ", file=sys.stderr)
        return 1
    a.nice = max(-20, min(a.nice, 19))
    rounds = max(1, min(a.rounds, 20))
    seconds = float(max(1, min(int(round(a.seconds)), 20)))  # wrk takes whole seconds
    a.bulk_mib = max(1, min(a.bulk_mib, 256))

    S.install_signal_handlers()
    cg = None
    try:
        ensure_packages()
        S.require_tools("ip", "tc", "ss", "nginx", "wrk", "openssl", "taskset", "curl", "stunnel4", "haproxy")
        bdir = S.build_dir(a.build_dir)
        S.daemon_binaries(bdir)
    except S.SandboxError as e:
        print(f"bench FAILED: {e}", file=sys.stderr)
        return 1
    info = env_info()
    load_start = os.getloadavg()
    cmd_line = "/usr/bin/python3 tests/bench/bench_upgrade.py" + "".join(
        f" {x}" for x in sys.argv[1:] if x != "--write")
    print(f"tlswall upgrade bench: kernel {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}), "
          f"{rounds} rounds x {seconds:g}s per metric, build {bdir}, load {load_start[0]:.2f}", flush=True)

    vals: dict[str, list[dict]] = {s: [] for s in SIDES}
    t_start = time.monotonic()
    try:
        cg = S.Cgroups()
        with S.Sandbox("upbn", verbose=a.verbose) as sb:
            b = Bench(sb, cg, bdir, a)
            b.setup()
            b.verify_setup()
            # Warm-up (discarded): page cache, session caches, TCP memory.
            for side in SIDES:
                b.run_side(side, 1, 0)
            b.windows.clear()
            for rnd in range(1, rounds + 1):
                order = round_order(rnd)
                for side in order:
                    vals[side].append(b.run_side(side, seconds, rnd))
                line = "  ".join(f"{s}: {vals[s][-1]['bulk']:.0f} MB/s {vals[s][-1]['conn']:.0f} req/s "
                                 f"p99 {vals[s][-1]['lat_p99']:.2f} ms" for s in SIDES)
                print(f"round {rnd}/{rounds} ({' '.join(order)}): {line}", flush=True)
            view = b.nginx_view()
    except S.Interrupted as e:
        print(f"bench interrupted: {e}", file=sys.stderr)
        return 1
    except (BenchError, S.SandboxError) as e:
        print(f"bench FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if cg:
            cg.close()
    wall = time.monotonic() - t_start
    load_end = os.getloadavg()
    return report(a, b, vals, view, info, rounds, seconds, wall, load_start, load_end, cmd_line)


def report(a, b: Bench, vals, view, info, rounds, seconds, wall, load_start, load_end, cmd_line) -> int:
    def series(side, key):
        return [r[key] for r in vals[side]]

    # Values per side (medians over rounds).
    hdr = f"| {'metric':<46} | {'unit':<5} | " + " | ".join(f"{s:>9}" for s in SIDES) + " |"
    sep = "|" + "|".join("-" * len(c) for c in hdr.split("|")[1:-1]) + "|"
    values = [hdr, sep]
    for key, label, unit in METRICS:
        cells = " | ".join(f"{med(series(s, key)):>9.{0 if unit in ('MB/s', 'req/s') else 3}f}" for s in SIDES)
        values.append(f"| {label:<46} | {unit:<5} | {cells} |")

    # Ratios and verdicts.
    rhdr = (f"| {'tlswall / baseline':<52} | {'of medians':>10} | {'paired (min-max)':>22} | {'target':>6} "
            f"| {'verdict':<12} |")
    rsep = "|" + "|".join("-" * len(c) for c in rhdr.split("|")[1:-1]) + "|"
    ratios = [rhdr, rsep]
    misses = []
    for key, what, base, target in TARGETS:
        t, bb = series("tlswall", key), series(base, key)
        paired = [x / y for x, y in zip(t, bb) if x and y]
        if not paired:
            continue
        pm = med(paired)
        rom = med(t) / med(bb) if med(bb) else float("nan")
        verdict = "-" if target is None else ("ok" if pm >= target else "BELOW TARGET")
        if target is not None and pm < target:
            misses.append(f"{key} vs {base}")
        tt = f">={target:.1f}" if target else "info"
        label = f"{what}: tlswall / {base}"
        ratios.append(f"| {label:<52} | {rom:>10.3f} | {f'{pm:.3f} ({min(paired):.2f}-{max(paired):.2f})':>22} "
                      f"| {tt:>6} | {verdict:<12} |")

    # Added latency against the direct baseline, paired within each round.
    lhdr = (f"| {'proxy':<9} | {'p50 new conn':>12} | {'p99 new conn':>12} | {'added p99 (paired)':>19} "
            f"| {'p99 open conn':>13} | {'added p99 (paired)':>19} |")
    lsep = "|" + "|".join("-" * len(c) for c in lhdr.split("|")[1:-1]) + "|"
    lat = [lhdr, lsep]
    for s in SIDES:
        p50, p99, ka = med(series(s, "lat_p50")), med(series(s, "lat_p99")), med(series(s, "ka_p99"))
        if s == "direct":
            lat.append(f"| {s:<9} | {p50:>9.3f} ms | {p99:>9.3f} ms | {'(baseline)':>19} | {ka:>10.3f} ms "
                       f"| {'(baseline)':>19} |")
            continue
        add = med([x - y for x, y in zip(series(s, "lat_p99"), series("direct", "lat_p99"))])
        add_ka = med([x - y for x, y in zip(series(s, "ka_p99"), series("direct", "ka_p99"))])
        lat.append(f"| {s:<9} | {p50:>9.3f} ms | {p99:>9.3f} ms | {add * 1000:>+16.0f} us | {ka:>10.3f} ms "
                   f"| {add_ka * 1000:>+16.0f} us |")

    # The proxies' CPU (each has one CPU).
    chdr = (f"| {'side':<9} | {'bulk: proxy':>11} | {'CPU s per GB':>12} | {'load CPU busy':>13} "
            f"| {'conn: proxy':>11} | {'CPU us per conn':>15} | {'load CPU busy':>13} |")
    csep = "|" + "|".join("-" * len(c) for c in chdr.split("|")[1:-1]) + "|"
    cpu = [chdr, csep]

    def pct(x):
        return f"{x * 100:.0f}%" if x == x else "-"

    for s in SIDES:
        if s == "direct":
            cpu.append(f"| {s:<9} | {'-':>11} | {'-':>12} | {pct(med(series(s, 'bulk_busy_load'))):>13} "
                       f"| {'-':>11} | {'-':>15} | {pct(med(series(s, 'conn_busy_load'))):>13} |")
            continue
        cpu.append(f"| {s:<9} | {pct(med(series(s, 'bulk_cpu'))):>11} | {med(series(s, 'bulk_cpu_s_per_gb')):>12.2f} "
                   f"| {pct(med(series(s, 'bulk_busy_load'))):>13} | {pct(med(series(s, 'conn_cpu'))):>11} "
                   f"| {med(series(s, 'conn_cpu_us')):>15.0f} | {pct(med(series(s, 'conn_busy_load'))):>13} |")

    # Which CPU limited bulk and conn: the proxies' own CPU use against the
    # load CPU's; and the background the proxy CPU carried while no proxy
    # ran (direct runs), a measure of how quiet the machine was.
    notes = []
    for key, what in (("bulk", "bulk"), ("conn", "conn")):
        load = med([x for s in PROXIES for x in series(s, f"{key}_busy_load")])
        own = {s: med(series(s, f"{key}_cpu")) for s in PROXIES}
        bound = [s for s in PROXIES if own[s] >= 0.9]
        if len(bound) == len(PROXIES):
            why = "every proxy used >= 90% of its CPU: the proxies were the bottleneck"
        elif load >= 0.9:
            why = (f"the load CPU (nginx + client) was {pct(load)} busy while "
                   f"{', '.join(s for s in PROXIES if s not in bound)} used < 90% of its own CPU: "
                   f"the load side limited them, so their throughput ratios understate differences in "
                   f"efficiency (see the CPU-second rows)")
        else:
            why = f"neither CPU saturated (load CPU {pct(load)}): latency-bound"
        notes.append(f"{what}: proxy CPU {', '.join(f'{s} {pct(own[s])}' for s in PROXIES)}; {why}")
    bg = [med(series("direct", f"{k}_busy_proxy")) for k in ("bulk", "conn", "lat", "ka")]
    notes.append(f"background load: while no proxy ran (the direct runs), the proxy CPU was at most "
                 f"{pct(max(bg))} busy with other work of this shared VM")

    # What nginx saw.
    tls_lines = []
    for s in SIDES:
        for metric in ("conn", "lat"):
            v = view.get((s, metric))
            if not v or not v["requests"]:
                continue
            kinds = ", ".join(f"{k} {n * 100 / v['requests']:.0f}%" for k, n in
                              sorted(v["tls"].items(), key=lambda kv: -kv[1]))
            tls_lines.append(f"- {s}, {metric}: {v['requests']} requests at nginx, sessions resumed "
                             f"{v['reused'] * 100 / v['requests']:.0f}%; {kinds}")

    runs = []
    for key, label, unit in METRICS:
        runs.append(f"- {label} ({unit}): " + "; ".join(
            f"{s} " + ", ".join(f"{x:.{0 if unit in ('MB/s', 'req/s') else 3}f}" for x in series(s, key))
            for s in SIDES))
    checks = "; ".join(f"round {c['round']}: {c['connections']} proxied ({c['redirected']} redirected, "
                       f">= {c['expected_min']} expected), {c['bytes_down'] / 1e9:.2f} GB down, "
                       f"{c['failures']} failures" for c in b.checks if c["round"] > 0)

    print()
    print("\n".join(values))
    print()
    print("\n".join(ratios))
    print()
    print("\n".join(lat))
    print()
    print("\n".join(cpu))
    print()
    print("\n".join(notes))
    print()
    print("per-round values:")
    print("\n".join(runs))
    print("what nginx saw:")
    print("\n".join(tls_lines))
    print(f"tlswall {b.agent_version}, counters per run: {checks}")
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; wall time {wall:.0f}s")
    for e in b.errors:
        print(f"warning: {e}")
    if misses:
        print(f"BELOW TARGET: {', '.join(misses)}")

    if a.write:
        write_report(a, b, info, rounds, seconds, wall, load_start, load_end, cmd_line,
                     values, ratios, lat, cpu, notes, runs, tls_lines, checks)
    if a.strict and misses:
        return 1
    return 0


def write_report(a, b, info, rounds, seconds, wall, load_start, load_end, cmd_line,
                 values, ratios, lat, cpu, notes, runs, tls_lines, checks) -> None:
    md = f"""## Transparent upgrade proxy: tlswall against haproxy and stunnel4

A plaintext HTTP client reaching HTTPS nginx through tlswall's upgrade proxy,
haproxy (TCP mode) and stunnel4 (client mode), all verifying the server's
chain and name, plus the client speaking HTTPS itself (`direct`, reference),
measured side by side in one run, in the same namespaces: {rounds} rounds of
{seconds:g} s per metric, the order of the four sides changing every round (a
4x4 Latin square: each side in each position once every four rounds).
Generated by `tests/bench/bench_upgrade.py`; do not edit by hand.

### Result

Medians over the rounds:

{chr(10).join(values)}

Targets (issue 5): throughput >= 1.0x haproxy and >= 1.3x stunnel4,
connection rate >= 1.0x haproxy. `paired` = median over rounds of the ratio
of the two sides measured in the same round (min-max in brackets); the
verdict uses it.

{chr(10).join(ratios)}

Latency of one short request, and what a proxy adds to it (p99 of the side
minus p99 of `direct` in the same round, median over rounds). "New conn" is
what a one-request-per-connection client sees (connect to end of response;
direct: with its own verified TLS handshake, session reused like the
proxies'); "open conn" is a request on a kept-alive connection (wrk -c1).
The direct client does its TLS in Python on the load CPU; a proxy does it in
C on its own CPU, so an added latency can come out below zero.

{chr(10).join(lat)}

CPU of each proxy process (all threads, user + system, on its one CPU),
during the bulk and conn runs:

{chr(10).join(cpu)}

{chr(10).join("- " + n for n in notes)}

What nginx saw (its access log, by the time window of each run):

{chr(10).join(tls_lines)}

Per-round values:

{chr(10).join(runs)}

tlswall's own counters (Prometheus `tlswall_upgrade_*`) after each tlswall
run, which must show every measured connection went through the upgrade
proxy, with no failure (else the run aborts): {checks}.

### Environment

- date: {info['date']}
- kernel: {info['kernel']}
- CPUs: {info['cpus']} ({info['cpu_model']})
- tlswall: {b.agent_version}, tree {info['git']}
- {info['openssl']}
- Debian packages: nginx {info['nginx']}, haproxy {info['haproxy']},
  stunnel4 {info['stunnel4']}, wrk {info['wrk']}; Python {info['python']}
- proxies on CPU {a.proxy_cpu}; nginx (1 worker) and the load generator on
  CPU {a.load_cpu}; niceness {a.nice} for all of them
- load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f} (the end
  figure includes this benchmark's own two busy CPUs; the VM is shared with
  builds and other tests: compare ratios, not absolutes, and see the
  background-load line above)
- wall time of the run: {wall:.0f} s

### Reproduce

```
{cmd_line} --write
```

(root; needs a built tree, `TLSWALL_BUILD_DIR` or `--build-dir` if not
`./build`; Debian packages iproute2, nginx-light, wrk, openssl, util-linux,
curl, haproxy, stunnel4, which the script installs with apt-get if missing.)

### Method

- Two private network namespaces joined by a veth pair
  (`tests/e2e/sandbox.py`); nginx listens on 198.18.130.10:443 in the server
  namespace; the proxies and the clients are in the client namespace. The
  upgrade cgroup is a child cgroup made for the run. Nothing touches the
  host's interfaces or the root cgroup.
- Certificates: a CA made for the run, and a P-256 leaf signed by it for
  the name `{NAME}`. Every side sends that name as SNI and
  verifies the chain against the CA and the name against the leaf:
  tlswall's `[[upgrades]]` rule (`server_name`, `ca_file`; verification has
  no off switch), haproxy `ssl verify required ca-file ... sni str(<name>)
  verifyhost <name>`, stunnel4 `verifyChain = yes`, `CAfile`, `checkHost`. Before measuring, a
  second haproxy frontend and stunnel4 service that verify against another
  name must fail (so verification is really on).
- Same CPU budget for every proxy: all its threads pinned to one CPU
  (`--proxy-cpu`, here CPU {a.proxy_cpu}; threads made later inherit it).
  tlswall: `[upgrade] workers = 1` (one proxy thread in the unprivileged
  proxy worker process, which asks the daemon for every accepted
  connection's original destination over a Unix socket: one round trip per
  connection; the daemon's threads, e.g. the one answering those queries and
  the event pipeline writing one JSON event per upgraded connection as
  shipped, share that CPU and count as the proxy's CPU); haproxy `nbthread 1`; stunnel4 as
  packaged (one thread per connection). nginx (one worker, its default TLS
  1.3 session tickets) and the load generator (wrk, or the latency client)
  share the other CPU (`--load-cpu`, here CPU {a.load_cpu}). haproxy logs
  nothing, stunnel4 logs at `warning` (no per-connection lines); tlswall
  keeps its per-connection events (its audit trail).
- tlswall: `tlswalld` runs as shipped (`configs/tlswalld.toml` with the
  sandbox's paths; its tc classifier on the client namespace's eth0, a
  policy with only the `[[upgrades]]` rule), started for its slot of each
  round and stopped after (`on_stop = "detach"`: the classifier is then
  removed and does not touch the other sides' traffic); its clients run from
  inside the upgrade cgroup and connect to `http://198.18.130.10:443/`; the
  cgroup connect hook sends them to the proxy on 127.0.0.1:{PORT['tlswall']}.
  haproxy and stunnel4 clients connect to their loopback frontends
  (127.0.0.1:{PORT['haproxy']}, 127.0.0.1:{PORT['stunnel4']}); `direct` connects to
  `https://198.18.130.10/`.
- **bulk**: `wrk -t1 -c{a.bulk_conns}` keep-alive GETs of a static file of
  {a.bulk_mib} MiB; MB/s = bytes read by wrk / duration (headers are < 0.01%). wrk's
  own TLS for `direct` does not verify (reference only).
- **conn**: `wrk -t1 -c{a.conn_conns} -H "Connection: close"` on `/` (a 17-byte
  body): a new client connection, a new upstream TLS connection and one
  request each; requests/s. For `direct` wrk itself makes the TLS
  connections (resumed, unverified; reference only).
- **new conn latency**: a Python client (`bench_upgrade.py lat-client`)
  makes one request per new connection, one after another, for {seconds:g} s,
  timing connect to end of response; p50 and p99 of that run.
- **open conn latency**: `wrk -t1 -c1` keep-alive on `/`, wrk's p99. A
  proxied request crosses between the two CPUs (client to proxy, proxy to
  nginx and back), which `direct` (all on one CPU) does not; the proxies'
  figures include those cross-CPU wake-ups.
- Each metric's value for a side is its median over rounds; ratios are
  paired within rounds. A warm-up pass of every side is discarded.
"""
    out = write_section("bench_upgrade", md)
    print(f"wrote the bench_upgrade section of {out}")


if __name__ == "__main__":
    sys.exit(main())
