#!/usr/bin/python3
"""Inside a kernel-matrix guest (tests/kernel_matrix/run_matrix.py): the
program the initramfs hands the machine to (PID 1, after switch_root).

Mounts what a Debian host has (proc, sys, cgroup v2, bpffs, tracefs, tmpfs),
loads the modules the tests need from the kernel's own tree (shared in by the
host at /lib/modules), then runs the steps /kmatrix/job.json names, each with
a timeout, writing /kmatrix/results.json after every step and each step's
output to /kmatrix/<step>.log (also echoed on the console). Then it powers
the machine off. PID 1 forks: the parent only reaps orphans (the tests'
servers leave some) until the runner is done, so nothing a test waits for
lingers as a zombie.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

JOB = Path("/kmatrix")
# Modules the tests need (the kernel would mostly load them on demand):
# veth pairs, clsact + the bpf classifier, sock_diag for SOCK_DESTROY.
MODULES = ["veth", "sch_ingress", "cls_bpf", "inet_diag", "tcp_diag"]


def log(msg: str) -> None:
    print(f"kmatrix-guest: {msg}", flush=True)


def sh(*argv: str, check: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={r.returncode} {r.stderr.strip()}")
    return r


def mounted_below(path: str) -> list[str]:
    """Mount points under path (e.g. the 9p shares of a build tree that
    lives in /tmp on the host): a tmpfs on path would hide them."""
    try:
        with open("/proc/mounts") as f:
            return [l.split()[1] for l in f if l.split()[1].startswith(path.rstrip("/") + "/")]
    except OSError:
        return []


def mount(fstype: str, target: str, source: str | None = None, opts: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    if os.path.ismount(target):
        return
    if fstype == "tmpfs" and mounted_below(target):
        log(f"no tmpfs on {target}: the shares {mounted_below(target)} are below it "
            f"(it stays on the root image, writes go to the snapshot)")
        return
    argv = ["mount", "-t", fstype] + (["-o", opts] if opts else []) + [source or fstype, target]
    r = sh(*argv)
    if r.returncode != 0:
        log(f"mount {fstype} on {target} failed: {r.stderr.strip()}")


def setup() -> None:
    os.environ.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      HOME="/root", LANG="C.UTF-8", TERM="dumb")
    os.chdir("/")
    mount("proc", "/proc")
    mount("sysfs", "/sys")
    mount("devtmpfs", "/dev")
    mount("devpts", "/dev/pts", opts="gid=5,mode=620")
    mount("tmpfs", "/dev/shm")
    mount("tmpfs", "/run", opts="mode=755")
    mount("tmpfs", "/tmp", opts="mode=1777")
    mount("tmpfs", "/var/tmp", opts="mode=1777")
    # The project's VMs: cgroup v2 where tests look it up in /proc/mounts.
    mount("cgroup2", "/sys/fs/cgroup")
    mount("bpf", "/sys/fs/bpf", opts="mode=700")
    mount("tracefs", "/sys/kernel/tracing")
    mount("debugfs", "/sys/kernel/debug")
    os.makedirs("/run/netns", exist_ok=True)
    sh("hostname", "kmatrix")
    sh("ip", "link", "set", "lo", "up")
    for m in MODULES:
        r = sh("modprobe", m)
        if r.returncode != 0:
            log(f"modprobe {m}: {r.stderr.strip()}")
    # Log lines of the tests are UTF-8.
    sys.stdout.reconfigure(line_buffering=True)


def write_results(results: dict) -> None:
    tmp = JOB / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, JOB / "results.json")
    os.sync()


def run_step(step: dict) -> dict:
    name = step["name"]
    timeout = step.get("timeout", 600)
    log(f"step {name}: {' '.join(step['argv'])}")
    t0 = time.monotonic()
    lines: list[str] = []
    with open(JOB / f"{name}.log", "w") as out:
        p = subprocess.Popen(step["argv"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True,
                             cwd=step.get("cwd", "/"))

        def pump() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                out.write(line)
                out.flush()
                lines.append(line.rstrip("\n"))
                print(f"[{name}] {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc: int | None = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"step {name}: timed out after {timeout} s")
            rc = None
        try:
            os.killpg(p.pid, 9)  # whatever the step left running
        except OSError:
            pass
        if rc is None:
            p.wait()
        reader.join(timeout=10)
    dt = time.monotonic() - t0
    res = {"name": name, "rc": rc, "ok": rc == 0, "seconds": round(dt, 1),
           "summary": [l for l in lines if l.startswith(("PASS", "FAIL"))
                       or " passed, " in l or "[  PASSED" in l or "[  FAILED" in l][-60:]}
    if step.get("json_lines"):
        res["records"] = []
        for l in lines:
            if l.startswith("{"):
                try:
                    res["records"].append(json.loads(l))
                except ValueError:
                    pass
    if rc is None:
        res["error"] = "timed out"
    verdict = "PASS" if res["ok"] else "FAIL"
    if step.get("json_lines"):
        verdict = "done, judged by the host"  # known rejections are the host's table
    log(f"step {name}: {verdict} (rc={rc}, {dt:.1f} s)")
    return res


def runner() -> int:
    setup()
    job = json.loads((JOB / "job.json").read_text())
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    results = {"kernel": os.uname().release, "uptime_at_start_s": up, "steps": []}
    kp = os.path.exists("/sys/bus/event_source/devices/kprobe")
    results["kernel_facts"] = {
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "kprobe_pmu": kp,
        "bpffs": os.path.ismount("/sys/fs/bpf"),
    }
    write_results(results)
    log(f"kernel {results['kernel']}, up {up:.2f} s, facts {results['kernel_facts']}")
    for step in job["steps"]:
        results["steps"].append(run_step(step))
        write_results(results)
    results["done"] = True
    write_results(results)
    return 0


def power_off() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
    # Should reboot() fail, exiting PID 1 panics the kernel; panic=-1 and
    # qemu's -no-reboot end the machine either way.


def main() -> int:
    if os.getpid() != 1:
        return runner()
    child = os.fork()
    if child == 0:
        try:
            code = runner()
        except BaseException as e:  # noqa: BLE001 -- report, then power off
            log(f"runner failed: {type(e).__name__}: {e}")
            code = 1
        os._exit(code)
    code = 1
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            break
    log(f"runner exited with {code}; powering off")
    power_off()
    return code


if __name__ == "__main__":
    sys.exit(main())
