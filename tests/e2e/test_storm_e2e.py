#!/usr/bin/python3
"""tlswall storm e2e (issue 7, load and faults): the real daemon under a
connection storm, flow-table exhaustion and policy churn, in the private
namespace sandbox (tests/e2e/sandbox.py: nothing touches the host's
interfaces).

The load comes from tests/load/storm.cc (`tlswall_storm`): a client keeping
N new connections in flight (a 517-byte ClientHello or an HTTP request
each, then the server's close) and a sink that sorts every connection's
first bytes (TLS or plain) per listener, so both ends count independently of
the agent.

Checks:
  storm_counters_balance_no_misclassification
      a mixed storm (TLS and plaintext to an enforced port, to an exempted
      destination, and plaintext outside the boundary): every TLS flow
      passes, every plaintext flow on the enforced port is blocked and none
      of its bytes reach the sink; the classifier's counters match the
      generator's own counts exactly (flows seen = TLS + not TLS, plus SYN
      retransmissions; blocked, exempt); blocked events (with their counts)
      plus counted losses = blocked flows; the daemon's memory stays
      bounded.
  flow_table_exhaustion_never_blocks_established_tls
      with [bpf] flow_table_entries at its minimum (1024), 200 verified TLS
      connections are held open while a storm many times the table's size
      evicts their state; afterwards every held connection still carries
      data both ways (state lost -> passed, never blocked), and the pressure
      is counted (state_lost) and reported (state_lost events).
  policy_churn_one_generation_per_flow
      the policy file is replaced 20 times a second, switching the rule
      between enforce and monitor, while plaintext flows run: every flow has
      exactly one verdict event, the event's generation is one the daemon
      applied, its action is the mode of that generation, and the client's
      fate (blocked or served) agrees with it.

Figures (rate held, memory, reloads) are printed, and with --write go into
the bench_storm section of BENCHMARKS.md. Speed is not asserted (a test is
not a benchmark); correctness under the load is.

    /usr/bin/python3 tests/e2e/test_storm_e2e.py [--build-dir build] [--seconds 5] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "bench"))
import sandbox as S  # noqa: E402

ENFORCED, HELD, EXEMPT_PORT, OUTSIDE_PORT = 443, 8443, 9100, 8080
BOUNDARY = "198.18.128.0/17"


def policy_text(version: str, mode: str = "enforce") -> str:
    expires = (datetime.date.today() + datetime.timedelta(days=365)).isoformat()
    return f"""# tlswall storm e2e policy (generated)
version = "{version}"
default_mode = "monitor"

[boundaries.remote]
cidrs = ["{BOUNDARY}"]

[[rules]]
name = "storm"
boundary = "remote"
ports = [{ENFORCED}, {HELD}, {EXEMPT_PORT}]
mode = "{mode}"

[[exemptions]]
name = "storm-exempt"
cidrs = ["{S.SRV_EXEMPT_V4}/32"]
ports = [{EXEMPT_PORT}]
reason = "storm test: plaintext to this destination is allowed"
owner = "tests"
expires = {expires}
"""


def vm_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


class Storm:
    def __init__(self, sb: S.Sandbox, bdir: Path, seconds: float):
        self.sb = sb
        self.bdir = bdir
        self.seconds = seconds
        self.tool = str(bdir / "tests" / "load" / "tlswall_storm")
        if not os.path.exists(self.tool):
            raise S.SandboxError(f"{self.tool} missing: build the tree first")
        self.policy = sb.tmp / "policy.toml"
        self.d: S.Daemon | None = None
        self.sink: S.Proc | None = None
        self.sink_out = sb.tmp / "sink.json"
        self.figures: dict = {}

    # -- plumbing ---------------------------------------------------------------
    def write_policy(self, version: str, mode: str = "enforce") -> None:
        tmp = self.policy.with_suffix(".tmp")
        tmp.write_text(policy_text(version, mode))
        os.replace(tmp, self.policy)

    def setup(self) -> None:
        for ns in (self.sb.client_ns, self.sb.server_ns):
            self.sb.run(ns, ["sysctl", "-qw", "net.core.somaxconn=8192"])
        self.sb.run(self.sb.client_ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])
        self.sb.run(self.sb.server_ns, ["sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=8192"])
        self.write_policy("storm-1")

    def start_sink(self) -> None:
        self.sink_out.write_text("")
        self.sink = self.sb.spawn(self.sb.server_ns, "sink", [
            self.tool, "server",
            "--listen", f"{S.SRV_BOUNDARY_V4}:{ENFORCED}",
            "--listen", f"{S.SRV_BOUNDARY_V4}:{HELD}:echo",
            "--listen", f"{S.SRV_EXEMPT_V4}:{EXEMPT_PORT}",
            "--listen", f"{S.SRV_OUTSIDE_V4}:{OUTSIDE_PORT}",
        ], stdout_path=self.sink_out)
        self.sb.wait_listen(ENFORCED, ns=self.sb.server_ns)

    def stop_sink(self) -> dict:
        self.sink.stop()
        self.sink = None
        text = self.sink_out.read_text().strip()
        return json.loads(text.splitlines()[-1]) if text else {}

    def start_daemon(self, name: str, extra: dict | None = None) -> None:
        self.d = S.Daemon(self.sb, self.bdir, name)
        self.d.write_config(str(self.policy), log_level="info", extra={
            "events": {"aggregate_window_ms": 0},
            **(extra or {}),
        })
        self.d.start(log_level="info")

    def stop_daemon(self) -> None:
        if self.d:
            self.d.stop()
            self.d = None

    def counters(self) -> dict:
        return self.d.status().get("counters", {})

    def syn_retrans(self) -> int:
        return self.sb.nstat(self.sb.client_ns, "TcpExtTCPSynRetrans")

    def client(self, mix: str, seconds: float, concurrency: int, log: Path | None = None) -> dict:
        cmd = [self.tool, "client", "--dst", S.SRV_BOUNDARY_V4, "--seconds", str(seconds),
               "--concurrency", str(concurrency), "--mix", mix]
        if log:
            cmd += ["--log", str(log)]
        r = self.sb.client(cmd, timeout=seconds + 30)
        if r.rc != 0:
            raise S.SandboxError(f"storm client failed: {r.brief()}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    # One client process per destination (a client takes one --dst), all at
    # once: the boundary (TLS and plaintext to the enforced port), the
    # exempted destination and one outside the boundary.
    def mixed_storm(self, seconds: float, concurrency: int) -> dict:
        jobs = [
            ("boundary", S.SRV_BOUNDARY_V4, f"tls:{ENFORCED},plain:{ENFORCED}"),
            ("exempt", S.SRV_EXEMPT_V4, f"tls:{EXEMPT_PORT},plain:{EXEMPT_PORT}"),
            ("outside", S.SRV_OUTSIDE_V4, f"plain:{OUTSIDE_PORT},tls:{OUTSIDE_PORT}"),
        ]
        out: dict = {}
        procs = []
        for name, dst, mix in jobs:
            cmd = ["ip", "netns", "exec", self.sb._ours(self.sb.client_ns), self.tool, "client",
                   "--dst", dst, "--seconds", str(seconds), "--concurrency",
                   str(concurrency if name == "boundary" else max(8, concurrency // 4)), "--mix", mix]
            procs.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 text=True)))
        for name, p in procs:
            so, se = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise S.SandboxError(f"storm client {name} rc={p.returncode}: {se[-300:]}")
            out[name] = json.loads(so.strip().splitlines()[-1])
        return out

    # -- checks -----------------------------------------------------------------
    def storm_balance(self):
        self.start_sink()
        self.start_daemon("tlswalld-storm")
        pid = self.d.proc.pid
        rss0 = vm_kib(pid, "VmRSS")
        c0, syn0, ev0 = self.counters(), self.syn_retrans(), len(self.d.read_events())
        res = self.mixed_storm(self.seconds, 96)
        time.sleep(1.0)  # events and counters settle
        c1, syn1 = self.counters(), self.syn_retrans()
        hwm, rss1 = vm_kib(pid, "VmHWM"), vm_kib(pid, "VmRSS")
        events = self.d.read_events()[ev0:]
        self.stop_daemon()
        sink = self.stop_sink()

        def m(job, kind):
            return next(x for x in res[job]["mix"] if x["kind"] == kind)
        d = {k: int(c1.get(k, 0)) - int(c0.get(k, 0)) for k in c1}
        total = sum(r["total"] for r in res.values())
        secs = max(r["seconds"] for r in res.values())
        syn = syn1 - syn0
        tls = m("boundary", "tls")["started"] + m("exempt", "tls")["started"] + m("outside", "tls")["started"]
        plain = total - tls
        blocked = m("boundary", "plain")["started"]
        exempt = m("exempt", "tls")["started"] + m("exempt", "plain")["started"]
        bad = []
        for job, r in res.items():
            for x in r["mix"]:
                want_ok = not (job == "boundary" and x["kind"] == "plain")
                if x["connect_error"] or x["timeout"]:
                    bad.append(f"{job} {x['kind']}: {x['connect_error']} connect errors, {x['timeout']} timeouts")
                if want_ok and x["ok"] != x["started"]:
                    bad.append(f"{job} {x['kind']}: {x['started'] - x['ok']} of {x['started']} not served")
                if not want_ok and x["failed"] != x["started"]:
                    bad.append(f"plaintext on the enforced port: {x['ok']} of {x['started']} served")
        s443 = sink.get(f"{S.SRV_BOUNDARY_V4}:{ENFORCED}", {})
        if s443.get("plain", -1) != 0:
            bad.append(f"sink got plaintext on the enforced port: {s443}")
        if s443.get("tls") != m("boundary", "tls")["started"]:
            bad.append(f"sink TLS on {ENFORCED}: {s443.get('tls')} != {m('boundary', 'tls')['started']} sent")
        expect = {"flows_seen": total + syn, "flows_tls": tls, "flows_not_tls": plain,
                  "plaintext_blocked": blocked, "exempt": exempt, "plaintext_reported": 0}
        for k, v in expect.items():
            if d.get(k) != v:
                bad.append(f"counter {k} {d.get(k)} != {v}")
        if d.get("flows_seen") != d.get("flows_tls", 0) + d.get("flows_not_tls", 0) + syn:
            bad.append("flows_seen != tls + not_tls + SYN retransmissions")
        ev_blocked = sum(int(e.get("count", 1)) for e in events if e.get("type") == "plaintext_blocked")
        lost = d.get("events_lost", 0)
        if ev_blocked + lost != blocked:
            bad.append(f"blocked events {ev_blocked} + lost {lost} != {blocked} blocked flows")
        # Memory: the daemon's peak RSS bounded, and no growth with the load
        # (the flow state is in fixed-size BPF maps).
        if hwm > 128 * 1024 or rss1 - rss0 > 32 * 1024:
            bad.append(f"daemon memory: peak {hwm} KiB, RSS {rss0} -> {rss1} KiB")
        self.figures["storm"] = {
            "seconds": round(secs, 2), "connections": total, "conn_per_s": round(total / secs),
            "tls": tls, "plaintext": plain, "blocked": blocked, "exempt": exempt,
            "syn_retransmissions": syn, "events_blocked": ev_blocked, "events_lost": lost,
            "daemon_rss_kib_before": rss0, "daemon_rss_kib_after": rss1, "daemon_peak_rss_kib": hwm,
        }
        return not bad, (f"{total} connections in {secs:.1f} s ({total / secs:.0f}/s): tls {tls}, plaintext "
                         f"{plain} (blocked {blocked}), exempt {exempt}, "
                         f"SYN retransmissions {syn}; counter deltas {({k: d.get(k) for k in expect})}; "
                         f"events blocked {ev_blocked} lost {lost}; daemon RSS {rss0}->{rss1} KiB peak {hwm} KiB"
                         + ("; " + "; ".join(bad) if bad else ""))

    def table_exhaustion(self):
        self.start_sink()
        self.start_daemon("tlswalld-small", {"bpf": {"flow_table_entries": 1024}})
        c0 = self.counters()
        ev0 = len(self.d.read_events())
        holder = subprocess.Popen(
            ["ip", "netns", "exec", self.sb._ours(self.sb.client_ns), self.tool, "hold", "--dst",
             S.SRV_BOUNDARY_V4, "--port", str(HELD), "--count", "200"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = json.loads(holder.stdout.readline())
            storm = self.client(f"tls:{ENFORCED},plain:{ENFORCED}", max(2.0, self.seconds / 2), 96)
            holder.stdin.write("go\n")
            holder.stdin.flush()
            so, se = holder.communicate(timeout=60)
            after = json.loads(so.strip().splitlines()[-1])
        finally:
            if holder.poll() is None:
                holder.kill()
        time.sleep(0.5)
        c1 = self.counters()
        st_events = [e for e in self.d.read_events()[ev0:] if e.get("type") == "state_lost"]
        self.stop_daemon()
        self.stop_sink()
        d = {k: int(c1.get(k, 0)) - int(c0.get(k, 0)) for k in c1}
        tls, plain = (next(x for x in storm["mix"] if x["kind"] == k) for k in ("tls", "plain"))
        bad = []
        if first.get("held") != 200:
            bad.append(f"could not open the 200 held connections: {first}")
        if after.get("echoed") != after.get("held") or after.get("failed"):
            bad.append(f"held TLS connections broken after the storm: {after}")
        if storm["total"] < 8 * 1024:
            bad.append(f"storm of {storm['total']} flows does not exceed the table 8 times")
        if tls["ok"] != tls["started"] or plain["failed"] != plain["started"]:
            bad.append(f"storm verdicts: tls {tls}, plain {plain}")
        if d.get("state_lost", 0) < 1 or not st_events:
            bad.append(f"pressure not counted/reported: state_lost {d.get('state_lost')}, {len(st_events)} events")
        self.figures["exhaustion"] = {"table": 1024, "held": first.get("held"), "echoed": after.get("echoed"),
                                      "plain": plain["started"], "plain_blocked": plain["failed"],
                                      "storm_flows": storm["total"], "state_lost": d.get("state_lost"),
                                      "state_lost_events": len(st_events)}
        return not bad, (f"table 1024; held {first.get('held')} TLS, after a storm of {storm['total']} flows "
                         f"{after.get('echoed')} echoed, {after.get('failed')} failed; state_lost "
                         f"{d.get('state_lost')} counted, {len(st_events)} events; storm tls "
                         f"{tls['ok']}/{tls['started']} served, plain {plain['failed']}/{plain['started']} blocked"
                         + ("; " + "; ".join(bad) if bad else ""))

    def policy_churn(self):
        self.start_sink()
        self.start_daemon("tlswalld-churn")
        ev0 = len(self.d.read_events())
        stop = threading.Event()
        written = [0]

        reload_failed = [0]

        def churn():
            # Config management's pace: a new file every 50 ms, each applied
            # at once with `tlswallctl policy reload` (the file watcher alone
            # would coalesce a stream this fast: quiet 200 ms, at most 2 s).
            i = 0
            while not stop.is_set():
                i += 1
                mode = "enforce" if i % 2 else "monitor"
                self.write_policy(f"churn-{i}-{mode}", mode)
                written[0] = i
                if self.d.ctl(["policy", "reload"]).rc != 0:
                    reload_failed[0] += 1
                time.sleep(0.05)
        t = threading.Thread(target=churn, daemon=True)
        log = self.sb.tmp / "churn.log"
        t.start()
        try:
            res = self.client(f"plain:{ENFORCED}", max(2.0, self.seconds / 2), 32, log=log)
        finally:
            stop.set()
            t.join()
        time.sleep(1.0)
        all_events = self.d.read_events()
        events = all_events[ev0:]
        self.stop_daemon()
        self.stop_sink()
        mode_of: dict[int, str] = {}
        for e in all_events:  # with the start's generation
            if e.get("type") == "policy_applied":
                v = e.get("policy_version", "")
                mode_of[int(e.get("policy_generation", 0))] = v.rsplit("-", 1)[-1] if v.startswith("churn-") else "enforce"
        flows: dict[int, list[dict]] = {}
        for e in events:
            if e.get("type") in ("plaintext_blocked", "plaintext_reported") and e.get("dport") == ENFORCED:
                flows.setdefault(int(e.get("sport", 0)), []).append(e)
        fate: dict[int, list[str]] = {}
        for line in log.read_text().splitlines():
            kind, port, sport, outcome = line.split()
            fate.setdefault(int(sport), []).append(outcome)
        bad = []
        checked = reused = 0
        # A source port is used again once its previous flow is closed: the
        # n-th flow of a port (client log, in order) is its n-th verdict.
        for sport, outcomes in fate.items():
            reused += len(outcomes) > 1
            evs = flows.get(sport, [])
            if len(evs) != len(outcomes):
                bad.append(f"sport {sport}: {len(outcomes)} flows, {len(evs)} verdict events")
                continue
            for outcome, e in zip(outcomes, evs):
                g = int(e.get("policy_generation", 0))
                if g not in mode_of:
                    bad.append(f"sport {sport}: generation {g} was never applied")
                    continue
                want = "drop" if mode_of[g] == "enforce" else "report"
                if e.get("action") != want:
                    bad.append(f"sport {sport}: action {e.get('action')} under generation {g} ({mode_of[g]})")
                if (outcome == "failed") != (e.get("action") == "drop"):
                    bad.append(f"sport {sport}: client {outcome} but action {e.get('action')}")
                checked += 1
        dropped = sum(1 for evs in flows.values() for e in evs if e.get("action") == "drop")
        reported = sum(1 for evs in flows.values() for e in evs if e.get("action") == "report")
        secs = res["seconds"]
        if reload_failed[0]:
            bad.append(f"{reload_failed[0]} reloads failed")
        if checked != res["total"] or not dropped or not reported or len(mode_of) < 10:
            bad.append(f"too little covered: {checked} of {res['total']} flows checked, "
                       f"{dropped} dropped, {reported} reported, {len(mode_of)} generations")
        self.figures["churn"] = {"policy_writes": written[0], "generations_applied": len(mode_of),
                                 "seconds": secs, "flows": res["total"], "flows_checked": checked,
                                 "dropped": dropped, "reported": reported, "sport_reused": reused}
        return not bad, (f"{written[0]} policy writes, {len(mode_of)} generations applied in {secs:.1f} s; "
                         f"{res['total']} plaintext flows, {checked} checked ({reused} source ports used more than once), "
                         f"{dropped} dropped under enforce, {reported} reported under monitor"
                         + ("; " + "; ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "") if bad else ""))


def write_report(figs: dict, cmd: str) -> None:
    from bench_report import write_section
    s, x, c = figs.get("storm", {}), figs.get("exhaustion", {}), figs.get("churn", {})
    text = f"""## Storm: connection storm, flow-table exhaustion, policy churn

Measured by `tests/e2e/test_storm_e2e.py` (ctest `e2e_storm`), which asserts
correctness under the load; the figures are what this run held on this
{os.cpu_count()}-CPU VM, where the load generator, the sink and tlswalld share
the CPUs (a ceiling of this setup, not of the classifier).

| what | figure |
|---|---|
| new connections, mixed (TLS / plaintext, enforced / exempt / outside) | {s.get('connections')} in {s.get('seconds')} s = **{s.get('conn_per_s')}/s** |
| of them blocked (plaintext, enforce) | {s.get('blocked')}, all blocked, no byte at the sink |
| TLS flows falsely blocked | 0 of {s.get('tls')} |
| counters balance (seen = TLS + not TLS + SYN retransmissions) | exact ({s.get('syn_retransmissions')} retransmissions) |
| blocked events + counted losses | {s.get('events_blocked')} + {s.get('events_lost')} |
| tlswalld RSS before / after / peak | {s.get('daemon_rss_kib_before')} / {s.get('daemon_rss_kib_after')} / {s.get('daemon_peak_rss_kib')} KiB |
| flow table 1024 entries: held TLS connections through a storm of {x.get('storm_flows')} flows | {x.get('echoed')} of {x.get('held')} still carry data; state_lost {x.get('state_lost')} counted, {x.get('state_lost_events')} events |
| the same storm's plaintext flows (state evicted between SYN and data) | {x.get('plain_blocked')} of {x.get('plain')} blocked |
| policy churn: writes / generations applied | {c.get('policy_writes')} / {c.get('generations_applied')} in {c.get('seconds')} s |
| flows under churn checked (one verdict, its generation's mode, client agrees) | {c.get('flows_checked')} of {c.get('flows')} ({c.get('dropped')} dropped, {c.get('reported')} reported) |

The BPF maps are sized at load (the flow table is a preallocated LRU hash:
a storm evicts, it does not grow; `[bpf] flow_table_entries`); owner records
live in socket storage and go with their sockets. The verifier's
instruction counts per program are in the kernel-matrix section.

Reproduce:

```
{cmd}
```
"""
    write_section("bench_storm", text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("--seconds", type=float, default=5.0, help="storm length (default 5)")
    ap.add_argument("--write", action="store_true", help="write the bench_storm section of BENCHMARKS.md")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    S.install_signal_handlers()
    checks = S.Checks(timed=True)
    t = None
    try:
        S.require_tools("ip", "tc", "ss", "nstat")
        bdir = S.build_dir(a.build_dir)
        S.daemon_binaries(bdir)
        print(f"tlswall storm e2e: build dir {bdir}, kernel {os.uname().release}, {a.seconds} s storms", flush=True)
        with S.Sandbox("storm", verbose=a.verbose) as sb:
            t = Storm(sb, bdir, a.seconds)
            try:
                t.setup()
                checks.run("storm_counters_balance_no_misclassification", t.storm_balance)
                checks.run("flow_table_exhaustion_never_blocks_established_tls", t.table_exhaustion)
                checks.run("policy_churn_one_generation_per_flow", t.policy_churn)
            finally:
                t.stop_daemon()
                if t.sink:
                    t.sink.stop()
            print("figures: " + json.dumps(t.figures), flush=True)
    except S.Interrupted as e:
        checks.record("interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 -- setup failure is a test failure
        checks.record("setup", False, f"{type(e).__name__}: {e}")
        if os.environ.get("TLSWALL_E2E_TRACE"):
            traceback.print_exc()
    rc = checks.summary()
    if a.write and rc == 0 and t:
        write_report(t.figures, "/usr/bin/python3 tests/e2e/test_storm_e2e.py --build-dir build --write")
        print("wrote the bench_storm section of BENCHMARKS.md")
    return rc


if __name__ == "__main__":
    sys.exit(main())
