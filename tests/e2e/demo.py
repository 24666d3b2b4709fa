#!/usr/bin/python3
"""tlswall quick-start demo.

Builds a private two-namespace sandbox (nothing touches the host's network),
runs tlswalld on the SHIPPED configuration (configs/tlswalld.toml with its
configs/policy.d) inside the client namespace, and shows:

  1. a TLS client reaching the protected region (passes)
  2. a plaintext client to the same server (blocked, fails at once)
  3. the event the agent logged for it
  4. a legacy plaintext client (in a child cgroup made here) upgraded to
     verified TLS by the transparent upgrade proxy
  5. `tlswallctl status`

    sudo /usr/bin/python3 tests/e2e/demo.py [--build-dir build]

Exits non-zero if the pass/block expectations are not met. Cleans up
everything it created, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

SHIPPED_CONFIG = S.REPO / "configs" / "tlswalld.toml"
DST = S.SRV_BOUNDARY_V4


def say(msg: str = "") -> None:
    print(msg, flush=True)


def step(n, title: str) -> None:
    say()
    say(f"[{n}] {title}")


def show_cmd(cmd: str) -> None:
    say(f"    $ {cmd}")


def indent(text: str, n: int = 6) -> str:
    return textwrap.indent(text.rstrip(), " " * n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    S.install_signal_handlers()
    S.require_tools("ip", "tc", "ss", "nginx", "curl", "openssl")
    bdir = S.build_dir(a.build_dir)
    S.daemon_binaries(bdir)
    failures: list[str] = []
    cg = None

    try:
        cg = S.Cgroups()
        cg_legacy = cg.make("legacy")
        with S.Sandbox("demo", verbose=a.verbose) as sb:
            say("tlswall demo: TLS is enforced on traffic that crosses a boundary")
            say("=" * 66)
            say(f"sandbox (private network namespaces, removed at exit):")
            say(f"  client  {sb.client_ns:<16} eth0 {S.CLIENT_V4}, {S.CLIENT_V6}   <- tlswalld watches eth0 egress")
            say(f"  server  {sb.server_ns:<16} {S.SRV_BOUNDARY_V4} and {S.SRV_BOUNDARY_V6} (the \"remote region\")")
            say(f"                           {S.SRV_OUTSIDE_V4} (not in any boundary)")
            sb.start_nginx()
            say("  nginx in the server namespace: HTTP on :80, HTTPS on :443")

            d = S.Daemon(sb, bdir, name="tlswalld-demo")
            # The shipped policy, plus one file for the upgrade: it names
            # this sandbox's CA, which only exists while the demo runs.
            pdir = sb.tmp / "policy.d"
            pdir.mkdir()
            for f in sorted((S.REPO / "configs" / "policy.d").glob("*.toml")):
                (pdir / f.name).write_text(f.read_text())
            (pdir / "zz-demo-upgrade.toml").write_text(f"""# demo only: upgrade the legacy cgroup's plaintext to {DST}:443
[[upgrades]]
name = "legacy-web-upgrade"
boundary = "remote-region"
ports = [443]
server_name = "{DST}"
ca_file = "{sb.cert}"
""")
            say()
            say("starting the agent with the shipped configuration and policy (plus one demo file,")
            say("zz-demo-upgrade.toml, that upgrades a legacy cgroup's plaintext to TLS):")
            show_cmd(f"ip netns exec {sb.client_ns} tlswalld --config configs/tlswalld.toml "
                     f"--policy {pdir} --upgrade-cgroup {cg.rel('legacy')} "
                     f"--control-socket {d.socket} --events {d.events} --pin-root {d.pin_root}")
            t0 = time.monotonic()
            d.start(config=SHIPPED_CONFIG, log_level=None,
                    extra_args=["--policy", str(pdir), "--upgrade-cgroup", cg.rel("legacy")])
            st = d.status()
            pol = st.get("policy", {})
            rules = ", ".join(f"{r.get('name')} ({r.get('mode')})" for r in st.get("rules", []))
            att = ", ".join(f"{i.get('name')} {i.get('hook', '')}".strip() for i in st.get("interfaces", [])
                            if i.get("attached"))
            say(f"  ready in {time.monotonic() - t0:.2f}s: policy {pol.get('version')!r} from {pol.get('path')} "
                f"(hash {str(pol.get('hash'))[:12]}), rules: {rules or 'none'}; attached: {att or 'NOTHING'}")

            # 1. TLS passes.
            step(1, "a TLS client reaches the protected region")
            show_cmd(f"curl --cacert server.crt https://{DST}/")
            r = sb.client(["curl", "-sS", "--max-time", "8", "--cacert", str(sb.cert), "-w", "HTTP %{http_code}",
                           f"https://{DST}/"], timeout=15)
            if r.rc == 0 and "tlswall-e2e ok" in r.stdout:
                say(f"    PASSED: {r.stdout.strip().splitlines()[-1]} in {r.elapsed * 1000:.0f} ms")
            else:
                say(f"    UNEXPECTED: curl rc={r.rc}: {r.brief()}")
                failures.append("TLS client did not pass")

            # 2. Plaintext blocked, fast.
            step(2, "a plaintext client to the same server is blocked")
            show_cmd(f"curl http://{DST}/")
            start = len(d.read_events())
            r = sb.client(["curl", "-sS", "--max-time", "8", f"http://{DST}/"], timeout=15)
            if r.rc not in (0, None) and "tlswall-e2e ok" not in r.stdout:
                say(f"    BLOCKED: the client failed after {r.elapsed * 1000:.0f} ms "
                    f"(the agent dropped the request and destroyed the socket)")
                say(f"    {r.stderr.strip()}")
                if r.elapsed >= 2:
                    failures.append(f"blocked client took {r.elapsed:.2f}s to fail (want < 2 s)")
            else:
                say(f"    UNEXPECTED: curl rc={r.rc} {r.brief()}")
                failures.append("plaintext client was not blocked")

            # 3. The event.
            step(3, f"the event the agent wrote ({d.events.name}, one JSON object per line)")
            ev = d.wait_event(lambda e: e.get("type") == "plaintext_blocked" and S.same_ip(e.get("dst"), DST)
                              and int(e.get("dport", 0)) == 80, timeout=3, start_index=start)
            if ev:
                say(indent(json.dumps(ev, indent=2)))
            else:
                say("    MISSING: no plaintext_blocked event")
                failures.append("no plaintext_blocked event")

            # 4. Upgrade.
            step(4, "a legacy plaintext client is upgraded to TLS")
            show_cmd(f"(in cgroup {cg.rel('legacy')}) curl http://{DST}:443/")
            start = len(d.read_events())
            r = sb.run_in_cgroup(sb.client_ns, cg_legacy,
                                 ["curl", "-sS", "--max-time", "8", f"http://{DST}:443/"])
            up = d.wait_event(lambda e: e.get("type") == "upgraded" and e.get("action") == "upgrade",
                              timeout=3, start_index=start)
            if r.rc == 0 and "tlswall-e2e ok" in r.stdout and up:
                say(f"    UPGRADED: the client spoke plain HTTP and got the page "
                    f"({r.elapsed * 1000:.0f} ms); on the wire it was TLS:")
                say(f"    {up.get('message')}")
            else:
                say(f"    UNEXPECTED: curl rc={r.rc} {r.stdout.strip()[:60]!r} "
                    f"{r.stderr.strip()[:120]}; event {up}")
                failures.append("legacy client was not upgraded")

            # 5. Status.
            step(5, "what an operator sees")
            show_cmd("tlswallctl status")
            r = d.ctl(["status"])
            say(indent(r.stdout if r.rc == 0 else f"tlswallctl status failed rc={r.rc}: {r.brief()}"))
            if r.rc != 0:
                failures.append("tlswallctl status failed")

            rc = d.stop()
            if rc != 0:
                failures.append(f"tlswalld exited {rc} on SIGTERM")
    except S.Interrupted as e:
        say(f"\ninterrupted ({e}); cleaned up")
        return 1
    except S.SandboxError as e:
        say(f"\ndemo FAILED: {e}")
        return 1
    finally:
        if cg:
            cg.close()

    say()
    if failures:
        say("demo FAILED: " + "; ".join(failures))
        return 1
    say("demo OK: TLS passed, plaintext was blocked and reported, a legacy client was upgraded. "
        "Sandbox removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
