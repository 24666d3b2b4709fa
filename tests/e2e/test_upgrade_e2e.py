#!/usr/bin/python3
"""End-to-end test of the transparent TLS upgrade (issue 5): a plaintext
client in a child cgroup this test creates talks HTTP to a server's TLS
port; tlswalld's connect redirect hands the connection to its proxy, which
speaks verified TLS to the real nginx. Also: redis-cli (plaintext) reaches a
TLS-only redis-server through the upgrade (PING, SET/GET, nothing readable
on the wire); a wrong server name, an expired server certificate and a
self-signed one (not from the rule's CA) fail closed (fast, an
upgrade_failed event with the reason, no plaintext on the wire); a TLS
client passes through unchanged; a client outside the cgroup is not upgraded
(and plaintext to the boundary stays blocked); a rule with a `cgroups`
selector upgrades clients of that sub-cgroup only, one with `executables`
only that program (curl, not python in the same cgroup). The upgraded event
carries the session as fields (server name and subject, version, cipher,
bytes). Server side: strict and permissive terminations, and one with a
client CA: openssl s_client with a client certificate from that CA reaches
the plaintext backend (its subject in the event's client_subject), without
one or with one from another CA it is refused and reported, and the backend
never sees it. Per-rule counters in Prometheus and in `tlswallctl status`.
The proxy runs in a worker process as tlswall-proxy with no capabilities and
no BPF fd; killed, it resets its connections (nothing in plaintext on the
wire), an event says so and a new worker serves the same port.

Safety: namespaces and a child cgroup created here, removed on exit.

    /usr/bin/python3 tests/e2e/test_upgrade_e2e.py [--build-dir build] [-v]

Ends with "N passed, M failed".
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

SRV = S.SRV_BOUNDARY_V4


TERM_STRICT, TERM_PERMISSIVE, TERM_MTLS, BACKEND_PORT = 8443, 9443, 10443, 8080
# Server-namespace TLS servers behind their own [[upgrades]] rules.
REDIS_PORT, EXPIRED_PORT, SELF_SIGNED_PORT, TEAM_PORT, EXE_PORT = 6380, 7443, 7444, 7445, 7446
CURL = os.path.realpath(shutil.which("curl") or "/usr/bin/curl")


def openssl(args: list[str]) -> None:
    r = subprocess.run(["openssl"] + args, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise S.SandboxError(f"openssl {args[0]} failed: {r.stderr.strip()[-300:]}")


def self_signed(d: Path, name: str, subj: str, san: str | None = None) -> tuple[Path, Path]:
    """A self-signed EC certificate (CA:TRUE, OpenSSL's req default)."""
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", subj, "-keyout", str(key), "-out", str(crt)]
            + (["-addext", f"subjectAltName={san}"] if san else []))
    return crt, key


def signed_by(d: Path, name: str, subj: str, ca: tuple[Path, Path], san: str | None = None,
              dates: tuple[str, str] | None = None) -> tuple[Path, Path]:
    """A leaf signed by `ca` (cert, key) through `openssl ca`, which, unlike
    `openssl x509 -req` in OpenSSL 3.0, can set a validity in the past."""
    crt, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
    db = d / "ca-db"
    if not db.exists():
        db.mkdir()
        (db / "index.txt").write_text("")
        (d / "ca.cnf").write_text(f"""[ca]
default_ca = e2e_ca
[e2e_ca]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = e2e_policy
copy_extensions = copy
unique_subject = no
[e2e_policy]
commonName = supplied
organizationName = optional
""")
    openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", subj, "-keyout", str(key), "-out", str(csr)]
            + (["-addext", f"subjectAltName={san}"] if san else []))
    validity = ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "2"]
    openssl(["ca", "-batch", "-config", str(d / "ca.cnf"), "-cert", str(ca[0]), "-keyfile", str(ca[1]),
             "-in", str(csr), "-out", str(crt), "-notext", "-rand_serial"] + validity)
    return crt, key


def subject_rfc2253(crt: Path) -> str:
    """The subject as the proxy prints it (X509_NAME_print_ex, XN_FLAG_RFC2253)."""
    r = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-subject", "-nameopt", "RFC2253"],
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip().removeprefix("subject=")


def terminations_text(cert: str, key: str, client_ca: str) -> str:
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

[[terminations]]
name = "legacy-app-mtls"
port = {TERM_MTLS}
backend = "127.0.0.1:{BACKEND_PORT}"
cert = "{cert}"
key = "{key}"
client_ca = "{client_ca}"
"""


def policy_text(version: str, server_name: str, ca: str, team_cgroup: str, extra: str = "") -> str:
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

[[upgrades]]
name = "legacy-redis"
boundary = "remote"
ports = [{REDIS_PORT}]
server_name = "{SRV}"
ca_file = "{ca}"

[[upgrades]]
name = "legacy-certs"
boundary = "remote"
ports = [{EXPIRED_PORT}, {SELF_SIGNED_PORT}]
server_name = "{SRV}"
ca_file = "{ca}"

[[upgrades]]
name = "legacy-team"
boundary = "remote"
ports = [{TEAM_PORT}]
server_name = "{SRV}"
ca_file = "{ca}"
cgroups = ["{team_cgroup}"]

[[upgrades]]
name = "legacy-curl"
boundary = "remote"
ports = [{EXE_PORT}]
server_name = "{SRV}"
ca_file = "{ca}"
executables = ["{CURL}"]
""" + extra


class E2E:
    def __init__(self, sb: S.Sandbox, bdir: Path, cg: S.Cgroups):
        self.sb, self.bdir, self.cg = sb, bdir, cg
        self.cg_legacy = cg.make("legacy")
        # A team below the attach cgroup: the legacy-team rule selects only it.
        self.cg_team = cg.make("legacy/team")
        self.team_rel = cg.rel("legacy/team")
        self.d: S.Daemon | None = None
        self.pdir = sb.tmp / "policy.d"
        self.certs = sb.tmp / "certs"

    def in_cgroup(self, cmd: list[str], timeout: float = 15) -> S.Result:
        """Runs cmd in the client namespace from inside the legacy cgroup."""
        return self.sb.run_in_cgroup(self.sb.client_ns, self.cg_legacy, cmd, timeout=timeout)

    def make_certs(self) -> None:
        """Server certificates the rules must refuse (an expired one from the
        rule's CA, a self-signed one with the right name) and, for the mutual
        TLS termination, a client CA, a client certificate from it and one
        with the same subject from no CA."""
        d, ca = self.certs, (self.sb.cert, self.sb.key)
        d.mkdir()
        self.expired = signed_by(d, "expired", "/CN=expired.e2e", ca, san=f"IP:{SRV}",
                                 dates=("20200101000000Z", "20200102000000Z"))
        self.self_signed = self_signed(d, "self-signed", "/CN=self-signed.e2e", san=f"IP:{SRV}")
        self.client_ca = self_signed(d, "client-ca", "/CN=tlswall-e2e client CA")
        self.client_cert = signed_by(d, "client", "/O=tlswall-e2e/CN=legacy-client", self.client_ca)
        self.rogue_client = self_signed(d, "rogue-client", "/O=tlswall-e2e/CN=legacy-client")

    def capture(self, name: str, bpf_filter: str) -> tuple[S.Proc, Path]:
        """tcpdump on the client's veth, payloads in ASCII; listening on return."""
        cap = self.sb.tmp / f"cap-{name}.txt"
        proc = self.sb.spawn(self.sb.client_ns, f"tcpdump-{name}",
                             ["tcpdump", "-i", "eth0", "-nn", "-l", "-A", bpf_filter], stdout_path=cap)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "listening on" not in proc.log_tail(5):
            time.sleep(0.05)
        time.sleep(0.2)
        return proc, cap

    @staticmethod
    def captured(proc: S.Proc, cap: Path) -> str:
        time.sleep(0.3)
        proc.stop()
        return cap.read_text(errors="replace") if cap.exists() else ""

    def wait_events(self, pred, n: int, timeout: float, start: int) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            evs = [e for e in self.d.read_events()[start:] if pred(e)]
            if len(evs) >= n or time.monotonic() >= deadline:
                return evs
            time.sleep(0.1)

    def backend_requests(self) -> int:
        """Requests the termination backend (http.server, logging to stderr) served."""
        log = self.sb.tmp / "backend.log"
        return log.read_text(errors="replace").count('"GET / HTTP') if log.exists() else 0

    def start(self):
        self.make_certs()
        self.pdir.mkdir()
        (self.pdir / "p.toml").write_text(policy_text("upg-1", SRV, str(self.sb.cert), self.team_rel))
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
        # The session as fields: what was verified, with whom, and how much.
        fields = {k: (ev or {}).get(k) for k in ("server_name", "server_subject", "tls_version", "cipher",
                                                  "bytes_up", "bytes_down")}
        fields_ok = (fields["server_name"] == SRV and bool(fields["server_subject"])
                     and str(fields["tls_version"]).startswith("TLSv1.") and bool(fields["cipher"])
                     and int(fields["bytes_up"] or 0) > 0 and int(fields["bytes_down"] or 0) > 0)
        ok = r.rc == 0 and "tlswall-e2e ok" in r.stdout and ev is not None and not blocked and fields_ok
        return ok, (f"curl http://{SRV}:443/ rc={r.rc} body={r.stdout.strip()[:40]!r} in {r.elapsed:.3f}s; "
                    f"event fields {fields}; plaintext_blocked events {len(blocked)}")

    def status_page_server(self, port: int) -> S.Proc:
        """openssl s_server -www on the boundary address: a GET over TLS
        gets its status page (with "s_server" in it); plaintext gets nothing."""
        srv = self.sb.spawn(self.sb.server_ns, f"s_server-{port}",
                            ["openssl", "s_server", "-accept", f"{SRV}:{port}", "-cert", self.sb.cert,
                             "-key", self.sb.key, "-www"])
        self.sb.wait_listen(port)
        return srv

    def cgroup_selector_takes_only_its_subtree(self):
        """legacy-team names legacy/team: a client there is upgraded, one in
        legacy itself (the attach cgroup, above the selector) is not."""
        srv = self.status_page_server(TEAM_PORT)
        try:
            start = len(self.d.read_events())
            team = self.sb.run_in_cgroup(self.sb.client_ns, self.cg_team,
                                         ["curl", "-sS", "--max-time", "8", f"http://{SRV}:{TEAM_PORT}/"])
            ev = self.d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("rule") == "legacy-team",
                                   5, start)
            mid = len(self.d.read_events())
            outside = self.in_cgroup(["curl", "-sS", "--max-time", "3", f"http://{SRV}:{TEAM_PORT}/"])
            time.sleep(0.3)
            later = [e for e in self.d.read_events()[mid:] if e.get("rule") == "legacy-team"]
        finally:
            srv.stop()
        # s_server -www answers an HTTP GET over TLS with its status page.
        team_ok = team.rc == 0 and "s_server" in team.stdout and ev is not None
        outside_ok = "s_server" not in outside.stdout and not later
        return team_ok and outside_ok, (
            f"from {self.team_rel}: curl rc={team.rc}, page {'served' if 's_server' in team.stdout else 'missing'}, "
            f"upgraded event {'yes' if ev else 'NO'}; from {self.cg.rel('legacy')}: curl rc={outside.rc} "
            f"(not upgraded: plaintext to a TLS port), legacy-team events {len(later)}")

    def executables_selector_takes_only_that_program(self):
        """legacy-curl names curl's executable: curl is upgraded; python
        from the same cgroup to the same port is not (and its plaintext
        meets the TLS server)."""
        srv = self.status_page_server(EXE_PORT)
        try:
            start = len(self.d.read_events())
            by_curl = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:{EXE_PORT}/"])
            ev = self.d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("rule") == "legacy-curl",
                                   5, start)
            mid = len(self.d.read_events())
            py = ("import socket\n"
                  f"s=socket.create_connection(('{SRV}',{EXE_PORT}),timeout=3)\n"
                  "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
                  "print(s.recv(200))\n")
            by_python = self.in_cgroup([S.PYTHON, "-c", py], timeout=10)
            time.sleep(0.3)
            later = [e for e in self.d.read_events()[mid:] if e.get("rule") == "legacy-curl"]
        finally:
            srv.stop()
        curl_ok = by_curl.rc == 0 and "s_server" in by_curl.stdout and ev is not None
        python_ok = "s_server" not in by_python.stdout and not later
        return curl_ok and python_ok, (
            f"{CURL}: rc={by_curl.rc}, page {'served' if 's_server' in by_curl.stdout else 'missing'}, "
            f"upgraded event {'yes' if ev else 'NO'}; python from the same cgroup: rc={by_python.rc} "
            f"{(by_python.stdout or by_python.stderr).strip()[-50:]!r}, legacy-curl events {len(later)}")

    def redis_cli_is_upgraded(self):
        # A TLS-only redis-server (port 0: no plaintext port, client
        # certificates not asked for) with the certificate of the rule's CA;
        # redis-cli in the cgroup speaks plaintext RESP to it.
        rdir = self.sb.tmp / "redis"
        rdir.mkdir()
        srv = self.sb.spawn(self.sb.server_ns, "redis-server", [
            "redis-server", "--port", "0", "--tls-port", str(REDIS_PORT), "--bind", SRV,
            "--tls-cert-file", self.sb.cert, "--tls-key-file", self.sb.key, "--tls-ca-cert-file", self.sb.cert,
            "--tls-auth-clients", "no", "--protected-mode", "no", "--save", "", "--appendonly", "no",
            "--dir", rdir, "--daemonize", "no"])
        try:
            self.sb.wait_listen(REDIS_PORT)
        except S.SandboxError as e:
            return False, f"redis-server did not start: {e}: {srv.log_tail(5)}"
        value = f"tlswall-e2e-{os.getpid()}-{time.time_ns()}"
        start = len(self.d.read_events())
        tcpdump, cap = self.capture("redis", f"tcp port {REDIS_PORT}")
        cli = ["redis-cli", "-h", SRV, "-p", str(REDIS_PORT)]
        ping = self.in_cgroup(cli + ["PING"], timeout=10)
        put = self.in_cgroup(cli + ["SET", "tlswall:e2e", value], timeout=10)
        get = self.in_cgroup(cli + ["GET", "tlswall:e2e"], timeout=10)
        evs = self.wait_events(lambda e: e.get("type") == "upgraded" and e.get("action") == "upgrade"
                               and e.get("rule") == "legacy-redis" and e.get("dport") == REDIS_PORT, 3, 5, start)
        wire = self.captured(tcpdump, cap)
        in_clear = [w for w in ("PING", "tlswall:e2e", value) if w in wire]
        ok = (ping.rc == 0 and ping.stdout.strip() == "PONG" and put.rc == 0 and put.stdout.strip() == "OK"
              and get.rc == 0 and get.stdout.strip() == value and len(evs) >= 3
              and f"{SRV}.{REDIS_PORT}" in wire and not in_clear)
        return ok, (f"redis-cli PING {ping.stdout.strip()!r} rc={ping.rc}, SET {put.stdout.strip()!r}, "
                    f"GET {'the value' if get.stdout.strip() == value else repr(get.stdout.strip()[:40])} "
                    f"({(ping.stderr + put.stderr + get.stderr).strip()[:80]}); {len(evs)} upgraded events of "
                    f"legacy-redis ({evs[0].get('message', '')[:90] if evs else ''}); "
                    f"flow on the wire: {f'{SRV}.{REDIS_PORT}' in wire}, in clear: {in_clear}")

    def bad_server_cert_fails_closed(self, port: int, cert: tuple[Path, Path], why: tuple[str, ...]):
        # openssl s_server with a certificate the rule's verification must
        # refuse; its name (an IP SAN) is right, so only the chain is wrong.
        srv = self.sb.spawn(self.sb.server_ns, f"s_server-{port}",
                            ["openssl", "s_server", "-accept", f"{SRV}:{port}", "-cert", cert[0],
                             "-key", cert[1], "-www"])
        try:
            self.sb.wait_listen(port)
            start = len(self.d.read_events())
            tcpdump, cap = self.capture(f"cert-{port}", f"tcp port {port}")
            r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:{port}/"])
            ev = self.d.wait_event(lambda e: e.get("type") in ("upgrade_failed", "upgraded")
                                   and e.get("dport") == port, 5, start)
            wire = self.captured(tcpdump, cap)
        finally:
            srv.stop()
        msg = ev.get("message", "") if ev else ""
        ok = (r.rc != 0 and r.elapsed < 1.0 and ev is not None and ev.get("type") == "upgrade_failed"
              and ev.get("rule") == "legacy-certs" and ev.get("reason") == "certificate"
              and any(w in msg for w in why) and f"{SRV}.{port}" in wire and "GET /" not in wire)
        return ok, (f"curl http://{SRV}:{port}/ rc={r.rc} in {r.elapsed:.3f}s ({r.stderr.strip()[:50]}); "
                    f"event {ev and ev.get('type')} rule={ev and ev.get('rule')} reason={ev and ev.get('reason')} "
                    f"({msg[-60:]!r}); TLS attempt on the wire: {f'{SRV}.{port}' in wire}, "
                    f"plaintext 'GET /' on the wire: {'GET /' in wire}")

    def expired_cert_fails_closed(self):
        return self.bad_server_cert_fails_closed(EXPIRED_PORT, self.expired, ("certificate has expired",))

    def self_signed_cert_fails_closed(self):
        return self.bad_server_cert_fails_closed(SELF_SIGNED_PORT, self.self_signed,
                                                 ("self-signed certificate", "self signed certificate"))

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
        (self.pdir / "p.toml").write_text(policy_text("upg-3", SRV, str(self.sb.cert), self.team_rel,
                                                      terminations_text(str(crt), str(key),
                                                                        str(self.client_ca[0]))))
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

    def s_client_mtls(self, cert: tuple[Path, Path] | None) -> S.Result:
        """openssl s_client from the server namespace to the mutual TLS
        termination (verifying the host's certificate), one HTTP request."""
        cmd = ["openssl", "s_client", "-connect", f"{S.CLIENT_V4}:{TERM_MTLS}", "-CAfile",
               self.sb.tmp / "host.crt", "-verify_ip", S.CLIENT_V4, "-verify_return_error", "-quiet", "-ign_eof"]
        if cert:
            cmd += ["-cert", cert[0], "-key", cert[1]]
        return self.sb.server(cmd, input="GET / HTTP/1.0\r\n\r\n", timeout=10)

    def mtls_client_cert_accepted(self):
        subject = subject_rfc2253(self.client_cert[0])
        before = self.backend_requests()
        start = len(self.d.read_events())
        r = self.s_client_mtls(self.client_cert)
        ev = self.d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("action") == "terminate"
                               and e.get("rule") == "legacy-app-mtls", 5, start)
        served = self.backend_requests() - before
        got = ev.get("client_subject") if ev else None
        ok = (r.rc == 0 and "legacy-backend ok" in r.stdout and served == 1 and ev is not None
              and got == subject)
        answer = "backend answered" if "legacy-backend ok" in r.stdout else repr(r.stderr.strip()[-80:])
        return ok, (f"s_client with a client certificate ({subject}) rc={r.rc} {answer}; "
                    f"backend served {served}; event client_subject {got!r}")

    def mtls_without_valid_client_cert_refused(self):
        before = self.backend_requests()
        first = len(self.d.read_events())
        ok, parts = True, []
        for label, cert in (("no client certificate", None), ("one from another CA", self.rogue_client)):
            start = len(self.d.read_events())
            r = self.s_client_mtls(cert)
            ev = self.d.wait_event(lambda e: e.get("type") == "upgrade_failed" and e.get("rule") == "legacy-app-mtls",
                                   5, start)
            ok = ok and ("legacy-backend ok" not in r.stdout and r.elapsed < 2.0 and ev is not None
                         and ev.get("reason") == "certificate" and ev.get("dport") == TERM_MTLS)
            parts.append(f"{label}: rc={r.rc} in {r.elapsed:.3f}s, backend answered "
                         f"{'legacy-backend ok' in r.stdout}, event reason={ev and ev.get('reason')} "
                         f"dport={ev and ev.get('dport')} "
                         f"({(ev or {}).get('message', '')[-50:]!r})")
        terminated = [e for e in self.d.read_events()[first:]
                      if e.get("rule") == "legacy-app-mtls" and e.get("action") == "terminate"]
        served = self.backend_requests() - before
        ok = ok and not terminated and served == 0
        return ok, "; ".join(parts) + f"; terminate events {len(terminated)}, backend served {served}"

    def rotated_certificate_is_served(self):
        """The strict termination's certificate and key are replaced in place
        (same paths, no policy change): within a few seconds new TLS
        clients get the new certificate."""
        crt, key = self.sb.tmp / "host.crt", self.sb.tmp / "host.key"
        new_crt, new_key = self.sb.tmp / "host-new.crt", self.sb.tmp / "host-new.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=tlswall-host-rotated", "-addext",
                        f"subjectAltName=IP:{S.CLIENT_V4}", "-keyout", str(new_key), "-out", str(new_crt)],
                       check=True, capture_output=True, timeout=30)
        t0 = time.monotonic()
        os.replace(new_key, key)  # a moment with a key that does not match: refused, retried
        os.replace(new_crt, crt)
        subject, r = "", None
        while time.monotonic() - t0 < 8:
            r = self.sb.server(["openssl", "s_client", "-connect", f"{S.CLIENT_V4}:{TERM_STRICT}",
                                "-CAfile", crt, "-verify_ip", S.CLIENT_V4, "-verify_return_error"],
                               input="", timeout=10)
            subject = next((l for l in r.stdout.splitlines() if l.startswith("subject=")), "")
            if r.rc == 0 and "tlswall-host-rotated" in subject:
                break
            time.sleep(0.2)
        took = time.monotonic() - t0
        ok = r is not None and r.rc == 0 and "tlswall-host-rotated" in subject and took < 5
        return ok, f"after replacing cert and key in place: s_client rc={r and r.rc} {subject!r} after {took:.1f}s"

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
        redis = value('tlswall_upgrade_connections_total{rule="legacy-redis",side="client"}')
        certs = value('tlswall_upgrade_failures_total{rule="legacy-certs",reason="certificate"}')
        redirected = value("tlswall_upgrade_redirected_total")
        restarts = value("tlswall_upgrade_worker_restarts_total")
        ok = (r.rc == 0 and conns >= 3 and failed >= 1 and term >= 1 and redis >= 3 and certs >= 2
              and redirected >= 8 and restarts == 1)
        return ok, (f"client conns {conns:g}, hostname failures {failed:g}, strict termination conns {term:g}, "
                    f"redis conns {redis:g}, certificate failures {certs:g}, redirected {redirected:g}, "
                    f"worker restarts {restarts:g}")

    def status_per_rule(self):
        """tlswallctl status --json: the proxy's counters per rule and termination."""
        up = self.d.status().get("upgrade", {})
        rules = {r.get("name"): r for r in up.get("rules", [])}
        web, strict = rules.get("legacy-web", {}), rules.get("legacy-app-strict", {})
        certs = rules.get("legacy-certs", {})
        ok = (up.get("running") is True and int(up.get("redirected", 0)) >= 8
              and web.get("side") == "client" and int(web.get("connections", 0)) >= 3
              and int(web.get("bytes_down", 0)) > 0 and int(web.get("failures", {}).get("hostname", 0)) >= 1
              and strict.get("side") == "server" and int(strict.get("connections", 0)) >= 1
              and int(certs.get("failures", {}).get("certificate", 0)) >= 2)
        return ok, (f"running {up.get('running')}, redirected {up.get('redirected')}; legacy-web {web}; "
                    f"legacy-app-strict {strict}; legacy-certs failures {certs.get('failures')}")

    @staticmethod
    def proc_status(pid: int) -> dict:
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
        return out

    @staticmethod
    def fd_targets(pid: int) -> list[str]:
        out = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if int(fd.name) <= 2:
                continue  # stdio: the worker logs where the daemon does
            try:
                out.append(os.readlink(fd))
            except OSError:
                pass
        return out

    def worker_unprivileged_without_bpf(self):
        """The proxy that reads network input runs as tlswall-proxy with no
        capabilities, no way to regain them and no BPF object or control
        socket of the daemon; the daemon itself holds BPF fds."""
        pid = self.d.proxy_worker_pid()
        if pid is None:
            return False, f"no tlswall-proxy child of the daemon (pid {self.d.proc.pid})"
        st = self.proc_status(pid)
        user = pwd.getpwnam("tlswall-proxy")
        fds = self.fd_targets(pid)
        bpf = [f for f in fds if "bpf" in f]
        daemon_bpf = [f for f in self.fd_targets(self.d.proc.pid) if "bpf" in f]
        caps = {k: st.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        uid_ok = st.get("Uid", "").split() == [str(user.pw_uid)] * 4
        gid_ok = st.get("Gid", "").split() == [str(user.pw_gid)] * 4
        caps_ok = all(v == "0000000000000000" for v in caps.values())
        leaked = [f for f in fds if self.d.socket in f or str(self.sb.tmp) in f]
        ok = (uid_ok and gid_ok and caps_ok and st.get("NoNewPrivs") == "1" and not bpf
              and daemon_bpf and not leaked)
        return ok, (f"worker pid {pid}: Uid {st.get('Uid')} (tlswall-proxy = {user.pw_uid}), caps {caps}, "
                    f"NoNewPrivs {st.get('NoNewPrivs')}, {len(fds)} fds, bpf fds {len(bpf)} "
                    f"(daemon: {len(daemon_bpf)}), daemon files leaked {leaked}")

    def worker_killed_restarted_no_plaintext(self):
        """SIGKILL to the worker: an upgraded connection in flight ends at
        once, an event says why, a new worker takes the same port and the
        next client is upgraded again; nothing leaves in plaintext."""
        first = self.d.proxy_worker_pid()
        start = len(self.d.read_events())
        tcpdump, cap = self.capture("worker-kill", "tcp port 443")
        # In flight: half a request, then wait for the server.
        hold = ("import socket,sys,time\n"
                f"s=socket.create_connection(('{SRV}',443),timeout=10)\n"
                "s.sendall(b'GET /held-request HTTP/1.1\\r\\n')\n"
                "t=time.monotonic()\n"
                "try:\n d=s.recv(100)\nexcept OSError as e:\n d=repr(e).encode()\n"
                "print(time.monotonic(), d[:40])\n")
        script = (f'echo $$ > {self.cg_legacy}/cgroup.procs && exec ip netns exec '
                  f'{self.sb._ours(self.sb.client_ns)} python3 -c "$0"')
        held = subprocess.Popen(["sh", "-c", script, hold], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        killed_at = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
        os.kill(first, signal.SIGKILL)
        try:
            held_out, _ = held.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            held.kill()
            held_out = "(still waiting after 10 s)"
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        wire = self.captured(tcpdump, cap)
        died = self.wait_events(lambda e: e.get("reason") == "proxy_worker_died", 1, 5, start)
        second = self.d.proxy_worker_pid()
        summary = self.d.status().get("upgrade", {}).get("summary", "")
        held_s = float(held_out.split()[0]) - killed_at if held_out[:1].isdigit() else 99.0
        ok = (first is not None and held_s < 2.0 and len(died) == 1 and second not in (None, first)
              and r.rc == 0 and "tlswall-e2e ok" in r.stdout and "restarted 1x" in summary
              and "held-request" not in wire and "GET /" not in wire)
        return ok, (f"worker {first} killed: the held client's connection ended {held_s:.3f}s later "
                    f"({held_out.split(' ', 1)[-1].strip()[:40]}); "
                    f"events {[(e.get('type'), e.get('reason')) for e in died]}; new worker {second}; "
                    f"next curl rc={r.rc} in {r.elapsed:.3f}s; status '{summary[-70:]}'; "
                    f"plaintext on the wire: {'held-request' in wire or 'GET /' in wire}")

    def proxy_killed_fails_fast(self):
        # The daemon (and its proxy) dies hard; the pinned redirect stays, so
        # selected clients now meet a closed port: they fail at once, and
        # nothing goes out in plaintext.
        tcpdump, cap = self.capture("kill", "tcp port 443")
        self.d.proc.stop(signal.SIGKILL, timeout=5)
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        wire = self.captured(tcpdump, cap)
        ok = r.rc != 0 and r.elapsed < 2.0 and "GET /" not in wire
        return ok, (f"daemon killed; curl rc={r.rc} in {r.elapsed:.3f}s ({r.stderr.strip()[:60]}); "
                    f"plaintext 'GET /' on the wire: {'GET /' in wire}")

    def wrong_name_fails_closed(self):
        gen = int(self.d.status()["policy"]["generation"])
        (self.pdir / "p.toml").write_text(policy_text("upg-2", "wrong.example", str(self.sb.cert), self.team_rel))
        self.d.wait_generation(gen, timeout=5)
        start = len(self.d.read_events())
        tcpdump, cap = self.capture("wrong-name", "tcp port 443")
        r = self.in_cgroup(["curl", "-sS", "--max-time", "8", f"http://{SRV}:443/"])
        ev = self.d.wait_event(lambda e: e.get("type") == "upgrade_failed", 5, start)
        wire = self.captured(tcpdump, cap)
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
        S.require_tools("ip", "tc", "ss", "curl", "nginx", "openssl", "redis-server", "redis-cli")
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
                    checks.run("redis_cli_upgraded_to_tls_only_redis_server", t.redis_cli_is_upgraded)
                    checks.run("tls_client_passes_through_unchanged", t.tls_client_passes_through)
                    checks.run("client_outside_cgroup_not_upgraded_and_blocked", t.outside_cgroup_not_upgraded)
                    checks.run("cgroups_selector_upgrades_only_its_subtree", t.cgroup_selector_takes_only_its_subtree)
                    checks.run("executables_selector_upgrades_only_that_program",
                               t.executables_selector_takes_only_that_program)
                    checks.run("expired_server_cert_fails_closed_no_plaintext_on_wire", t.expired_cert_fails_closed)
                    checks.run("self_signed_server_cert_fails_closed_no_plaintext_on_wire",
                               t.self_signed_cert_fails_closed)
                    checks.run("terminations_tls_in_plaintext_backend_strict_permissive", t.terminations)
                    checks.run("termination_client_cert_from_ca_reaches_backend_subject_in_event",
                               t.mtls_client_cert_accepted)
                    checks.run("termination_without_valid_client_cert_refused_and_reported",
                               t.mtls_without_valid_client_cert_refused)
                    checks.run("termination_certificate_rotated_in_place_is_served",
                               t.rotated_certificate_is_served)
                    checks.run("proxy_worker_unprivileged_no_capabilities_no_bpf",
                               t.worker_unprivileged_without_bpf)
                    checks.run("proxy_worker_killed_restarted_no_plaintext_on_wire",
                               t.worker_killed_restarted_no_plaintext)
                    checks.run("wrong_server_name_fails_closed_no_plaintext_on_wire", t.wrong_name_fails_closed)
                    checks.run("metrics_per_upgrade_rule", t.metrics_per_rule)
                    checks.run("status_per_upgrade_rule_and_termination", t.status_per_rule)
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
