"""Helpers for the event-pipeline end-to-end test (test_events_e2e.py) and the
kernel-to-Scribe benchmark (tests/bench/bench_events_kernel.py).

Everything here runs inside the sandbox's namespaces (tests/e2e/sandbox.py;
same safety rules): the daemon runs under `ip netns exec <client-ns>`, so its
127.0.0.1 is the client namespace's loopback, and the Scribe test server and
rsyslog are started INSIDE that namespace, listening on 127.0.0.1. Every
process is registered with the sandbox, which stops it on exit, also on
failure or a signal.

Stdlib only; run with /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

RSYSLOGD = "/usr/sbin/rsyslogd"
BOUNDARY = "remote"
RULE_ENFORCE = "remote-enforce"
RULE_MONITOR = "remote-monitor"
ENFORCE_PORTS = [6379, 80]
MONITOR_PORTS = [7000]


def policy_text(version: str, enforce_ports=None, monitor_ports=None) -> str:
    """A policy with one boundary (198.18.128.0/17, 2001:db8:2::/48), an
    enforce rule and a monitor rule on disjoint ports."""
    ep = enforce_ports or ENFORCE_PORTS
    mp = monitor_ports or MONITOR_PORTS
    return f"""# tlswall events e2e policy (generated)
version = "{version}"
default_mode = "monitor"

[boundaries.{BOUNDARY}]
description = "events e2e: the protected remote region"
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "{RULE_ENFORCE}"
boundary = "{BOUNDARY}"
ports = {json.dumps(ep)}
mode = "enforce"
min_tls = "1.2"

[[rules]]
name = "{RULE_MONITOR}"
boundary = "{BOUNDARY}"
ports = {json.dumps(mp)}
mode = "monitor"
min_tls = "1.2"
"""


# --------------------------------------------------------------------------
# The Scribe test server (build/tests/logging/tlswall_scribe_test_server)
# --------------------------------------------------------------------------
class ScribeServer:
    """tlswall_scribe_test_server inside a sandbox namespace, driven over its
    stdin (commands) and stdout (answers), as tests/logging/scribe_test_server_main.cc describes."""

    def __init__(self, sb: S.Sandbox, bdir: Path, name: str = "scribe", ns: str | None = None,
                 keep: bool = True):
        self.sb = sb
        self.binary = bdir / "tests" / "logging" / "tlswall_scribe_test_server"
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            raise S.SandboxError(f"{self.binary} missing: cmake --build {bdir} --target tlswall_scribe_test_server")
        self.out = sb.tmp / f"{name}.messages"
        self.log_path = sb.tmp / f"{name}.log"
        ns = ns or sb.client_ns
        cmd = ["ip", "netns", "exec", sb._ours(ns), str(self.binary), "--out", str(self.out)]
        if not keep:
            cmd.append("--no-keep")
        errf = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf,
                                          start_new_session=True, text=True, bufsize=1)
        finally:
            errf.close()
        self.proc = S.Proc(name, self.popen, self.log_path)
        sb.procs.append(self.proc)  # the sandbox stops it on exit
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()
        first = self._next(10)
        if not first or not first.startswith("port "):
            raise S.SandboxError(f"scribe test server did not start: {first!r} {self.proc.log_tail()}")
        self.port = int(first.split()[1])

    def _reader(self) -> None:
        for line in self.popen.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def cmd(self, line: str, timeout: float = 20) -> str:
        with self._lock:
            if self.popen.poll() is not None:
                raise S.SandboxError(f"scribe test server exited ({self.popen.returncode})")
            self.popen.stdin.write(line + "\n")
            self.popen.stdin.flush()
            ans = self._next(timeout)
        if ans is None:
            raise S.SandboxError(f"scribe test server: no answer to {line!r}")
        return ans

    def count(self) -> tuple[int, int, int]:
        """(accepted messages, Log calls, TRY_LATER answers)."""
        a = self.cmd("count").split()
        if len(a) != 4 or a[0] != "count":
            raise S.SandboxError(f"scribe test server: bad count answer {a}")
        return int(a[1]), int(a[2]), int(a[3])

    def messages(self) -> list[str]:
        ans = self.cmd("dump", timeout=60)
        if not ans.startswith("dumped"):
            raise S.SandboxError(f"scribe test server: dump failed: {ans}")
        n = int(ans.split()[1])
        # The server answers "dumped N" before its ofstream is closed (flushed),
        # so the file's tail may still be on its way: wait for N lines.
        deadline = time.monotonic() + 10
        while True:
            with open(self.out, "r", errors="replace") as f:
                data = f.read()
            lines = data.split("\n")[:-1]  # complete lines only
            if len(lines) >= n or time.monotonic() > deadline:
                return [line for line in lines if line.strip()]
            time.sleep(0.02)

    def events(self) -> list[dict]:
        out = []
        for m in self.messages():
            try:
                out.append(json.loads(m))
            except ValueError:
                out.append({"type": "_unparseable", "raw": m})
        return out

    def wait_accepted(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        got = 0
        while time.monotonic() < deadline:
            got = self.count()[0]
            if got >= n:
                return got
            time.sleep(0.1)
        return got

    def close(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.stdin.write("quit\n")
                self.popen.stdin.flush()
                self.popen.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        self.proc.stop(timeout=5)


# --------------------------------------------------------------------------
# A real rsyslog, in the foreground with its own config (as
# tests/logging/logging_rsyslog_test.cc starts it)
# --------------------------------------------------------------------------
class Rsyslog:
    """rsyslogd -n with a config of ours, TCP (imtcp) on 127.0.0.1 of a sandbox
    namespace with a kernel-chosen port; every message goes to `all.log` as
    MSGID TAB APP-NAME TAB HOSTNAME TAB PROCID TAB FACILITY TAB SEVERITY TAB MSG."""

    def __init__(self, sb: S.Sandbox, name: str = "rsyslog", ns: str | None = None):
        if not os.access(RSYSLOGD, os.X_OK):
            raise S.ToolMissing("rsyslogd missing -- install with: apt-get install -y rsyslog")
        self.sb = sb
        self.dir = sb.tmp / name
        self.dir.mkdir(exist_ok=True)
        self.all_log = self.dir / "all.log"
        port_file = self.dir / "port"
        conf = self.dir / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{self.dir}" maxMessageSize="64k")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{port_file}")\n'
            'template(name="fields" type="string" string="%msgid%\\t%app-name%\\t%hostname%\\t%procid%'
            '\\t%syslogfacility-text%\\t%syslogseverity-text%\\t%msg%\\n")\n'
            f'action(type="omfile" file="{self.all_log}" template="fields")\n')
        self.proc = sb.spawn(ns or sb.client_ns, name,
                             [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise S.SandboxError(f"rsyslogd exited: {self.proc.log_tail()}")
            if port_file.exists() and port_file.read_text().strip().isdigit():
                break
            time.sleep(0.05)
        else:
            raise S.SandboxError(f"rsyslogd did not write its port file: {self.proc.log_tail()}")
        self.port = int(port_file.read_text().strip())

    def records(self) -> list[dict]:
        """One dict per received message: the syslog header fields and the
        parsed JSON of MSG under 'event'."""
        if not self.all_log.exists():
            return []
        out = []
        with open(self.all_log, "r", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                parts = line.rstrip("\n").split("\t", 6)
                if len(parts) != 7:
                    out.append({"raw": line, "event": {"type": "_unparseable"}})
                    continue
                msg = parts[6]
                try:
                    ev = json.loads(msg[msg.index("{"):])
                except ValueError:
                    ev = {"type": "_unparseable", "raw": msg}
                out.append({"msgid": parts[0], "app": parts[1], "hostname": parts[2], "procid": parts[3],
                            "facility": parts[4], "severity": parts[5], "event": ev})
        return out

    def events(self) -> list[dict]:
        return [r["event"] for r in self.records()]


# --------------------------------------------------------------------------
# Plaintext connection stream (run inside the client namespace)
# --------------------------------------------------------------------------
STREAM_SCRIPT = r"""
import json, socket, sys, time
dst, port, rate, duration, maxn, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
assert dst.startswith("198.18.") or dst.startswith("2001:db8:"), dst
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
start = time.monotonic()
n = 0
interval = 1.0 / rate
while n < min(maxn, 5000) and time.monotonic() - start < min(duration, 120):
    due = start + n * interval
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    t0 = time.monotonic()
    rec = {"n": n, "t": round(t0 - start, 4), "ok": False, "sport": 0, "err": None}
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        rec["sport"] = s.getsockname()[1]
        s.sendall(b"PING plaintext\r\n")
        rec["ok"] = len(s.recv(100)) > 0
        if not rec["ok"]:
            rec["err"] = "EOF"
    except OSError as e:
        rec["err"] = type(e).__name__ + ": " + str(e)
    finally:
        s.close()
    rec["elapsed"] = round(time.monotonic() - t0, 4)
    print(json.dumps(rec), flush=True)
    n += 1
"""


class Stream:
    """A steady stream of plaintext connections from the client namespace:
    `rate` per second for `duration` s (bounded), one JSON line per attempt."""

    def __init__(self, sb: S.Sandbox, dst: str, port: int, rate: float, duration: float, maxn: int = 2000,
                 timeout: float = 3.0, name: str = "stream"):
        S.check_addr(dst)
        self.sb = sb
        self.out = sb.tmp / f"{name}-{time.monotonic_ns()}.jsonl"
        self.proc = sb.spawn(sb.client_ns, name,
                             [S.PYTHON, "-c", STREAM_SCRIPT, dst, str(port), str(rate), str(duration), str(maxn),
                              str(timeout)], stdout_path=self.out)

    def wait(self, timeout: float) -> list[dict]:
        try:
            self.proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.stop(timeout=3)
        return self.results()

    def results(self) -> list[dict]:
        out = []
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------
FLOW_TYPES = ("plaintext_blocked", "plaintext_reported", "tls_below_minimum")


def dedupe(events: list[dict]) -> tuple[list[dict], int]:
    """First occurrence of each id, in arrival order; and how many repeats."""
    seen, out, rep = set(), [], 0
    for e in events:
        i = e.get("id")
        if i in seen:
            rep += 1
            continue
        seen.add(i)
        out.append(e)
    return out, rep


def ids_of(events: list[dict], types=FLOW_TYPES) -> list[str]:
    return [e.get("id") for e in events if e.get("type") in types]


def in_order(events: list[dict]) -> bool:
    seqs = [int(e.get("seq", 0)) for e in events]
    return all(a < b for a, b in zip(seqs, seqs[1:]))


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start_daemon(sb: S.Sandbox, bdir: Path, name: str, policy_dir: Path, events: dict,
                 log_level: str = "info", json_events: bool = True, ready_timeout: float = 30,
                 bpf: dict | None = None) -> S.Daemon:
    """tlswalld in the client namespace with `events` merged into the config's
    [events] table (nested dicts become [events.scribe] / [events.syslog]).
    json_events=False starts it without the sandbox's --events override and
    with json_file = "" (no JSON sink: Scribe and syslog only)."""
    d = S.Daemon(sb, bdir, name=name)
    extra = {"events": dict(events)}
    if bpf:
        extra["bpf"] = dict(bpf)  # e.g. {"ringbuf_bytes": 8 << 20}
    if not json_events:
        extra["events"]["json_file"] = ""
    d.write_config(str(policy_dir), log_level=log_level, extra=extra)
    if not json_events:
        # write_config merged json_file = "" over the sandbox's path; the
        # sandbox's start() would pass --events, so start it here without.
        sb.assert_client_eth0_is_sandbox_veth()
        cmd = [str(d.tlswalld), "--config", str(d.config_path), "--control-socket", d.socket,
               "--pin-root", d.pin_root, "--log-level", log_level]
        d.proc = sb.spawn(sb.client_ns, d.name, cmd)
        d.wait_ready(ready_timeout)
    else:
        d.start(log_level=log_level, ready_timeout=ready_timeout)
    return d


def sink_health(st: dict, name: str) -> dict:
    for s in st.get("event_pipeline", {}).get("sinks", []):
        if s.get("name") == name:
            return s
    return {}

