#!/usr/bin/python3
"""End-to-end test of the client-side transparent TLS upgrade (issue 5, first
part): a plaintext client in a child cgroup this test creates talks HTTP to
a server's TLS port; tlswalld's connect redirect hands the connection to its
proxy, which speaks verified TLS to the real nginx. Also: a wrong server name
fails closed (fast, an upgrade_failed event, no plaintext on the wire), a
TLS client passes through unchanged, a client outside the cgroup is not
upgraded (and plaintext to the boundary stays blocked).

Safety: namespaces and a child cgroup created here, removed on exit.

    /usr/bin/python3 tests/e2e/test_upgrade_e2e.py [--build-dir build] [-v]

Ends with "N passed, M failed".
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

SRV = S.SRV_BOUNDARY_V4


TERM_STRICT, TERM_PERMISSIVE, BACKEND_PORT = 8443, 9443, 8080


def terminations_text(cert: str, key: str) -> str:
    return f"""
[[terminations]]
name = "legacy-app-strict"
port = {TERM_STRICT}
backend = "127.0.0.1:{BACKEND_PORT}"
cert = "{cert}"
key = "{key}"

[[terminations]]
name = "legacy-app-migrating"
port = {TERM_PERMISSIVE}
backend = "127.0.0.1:{BACKEND_PORT}"
cert = "{cert}"
key = "{key}"
mode = "permissive"
"""


def policy_text(version: str, server_name: str, ca: str, extra: str = "") -> str:
    return f"""version = "{version}"
[boundaries.remote]
cidrs = ["{SRV}/32", "{S.SRV_BOUNDARY_V6}/128"]

[[rules]]
name = "remote-enforce"
boundary = "remote"
ports = [80, 443]
mode = "enforce"

[[upgrades]]
name = "legacy-web"
boundary = "remote"
ports = [443]
server_name = "{server_name}"
ca_file = "{ca}"
""" + extra


class E2E:
    def __init__(self, sb: S.Sandbox, bdir: Path, cg: S.Cgroups):
        self.sb, self.bdir, self.cg = sb, bdir, cg
        self.cg_legacy = cg.make("legacy")
        self.d: S.Daemon | None = None
        self.pdir = sb.tmp / "policy.d"

    def in_cgroup(self, cmd: list[str], timeout: float = 15) -> S.Result:
        """Runs cmd in the client namespace from inside the legacy cgroup."""
        return self.sb.run_in_cgroup(self.sb.client_ns, self.cg_legacy, cmd, timeout=timeout)

    def start(self):
        self.pdir.mkdir()
        (self.pdir / "p.toml").write_text(policy_text("upg-1", SRV, str(self.sb.cert)))
        self.d = S.Daemon(self.sb, self.bdir, "tlswalld-upg")
        self.d.write_config(str(self.pdir), extra={
            "events": {"aggregate_window_ms": 0},
            "upgrade": {"cgroup": self.cg.rel("legacy"), "port": 15443},
            "metrics": {"listen": "127.0.0.1:19465"},
        })
        self.d.start()
        return True, "daemon up with [upgrade] on " + self.cg.rel("legacy")

    def plaintext_client_is_upgraded(self):
        start = len(self.d.read_events())
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        ev = self.d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("action") == "upgrade", 5, start)
        blocked = [e for e in self.d.read_events()[start:] if e.get("type") == "plaintext_blocked"]
        ok = r.rc == 0 and "tlswall-e2e ok" in r.stdout and ev is not None and not blocked
        return ok, (f"curl http://{SRV}:443/ rc={r.rc} body={r.stdout.strip()[:40]!r} in {r.elapsed:.3f}s; "
                    f"event {ev and ev.get('message', '')[:120]}; plaintext_blocked events {len(blocked)}")

    def tls_client_passes_through(self):
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", "--cacert", str(self.sb.cert), f"https://{SRV}/"])
        return r.rc == 0 and "tlswall-e2e ok" in r.stdout, f"curl https rc={r.rc} {r.stdout.strip()[:40]!r} {r.stderr.strip()[:80]}"

    def outside_cgroup_not_upgraded(self):
        r = self.sb.client(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        ok = r.rc != 0 and r.elapsed < 2.0
        return ok, f"outside the cgroup: curl rc={r.rc} in {r.elapsed:.3f}s ({r.stderr.strip()[:80]})"

    def terminations(self):
        # A certificate for this host (198.18.0.1), a plaintext backend on its
        # loopback, and TLS / plaintext clients from the other namespace.
        crt, key = self.sb.tmp / "host.crt", self.sb.tmp / "host.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=tlswall-host", "-addext",
                        f"subjectAltName=IP:{S.CLIENT_V4}", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True, timeout=30)
        www = self.sb.tmp / "www"
        www.mkdir()
        (www / "index.html").write_text("legacy-backend ok\n")
        self.sb.spawn(self.sb.client_ns, "backend", [S.PYTHON, "-m", "http.server", str(BACKEND_PORT),
                                                     "--bind", "127.0.0.1", "--directory", str(www)])
        self.sb.wait_listen(BACKEND_PORT, ns=self.sb.client_ns)
        gen = int(self.d.status()["policy"]["generation"])
        start = len(self.d.read_events())
        (self.pdir / "p.toml").write_text(policy_text("upg-3", SRV, str(self.sb.cert),
                                                      terminations_text(str(crt), str(key))))
        self.d.wait_generation(gen, timeout=5)
        self.sb.wait_listen(TERM_STRICT, ns=self.sb.client_ns, timeout=5)
        tls = self.sb.server(["curl", "-sS", "--max-time", "8", "--cacert", str(crt),
                              f"https://{S.CLIENT_V4}:{TERM_STRICT}/"])
        plain_strict = self.sb.server(["curl", "-sS", "--max-time", "8", f"http://{S.CLIENT_V4}:{TERM_STRICT}/"])
        plain_perm = self.sb.server(["curl", "-sS", "--max-time", "8", f"http://{S.CLIENT_V4}:{TERM_PERMISSIVE}/"])
        refused = self.d.wait_event(lambda e: e.get("type") == "plaintext_blocked"
                                    and e.get("rule") == "legacy-app-strict", 3, start)
        reported = self.d.wait_event(lambda e: e.get("type") == "plaintext_reported"
                                     and e.get("rule") == "legacy-app-migrating", 3, start)
        ok = ("legacy-backend ok" in tls.stdout and tls.rc == 0
              and plain_strict.rc != 0 and plain_strict.elapsed < 2.0
              and plain_perm.rc == 0 and "legacy-backend ok" in plain_perm.stdout
              and refused is not None and reported is not None)
        return ok, (f"TLS to :{TERM_STRICT} rc={tls.rc} {tls.stdout.strip()[:30]!r}; plaintext to strict rc={plain_strict.rc} "
                    f"in {plain_strict.elapsed:.3f}s; plaintext to permissive rc={plain_perm.rc} "
                    f"{plain_perm.stdout.strip()[:30]!r}; events refused={refused is not None} reported={reported is not None}")

    def metrics_per_rule(self):
        r = self.sb.client(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:19465/metrics"])
        lines = [l for l in r.stdout.splitlines() if l.startswith("tlswall_upgrade_")]
        def value(prefix):
            for l in lines:
                if l.startswith(prefix):
                    return float(l.split()[-1])
            return 0.0
        conns = value('tlswall_upgrade_connections_total{rule="legacy-web",side="client"}')
        failed = value('tlswall_upgrade_failures_total{rule="legacy-web",reason="hostname"}')
        term = value('tlswall_upgrade_connections_total{rule="legacy-app-strict",side="server"}')
        redirected = value("tlswall_upgrade_redirected_total")
        ok = r.rc == 0 and conns >= 3 and failed >= 1 and term >= 1 and redirected >= 3
        return ok, (f"client conns {conns:g}, hostname failures {failed:g}, strict termination conns {term:g}, "
                    f"redirected {redirected:g}")

    def proxy_killed_fails_fast(self):
        # The daemon (and its proxy) dies hard; the pinned redirect stays, so
        # selected clients now meet a closed port: they fail at once, and
        # nothing goes out in plaintext.
        cap = self.sb.tmp / "cap-kill.txt"
        tcpdump = self.sb.spawn(self.sb.client_ns, "tcpdump-kill",
                                ["tcpdump", "-i", "eth0", "-nn", "-l", "-A", "tcp port 443"], stdout_path=cap)
        time.sleep(0.5)
        self.d.proc.stop(signal.SIGKILL, timeout=5)
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        time.sleep(0.3)
        tcpdump.stop()
        wire = cap.read_text(errors="replace") if cap.exists() else ""
        ok = r.rc != 0 and r.elapsed < 2.0 and "GET /" not in wire
        return ok, (f"daemon killed; curl rc={r.rc} in {r.elapsed:.3f}s ({r.stderr.strip()[:60]}); "
                    f"plaintext 'GET /' on the wire: {'GET /' in wire}")

    def wrong_name_fails_closed(self):
        gen = int(self.d.status()["policy"]["generation"])
        (self.pdir / "p.toml").write_text(policy_text("upg-2", "wrong.example", str(self.sb.cert)))
        self.d.wait_generation(gen, timeout=5)
        start = len(self.d.read_events())
        cap = self.sb.tmp / "cap.txt"
        tcpdump = self.sb.spawn(self.sb.client_ns, "tcpdump",
                                ["tcpdump", "-i", "eth0", "-nn", "-l", "-A", "tcp port 443"], stdout_path=cap)
        time.sleep(0.5)
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        ev = self.d.wait_event(lambda e: e.get("type") == "upgrade_failed", 5, start)
        time.sleep(0.3)
        tcpdump.stop()
        wire = cap.read_text(errors="replace") if cap.exists() else ""
        ok = (r.rc != 0 and r.elapsed < 2.0 and ev is not None and ev.get("reason") == "hostname"
              and "GET /" not in wire)
        return ok, (f"curl rc={r.rc} in {r.elapsed:.3f}s; event reason={ev and ev.get('reason')}; "
                    f"plaintext 'GET /' on the wire: {'GET /' in wire}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    S.install_signal_handlers()
    checks = S.Checks(timed=True)
    cg = None
    try:
        S.require_tools("ip", "tc", "ss", "curl", "nginx", "openssl")
        if not __import__("shutil").which("tcpdump"):
            raise S.ToolMissing("tcpdump missing: apt-get install tcpdump")
        bdir = S.build_dir(a.build_dir)
        S.daemon_binaries(bdir)
        cg = S.Cgroups()
        with S.Sandbox("upg", verbose=a.verbose) as sb:
            sb.start_nginx()
            t = E2E(sb, bdir, cg)
            try:
                if checks.run("daemon_start_with_upgrade", t.start):
                    checks.run("plaintext_http_client_upgraded_to_verified_tls", t.plaintext_client_is_upgraded)
                    checks.run("tls_client_passes_through_unchanged", t.tls_client_passes_through)
                    checks.run("client_outside_cgroup_not_upgraded_and_blocked", t.outside_cgroup_not_upgraded)
                    checks.run("terminations_tls_in_plaintext_backend_strict_permissive", t.terminations)
                    checks.run("wrong_server_name_fails_closed_no_plaintext_on_wire", t.wrong_name_fails_closed)
                    checks.run("metrics_per_upgrade_rule", t.metrics_per_rule)
                    checks.run("proxy_killed_clients_fail_fast_no_plaintext", t.proxy_killed_fails_fast)
            finally:
                if t.d:
                    t.d.stop()
                    if os.environ.get("TLSWALL_E2E_SHOW_LOG") and t.d.proc:
                        print(t.d.proc.log_tail(200))
    except S.Interrupted as e:
        checks.record("interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001
        checks.record("setup", False, f"{type(e).__name__}: {e}")
        if os.environ.get("TLSWALL_E2E_TRACE"):
            traceback.print_exc()
    finally:
        if cg:
            cg.close()
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
