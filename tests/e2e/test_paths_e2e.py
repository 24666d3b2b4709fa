#!/usr/bin/python3
"""End-to-end test: tlswalld refuses to start on paths others control.

Issue 7 (control plane): a control socket, pin root or disk-buffer
directory that already exists as a symlink or belongs to another user
(`nobody`) makes the real daemon exit with status 1 and one line on stderr
naming the path, before anything is pinned or attached (checked: no tc
filter or clsact qdisc on the sandbox veth, no pin on the test's bpffs); a
stale socket of another user is left in place, not replaced. A clean start
on fresh paths still works, and a restart after SIGKILL replaces the dead
daemon's own socket. The rule is agent/path_trust.h.

Runs inside private network namespaces (sandbox.py); every path is under the
sandbox's temp dir or its own bpffs. Needs root and the built daemon.

    /usr/bin/python3 tests/e2e/test_paths_e2e.py [--build-dir build] [-v]

Prints PASS/FAIL per named check and ends with "N passed, M failed".
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandbox as S  # noqa: E402

NOBODY = 65534


class PathsTest:
    def __init__(self, sb: S.Sandbox, bdir: Path):
        self.sb = sb
        self.d = S.Daemon(sb, bdir)
        policy_dir = sb.tmp / "policy.d"
        policy_dir.mkdir()
        shutil.copy(S.REPO / "configs" / "policy.d" / "default.toml", policy_dir)  # the shipped one
        # A Scribe sink nothing answers (the server namespace's 198.18.1.10
        # has no listener on 1463): its disk buffer directory is what is checked.
        self.config = self.d.write_config(
            str(policy_dir), log_level="info",
            extra={"events": {"scribe": {"address": "198.18.1.10:1463"}}})
        self.cases = sb.tmp / "cases"
        self.cases.mkdir(mode=0o755)

    # -- helpers -------------------------------------------------------------
    def case_dir(self, name: str) -> Path:
        p = self.cases / name
        p.mkdir(mode=0o755)
        return p

    def run_daemon(self, socket_path: str, pin_root: str, extra: list[str] | None = None):
        cmd = [str(self.d.tlswalld), "--config", str(self.config), "--control-socket", socket_path,
               "--events", str(self.d.events), "--pin-root", pin_root] + (extra or [])
        return self.sb.client(cmd, timeout=30)

    def nothing_attached_or_pinned(self, *pin_dirs: str, planted: tuple[str, ...] = ()) -> str:
        """'' if no tc filter/clsact is on eth0 and no pin in pin_dirs (but
        what the test planted), else what is."""
        problems = []
        filters = self.d.tc_filters()
        if filters:
            problems.append(f"tc filters: {filters[:120]}")
        q = self.sb.client(["tc", "qdisc", "show", "dev", "eth0"], timeout=5).stdout or ""
        if "clsact" in q:
            problems.append("clsact qdisc present")
        for p in pin_dirs:
            for root, _dirs, files in os.walk(p):
                # *.debug: the kernel's own iterators in a fresh bpffs root
                ours = [f for f in files if os.path.join(root, f) not in planted
                        and not f.endswith(".debug")]
                if ours:
                    problems.append(f"pins under {root}: {ours}")
        return "; ".join(problems)

    def expect_refusal(self, socket_path: str, pin_root: str, must_name: str, must_say: str,
                       planted: tuple[str, ...] = ()):
        r = self.run_daemon(socket_path, pin_root)
        lines = [ln for ln in (r.stderr or "").splitlines() if ln.startswith("tlswalld: ")]
        line = lines[-1] if lines else ""
        left = self.nothing_attached_or_pinned(self.d.pin_root, planted=planted)
        ok = (r.rc == 1 and len(lines) == 1 and must_name in line and must_say in line
              and "refused" in line and not left)
        detail = f"rc={r.rc} in {r.elapsed:.2f}s: {line!r}"
        if not ok:
            detail += f" (expected {must_name!r} and {must_say!r}; stderr tail {r.brief(300)!r})"
        if left:
            detail += f"; LEFT BEHIND: {left}"
        return ok, detail

    def stale_socket(self, path: Path, uid: int) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()  # nobody listens: a daemon that died
        os.lchown(path, uid, uid)

    # -- control socket --------------------------------------------------------
    def socket_dir_symlink(self):
        c = self.case_dir("sock-dir-symlink")
        (c / "elsewhere").mkdir(mode=0o755)
        (c / "run").symlink_to(c / "elsewhere")
        ok, detail = self.expect_refusal(str(c / "run" / "control.sock"), self.d.pin_root,
                                         f"control socket directory {c / 'run'}", "is a symlink")
        if ok and any((c / "elsewhere").iterdir()):
            return False, detail + "; something was created through the symlink"
        return ok, detail

    def socket_symlink(self):
        c = self.case_dir("sock-symlink")
        (c / "run").mkdir(mode=0o755)
        self.stale_socket(c / "other.sock", 0)
        (c / "run" / "control.sock").symlink_to(c / "other.sock")
        ok, detail = self.expect_refusal(str(c / "run" / "control.sock"), self.d.pin_root,
                                         f"control socket {c / 'run' / 'control.sock'}",
                                         "is a symlink")
        if ok and not (c / "run" / "control.sock").is_symlink():
            return False, detail + "; the symlink was replaced"
        return ok, detail

    def socket_foreign(self):
        c = self.case_dir("sock-foreign")
        (c / "run").mkdir(mode=0o755)
        sock = c / "run" / "control.sock"
        self.stale_socket(sock, NOBODY)
        ok, detail = self.expect_refusal(str(sock), self.d.pin_root, f"control socket {sock}",
                                         f"is a socket of uid {NOBODY}")
        st = os.lstat(sock)
        if ok and st.st_uid != NOBODY:
            return False, detail + "; the foreign socket was replaced"
        return ok, detail + "; left in place"

    def socket_dir_foreign(self):
        c = self.case_dir("sock-dir-foreign")
        (c / "run").mkdir(mode=0o755)
        os.chown(c / "run", NOBODY, NOBODY)
        return self.expect_refusal(str(c / "run" / "control.sock"), self.d.pin_root,
                                   f"control socket directory {c / 'run'}",
                                   f"is owned by uid {NOBODY}")

    # -- pin root ----------------------------------------------------------------
    def pin_root_symlink(self):
        c = self.case_dir("pin-symlink")
        (c / "pins").symlink_to(self.d.pin_root)
        return self.expect_refusal(str(c / "run" / "control.sock"), str(c / "pins"),
                                   f"pin root {c / 'pins'}", "is a symlink")

    def pin_root_foreign(self):
        c = self.case_dir("pin-foreign")
        pins = Path(self.d.pin_root) / "foreign"  # a directory on our bpffs
        pins.mkdir(mode=0o755)
        os.chown(pins, NOBODY, NOBODY)
        try:
            return self.expect_refusal(str(c / "run" / "control.sock"), str(pins),
                                       f"pin root {pins}", f"is owned by uid {NOBODY}")
        finally:
            pins.rmdir()

    def pin_foreign(self):
        c = self.case_dir("pin-file-foreign")
        pins = Path(self.d.pin_root) / "planted"
        pins.mkdir(mode=0o755)
        meta = pins / "meta_v1"  # the record the daemon would adopt
        r = subprocess.run(["bpftool", "map", "create", str(meta), "type", "array", "key", "4",
                            "value", "4", "entries", "1", "name", "tw_planted"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return False, f"bpftool map create failed: {r.stderr.strip()}"
        os.chown(meta, NOBODY, NOBODY)
        try:
            return self.expect_refusal(str(c / "run" / "control.sock"), str(pins),
                                       f"pin {meta}", f"is owned by uid {NOBODY}",
                                       planted=(str(meta),))
        finally:
            meta.unlink()
            pins.rmdir()

    # -- disk buffer --------------------------------------------------------------
    def buffer_symlink(self):
        c = self.case_dir("buffer-symlink")
        (c / "elsewhere").mkdir(mode=0o700)
        state = c / "state"
        state.mkdir(mode=0o700)
        (state / "buffer").symlink_to(c / "elsewhere")
        return self.run_with_state(c, state)

    def buffer_foreign(self):
        c = self.case_dir("buffer-foreign")
        state = c / "state"
        (state / "buffer" / "scribe").mkdir(mode=0o700, parents=True)
        os.chmod(state, 0o700)
        os.chown(state / "buffer" / "scribe", NOBODY, NOBODY)
        return self.run_with_state(c, state, expect="owned")

    def run_with_state(self, c: Path, state: Path, expect: str = "symlink"):
        text = self.config.read_text().replace(str(self.d.dir / "state"), str(state))
        cfg = c / "tlswalld.toml"
        cfg.write_text(text)
        saved, self.config = self.config, cfg
        try:
            if expect == "symlink":
                return self.expect_refusal(str(c / "run" / "control.sock"), self.d.pin_root,
                                           f"disk buffer directory {state / 'buffer'}",
                                           "is a symlink")
            return self.expect_refusal(str(c / "run" / "control.sock"), self.d.pin_root,
                                       f"disk buffer directory {state / 'buffer' / 'scribe'}",
                                       f"is owned by uid {NOBODY}")
        finally:
            self.config = saved

    # -- a clean start --------------------------------------------------------------
    def clean_start(self):
        t0 = time.monotonic()
        self.d.start(self.config, log_level="info")
        st = self.d.status()
        buf = self.d.dir / "state" / "buffer" / "scribe"
        pins = sorted(os.listdir(self.d.pin_root))
        ok = (int(st["policy"]["generation"]) >= 1 and bool(self.d.tc_filters())
              and "meta_v1" in pins and buf.is_dir() and (os.stat(buf).st_mode & 0o077) == 0)
        return ok, (f"ready in {time.monotonic() - t0:.2f}s, generation {st['policy']['generation']}, "
                    f"{len(pins)} pins, buffer dir {oct(os.stat(buf).st_mode & 0o777) if buf.is_dir() else 'missing'}")

    def restart_replaces_own_stale_socket(self):
        assert self.d.proc is not None
        self.d.proc.stop(signal.SIGKILL, timeout=5)
        stale = Path(self.d.socket).is_socket()
        t0 = time.monotonic()
        self.d.start(self.config, log_level="info")
        st = self.d.status()
        ok = stale and int(st["policy"]["generation"]) >= 1
        return ok, (f"socket left by SIGKILL: {stale}; restarted and ready in "
                    f"{time.monotonic() - t0:.2f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    S.install_signal_handlers()
    S.require_tools("bpftool")
    bdir = S.build_dir(args.build_dir)
    checks = S.Checks(timed=True)
    with S.Sandbox(tag="path", verbose=args.verbose) as sb:
        t = PathsTest(sb, bdir)
        checks.run("socket_dir_symlink_refused", t.socket_dir_symlink)
        checks.run("socket_symlink_refused", t.socket_symlink)
        checks.run("socket_of_nobody_refused_not_replaced", t.socket_foreign)
        checks.run("socket_dir_of_nobody_refused", t.socket_dir_foreign)
        checks.run("pin_root_symlink_refused", t.pin_root_symlink)
        checks.run("pin_root_of_nobody_refused", t.pin_root_foreign)
        checks.run("pin_of_nobody_refused", t.pin_foreign)
        checks.run("buffer_dir_symlink_refused", t.buffer_symlink)
        checks.run("buffer_dir_of_nobody_refused", t.buffer_foreign)
        if checks.run("clean_start_works", t.clean_start):
            checks.run("restart_replaces_own_stale_socket", t.restart_replaces_own_stale_socket)
        t.d.stop()
    return checks.summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except S.SandboxError as e:
        print(f"FAIL setup: {e}", file=sys.stderr)
        sys.exit(1)
