#!/usr/bin/python3
"""Benchmark: what attribution adds to the cost of a new connection.

Side by side in one run, on the bench_enforce.py sandbox and peers:
  F  the agent enforcing with attribution off ([attribution] backends = []),
     i.e. the foundation of issue 2
  T  the same agent with attribution on (the backend this kernel offers:
     tp_btf here), the policy without owner selectors
  S  attribution on and the policy's port also covered by a rule with owner
     selectors (cgroups + users + comms), so every new flow's decision
     matches its owner in the kernel
Each round runs F, T, S in a rotating order; the ratios are T/F and S/F
(paired per round, median). A no-agent baseline (A) is measured too, for
reference.

    /usr/bin/python3 tests/bench/bench_attribution.py [--build-dir build] [--rounds 6]
        [--seconds 2.5] [--write]

--write replaces the bench_attribution section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import bench_enforce as B  # noqa: E402
from bench_report import med, write_section  # noqa: E402
import sandbox as S  # noqa: E402

SELECTOR_RULE = """
[[rules]]
name = "bench-owner-monitor"
boundary = "remote"
ports = ["8400-8499"]
mode = "monitor"
cgroups = ["/tlswall-bench-nonexistent"]
users = [4299]
comms = ["tw-none"]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    S.install_signal_handlers()
    bdir = S.build_dir(a.build_dir)
    S.daemon_binaries(bdir)
    info = B.env_info()
    cmd_line = "/usr/bin/python3 tests/bench/bench_attribution.py" + "".join(
        f" {x}" for x in sys.argv[1:] if x != "--write")
    vals: dict[str, list[float]] = {"A": [], "F": [], "T": [], "S": []}
    backend = "?"
    t0 = time.monotonic()
    try:
        with S.Sandbox("batt", verbose=a.verbose) as sb:
            sb.client(["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"])
            sb.server(["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=262144"])
            sb.spawn(sb.server_ns, "bench-server", B.NICE + [S.PYTHON, B.PEER, "server", "--bulk-port",
                                                      B.BULK_PORT, "--conn-port", B.CONN_PORT, "--cpu", B.CPU[0]])
            sb.wait_listen(B.CONN_PORT)
            arms = {}
            for arm, backends, extra in (("F", [], ""), ("T", None, ""), ("S", None, SELECTOR_RULE)):
                pdir = sb.tmp / f"policy-{arm}"
                pdir.mkdir()
                (pdir / "bench.toml").write_text(B.POLICY + extra)
                d = S.Daemon(sb, bdir, name=f"tlswalld-{arm}")
                cfg = {"on_stop": "detach"}
                if backends is not None:
                    cfg["attribution"] = {"backends": backends}
                d.write_config(str(pdir), log_level="warn", extra=cfg)
                arms[arm] = d
            B.run_metric(sb, "conn", 1)  # warm-up

            def measure(arm: str) -> None:
                nonlocal backend
                if arm == "A":
                    vals["A"].append(B.run_metric(sb, "conn", a.seconds))
                    return
                d = arms[arm]
                d.start(log_level="warn")
                st = d.status()
                active = st.get("attribution", {}).get("active_backend", "")
                if arm == "F" and active:
                    raise B.BenchError(f"attribution should be off in F, runs {active}")
                if arm != "F":
                    if not active:
                        raise B.BenchError(f"no attribution backend in {arm}")
                    backend = active
                c0 = st["counters"]
                vals[arm].append(B.run_metric(sb, "conn", a.seconds))
                c1 = d.status()["counters"]
                if int(c1["flows_tls"]) - int(c0["flows_tls"]) <= 0 or int(c1["plaintext_blocked"]) != int(c0["plaintext_blocked"]):
                    raise B.BenchError(f"{arm}: flows were not judged TLS")
                d.stop()

            order = ["A", "F", "T", "S"]
            for rnd in range(1, a.rounds + 1):
                rot = order[rnd % 4:] + order[:rnd % 4]
                for arm in rot:
                    measure(arm)
                print(f"round {rnd}/{a.rounds} ({''.join(rot)}): " +
                      "  ".join(f"{k}={vals[k][-1]:.0f}" for k in order), flush=True)
    except (B.BenchError, S.SandboxError, S.Interrupted) as e:
        print(f"bench FAILED: {e}", file=sys.stderr)
        return 1

    def paired(x, y):
        return med([b / f for f, b in zip(vals[x], vals[y]) if f])

    rows = [
        ("A: no agent", med(vals["A"]), "-"),
        ("F: enforcing, attribution off (foundation)", med(vals["F"]), "1.000"),
        (f"T: enforcing, attribution on ({backend})", med(vals["T"]), f"{paired('F', 'T'):.3f}"),
        (f"S: T + owner selectors on the port", med(vals["S"]), f"{paired('F', 'S'):.3f}"),
    ]
    lines = ["| arm | new conns/s (median) | paired ratio vs F |", "|---|---:|---:|"]
    lines += [f"| {n} | {v:.0f} | {r} |" for n, v, r in rows]
    table = "\n".join(lines)
    print(table)
    print(f"wall time {time.monotonic() - t0:.0f}s")
    if a.write:
        section = f"""### Attribution cost on new connections (issue 3)

{table}

Sequential new TLS-like connections (connect, ClientHello-shaped first
bytes, close) to a protected port, as in the foundation benchmark above;
{a.rounds} rounds of {a.seconds:g} s per arm, arms in a rotating order.
Per-round values: {', '.join(f'{k}={[round(v) for v in vals[k]]}' for k in ('A', 'F', 'T', 'S'))}.
Machine: {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}), build {info['git']}.

Reproduce (root, built tree):

    {cmd_line} --write

T adds the probe (one socket-storage write per connect()) and the
classifier's owner read when it reports; S adds, per new flow, the owner
match (uid, comm and cgroup-ancestor lookups) because a selector rule covers
the port."""
        print(f"wrote {write_section('bench_attribution', section)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
