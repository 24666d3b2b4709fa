"""Private network-namespace sandbox for tlswall end-to-end tests, demo, benchmark.

SAFETY (see DESIGN.md, "Safety rule"): nothing here touches the host's
interfaces or the root network namespace. Everything runs inside two network
namespaces created with unique names (tw<pid>...), joined by one veth pair
whose two ends are created directly inside those namespaces. Only addresses in
198.18.0.0/15 and 2001:db8::/32 are used. tlswalld is only ever started with
`ip netns exec <client-ns>` and only after checking that the namespace is one
this process created and that its eth0 is the sandbox veth. Namespaces,
processes, temp dirs and bpffs pins are removed on exit, also on failure,
exceptions and SIGINT/SIGTERM/SIGHUP (try/finally + atexit + signal handlers).

Layout:
    client ns  eth0 (veth)  198.18.0.1/15, 2001:db8:1::1/32
        |
    server ns  srv0 (veth)  198.18.130.10/15  (inside boundary 198.18.128.0/17)
                            198.18.1.10/15    (outside any boundary)
                            198.18.200.10/15  (exempt range 198.18.200.0/24)
                            2001:db8:2::10/32 (inside boundary 2001:db8:2::/48)
                            2001:db8:1::10/32 (outside)

    optional (add_routed_ns): app ns app0 198.18.64.2/24 -- gw0 198.18.64.1/24
    in the client ns, which forwards it out of eth0 (flows with no local
    socket there: a blocked one is not destroyed and keeps retransmitting)

Stdlib only; run with /usr/bin/python3 (Debian's).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PYTHON = "/usr/bin/python3"
NETCLIENT = str(HERE / "netclient.py")

CLIENT_V4 = "198.18.0.1"
CLIENT_V6 = "2001:db8:1::1"
SRV_BOUNDARY_V4 = "198.18.130.10"
SRV_OUTSIDE_V4 = "198.18.1.10"
SRV_EXEMPT_V4 = "198.18.200.10"
SRV_BOUNDARY_V6 = "2001:db8:2::10"
SRV_OUTSIDE_V6 = "2001:db8:1::10"
SERVER_V4 = [SRV_BOUNDARY_V4, SRV_OUTSIDE_V4, SRV_EXEMPT_V4]
SERVER_V6 = [SRV_BOUNDARY_V6, SRV_OUTSIDE_V6]
# Optional routed "app" namespace behind the client ns (Sandbox.add_routed_ns).
APP_V4 = "198.18.64.2"
APP_GW_V4 = "198.18.64.1"

_ALLOWED_NETS = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]

# Tool -> Debian package; a missing tool is a hard failure, never a skip.
TOOL_PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "ss": "iproute2",
    "nginx": "nginx-light",
    "curl": "curl",
    "openssl": "openssl",
    "socat": "socat",
    "iperf3": "iperf3",
    "wrk": "wrk",
    "stunnel4": "stunnel4",
    "haproxy": "haproxy",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
}


class SandboxError(RuntimeError):
    pass


class ToolMissing(SandboxError):
    pass


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pkgs = sorted({TOOL_PACKAGES.get(n, n) for n in missing})
        raise ToolMissing(
            f"missing tool(s): {', '.join(missing)} -- install with: apt-get install -y {' '.join(pkgs)}"
        )
    if not os.path.exists(PYTHON):
        raise ToolMissing(f"{PYTHON} missing -- install with: apt-get install -y python3")


def apt_install(packages: list[str]) -> None:
    """Installs Debian packages a test needs (apt-get update, then install);
    a failure raises ToolMissing, so the test fails, never skips."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + packages):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            raise ToolMissing(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")


def check_addr(addr: str) -> str:
    """Refuses any address outside the test ranges (defence in depth)."""
    ip = ipaddress.ip_address(addr.strip("[]"))
    if not any(ip in n for n in _ALLOWED_NETS):
        raise SandboxError(f"refusing address outside 198.18.0.0/15 / 2001:db8::/32: {addr}")
    return addr


def build_dir(cli_value: str | None = None) -> Path:
    return Path(cli_value or os.environ.get("TLSWALL_BUILD_DIR") or (REPO / "build")).resolve()


def daemon_binaries(bdir: Path) -> tuple[Path, Path]:
    d, c = bdir / "agent" / "tlswalld", bdir / "agent" / "tlswallctl"
    for p in (d, c):
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise SandboxError(f"{p} not found or not executable (build tlswall first, or set TLSWALL_BUILD_DIR)")
    return d, c


# --------------------------------------------------------------------------
# Global cleanup registry: every sandbox registers itself; atexit and the
# signal handlers tear down whatever is still alive.
# --------------------------------------------------------------------------
_LIVE: list["Sandbox"] = []
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


class Interrupted(BaseException):
    """Raised from a signal handler so that finally blocks run."""


def _cleanup_all() -> None:
    with _LIVE_LOCK:
        boxes = list(_LIVE)
    for sb in reversed(boxes):
        try:
            sb.close()
        except Exception as e:  # noqa: BLE001 -- best effort at exit
            print(f"sandbox: cleanup of {sb.prefix} failed: {e}", file=sys.stderr)


def install_signal_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_cleanup_all)

    def handler(signum, _frame):
        # Ignore repeats while we unwind; cleanup runs in finally/atexit.
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


# --------------------------------------------------------------------------
# Minimal TOML writer (enough for the agent config: str/int/bool/float, lists
# of those, nested tables).
# --------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v)} to TOML")


def dump_toml(d: dict, prefix: str = "") -> str:
    out, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            out.append(f"{k} = {_toml_value(v)}")
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out.append(f"\n[{name}]")
        out.append(dump_toml(v, name))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------
class Proc:
    """A background process started by the sandbox inside one of its namespaces."""

    def __init__(self, name: str, popen: subprocess.Popen, log_path: Path | None):
        self.name, self.popen, self.log_path = name, popen, log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signals the process's own group (started with its own session), waits,
        escalates to SIGKILL. Returns the exit code (None if it could not be reaped)."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return None
            return self.popen.returncode


class Result:
    def __init__(self, cmd, rc, stdout, stderr, elapsed, timed_out=False):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr
        self.elapsed, self.timed_out = elapsed, timed_out

    def __repr__(self):
        return f"Result(rc={self.rc}, elapsed={self.elapsed:.3f}s, timed_out={self.timed_out})"

    def brief(self, n: int = 300) -> str:
        s = (self.stderr or "").strip() or (self.stdout or "").strip()
        return s[-n:].replace("\n", " | ")


# --------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------
_COUNTER = [0]


class Sandbox:
    def __init__(self, tag: str = "e2e", verbose: bool = False):
        require_tools("ip", "tc", "ss")
        if os.geteuid() != 0:
            raise SandboxError("must run as root (creates network namespaces)")
        _COUNTER[0] += 1
        self.prefix = f"tw{os.getpid()}{tag[:4]}{_COUNTER[0]}"
        self.client_ns = f"{self.prefix}c"
        self.server_ns = f"{self.prefix}s"
        self.app_ns = f"{self.prefix}a"  # only with add_routed_ns()
        self.verbose = verbose
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.procs: list[Proc] = []
        self.pin_roots: list[str] = []
        self.created_ns: list[str] = []
        self.cert = self.tmp / "server.crt"
        self.key = self.tmp / "server.key"
        self._closed = False
        with _LIVE_LOCK:
            _LIVE.append(self)

    # -- context manager --------------------------------------------------
    def __enter__(self):
        try:
            self.setup_network()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[sandbox] {msg}", flush=True)

    # -- host-side commands (only ip/tc/ss with -n/netns on OUR namespaces) --
    def _sh(self, cmd: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
        self.log("$ " + " ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SandboxError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")
        return r

    def _ours(self, ns: str) -> str:
        if ns not in (self.client_ns, self.server_ns, self.app_ns) or ns not in self.created_ns:
            raise SandboxError(f"refusing to act on namespace {ns!r}: not created by this sandbox")
        return ns

    def setup_network(self) -> None:
        existing = self._sh(["ip", "netns", "list"]).stdout
        for ns in (self.client_ns, self.server_ns):
            if any(line.split()[0] == ns for line in existing.splitlines() if line.strip()):
                raise SandboxError(f"namespace {ns} already exists (stale run?); refusing to reuse it")
        for ns in (self.client_ns, self.server_ns):
            self._sh(["ip", "netns", "add", ns])
            self.created_ns.append(ns)
        c, s = self.client_ns, self.server_ns
        for ns in (c, s):
            self._sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            # Deterministic v6 (set before the veth exists, so it inherits them):
            # no DAD delay on link-local addresses, no router solicitations.
            for knob in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                         "net.ipv6.conf.default.router_solicitations=0"):
                self._sh(["ip", "netns", "exec", ns, "sysctl", "-qw", knob], check=False)
        # The veth pair is created inside the client ns with its peer placed
        # directly into the server ns: neither end ever exists in the root ns.
        self._sh(["ip", "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "srv0", "netns", s])
        self._sh(["ip", "-n", c, "addr", "add", f"{CLIENT_V4}/15", "dev", "eth0"])
        self._sh(["ip", "-n", c, "addr", "add", f"{CLIENT_V6}/32", "dev", "eth0", "nodad"])
        for a in SERVER_V4:
            self._sh(["ip", "-n", s, "addr", "add", f"{check_addr(a)}/15", "dev", "srv0"])
        for a in SERVER_V6:
            self._sh(["ip", "-n", s, "addr", "add", f"{check_addr(a)}/32", "dev", "srv0", "nodad"])
        self._sh(["ip", "-n", c, "link", "set", "eth0", "up"])
        self._sh(["ip", "-n", s, "link", "set", "srv0", "up"])
        # Wait (bounded) for carrier on both ends.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = self._sh(["ip", "-n", c, "-br", "link", "show", "eth0"], check=False)
            if "LOWER_UP" in r.stdout:
                break
            time.sleep(0.05)
        # Static neighbour entries: no ARP/ND on the measured paths (the first
        # IPv6 neighbour resolution on a fresh veth otherwise costs ~1 s, which
        # would pollute fail-fast timings).
        mac_c = self._mac(c, "eth0")
        mac_s = self._mac(s, "srv0")
        for a in SERVER_V4 + SERVER_V6:
            self._sh(["ip", "-n", c, "neigh", "replace", a, "lladdr", mac_s, "dev", "eth0", "nud", "permanent"])
        for a in (CLIENT_V4, CLIENT_V6):
            self._sh(["ip", "-n", s, "neigh", "replace", a, "lladdr", mac_c, "dev", "srv0", "nud", "permanent"])
        self.log(f"network up: {c} <-> {s}")

    def add_routed_ns(self) -> str:
        """Optional third namespace ("app", like a container behind a host):
        app0 198.18.64.2/24 in it, gw0 198.18.64.1/24 in the client ns, which
        forwards its traffic out of eth0. tc egress on eth0 judges those flows,
        but no socket of the client ns owns them, so tlswalld cannot destroy
        them: a blocked flow stays open and its sender keeps retransmitting
        (what "blocked flows stay blocked" needs across a restart). Same
        safety rules: created here, test addresses only, removed by close().
        Returns the namespace name."""
        if self.app_ns in self.created_ns:
            return self.app_ns
        a, c, s = self.app_ns, self._ours(self.client_ns), self._ours(self.server_ns)
        existing = self._sh(["ip", "netns", "list"]).stdout
        if any(line.split()[0] == a for line in existing.splitlines() if line.strip()):
            raise SandboxError(f"namespace {a} already exists (stale run?); refusing to reuse it")
        self._sh(["ip", "netns", "add", a])
        self.created_ns.append(a)
        self._sh(["ip", "-n", a, "link", "set", "lo", "up"])
        self._sh(["ip", "-n", c, "link", "add", "gw0", "type", "veth", "peer", "name", "app0", "netns", a])
        self._sh(["ip", "-n", c, "addr", "add", f"{check_addr(APP_GW_V4)}/24", "dev", "gw0"])
        self._sh(["ip", "-n", a, "addr", "add", f"{check_addr(APP_V4)}/24", "dev", "app0"])
        self._sh(["ip", "-n", c, "link", "set", "gw0", "up"])
        self._sh(["ip", "-n", a, "link", "set", "app0", "up"])
        self._sh(["ip", "-n", a, "route", "add", "default", "via", APP_GW_V4])
        self._sh(["ip", "netns", "exec", c, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        mac_gw, mac_app, mac_c = self._mac(c, "gw0"), self._mac(a, "app0"), self._mac(c, "eth0")
        self._sh(["ip", "-n", a, "neigh", "replace", APP_GW_V4, "lladdr", mac_gw, "dev", "app0", "nud", "permanent"])
        self._sh(["ip", "-n", c, "neigh", "replace", APP_V4, "lladdr", mac_app, "dev", "gw0", "nud", "permanent"])
        # The server sees 198.18.0.0/15 on-link: send the app's replies to
        # the client ns's eth0, which routes them on to gw0.
        self._sh(["ip", "-n", s, "neigh", "replace", APP_V4, "lladdr", mac_c, "dev", "srv0", "nud", "permanent"])
        self.log(f"routed namespace up: {a} -> {c} -> {s}")
        return a

    def app(self, cmd: list[str], **kw) -> "Result":
        return self.run(self.app_ns, cmd, **kw)

    def _mac(self, ns: str, dev: str) -> str:
        info = json.loads(self._sh(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)
        return info[0]["address"]

    def assert_client_eth0_is_sandbox_veth(self) -> None:
        """Guard before any tc attach: eth0 in the client ns must be our veth."""
        ns = self._ours(self.client_ns)
        r = self._sh(["ip", "-n", ns, "-d", "-j", "link", "show", "eth0"])
        info = json.loads(r.stdout)
        kind = info[0].get("linkinfo", {}).get("info_kind") if info else None
        if kind != "veth":
            raise SandboxError(f"eth0 in {ns} is not a veth ({kind!r}); refusing to attach")
        # And the client ns must not be the namespace this harness runs in
        # (the host's): compare the netns inodes.
        own = os.stat("/proc/self/ns/net")
        nsf = os.stat(f"/run/netns/{ns}")
        if (own.st_dev, own.st_ino) == (nsf.st_dev, nsf.st_ino) or own.st_ino == nsf.st_ino:
            raise SandboxError(f"{ns} is the harness's own network namespace; refusing")

    # -- running things in the namespaces -----------------------------------
    def run(self, ns: str, cmd: list[str], timeout: float = 15, input: str | None = None,
            env: dict | None = None) -> Result:
        full = ["ip", "netns", "exec", self._ours(ns)] + [str(x) for x in cmd]
        self.log("$ " + " ".join(full))
        t0 = time.monotonic()
        try:
            r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input,
                               env=env, start_new_session=True)
            return Result(cmd, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            return Result(cmd, None, out, err, time.monotonic() - t0, timed_out=True)

    def client(self, cmd: list[str], **kw) -> Result:
        return self.run(self.client_ns, cmd, **kw)

    def server(self, cmd: list[str], **kw) -> Result:
        return self.run(self.server_ns, cmd, **kw)

    def run_in_cgroup(self, ns: str, cgroup_dir: str, cmd: list[str], timeout: float = 15) -> Result:
        """Runs cmd in `ns` from inside `cgroup_dir` (a child cgroup the test
        made): the shell joins the cgroup in the host mount namespace, where
        the cgroup fs is, then execs into the network namespace."""
        script = f'echo $$ > {cgroup_dir}/cgroup.procs && exec ip netns exec {self._ours(ns)} "$@"'
        self.log(f"$ (cgroup {cgroup_dir}) " + " ".join(str(x) for x in cmd))
        t0 = time.monotonic()
        try:
            r = subprocess.run(["sh", "-c", script, "sh"] + [str(x) for x in cmd],
                               capture_output=True, text=True, timeout=timeout)
            return Result(cmd, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            return Result(cmd, None, "", "", time.monotonic() - t0, timed_out=True)

    def spawn(self, ns: str, name: str, cmd: list[str], env: dict | None = None,
              stdout_path: Path | None = None) -> Proc:
        """Starts a background process inside `ns` in its own session (so its
        whole group can be signalled by id). `ip netns exec` execs the command,
        so the pid is the command's own."""
        log_path = self.tmp / f"{name}.log"
        full = ["ip", "netns", "exec", self._ours(ns)] + [str(x) for x in cmd]
        self.log("& " + " ".join(full))
        errf = open(log_path, "ab")
        outf = open(stdout_path, "ab") if stdout_path else errf
        try:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=outf, stderr=errf,
                                 start_new_session=True, env=env)
        finally:
            errf.close()
            if outf is not errf:
                outf.close()
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def nstat(self, ns: str, key: str) -> int:
        """One kernel SNMP/netstat counter of `ns` (absolute: nstat -a)."""
        r = self.run(ns, ["nstat", "-az", key])
        for line in r.stdout.splitlines():
            if line.split() and line.split()[0] == key:
                return int(line.split()[1])
        raise SandboxError(f"nstat {key} in {ns}: {r.brief()}")

    def wait_listen(self, port: int, ns: str | None = None, timeout: float = 10) -> None:
        ns = ns or self.server_ns
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self._sh(["ip", "netns", "exec", self._ours(ns), "ss", "-Hltn", f"sport = :{port}"], check=False)
            if r.stdout.strip():
                return
            time.sleep(0.05)
        raise SandboxError(f"nothing listening on port {port} in {ns} after {timeout}s")

    # -- servers -------------------------------------------------------------
    def make_cert(self) -> None:
        require_tools("openssl")
        if self.cert.exists():
            return
        san = ",".join(f"IP:{a}" for a in SERVER_V4 + SERVER_V6)
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=tlswall-e2e", "-addext", f"subjectAltName={san}",
             "-keyout", str(self.key), "-out", str(self.cert)],
            capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise SandboxError(f"openssl req failed: {r.stderr}")

    def start_nginx(self, workers: int = 1, cpu: int | None = None) -> Proc:
        """nginx on 80 (HTTP) and 443 (HTTPS), IPv4 and IPv6, all server addresses.
        Accepts TLS 1.0-1.3 at SECLEVEL 0 so old hellos reach the wire.
        `cpu` pins the worker(s) to that CPU (benchmarks)."""
        require_tools("nginx")
        self.make_cert()
        d = self.tmp / "nginx"
        d.mkdir(exist_ok=True)
        (d / "html").mkdir(exist_ok=True)
        (d / "html" / "big.bin").write_bytes(os.urandom(1 << 20))
        conf = d / "nginx.conf"
        conf.write_text(f"""
worker_processes {workers};
{f"worker_cpu_affinity {' '.join(bin(1 << cpu)[2:] for _ in range(workers))};" if cpu is not None else ""}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 80 backlog=4096;
        listen [::]:80 backlog=4096;
        listen 443 ssl backlog=4096;
        listen [::]:443 ssl backlog=4096;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.key};
        ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
        ssl_ciphers DEFAULT:@SECLEVEL=0;
        root {d}/html;
        location = / {{ default_type text/plain; return 200 "tlswall-e2e ok\\n"; }}
        location /big.bin {{ }}
    }}
}}
""")
        p = self.spawn(self.server_ns, "nginx",
                       ["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf), "-g", "daemon off;"])
        try:
            self.wait_listen(80)
            self.wait_listen(443)
        except SandboxError:
            raise SandboxError(f"nginx did not start:\n{p.log_tail()}\n{(d / 'error.log').read_text(errors='replace') if (d / 'error.log').exists() else ''}")
        return p

    def start_echo(self, port: int) -> Proc:
        """Plaintext TCP echo server (socat + cat per connection), v4 and v6."""
        require_tools("socat")
        p = self.spawn(self.server_ns, f"echo-{port}",
                       ["socat", f"TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0,backlog=1024", "EXEC:/bin/cat"])
        self.wait_listen(port)
        return p

    def start_python_server(self, name: str, script: str, args: list[str], port: int) -> Proc:
        p = self.spawn(self.server_ns, name, [PYTHON, script] + args)
        self.wait_listen(port)
        return p

    # -- cleanup -------------------------------------------------------------
    def _kill_ns_pids(self, ns: str) -> None:
        """Kills any process still inside one of OUR namespaces, by pid."""
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
        pids = [int(x) for x in r.stdout.split() if x.isdigit()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
                if not pids:
                    return
                time.sleep(0.05)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for p in reversed(self.procs):
            try:
                p.stop(timeout=5)
            except Exception as e:  # noqa: BLE001
                errors.append(f"stop {p.name}: {e}")
        for ns in list(self.created_ns):
            try:
                self._kill_ns_pids(ns)
            except Exception as e:  # noqa: BLE001
                errors.append(f"kill pids in {ns}: {e}")
        for ns in reversed(self.created_ns):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, timeout=20)
            if r.returncode != 0:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        self.created_ns.clear()
        # Pins live on a bpffs we mounted in the host mount namespace (so they
        # outlive a daemon, as in production). Tear down what is recorded
        # there (filters of namespaces already deleted are gone anyway), then
        # unmount it.
        for pr, ctl in self.pin_roots:
            if not os.path.ismount(pr):
                continue
            subprocess.run([ctl, "--socket", "/nonexistent", "--pin-root", pr, "teardown"],
                           capture_output=True, text=True, timeout=20)
            r = subprocess.run(["umount", pr], capture_output=True, text=True, timeout=20)
            if r.returncode != 0:
                errors.append(f"umount {pr}: {r.stderr.strip()}")
        if os.environ.get("TLSWALL_KEEP_TMP"):
            print(f"sandbox: keeping {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        with _LIVE_LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
        if errors:
            print("sandbox: cleanup problems: " + "; ".join(errors), file=sys.stderr)


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------
def cgroup2_mount() -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    raise SandboxError("no cgroup v2 mount in /proc/self/mounts")


class Cgroups:
    """Child cgroups of one test run only: <mount>/tlswall-e2e-<pid>/<name>,
    found under the cgroup v2 mount (never assumed); close() moves what is
    left in them to the root and removes them, children first."""

    def __init__(self):
        self.mount = cgroup2_mount()
        self.rel_root = f"/tlswall-e2e-{os.getpid()}"
        self.root = self.mount + self.rel_root
        os.mkdir(self.root)
        self.children: list[str] = []

    def make(self, name: str) -> str:
        path = f"{self.root}/{name}"
        os.mkdir(path)
        self.children.append(path)
        return path

    def rel(self, name: str) -> str:
        return f"{self.rel_root}/{name}"

    def close(self) -> None:
        # Whatever is left in our cgroups goes back to the root first.
        for path in self.children + [self.root]:
            try:
                with open(f"{path}/cgroup.procs") as f:
                    pids = [p for p in f.read().split() if p]
                for p in pids:
                    try:
                        with open(f"{self.mount}/cgroup.procs", "w") as out:
                            out.write(p)
                    except OSError:
                        pass
            except OSError:
                pass
        for path in list(reversed(self.children)) + [self.root]:  # children first
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


class Daemon:
    """tlswalld running inside the sandbox's client namespace."""

    def __init__(self, sb: Sandbox, bdir: Path, name: str = "tlswalld"):
        self.sb = sb
        self.tlswalld, self.tlswallctl = daemon_binaries(bdir)
        self.name = name
        self.dir = sb.tmp / name
        self.dir.mkdir(exist_ok=True)
        self.socket = str(self.dir / "control.sock")
        self.events = self.dir / "events.jsonl"
        # A bpffs of our own in the host mount namespace: the daemon runs under
        # `ip netns exec` (a private mount namespace) but sees it, and pins
        # there survive the daemon, so restarts adopt them.
        self.pin_root = str(self.dir / "bpffs")
        os.makedirs(self.pin_root, exist_ok=True)
        if not os.path.ismount(self.pin_root):
            # mode=700: the pin root is the daemon's own directory, which it refuses
            # when others can write it (bpffs roots default to 1777).
            subprocess.run(["mount", "-t", "bpf", "-o", "mode=700", "bpf", self.pin_root], check=True,
                           timeout=20)
        sb.pin_roots.append((self.pin_root, str(self.tlswallctl)))
        self.config_path: Path | None = None
        self.proc: Proc | None = None

    def write_config(self, policy_path: str, base: Path | None = None, log_level: str = "debug",
                     extra: dict | None = None) -> Path:
        """A temp agent config: the shipped one with policy, pins, socket,
        events and interfaces overridden."""
        base = base or (REPO / "configs" / "tlswalld.toml")
        with open(base, "rb") as f:
            cfg = tomllib.load(f)
        cfg["interfaces"] = ["eth0"]
        cfg["policy"] = str(policy_path)
        cfg["pin_root"] = self.pin_root
        cfg.setdefault("control", {})
        cfg["control"]["socket"] = self.socket
        cfg["control"]["group"] = ""
        cfg.setdefault("events", {})["json_file"] = str(self.events)
        cfg["events"]["state_dir"] = str(self.dir / "state")  # ids, disk buffers
        cfg.setdefault("log", {})["level"] = log_level
        for k, v in (extra or {}).items():
            if isinstance(v, dict):
                cfg.setdefault(k, {}).update(v)
            else:
                cfg[k] = v
        self.config_path = self.dir / "tlswalld.toml"
        self.config_path.write_text(dump_toml(cfg))
        return self.config_path

    def start(self, config: Path | None = None, log_level: str | None = "debug",
              ready_timeout: float = 30, extra_args: list[str] | None = None) -> None:
        config = config or self.config_path
        if config is None:
            raise SandboxError("no config written")
        self.sb.assert_client_eth0_is_sandbox_veth()
        cmd = [str(self.tlswalld), "--config", str(config), "--control-socket", self.socket,
               "--events", str(self.events), "--pin-root", self.pin_root]
        if log_level:
            cmd += ["--log-level", log_level]
        cmd += extra_args or []
        self.proc = self.sb.spawn(self.sb.client_ns, self.name, cmd)
        self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and not self.proc.alive():
                raise SandboxError(f"tlswalld exited with {self.proc.popen.returncode} before ready:\n{self.proc.log_tail(40)}")
            r = self.ctl(["status", "--json"], timeout=5)
            if r.rc == 0:
                try:
                    st = json.loads(r.stdout)
                    if int(st.get("policy", {}).get("generation", 0)) >= 1:
                        return st
                    last = f"generation={st.get('policy', {}).get('generation')}"
                except (ValueError, TypeError) as e:
                    last = f"bad status JSON: {e}: {r.stdout[:200]}"
            else:
                last = r.brief()
            time.sleep(0.2)
        raise SandboxError(f"tlswalld not ready after {timeout}s (last: {last}):\n{self.proc.log_tail(40) if self.proc else ''}")

    def ctl(self, args: list[str], timeout: float = 10, with_socket: bool = True) -> Result:
        cmd = [str(self.tlswallctl)] + (["--socket", self.socket] if with_socket else []) + args
        return self.sb.client(cmd, timeout=timeout)

    def status(self) -> dict:
        r = self.ctl(["status", "--json"])
        if r.rc != 0:
            raise SandboxError(f"tlswallctl status failed rc={r.rc}: {r.brief()}")
        return json.loads(r.stdout)

    def proxy_worker_pid(self) -> int | None:
        """The daemon's upgrade proxy worker: its child process named
        tlswall-proxy (proxy/worker_process.h); None if there is none."""
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if comm == "tlswall-proxy" and self.proc and ppid == self.proc.pid:
                return int(d.name)
        return None

    def sighup(self) -> None:
        assert self.proc is not None and self.proc.alive(), "daemon not running"
        os.kill(self.proc.pid, signal.SIGHUP)

    def wait_generation(self, above: int, timeout: float = 10) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = self.status()
                if int(st["policy"]["generation"]) > above:
                    return st
            except (SandboxError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        return None

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        return self.proc.stop(signal.SIGTERM, timeout=timeout)

    def read_events(self) -> list[dict]:
        if not self.events.exists():
            return []
        out = []
        with open(self.events, "r", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # partial last line
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        out.append({"type": "_unparseable", "raw": line})
        return out

    def wait_event(self, pred, timeout: float = 5, start_index: int = 0) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.read_events()[start_index:]:
                try:
                    if pred(ev):
                        return ev
                except Exception:  # noqa: BLE001 -- malformed event: not a match
                    pass
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def tc_filters(self) -> str:
        r = self.sb.client(["tc", "filter", "show", "dev", "eth0", "egress"], timeout=5)
        return (r.stdout or "").strip()


def same_ip(a, b) -> bool:
    try:
        return ipaddress.ip_address(str(a)) == ipaddress.ip_address(str(b))
    except ValueError:
        return False


class Checks:
    """Named checks of an e2e script: each prints PASS/FAIL with its detail;
    a check that raises is a failed check. summary() prints the closing
    `N passed, M failed` line and returns the exit code. With timed=True each
    detail ends with the check's duration."""

    def __init__(self, timed: bool = False):
        self.results: list[tuple[str, bool, str]] = []
        self.timed = timed

    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return ok

    def run(self, name: str, fn, *args) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn(*args)
        except Interrupted:
            raise
        except Exception as e:  # noqa: BLE001 -- a crashing check is a failed check
            ok, detail = False, f"exception: {type(e).__name__}: {e}"
            if os.environ.get("TLSWALL_E2E_TRACE"):
                traceback.print_exc()
        if self.timed:
            detail = f"{detail} [{time.monotonic() - t0:.1f}s]"
        return self.record(name, ok, detail)

    def summary(self) -> int:
        p = sum(1 for _, ok, _ in self.results if ok)
        f = len(self.results) - p
        if f:
            print("\nfailed checks:")
            for n, ok, d in self.results:
                if not ok:
                    print(f"  - {n}: {d}")
        print(f"{p} passed, {f} failed", flush=True)
        return 0 if f == 0 and p > 0 else 1
