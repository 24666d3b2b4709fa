#!/usr/bin/python3
"""A kernel without BTF: tlswalld must refuse to start with one clear error
naming the missing feature, and leave nothing behind (no pins, no bpffs
mount, no tc qdisc or filter, no loaded program).

The kernel's BTF is hidden from the daemon only: it runs inside a private
network namespace this test creates (`ip netns exec`, which also gives it
a private mount namespace and a fresh /sys) and, within that, in another
private mount namespace where an empty tmpfs covers /sys/kernel/btf. Nothing
outside those namespaces changes. Runs on the host and in the kernel-matrix
guests (tests/kernel_matrix/run_matrix.py).

    /usr/bin/python3 tests/kernel_matrix/test_missing_btf.py [--build-dir build]

Prints PASS/FAIL per check and "N passed, M failed"; exits non-zero if
anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def our_program_names() -> set[str]:
    """Names of the programs tlswalld loads (the kernel keeps 15 bytes)."""
    names = set()
    for src in (REPO / "bpf").glob("*.bpf.c"):
        for m in re.finditer(r'SEC\("[^"]+"\)\s*\n\s*int\s+(?:BPF_\w+\()?(\w+)', src.read_text()):
            names.add(m.group(1)[:15])
    return names


def loaded_programs() -> dict[int, str]:
    """id -> name of every loaded BPF program (bpftool)."""
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"bpftool prog show failed: {r.stderr.strip()}")
    return {p["id"]: p.get("name", "") for p in json.loads(r.stdout or "[]")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("TLSWALL_BUILD_DIR", "build"))
    a = ap.parse_args()
    tlswalld = Path(a.build_dir).resolve() / "agent" / "tlswalld"
    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    for tool in ("ip", "tc", "unshare", "bpftool"):
        if not shutil.which(tool):
            check("tools", False, f"{tool} missing (iproute2, util-linux, bpftool)")
            return 1
    if not tlswalld.exists():
        check("build", False, f"{tlswalld} missing: build first")
        return 1
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        check("kernel_has_btf", False, "this kernel has no BTF at all: nothing to hide")
        return 1

    ns = f"twkm-nobtf-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="tlswall-nobtf-"))
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                       check=True, timeout=20)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True, timeout=20)
        pin_root = tmp / "bpffs" / "tlswall"
        cfg = tmp / "tlswalld.toml"
        cfg.write_text(f"""interfaces = ["eth0"]
policy = "{REPO}/configs/policy.d"
pin_root = "{pin_root}"
[control]
socket = "{tmp}/run/control.sock"
[events]
json_file = "{tmp}/events.jsonl"
state_dir = "{tmp}/state"
""")
        before = loaded_programs()
        inner = ('mount -t tmpfs -o size=1m tlswall-nobtf /sys/kernel/btf && '
                 '[ ! -e /sys/kernel/btf/vmlinux ] && exec "$0" --config "$1"')
        r = subprocess.run(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                            "sh", "-c", inner, str(tlswalld), str(cfg)],
                           capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        last = out.splitlines()[-1] if out else ""
        check("exits_non_zero", r.returncode != 0, f"rc={r.returncode}")
        check("error_names_btf", "BTF" in out and "CONFIG_DEBUG_INFO_BTF" in out, f"last line: {last!r}")
        # A start-up failure is one line "tlswalld: <reason>" (tlswalld_main.cc).
        fatal = [l for l in out.splitlines() if l.startswith("tlswalld: ")]
        check("one_clear_error", len(fatal) == 1, f"{len(fatal)} fatal line(s): {fatal[:3]}")
        left = [str(p) for p in (tmp / "bpffs").rglob("*")] if (tmp / "bpffs").exists() else []
        mounted = [l.split()[1] for l in open("/proc/mounts") if str(tmp) in l.split()[1]]
        check("no_pins_no_bpffs_mount", not left and not mounted, f"left {left[:5]}, mounts {mounted}")
        q = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "eth0"],
                           capture_output=True, text=True, timeout=20)
        f = subprocess.run(["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", "eth0", "egress"],
                           capture_output=True, text=True, timeout=20)
        check("no_qdisc_no_filter", "clsact" not in q.stdout and not f.stdout.strip(),
              f"qdisc {q.stdout.strip()!r}, egress filters {f.stdout.strip()!r}")
        ours = our_program_names()
        new = {i: n for i, n in loaded_programs().items() if i not in before and n in ours}
        check("no_program_left_loaded", not new, f"new tlswall programs: {new}" if new else
              f"none of {len(ours)} program names loaded")
    except Exception as e:  # noqa: BLE001 -- setup failure is a test failure
        check("setup", False, f"{type(e).__name__}: {e}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for _, ok, _ in results if not ok)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
