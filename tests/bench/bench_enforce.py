#!/usr/bin/python3
"""tlswall enforcement overhead benchmark (not a test).

Inside the private namespace sandbox (tests/e2e/sandbox.py: nothing touches
the host's interfaces), measures the same workloads (a) with no agent and (b)
with tlswalld attached to the client's egress and ENFORCING a rule that covers
the measured destination and ports, alternating A/B, B/A, A/B, ... for several rounds,
and reports medians and B/A ratios:

  bulk      one TLS-like flow (valid ClientHello, then bulk bytes) for N s,
            Gbit/s counted by the receiver        -- target ratio >= 0.97
  conn      sequential new TLS-like connections (connect, ClientHello, server
            closes), connections/s                -- target ratio >= 0.95
  https     real TLS: wrk against nginx:443 with "Connection: close" (a full
            TLS 1.3 handshake per request), requests/s (informational)

All measured traffic goes to 198.18.130.10 (inside the protected boundary) on
ports covered by an enforce rule, so the classifier judges every flow; the
agent's counters are checked after each B run (flows judged TLS, nothing
blocked).

    /usr/bin/python3 tests/bench/bench_enforce.py [--build-dir build] [--rounds 6]
        [--seconds 2.5] [--write] [--strict]

--write replaces the bench_enforce section of BENCHMARKS.md with the results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))
import sandbox as S  # noqa: E402
from bench_report import med, proc_cpu_s, write_section  # noqa: E402

PEER = str(HERE / "bench_peer.py")
# The VM is shared with builds and other tests: run the measured peers at a
# higher priority so that background load disturbs them less (set by --nice).
NICE: list[str] = []
# Client and server share one CPU: on this VM a cross-CPU wakeup makes
# throughput bimodal (about 8 vs 16 Gbit/s from run to run, agent or not);
# on one CPU it is stable to a few percent (set by --cpu).
CPU = ["0"]
DST = "198.18.130.10"
BULK_PORT, CONN_PORT = 8443, 8444

POLICY = """# tlswall benchmark policy (generated)
version = "bench-1"
default_mode = "monitor"

[boundaries.remote]
cidrs = ["198.18.128.0/17", "2001:db8:2::/48"]

[[rules]]
name = "bench-enforce"
boundary = "remote"
ports = [443, "8400-8499"]
mode = "enforce"
min_tls = "1.2"
"""

METRICS = [
    # key, label, unit, target ratio (None = informational)
    ("bulk", "bulk TLS-like stream (1 flow)", "Gbit/s", 0.97),
    ("conn", "new TLS-like connections (sequential)", "conn/s", 0.95),
    ("https", "real HTTPS new conns (wrk -c4, Connection: close)", "req/s", None),
]


class BenchError(RuntimeError):
    pass


def run_metric(sb: S.Sandbox, key: str, seconds: float) -> float:
    if key == "bulk":
        r = sb.client(NICE + [S.PYTHON, PEER, "bulk", f"{DST}:{BULK_PORT}", "--seconds", seconds, "--cpu", CPU[0]],
                      timeout=seconds + 20)
        j = _json(r)
        if "gbit_s" not in j:
            raise BenchError(f"bulk run failed: rc={r.rc} {j or r.brief()}")
        return float(j["gbit_s"])
    if key == "conn":
        r = sb.client(NICE + [S.PYTHON, PEER, "conn", f"{DST}:{CONN_PORT}", "--seconds", seconds, "--cpu", CPU[0]],
                      timeout=seconds + 20)
        j = _json(r)
        if "conn_s" not in j or j.get("errors", 0) > 0:
            raise BenchError(f"conn run failed: rc={r.rc} {j or r.brief()}")
        return float(j["conn_s"])
    if key == "https":
        r = sb.client(NICE + ["taskset", "-c", CPU[0], "wrk", "-t1", "-c4", f"-d{int(seconds)}s", "-H", "Connection: close",
                       f"https://{DST}/"], timeout=seconds + 20)
        rps, errs = None, ""
        for line in (r.stdout or "").splitlines():
            if line.startswith("Requests/sec:"):
                rps = float(line.split()[1])
            if "errors:" in line or "Non-2xx" in line:
                errs += line.strip() + " "
        if rps is None or r.rc != 0:
            raise BenchError(f"wrk failed: rc={r.rc} {r.brief()}")
        if "connect" in errs and "connect 0" not in errs:
            raise BenchError(f"wrk socket errors: {errs}")
        return rps
    raise ValueError(key)


def _json(r: S.Result) -> dict:
    try:
        return json.loads((r.stdout or "").strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


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
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--rounds", type=int, default=6, help="A/B rounds (default 6)")
    ap.add_argument("--seconds", type=float, default=2.5, help="seconds per measurement (default 2.5)")
    ap.add_argument("--no-https", action="store_true", help="skip the wrk HTTPS metric")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md at the repo root")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a ratio misses its target")
    ap.add_argument("--cpu", type=int, default=0, help="CPU that client and server peers share (default 0)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of the measured peers (default -10; 0 = unchanged)")
    ap.add_argument("--baseline-only", action="store_true",
                    help="measure only A (no agent): checks the sandbox and peers, writes nothing")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    rounds = max(1, min(a.rounds, 20))
    CPU[0] = str(max(0, min(a.cpu, (os.cpu_count() or 1) - 1)))
    if a.nice:
        NICE[:] = ["nice", "-n", str(max(-20, min(a.nice, 19)))]
    seconds = max(1.0, min(a.seconds, 20.0))
    metrics = [m for m in METRICS if not (a.no_https and m[0] == "https")]

    S.install_signal_handlers()
    S.TOOL_PACKAGES.setdefault("taskset", "util-linux")
    S.require_tools("ip", "tc", "ss", "nginx", "wrk", "openssl", "taskset")
    bdir = S.build_dir(a.build_dir)
    if not a.baseline_only:
        S.daemon_binaries(bdir)
    info = env_info()
    load_start = os.getloadavg()
    cmd_line = "/usr/bin/python3 tests/bench/bench_enforce.py" + "".join(
        f" {x}" for x in sys.argv[1:] if x != "--write")
    print(f"tlswall bench: kernel {info['kernel']}, {info['cpus']} CPUs ({info['cpu_model']}), "
          f"{rounds} rounds x {seconds:g}s, build {bdir}", flush=True)

    vals = {m[0]: {"A": [], "B": []} for m in metrics}
    judged = []  # per B run: counter deltas
    agent_cpu = []  # per B run: daemon CPU seconds per second (user space only)
    agent_version = "?"
    t_start = time.monotonic()
    errors: list[str] = []
    try:
        with S.Sandbox("bnch", verbose=a.verbose) as sb:
            sb.client(["sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000"])
            sb.server(["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=262144"])
            sb.start_nginx(workers=1, cpu=int(CPU[0]))
            sb.spawn(sb.server_ns, "bench-server", NICE + [S.PYTHON, PEER, "server", "--bulk-port", BULK_PORT,
                                                    "--conn-port", CONN_PORT, "--cpu", CPU[0]])
            sb.wait_listen(BULK_PORT)
            sb.wait_listen(CONN_PORT)
            pdir = sb.tmp / "policy.d"
            pdir.mkdir()
            (pdir / "bench.toml").write_text(POLICY)
            d = None
            if not a.baseline_only:
                d = S.Daemon(sb, bdir, name="tlswalld-bench")
                d.write_config(str(pdir), log_level="warn", extra={"on_stop": "detach"})

            # Warm-up (discarded): page cache, nginx, TCP memory.
            for key, *_ in metrics:
                run_metric(sb, key, 1)

            def run_a(rnd):
                # No agent: nothing may be attached to eth0.
                tcf = (sb.client(["tc", "filter", "show", "dev", "eth0", "egress"]).stdout or "").strip()
                if tcf:
                    raise BenchError(f"round {rnd}: tc filter still attached to eth0 for an A run:\n{tcf}")
                for key, *_ in metrics:
                    vals[key]["A"].append(run_metric(sb, key, seconds))

            def run_b(rnd):
                nonlocal agent_version
                d.start(log_level="warn")
                st0 = d.status()
                agent_version = st0.get("version", "?")
                rules = {r.get("name"): r.get("mode") for r in st0.get("rules", [])}
                if rules.get("bench-enforce") != "enforce":
                    raise BenchError(f"agent did not load the enforce rule: {rules}")
                cpu0, t0 = proc_cpu_s(d.proc.pid), time.monotonic()
                for key, *_ in metrics:
                    vals[key]["B"].append(run_metric(sb, key, seconds))
                agent_cpu.append((proc_cpu_s(d.proc.pid) - cpu0) / (time.monotonic() - t0))
                st1 = d.status()
                c0, c1 = st0["counters"], st1["counters"]
                delta = {k: int(c1.get(k, 0)) - int(c0.get(k, 0))
                         for k in ("flows_seen", "flows_tls", "flows_not_tls", "plaintext_blocked", "packets",
                                   "packets_dropped", "events_lost", "state_lost")}
                judged.append(delta)
                rc = d.stop()
                if rc != 0:
                    errors.append(f"round {rnd}: tlswalld exited {rc} on SIGTERM")
                if delta["flows_tls"] <= 0 or delta["plaintext_blocked"] or delta["packets_dropped"]:
                    raise BenchError(f"round {rnd}: agent did not judge the flows as TLS: {delta}")

            for rnd in range(1, rounds + 1):
                if d is None:
                    run_a(rnd)
                    print(f"round {rnd}/{rounds}: " + "  ".join(f"{k} A={vals[k]['A'][-1]:.2f}" for k, *_ in metrics),
                          flush=True)
                    continue
                # A B, then B A: over two rounds a linear drift in machine
                # load hits both sides equally.
                order = "AB" if rnd % 2 else "BA"
                for side in order:
                    (run_a if side == "A" else run_b)(rnd)
                delta = judged[-1]
                line = "  ".join(f"{key} A={vals[key]['A'][-1]:.2f} B={vals[key]['B'][-1]:.2f}" for key, *_ in metrics)
                print(f"round {rnd}/{rounds} ({order[0]}/{order[1]}): {line}  (B: {delta['flows_tls']} flows judged TLS, "
                      f"{delta['packets']} packets classified, 0 blocked)", flush=True)
    except S.Interrupted as e:
        print(f"bench interrupted: {e}", file=sys.stderr)
        return 1
    except (BenchError, S.SandboxError) as e:
        print(f"bench FAILED: {e}", file=sys.stderr)
        return 1

    wall = time.monotonic() - t_start
    if a.baseline_only:
        for key, label, unit, _ in metrics:
            print(f"{label} ({unit}): median {med(vals[key]['A']):.2f} of {vals[key]['A']}")
        print(f"wall time {wall:.0f}s (baseline only; nothing written)")
        return 0
    rows = []
    misses = []
    for key, label, unit, target in metrics:
        A, B = vals[key]["A"], vals[key]["B"]
        ma, mb = med(A), med(B)
        ratio = mb / ma if ma else float("nan")
        paired = [b / x for x, b in zip(A, B) if x]
        pmed = med(paired)
        verdict = "-" if target is None else ("ok" if pmed >= target else "BELOW TARGET")
        if target is not None and pmed < target:
            misses.append(key)
        rows.append((label, unit, ma, mb, ratio, pmed, min(paired, default=0), max(paired, default=0),
                     target, verdict, A, B))

    hdr = (f"| {'metric':<50} | {'unit':<6} | {'no agent':>9} | {'enforcing':>9} | {'ratio':>6} "
           f"| {'paired ratio (min-max)':>22} | {'target':>6} | {'verdict':<12} |")
    sep = "|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|"
    table = [hdr, sep]
    for label, unit, ma, mb, ratio, pmed, pmin, pmax, target, verdict, _, _ in rows:
        t = f">={target:.2f}" if target else "info"
        pr = f"{pmed:.3f} ({pmin:.2f}-{pmax:.2f})"
        table.append(f"| {label:<50} | {unit:<6} | {ma:>9.2f} | {mb:>9.2f} | {ratio:>6.3f} | {pr:>22} "
                     f"| {t:>6} | {verdict:<12} |")
    runs = []
    for label, unit, *_, A, B in rows:
        runs.append(f"- {label} ({unit}): A = {', '.join(f'{x:.2f}' for x in A)}; "
                    f"B = {', '.join(f'{x:.2f}' for x in B)}")
    tls_flows = [j["flows_tls"] for j in judged]
    load_end = os.getloadavg()
    derived = ""
    if "conn" in vals and vals["conn"]["A"] and vals["conn"]["B"]:
        ca, cb = med(vals["conn"]["A"]), med(vals["conn"]["B"])
        derived = (f"new-connection cost: {1e6 / ca:.1f} us without the agent, {1e6 / cb:.1f} us with it "
                   f"({1e6 / cb - 1e6 / ca:+.1f} us per connection, medians)")

    print()
    print("\n".join(table))
    print()
    print("ratio = median(B)/median(A); paired ratio = median over rounds of B/A within the round (verdict uses it)")
    print("per-round values (A = no agent, B = agent enforcing):")
    print("\n".join(runs))
    print(f"agent {agent_version}; flows judged TLS per B run: {tls_flows}; plaintext blocked during B: 0")
    print(f"tlswalld process CPU during B runs (user space; the classifier runs in the sender's context): "
          f"{', '.join(f'{x * 100:.1f}%' for x in agent_cpu)}")
    if derived:
        print(derived)
    print(f"load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; wall time {wall:.0f}s")
    for e in errors:
        print(f"warning: {e}")

    if a.write:
        md = f"""## Enforcement overhead: throughput and new-connection rate

Enforcement overhead of `tlswalld` on the data path: the same workloads with no
agent (A) and with the agent attached to the sender's tc egress and **enforcing**
a rule that covers the measured destination and ports (B), alternated
A/B, B/A, A/B, ... for {rounds} rounds of {seconds:g} s per workload; medians,
the ratio of the medians and the median of the per-round (paired) ratios.
Generated by `tests/bench/bench_enforce.py`; do not edit by hand.

### Result

{chr(10).join(table)}

`ratio` = median(B) / median(A). `paired ratio` = median over rounds of B/A
measured back to back within the round (min-max in brackets); the verdict uses
it because it cancels slow drifts in machine load.

Per-round values (A = no agent, B = agent enforcing):

{chr(10).join(runs)}

Agent counters after each B run: flows judged TLS {tls_flows}, plaintext
blocked 0, packets dropped 0 (the benchmark aborts otherwise). CPU used by the
tlswalld process itself during each B run (user-space daemon; the classifier
runs in the sender's context and is inside the figures above):
{', '.join(f'{x * 100:.1f}%' for x in agent_cpu)} of one CPU.

{derived + "." if derived else ""}

### Environment

- date: {info['date']}
- kernel: {info['kernel']}
- CPUs: {info['cpus']} ({info['cpu_model']})
- tlswall: {agent_version}, tree {info['git']}
- client, server (and nginx, wrk) pinned to one CPU ({CPU[0]}), niceness {a.nice}; Python {info['python']} peers
- load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}
  (the VM is shared with builds and other tests; compare ratios, not absolutes)
- wall time of the run: {wall:.0f} s

### Reproduce

```
{cmd_line} --write
```

(root; needs a built tree, `TLSWALL_BUILD_DIR` or `--build-dir` if not `./build`;
Debian packages iproute2, nginx-light, wrk, openssl, util-linux.)

### Method

- Everything runs in two private network namespaces joined by a veth pair
  (`tests/e2e/sandbox.py`); the agent runs in the client namespace, attached
  to its `eth0` egress only. Nothing touches the host's interfaces.
- Destination 198.18.130.10 lies in the boundary `remote` (198.18.128.0/17);
  rule `bench-enforce` enforces TLS >= 1.2 on ports 443 and 8400-8499, so the
  classifier judges every measured flow.
- Client, server, nginx and wrk share one CPU (`--cpu`). With the peers on
  different CPUs this VM's throughput is bimodal (about 8 or 16 Gbit/s from
  run to run, with or without the agent: the cost of waking an idle vCPU),
  which hides any few-percent effect; on one CPU runs repeat within a few
  percent. The whole send + receive path, agent included, is then charged to
  that CPU.
- **bulk**: `bench_peer.py bulk` sends a well-formed 517-byte ClientHello, then
  streams 1 MiB writes for {seconds:g} s on one connection; the receiver counts
  the bytes. Measures the per-packet cost on a verified flow.
- **conn**: `bench_peer.py conn` opens connections one after another
  (connect, ClientHello, wait for the server's close). Measures the per-flow
  cost (SYN tracking, ClientHello judgement, flow-table insert).
- **https**: `wrk -t1 -c4 -H "Connection: close" https://198.18.130.10/`
  against nginx: a real TLS 1.3 handshake per request. Crypto dominates, so
  the ratio is informational.
- The synthetic-hello workloads are deliberately light on the CPU so that the
  classifier's cost is as visible as possible; real TLS traffic spends far
  more per byte and per connection in crypto than the agent adds.
"""
        out = write_section("bench_enforce", md)
        print(f"wrote the bench_enforce section of {out}")
    if a.strict and misses:
        print(f"targets missed: {misses}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
