#!/usr/bin/python3
"""End-to-end test of the deeper TLS checks (issue 7): beyond the first
bytes, the server's answer (tc ingress) and the client's next records.

Inside the sandbox's namespaces (see sandbox.py for the safety rules), with
tlswalld in the client namespace and real servers at 198.18.130.10, inside
the protected boundary:

  - nginx on 443 (TLS 1.0-1.3) under a rule with min_tls = "1.3": curl
    (TLS 1.3) passes with a 1 MiB upload (the record walk reads real
    records); curl --tls-max 1.2 offers client_version 0x0303, which meets
    the floor, and is blocked when nginx chooses TLS 1.2
    (tls_below_minimum, server_tls_version 1.2, evidence server_hello);
  - openssl s_server limited to TLS 1.2 on 8443 under a min 1.2 rule: curl
    passes, and the server's answer was judged (servers_answered_tls);
  - a plaintext server on 4443 that answers anything with an HTTP 400:
    a client sending a real ClientHello (made by Python's ssl module) never
    reads a byte of that answer (dropped at ingress) and its socket is
    aborted: server_not_tls;
  - a silent recording server on 4444: a real ClientHello followed by a
    plaintext request: the server records the hello and nothing of the
    request (bad_record, evidence client_records);
  - the status counters and the ingress filter are there.

Missing tools (nginx, curl, openssl, socat) are installed by the sandbox's
tool check; a failure to get them fails the test.

    /usr/bin/python3 tests/e2e/test_tls_checks_e2e.py [--build-dir build] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

SERVER = S.SRV_BOUNDARY_V4
FAIL_FAST_S = 2.0

POLICY = """# tlswall deeper-checks e2e policy (generated)
version = "tls-checks-1"
default_mode = "monitor"
default_min_tls = "1.2"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "remote-tls13"
boundary = "remote"
ports = [443]
mode = "enforce"
min_tls = "1.3"

[[rules]]
name = "remote-tls"
boundary = "remote"
ports = [4443, 4444, 8443]
mode = "enforce"
"""

# A server that records what each connection sent (hex, one JSON line per
# connection) and either answers `reply` at the first bytes or stays silent.
RECORDER = r"""
import json, socket, sys, threading
port, log, reply = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(64)
lock = threading.Lock()
def serve(c):
    got = b""
    c.settimeout(4)
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            if not got and reply:
                c.sendall(reply)
            got += b
    except OSError:
        pass
    with lock, open(log, "a") as f:
        f.write(json.dumps({"hex": got.hex()}) + "\n")
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# A client that sends a real ClientHello (Python's ssl module makes it),
# optionally `then` (hex) after it, and reports what it read back.
HELLO_CLIENT = r"""
import json, socket, ssl, sys, time
host, port, then = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="tlswall-e2e")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
res = {"hello_len": len(hello), "hello_hex": hello.hex()}
t0 = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(hello)
    if then:
        time.sleep(0.2)
        s.sendall(then)
    data = s.recv(4096)
    res["read"] = data.hex()
except OSError as e:
    res["err"] = f"{type(e).__name__}: {e}"
res["elapsed"] = round(time.monotonic() - t0, 3)
print(json.dumps(res))
"""


class E2E:
    def __init__(self, sb: S.Sandbox, bdir: Path, checks: S.Checks):
        self.sb, self.bdir, self.c = sb, bdir, checks
        self.d: S.Daemon | None = None
        self.policy_dir = sb.tmp / "policy.d"
        self.policy_dir.mkdir()
        (self.policy_dir / "checks.toml").write_text(POLICY)
        self.hello_client = sb.tmp / "hello_client.py"
        self.hello_client.write_text(HELLO_CLIENT)
        recorder = sb.tmp / "recorder.py"
        recorder.write_text(RECORDER)
        self.recorder = recorder
        self.logs = {4443: sb.tmp / "rec4443.jsonl", 4444: sb.tmp / "rec4444.jsonl"}

    def start_servers(self):
        self.sb.start_nginx()
        self.sb.spawn(self.sb.server_ns, "s_server-tls12",
                      ["openssl", "s_server", "-accept", "8443", "-tls1_2", "-www", "-quiet",
                       "-cert", str(self.sb.cert), "-key", str(self.sb.key)])
        self.sb.wait_listen(8443)
        http400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".hex()
        for port, reply in ((4443, http400), (4444, "")):
            self.sb.spawn(self.sb.server_ns, f"recorder-{port}",
                          [S.PYTHON, str(self.recorder), str(port), str(self.logs[port]), reply])
            self.sb.wait_listen(port)
        return True, "nginx 443, openssl s_server -tls1_2 8443, recorders 4443 (answers HTTP 400) and 4444 (silent)"

    def start_daemon(self):
        d = S.Daemon(self.sb, self.bdir, name="tlswalld-checks")
        d.write_config(str(self.policy_dir), extra={"events": {"aggregate_window_ms": 0}})
        self.d = d
        d.start()
        st = d.status()
        r = self.sb.client(["tc", "filter", "show", "dev", "eth0", "ingress"], timeout=5)
        ok = st["policy"].get("version") == "tls-checks-1" and "tlswall_ingress" in (r.stdout or "")
        return ok, f"policy {st['policy'].get('version')!r}; ingress filter: {'tlswall_ingress' in (r.stdout or '')}"

    def curl(self, url: str, *extra: str):
        return self.sb.client(["curl", "-sSk", "--max-time", "8", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                               *extra, url], timeout=15)

    def events_for(self, dport: int) -> list[dict]:
        return [e for e in self.d.read_events() if e.get("dport") == dport and e.get("action") in ("drop", "report")]

    def tls13_passes(self):
        # 1 MiB up: the client's records (the egress walk) are full-size.
        body = self.sb.tmp / "upload.bin"
        body.write_bytes(os.urandom(1 << 20))
        r = self.curl(f"https://{SERVER}/", "--tlsv1.3", "--data-binary", f"@{body}")
        ok = r.rc == 0 and r.stdout.strip().startswith("200") and not self.events_for(443)
        return ok, f"curl --tlsv1.3, 1 MiB POST: rc={r.rc} {r.stdout.strip()!r} {r.stderr.strip()[:120]!r}"

    def tls12_blocked_by_server_choice(self):
        t0 = time.monotonic()
        r = self.curl(f"https://{SERVER}/", "--tls-max", "1.2")
        elapsed = time.monotonic() - t0
        ev = self.d.wait_event(lambda e: e.get("dport") == 443 and e.get("reason") == "tls_below_minimum", timeout=5)
        ok = (r.rc != 0 and elapsed < FAIL_FAST_S + 1 and ev is not None and ev.get("server_tls_version") == "1.2"
              and ev.get("evidence") == "server_hello" and ev.get("action") == "drop"
              and ev.get("tls_version") == "1.2" and ev.get("attribution") == "not_looked_up")
        shown = ev and {k: ev.get(k) for k in ("reason", "tls_version", "server_tls_version", "evidence", "attribution")}
        return ok, f"curl --tls-max 1.2: rc={r.rc} in {elapsed:.2f}s; event {shown}"

    def tls12_server_passes_min12(self):
        before = int(self.d.status()["counters"].get("servers_answered_tls", 0))
        r = self.curl(f"https://{SERVER}:8443/")
        after = int(self.d.status()["counters"].get("servers_answered_tls", 0))
        ok = r.rc == 0 and r.stdout.startswith("200") and after > before and not self.events_for(8443)
        return ok, f"curl to s_server -tls1_2: rc={r.rc} {r.stdout.strip()!r}; servers_answered_tls {before} -> {after}"

    def hello_client_run(self, port: int, then: bytes = b"") -> dict:
        r = self.sb.client([S.PYTHON, str(self.hello_client), SERVER, str(port), then.hex()], timeout=15)
        if r.rc != 0:
            raise RuntimeError(f"hello client failed: {r.brief()}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def recorded(self, port: int, timeout: float = 6) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logs[port].exists() and self.logs[port].read_text().strip():
                return [bytes.fromhex(json.loads(l)["hex"]) for l in self.logs[port].read_text().splitlines()]
            time.sleep(0.1)
        return []

    def plaintext_answer_blocked(self):
        res = self.hello_client_run(4443)
        ev = self.d.wait_event(lambda e: e.get("dport") == 4443 and e.get("reason") == "server_not_tls", timeout=5)
        got = self.recorded(4443)
        ok = (not res.get("read") and "err" in res and res["elapsed"] < FAIL_FAST_S and ev is not None
              and ev.get("evidence") == "server_hello" and ev.get("action") == "drop"
              and len(got) == 1 and got[0] == bytes.fromhex(res["hello_hex"]))
        return ok, (f"client read {len(bytes.fromhex(res.get('read', '')))} bytes, {res.get('err')!r} after "
                    f"{res['elapsed']}s; server got {[len(g) for g in got]} bytes (hello {res['hello_len']}); "
                    f"event {ev and {k: ev.get(k) for k in ('reason', 'evidence', 'action')}}")

    def plaintext_after_hello_blocked(self):
        secret = b"GET /secret-path HTTP/1.1\r\nHost: x\r\n\r\n"
        res = self.hello_client_run(4444, then=secret)
        ev = self.d.wait_event(lambda e: e.get("dport") == 4444 and e.get("reason") == "bad_record", timeout=5)
        got = self.recorded(4444)
        leaked = any(b"secret" in g for g in got)
        ok = (ev is not None and ev.get("evidence") == "client_records" and ev.get("action") == "drop"
              and len(got) == 1 and got[0] == bytes.fromhex(res["hello_hex"]) and not leaked
              and ev.get("attribution") in ("recorded", "not_recorded"))
        return ok, (f"server got {[len(g) for g in got]} bytes (hello {res['hello_len']}), request leaked: "
                    f"{leaked}; client {res.get('err')!r}; event "
                    f"{ev and {k: ev.get(k) for k in ('reason', 'evidence', 'action', 'attribution')}}")

    def counters(self):
        c = self.d.status().get("counters", {})
        keys = ("servers_answered_tls", "servers_not_tls", "bad_later_records", "tls_below_minimum",
                "server_version_unknown", "events_lost")
        shown = {k: c.get(k) for k in keys}
        ok = (int(c.get("servers_answered_tls", 0)) >= 3 and int(c.get("servers_not_tls", 0)) == 1
              and int(c.get("bad_later_records", 0)) == 1 and int(c.get("tls_below_minimum", 0)) == 1
              and int(c.get("server_version_unknown", 0)) == 0 and int(c.get("events_lost", 0)) == 0)
        return ok, f"counters {shown}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None, help="tlswall build dir (default $TLSWALL_BUILD_DIR or ./build)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo every sandbox command")
    a = ap.parse_args()

    S.install_signal_handlers()
    checks = S.Checks()
    try:
        S.require_tools("ip", "tc", "ss", "openssl", "curl", "nginx")
        bdir = S.build_dir(a.build_dir)
        S.daemon_binaries(bdir)
        print(f"tlswall deeper-checks e2e: build dir {bdir}, kernel {os.uname().release}", flush=True)
        with S.Sandbox("chk", verbose=a.verbose) as sb:
            print(f"sandbox: client ns {sb.client_ns}, server ns {sb.server_ns}, tmp {sb.tmp}", flush=True)
            sb.make_cert()
            t = E2E(sb, bdir, checks)
            try:
                if checks.run("servers_start", t.start_servers) and checks.run("daemon_start", t.start_daemon):
                    checks.run("tls13_download_passes_min13", t.tls13_passes)
                    checks.run("tls12_offered_server_chooses_12_blocked_min13", t.tls12_blocked_by_server_choice)
                    checks.run("tls12_only_server_passes_min12", t.tls12_server_passes_min12)
                    checks.run("plaintext_server_answer_dropped_socket_aborted", t.plaintext_answer_blocked)
                    checks.run("plaintext_after_real_hello_never_reaches_server", t.plaintext_after_hello_blocked)
                    checks.run("status_counters", t.counters)
            finally:
                if t.d:
                    if os.environ.get("TLSWALL_E2E_SHOW_LOG") and t.d.proc:
                        print(t.d.proc.log_tail(200))
                    t.d.stop()
    except S.Interrupted as e:
        checks.record("interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 -- setup failure is a test failure
        checks.record("setup", False, f"{type(e).__name__}: {e}")
        if os.environ.get("TLSWALL_E2E_TRACE"):
            traceback.print_exc()
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
