#!/usr/bin/python3
"""End-to-end test of plaintext preambles (issue 7) with real database servers
and clients.

Inside the sandbox's namespaces (see sandbox.py for the safety rules): a
PostgreSQL cluster of its own (initdb in a temporary directory, run as user
postgres, ssl=on with the sandbox's certificate) and a MariaDB server of its
own (mariadb-install-db in a temporary directory, TLS on) listen on the
server address 198.18.130.10, inside the protected boundary; tlswalld runs in
the client namespace with one enforce rule on 3306 and 5432 that allows the
`postgresql` and `mysql` preambles. Checked:

  - psql sslmode=require passes (and the session is encrypted);
  - psql sslmode=disable (a StartupMessage) is blocked, fast: bad_preamble;
  - an SSLRequest answered 'S' and then plaintext is blocked, and the event
    says "preamble": "postgresql";
  - mariadb --ssl passes (a cipher is in use); mariadb --skip-ssl is blocked;
  - the same rule without `preambles` (hot reload): psql sslmode=require is
    blocked there (not_handshake_record), and so is mariadb --ssl.

Missing packages (postgresql, mariadb-server, mariadb-client) are installed
with apt-get; if that fails, the test fails (never skips).

    /usr/bin/python3 tests/e2e/test_preamble_e2e.py [--build-dir build] [-v]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

FAIL_FAST_S = 2.0  # a blocked client must fail within this
SERVER = S.SRV_BOUNDARY_V4
BOUNDARY = "remote"
RULE = "remote-db"
PACKAGES = {"postgresql": "/usr/lib/postgresql/*/bin/initdb", "mariadb-server": "/usr/sbin/mariadbd",
            "mariadb-client": "/usr/bin/mariadb"}

# A client that sends the SSLRequest, reads the server's answer ('S': go
# ahead with TLS) and then talks plaintext anyway (a StartupMessage).
SSLREQUEST_THEN_PLAINTEXT = r"""
import json, socket, struct, sys, time
t0 = time.monotonic()
res = {}
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(bytes.fromhex("0000000804d2162f"))
    res["answer"] = s.recv(1).decode(errors="replace")
    body = struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres\0\0"
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    res["reply"] = s.recv(64).hex()
except OSError as e:
    res["err"] = f"{type(e).__name__}: {e}"
res["elapsed"] = round(time.monotonic() - t0, 3)
print(json.dumps(res))
"""


def policy_text(version: str, preambles: bool) -> str:
    allow = 'preambles = ["postgresql", "mysql"]\n' if preambles else ""
    return f"""# tlswall preamble e2e policy (generated)
version = "{version}"
default_mode = "monitor"

[boundaries.{BOUNDARY}]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "{RULE}"
boundary = "{BOUNDARY}"
ports = [3306, 5432]
mode = "enforce"
min_tls = "1.2"
{allow}"""


def ensure_packages() -> str:
    """Installs what is missing; raises (a test failure) if apt-get fails."""
    missing = [p for p, path in PACKAGES.items() if not glob.glob(path)]
    if not missing:
        return "all present"
    S.apt_install(missing)
    still = [p for p, path in PACKAGES.items() if not glob.glob(path)]
    if still:
        raise RuntimeError(f"installed {missing}, but still missing: {still}")
    return f"installed {' '.join(missing)}"


class E2E:
    def __init__(self, sb: S.Sandbox, bdir: Path, checks: S.Checks, data: Path):
        self.cg: S.Cgroups | None = None
        self.legacy = ""
        self.sb, self.bdir, self.c, self.data = sb, bdir, checks, data
        self.policy_dir = sb.tmp / "policy.d"
        self.policy_dir.mkdir()
        self.policy_file = self.policy_dir / "preamble.toml"
        self.d: S.Daemon | None = None

    def write_policy(self, text: str) -> None:
        tmp = self.policy_dir / ".preamble.toml.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.policy_file)

    # -- servers ----------------------------------------------------------
    def start_postgres(self):
        pg = pwd.getpwnam("postgres")
        bindir = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        pgdir = self.data / "pg"
        pgdir.mkdir()
        for src, dst in ((self.sb.cert, "server.crt"), (self.sb.key, "server.key")):
            shutil.copy(src, pgdir / dst)
            os.chmod(pgdir / dst, 0o600)
        for p in (pgdir, pgdir / "server.crt", pgdir / "server.key"):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        datadir = pgdir / "data"
        r = subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D", str(datadir),
                            "-A", "trust", "-U", "postgres", "--no-sync"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-300:]}")
        # Plaintext is allowed by the server: only tlswall stops it.
        (datadir / "pg_hba.conf").write_text("host all all 198.18.0.0/15 trust\n")
        self.sb.spawn(self.sb.server_ns, "postgres",
                      ["runuser", "-u", "postgres", "--", str(bindir / "postgres"), "-D", str(datadir),
                       "-c", f"listen_addresses={SERVER}", "-c", "port=5432",
                       "-c", f"unix_socket_directories={pgdir}", "-c", "ssl=on",
                       "-c", f"ssl_cert_file={pgdir / 'server.crt'}",
                       "-c", f"ssl_key_file={pgdir / 'server.key'}", "-c", "fsync=off"])
        self.sb.wait_listen(5432, timeout=30)
        return True, f"postgres ({bindir.parent.name}) on {SERVER}:5432, ssl=on, hba allows plaintext too"

    def start_mariadb(self):
        mydir = self.data / "my"
        mydir.mkdir()
        datadir = mydir / "data"
        r = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {r.stderr.strip()[-300:]}")
        init = mydir / "init.sql"
        init.write_text("CREATE USER IF NOT EXISTS 'e2e'@'%' IDENTIFIED BY 'e2e';\n"
                        "GRANT ALL ON *.* TO 'e2e'@'%';\n")
        self.sb.spawn(self.sb.server_ns, "mariadbd",
                      ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={datadir}", "--user=root",
                       f"--socket={mydir / 'my.sock'}", f"--pid-file={mydir / 'my.pid'}",
                       f"--bind-address={SERVER}", "--port=3306", f"--init-file={init}",
                       f"--ssl-cert={self.sb.cert}", f"--ssl-key={self.sb.key}",
                       "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
        self.sb.wait_listen(3306, timeout=60)
        return True, f"mariadbd on {SERVER}:3306 with TLS, user e2e"

    # -- daemon ---------------------------------------------------------------
    def start_daemon(self):
        self.write_policy(policy_text("preamble-1", preambles=True))
        d = S.Daemon(self.sb, self.bdir, name="tlswalld-preamble")
        d.write_config(str(self.policy_dir), extra={"events": {"aggregate_window_ms": 0}})
        self.d = d
        d.start()
        st = d.status()
        ok = int(st["policy"]["generation"]) >= 1 and st["policy"].get("version") == "preamble-1"
        return ok, f"policy {st['policy'].get('version')!r} gen {st['policy'].get('generation')}"

    def reload_without_preambles(self):
        gen0 = int(self.d.status()["policy"]["generation"])
        self.write_policy(policy_text("preamble-2-none", preambles=False))
        rr = self.d.ctl(["policy", "reload"])
        st = self.d.wait_generation(gen0, timeout=5)
        ok = rr.rc == 0 and st is not None and st["policy"].get("version") == "preamble-2-none"
        return ok, f"reload rc={rr.rc}, version {st and st['policy'].get('version')!r}"

    # -- clients --------------------------------------------------------------
    def psql(self, sslmode: str, sql: str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"):
        # gssencmode=disable: no GSSENCRequest (a preamble tlswall does not allow).
        conn = (f"host={SERVER} port=5432 user=postgres dbname=postgres sslmode={sslmode} "
                "gssencmode=disable connect_timeout=8")
        return self.sb.client(["psql", "-X", "-At", conn, "-c", sql], timeout=20)

    def mariadb(self, ssl: bool):
        return self.sb.client(["mariadb", "--no-defaults", "-h", SERVER, "-P", "3306", "-u", "e2e", "-pe2e",
                               "--connect-timeout=8", "--ssl" if ssl else "--skip-ssl", "-N", "-B",
                               "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'"], timeout=20)

    def blocked_event(self, start: int, dport: int, want: dict):
        ev = self.d.wait_event(lambda e: e.get("type") == "plaintext_blocked" and
                               S.same_ip(e.get("dst"), SERVER) and int(e.get("dport", -1)) == dport,
                               timeout=4, start_index=start)
        if ev is None:
            return None, ["no plaintext_blocked event"]
        bad = [f"{k}={ev.get(k)!r} want {v!r}" for k, v in want.items() if ev.get(k) != v]
        return ev, bad

    def pg_require_passes(self):
        r = self.psql("require")
        ok = r.rc == 0 and r.stdout.strip() == "t"
        return ok, f"psql sslmode=require rc={r.rc} in {r.elapsed:.3f}s, ssl in use: {r.stdout.strip()!r} {r.brief(150)}"

    def expect_blocked(self, what: str, run, dport: int, reason: str, fast_required: bool = True):
        """Runs a client that tlswall must block: it fails (fast), and the
        plaintext_blocked event has `reason`, our rule, and no preamble (the
        client sent none whole)."""
        start = len(self.d.read_events())
        r = run()
        blocked, fast = r.rc not in (0, None), r.elapsed < FAIL_FAST_S
        ev, bad = self.blocked_event(start, dport, {"reason": reason, "rule": RULE, "action": "drop"})
        if ev and "preamble" in ev:
            bad.append(f"preamble={ev['preamble']!r}, but no whole preamble was sent")
        return (blocked and (fast or not fast_required) and not bad,
                f"{what} rc={r.rc} in {r.elapsed:.3f}s ({'fast' if fast else 'SLOW'}) [{r.brief(120)}]; "
                f"event: {bad or 'ok'}")

    def pg_disable_blocked(self):
        # A StartupMessage begins 00 00 00 like an SSLRequest, then differs.
        return self.expect_blocked("psql sslmode=disable", lambda: self.psql("disable", "SELECT 1"), 5432,
                                   "bad_preamble")

    def pg_plaintext_after_sslrequest_blocked(self):
        start = len(self.d.read_events())
        r = self.sb.client([S.PYTHON, "-c", SSLREQUEST_THEN_PLAINTEXT, SERVER, "5432"], timeout=20)
        try:
            j = json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            j = {}
        # The server said 'S' (TLS welcome); the StartupMessage never reached it.
        ok_client = j.get("answer") == "S" and not j.get("reply") and float(j.get("elapsed", 99)) < FAIL_FAST_S + 1
        ev, bad = self.blocked_event(start, 5432, {"reason": "not_handshake_record", "preamble": "postgresql",
                                                   "rule": RULE})
        return ok_client and not bad, f"client {j}; event: {bad or 'ok'} {json.dumps(ev) if ev else ''}"

    def mariadb_ssl_passes(self):
        r = self.mariadb(ssl=True)
        cipher = r.stdout.strip().split("\t")[-1] if r.stdout.strip() else ""
        ok = r.rc == 0 and cipher not in ("", "NULL")
        return ok, f"mariadb --ssl rc={r.rc} in {r.elapsed:.3f}s, cipher {cipher!r} {r.brief(150)}"

    def mariadb_skip_ssl_blocked(self):
        # A handshake response without CLIENT_SSL is longer than 32 bytes:
        # its first byte is no SSL request's, nor a ClientHello's.
        return self.expect_blocked("mariadb --skip-ssl", lambda: self.mariadb(ssl=False), 3306,
                                   "not_handshake_record")

    def pg_require_blocked_without_preamble(self):
        return self.expect_blocked("psql sslmode=require", lambda: self.psql("require"), 5432,
                                   "not_handshake_record")

    def mariadb_ssl_blocked_without_preamble(self):
        return self.expect_blocked("mariadb --ssl", lambda: self.mariadb(ssl=True), 3306,
                                   "not_handshake_record", fast_required=False)

    # -- the upgrade proxy toward PostgreSQL (issue 5) -----------------------
    def start_upgrade_daemon(self):
        """A new daemon with [upgrade] on a child cgroup and an [[upgrades]]
        rule for 5432 with preamble = "postgresql"."""
        self.d.stop()
        self.cg = S.Cgroups()
        self.legacy = self.cg.make("legacy")
        self.write_policy(policy_text("preamble-3-upgrade", preambles=True) + f"""
[[upgrades]]
name = "legacy-psql"
boundary = "{BOUNDARY}"
ports = [5432]
server_name = "{SERVER}"
ca_file = "{self.sb.cert}"
preamble = "postgresql"
""")
        d = S.Daemon(self.sb, self.bdir, name="tlswalld-pgupgrade")
        d.write_config(str(self.policy_dir), extra={"events": {"aggregate_window_ms": 0},
                                                    "upgrade": {"cgroup": self.cg.rel("legacy"), "port": 15443}})
        self.d = d
        d.start()
        st = d.status()
        return bool(st.get("upgrade", {}).get("running")), f"upgrade {st.get('upgrade', {}).get('summary')}"

    def psql_upgraded(self, sslmode: str):
        """A legacy psql in the upgrade cgroup: plaintext to the proxy, which
        sends the SSLRequest and makes verified TLS to the real server; the
        server reports the session encrypted."""
        start = len(self.d.read_events())
        conn = (f"host={SERVER} port=5432 user=postgres dbname=postgres sslmode={sslmode} "
                "gssencmode=disable connect_timeout=8")
        r = self.sb.run_in_cgroup(self.sb.client_ns, self.legacy,
                                  ["psql", "-X", "-At", conn, "-c",
                                   "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], timeout=20)
        ev = self.d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("rule") == "legacy-psql",
                               timeout=5, start_index=start)
        ok = r.rc == 0 and r.stdout.strip().startswith("t|TLS") and ev is not None
        return ok, (f"psql sslmode={sslmode} rc={r.rc}: server says {r.stdout.strip()!r} {r.brief(150)}; "
                    f"event {ev and {k: ev.get(k) for k in ('rule', 'tls_version', 'server_name')}}")

    def counters(self):
        # Two TLS flows after a preamble (psql, mariadb) and at least five
        # blocked ones; the reload's two flows were TLS-free.
        c = self.d.status().get("counters", {})
        shown = {k: c.get(k) for k in ("flows_seen", "flows_tls", "flows_not_tls", "plaintext_blocked",
                                       "events_lost")}
        ok = (int(c.get("flows_tls", 0)) >= 2 and int(c.get("plaintext_blocked", 0)) >= 5
              and int(c.get("events_lost", 0)) == 0)
        return ok, f"counters {shown}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None, help="tlswall build dir (default $TLSWALL_BUILD_DIR or ./build)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo every sandbox command")
    a = ap.parse_args()

    S.install_signal_handlers()
    checks = S.Checks()
    data: Path | None = None
    try:
        checks.run("packages", lambda: (True, ensure_packages()))
        S.require_tools("ip", "tc", "ss", "openssl", "psql", "mariadb", "mariadb-install-db", "runuser")
        bdir = S.build_dir(a.build_dir)
        S.daemon_binaries(bdir)
        print(f"tlswall preamble e2e: build dir {bdir}, kernel {os.uname().release}", flush=True)
        # The servers' data directories: outside the sandbox's 0700 tmp, so
        # user postgres can reach its own; removed below, also on failure.
        data = Path(tempfile.mkdtemp(prefix="tlswall-preamble-"))
        os.chmod(data, 0o755)
        with S.Sandbox("pre", verbose=a.verbose) as sb:
            print(f"sandbox: client ns {sb.client_ns}, server ns {sb.server_ns}, tmp {sb.tmp}", flush=True)
            sb.make_cert()
            t = E2E(sb, bdir, checks, data)
            try:
                servers = (checks.run("postgres_starts", t.start_postgres)
                           & checks.run("mariadb_starts", t.start_mariadb))
                if servers and checks.run("daemon_start", t.start_daemon):
                    checks.run("psql_sslmode_require_passes", t.pg_require_passes)
                    checks.run("psql_sslmode_disable_blocked_fast", t.pg_disable_blocked)
                    checks.run("sslrequest_then_plaintext_blocked_event_names_preamble",
                               t.pg_plaintext_after_sslrequest_blocked)
                    checks.run("mariadb_ssl_passes", t.mariadb_ssl_passes)
                    checks.run("mariadb_skip_ssl_blocked_fast", t.mariadb_skip_ssl_blocked)
                    if checks.run("reload_rule_without_preambles", t.reload_without_preambles):
                        checks.run("psql_sslmode_require_blocked_without_preamble",
                                   t.pg_require_blocked_without_preamble)
                        checks.run("mariadb_ssl_blocked_without_preamble", t.mariadb_ssl_blocked_without_preamble)
                    checks.run("status_counters", t.counters)
                    if checks.run("daemon_with_upgrade_proxy", t.start_upgrade_daemon):
                        checks.run("psql_sslmode_disable_upgraded_through_sslrequest",
                                   lambda: t.psql_upgraded("disable"))
                        checks.run("psql_sslmode_prefer_own_sslrequest_declined_and_upgraded",
                                   lambda: t.psql_upgraded("prefer"))
            finally:
                if t.d:
                    t.d.stop()
                if t.cg:
                    t.cg.close()
                    if os.environ.get("TLSWALL_E2E_SHOW_LOG"):
                        print(t.d.proc.log_tail(200) if t.d.proc else "")
    except S.Interrupted as e:
        checks.record("interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 -- setup failure is a test failure
        checks.record("setup", False, f"{type(e).__name__}: {e}")
        if os.environ.get("TLSWALL_E2E_TRACE"):
            traceback.print_exc()
    finally:
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
