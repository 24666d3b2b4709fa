#!/usr/bin/python3
"""Kernel matrix (issue 8): boots stock Debian distribution kernels under
qemu-system-x86_64 and runs part of tlswall's test suite on each.

    /usr/bin/python3 tests/kernel_matrix/run_matrix.py --build-dir BUILD \\
        [--kernels bookworm,bullseye] [--fast] [--write] [--cache-dir DIR]

Per kernel: the kernel package comes from Debian's archive via apt
(bookworm's linux-image-amd64 through the host's apt; bullseye's through a
private apt directory under the cache, the host's sources untouched); the
root filesystem is a debootstrap of bookworm (minbase plus the tests' peers
and the libraries the build links), written into an ext4 image; a busybox
initramfs loads the kernel's virtio/ext4/9p modules and switches to it. The
source tree and the build tree are shared read-only into the guest over 9p
at the same paths, the kernel's own modules at /lib/modules, and a job
directory read-write; the guest (guest_run.py) runs the steps and writes
results there. KVM when /dev/kvm opens and the CPU has vmx/svm, else TCG
(multi-threaded; the project's VMs, whose /dev/kvm is kvm-pvm).

Steps per kernel (--fast: bookworm only, without e2e_enforce/bpf_fixtures):
  verifier        every program of the three shipped objects through the
                  verifier (tlswall_verifier_stats): instruction counts
  e2e_attribution tests/e2e/test_attribution_e2e.py, requiring the backend
                  the kernel offers (kprobe where CONFIG_KPROBES=y): the
                  daemon's status must show it active, and an event must
                  name pid/comm of a real connection recorded by it
  e2e_attribution_fentry  the same with [attribution] backends = ["fentry"],
                  on kernels with BPF trampolines and 5.11+ (Debian 6.1): fentry
                  must be active and attributing too
  e2e_enforce     tests/e2e/test_enforce_e2e.py
  missing_btf     test_missing_btf.py: no BTF -> one clear error, nothing
                  attached or pinned
  bpf_fixtures    the classifier's packet fixtures (BPF_PROG_TEST_RUN)

Downloads, the rootfs image and each kernel's initramfs are cached in
--cache-dir (default /var/cache/tlswall-kmatrix), keyed by the kernel
package's version, by a hash of the rootfs recipe (suite, mirror, package
list) and by a hash of the initramfs (init script, modules, busybox), so a
stale cache is rebuilt, never reused. A missing tool or
package is a failure, never a skip. Only qemu processes, temp directories
and mounts this run made are cleaned up (also on failure and on signals).
Results: printed, and <build>/kernel_matrix/{results.json,report.md};
--write also puts the verifier table into BENCHMARKS.md (section
kernel-matrix-verifier).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "bench"))
import bench_report  # noqa: E402

ROOTFS_SUITE = "bookworm"
# Bump when the rootfs recipe changes in a way the package list does not show.
ROOTFS_RECIPE = 3
# What the guest steps run beyond the project's own binaries (e2e peers,
# tools of the tests, module loading, bpftool for the program list).
ROOTFS_PACKAGES = [
    "iproute2", "kmod", "procps", "util-linux", "passwd", "curl", "socat", "nginx-light",
    "openssl", "python3", "bpftool", "ca-certificates",
]
# Modules the initramfs loads to reach the root image and the 9p shares.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "9pnet_virtio", "9p"]
# Verifier rejections that are known, understood and handled: the program is
# a fallback attribution backend the agent then reports "unavailable" (with
# the verifier's reason) and never needs on that kernel, because a
# preferred backend runs there (e2e_attribution checks which). Matched on
# the verifier's own words, so any other rejection still fails the step.
KNOWN_REJECTIONS = [
    # sock_ops programs cannot call bpf_get_current_{pid_tgid,uid_gid,comm}
    # on these kernels (6.18 allows it); sock_ops is the last backend.
    ("owner_probes", "owner_sock_ops", "unknown func bpf_get_current_pid_tgid",
     "sock_ops has no bpf_get_current_* helpers on this kernel; the sock_ops backend "
     "(last resort) is reported unavailable"),
    # Socket storage from tracing programs came with Linux 5.11; there the
    # kprobe backend (a tuple-keyed table, no socket storage) runs instead.
    ("owner_probes", "owner_fentry", "unknown func bpf_sk_storage_get",
     "tracing programs cannot use socket storage before 5.11; kprobe runs"),
    ("owner_probes", "owner_tp_btf", "unknown func bpf_sk_storage_get",
     "tracing programs cannot use socket storage before 5.11; kprobe runs"),
]
HOST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "debootstrap": "debootstrap",
              "busybox": "busybox-static", "apt-get": "apt", "dpkg-deb": "dpkg",
              "depmod": "kmod", "mke2fs": "e2fsprogs", "ldd": "libc-bin"}
BUSYBOX = "/bin/busybox"
VERIFIER_SECTION = "kernel-matrix-verifier"


# depmod, debootstrap, mke2fs, chroot live in sbin, which a non-login root
# shell may not have on its PATH.
for _d in ("/usr/sbin", "/sbin"):
    if _d not in os.environ.get("PATH", "").split(":"):
        os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":" + _d


class MatrixError(RuntimeError):
    pass


@dataclass
class KernelSpec:
    key: str          # "bookworm"
    suite: str        # Debian suite the package comes from
    label: str        # for tables
    host_apt: bool    # resolved through the host's apt (else a private apt dir)


KERNELS = {
    "bookworm": KernelSpec("bookworm", "bookworm", "Debian 12 bookworm", True),
    "bullseye": KernelSpec("bullseye", "bullseye", "Debian 11 bullseye", False),
}


@dataclass
class Kernel:
    spec: KernelSpec
    package: str = ""
    version: str = ""
    release: str = ""      # uname -r
    dir: Path = Path()
    vmlinuz: Path = Path()
    initramfs: Path = Path()
    config: dict = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"kmatrix: {msg}", flush=True)


def run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise MatrixError(f"{' '.join(argv)} failed (rc={r.returncode}): "
                          f"{(r.stderr or r.stdout).strip()[-1500:]}")
    return r


# --- cleanup ------------------------------------------------------------------

class Cleanup:
    """Everything this run started or made, undone in reverse order (also
    from a signal handler: SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt)."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self.procs.clear()

    def close(self) -> None:
        self.kill_all()
        for d in reversed(self.dirs):
            remove_tree(d)
        self.dirs.clear()


CLEANUP = Cleanup()


def die_with_parent() -> None:
    """In a child before exec: SIGKILL it when this runner dies, even by
    SIGKILL (e.g. a ctest timeout), so no qemu outlives its run."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def mounts_below(path: Path) -> list[str]:
    p = str(path.resolve())
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if mp == p or mp.startswith(p + "/"):
                out.append(mp)
    return out


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount (debootstrap mounts proc/sys in its
    target): those are unmounted first, deepest first; if one stays, the
    tree stays too."""
    if not path.exists():
        return
    for mp in sorted(mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, timeout=60)
    left = mounts_below(path)
    if left:
        log(f"not removing {path}: still mounted: {left}")
        return
    shutil.rmtree(path, ignore_errors=True)


# --- host checks --------------------------------------------------------------

def require_host_tools() -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items()
                      if not (shutil.which(tool) or (tool == "busybox" and os.path.exists(BUSYBOX)))})
    if missing:
        raise MatrixError(f"missing host packages: apt-get install -y {' '.join(missing)} "
                          "(quickstart.sh installs them)")
    if os.geteuid() != 0:
        raise MatrixError("run as root (debootstrap, mke2fs -d of a root-owned tree, qemu with KVM)")


def pick_accel() -> tuple[str, str]:
    """("kvm", why) when /dev/kvm opens and the CPU has hardware
    virtualization; else ("tcg", why). Some VMs offer /dev/kvm without
    VT-x/AMD-V (e.g. kvm-pvm, which runs only PVM-enabled guest kernels):
    a stock distribution kernel hangs there, so that counts as no KVM."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "tcg", f"/dev/kvm does not open ({e.strerror})"
    os.close(fd)
    with open("/proc/cpuinfo") as f:
        flags = set(next((l for l in f if l.startswith("flags")), "").split())
    if not flags & {"vmx", "svm"}:
        pvm = " (kvm_pvm is loaded)" if os.path.exists("/sys/module/kvm_pvm") else ""
        return "tcg", f"/dev/kvm opens but the CPU has no vmx/svm{pvm}: stock kernels cannot run on it"
    return "kvm", "/dev/kvm with hardware virtualization"


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (deb.debian.org if none found)."""
    texts = []
    for p in [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        try:
            texts.append(p.read_text())
        except OSError:
            pass
    for t in texts:
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", t, re.M):
            return m.group(1).rstrip("/")
        for block in t.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", block, re.M) and "security" not in block:
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m:
                    return m.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


# --- kernels ------------------------------------------------------------------

class PrivateApt:
    """apt-get/apt-cache against one suite of the mirror, with lists, cache
    and status in a private directory: the host's sources are never changed."""

    def __init__(self, root: Path, suite: str, mirror: str):
        self.root = root
        for d in ("lists/partial", "cache/archives/partial", "etc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "etc" / "sources.list").write_text(f"deb {mirror} {suite} main\n")
        (root / "status").touch()
        self.opts = [
            "-o", f"Dir::Etc::SourceList={root}/etc/sources.list",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={root}/lists",
            "-o", f"Dir::State::Status={root}/status",
            "-o", f"Dir::Cache={root}/cache",
            "-o", "APT::Architecture=amd64",
            "-o", "Debug::NoLocking=1",
        ]

    def update(self) -> None:
        run(["apt-get", *self.opts, "-qq", "update"], timeout=600)

    def cache(self, *args: str) -> str:
        return run(["apt-cache", *self.opts, *args]).stdout

    def download(self, pkg: str, into: Path) -> None:
        run(["apt-get", *self.opts, "-qq", "download", pkg], cwd=into, timeout=900)


def host_apt_cache(*args: str) -> str:
    return run(["apt-cache", *args]).stdout


def resolve_kernel(spec: KernelSpec, cache: Path, mirror: str) -> Kernel:
    """linux-image-amd64 of the suite -> (package, version), downloaded and
    unpacked (once per version) with modules.dep, plus its initramfs."""
    k = Kernel(spec)
    host_knows = False
    if spec.host_apt:
        r = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                           text=True, timeout=120)
        host_knows = r.returncode == 0 and "Depends: linux-image-" in r.stdout
        if not host_knows:
            log(f"{spec.suite}: the host's apt does not know linux-image-amd64 (no lists?): "
                "using a private apt directory")
    if host_knows:
        cache_fn, download = host_apt_cache, None
    else:
        apt = PrivateApt(cache / f"apt-{spec.suite}", spec.suite, mirror)
        try:
            apt.update()
        except MatrixError as e:
            raise MatrixError(f"{spec.suite}: apt-get update of a private {spec.suite} source failed "
                              f"(mirror {mirror}): {e}") from None
        cache_fn, download = apt.cache, apt
    deps = cache_fn("depends", "linux-image-amd64")
    m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b", deps)
    if not m:
        raise MatrixError(f"{spec.suite}: linux-image-amd64 names no kernel package:\n{deps}")
    k.package = m.group(1)
    show = cache_fn("show", "--no-all-versions", k.package)
    vm = re.search(r"^Version:\s*(\S+)", show, re.M)
    if not vm:
        raise MatrixError(f"{spec.suite}: no version for {k.package}")
    k.version = vm.group(1)
    k.release = k.package[len("linux-image-"):]
    k.dir = cache / "kernels" / f"{k.package}_{k.version}"
    done = k.dir / ".complete"
    if not done.exists():
        remove_tree(k.dir)
        k.dir.mkdir(parents=True)
        log(f"{spec.key}: fetching {k.package} {k.version}")
        dl = k.dir / "deb"
        dl.mkdir()
        if download:
            download.download(k.package, dl)
        else:
            run(["apt-get", "-qq", "download", f"{k.package}={k.version}"], cwd=dl, timeout=900)
        debs = list(dl.glob("*.deb"))
        if len(debs) != 1:
            raise MatrixError(f"{spec.suite}: apt-get download {k.package} gave {debs}")
        run(["dpkg-deb", "-x", str(debs[0]), str(k.dir / "root")], timeout=600)
        debs[0].unlink()  # the unpacked tree is what is kept
        run(["depmod", "-b", str(k.dir / "root"), k.release], timeout=600)
        done.write_text(f"{k.package} {k.version}\n")
    k.vmlinuz = k.dir / "root" / "boot" / f"vmlinuz-{k.release}"
    k.initramfs = build_initramfs(k)
    for line in (k.dir / "root" / "boot" / f"config-{k.release}").read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            a, b = line.split("=", 1)
            k.config[a] = b
    return k


def modules_dir(k: Kernel) -> Path:
    return k.dir / "root" / "lib" / "modules"


# --- initramfs ----------------------------------------------------------------

INIT_SCRIPT = r"""#!/bin/busybox sh
# kernel-matrix initramfs: modules for virtio, ext4 and 9p; the root image;
# the 9p shares listed in /kmatrix/mounts.txt; then the guest runner.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "kmatrix-init: $*"; sleep 1; poweroff -f; }
for m in $(cat /modules.list); do
  insmod /mods/$m 2>/dev/null || grep -q "^$(basename $m .ko | tr - _) " /proc/modules ||
    echo "kmatrix-init: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 /dev/vda /newroot || fail "cannot mount the root image"
mkdir -p /newroot/kmatrix
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /newroot/kmatrix ||
  fail "cannot mount the job share"
while read tag path opts; do
  [ -n "$tag" ] || continue
  mkdir -p "/newroot$path"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,$opts "$tag" "/newroot$path" ||
    fail "cannot mount 9p share $tag at $path"
done < /newroot/kmatrix/mounts.txt
runner=$(cat /newroot/kmatrix/runner.txt)
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /usr/bin/python3 "$runner"
"""


def cpio_newc(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """An uncompressed newc cpio: (name, mode, data, rdev_major, rdev_minor)."""
    out = bytearray()
    ino = 1

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for name, mode, data, major, minor in entries + [("TRAILER!!!", 0, b"", 0, 0)]:
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(nb), 0]
        out.extend(b"070701" + "".join(f"{x:08x}" for x in fields).encode())
        out.extend(nb)
        pad4()
        out.extend(data)
        pad4()
        ino += 1
    return bytes(out)


def module_closure(k: Kernel, wanted: list[str]) -> list[str]:
    """Module paths (relative to the kernel's module dir) for `wanted` and
    their dependencies, dependencies first."""
    base = modules_dir(k) / k.release
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[Path(mod).name.split(".ko")[0].replace("-", "_")] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    builtin = (base / "modules.builtin").read_text() if (base / "modules.builtin").exists() else ""
    for w in wanted:
        n = w.replace("-", "_")
        if n in by_name:
            visit(by_name[n])
        elif not re.search(rf"/{re.escape(w)}\.ko$", builtin, re.M) and \
                not re.search(rf"/{re.escape(n)}\.ko$", builtin, re.M):
            raise MatrixError(f"{k.package}: module {w} neither built in nor in modules.dep")
    return order


def build_initramfs(k: Kernel) -> Path:
    """The kernel's initramfs, built unless one of the same recipe exists."""
    base = modules_dir(k) / k.release
    mods = module_closure(k, INITRAMFS_MODULES)
    busybox = Path(BUSYBOX).read_bytes()
    key = hashlib.sha256(INIT_SCRIPT.encode() + "\n".join(mods).encode() + busybox).hexdigest()[:16]
    path = k.dir / f"initramfs-{key}.cpio"
    if path.exists():
        return path
    for old in k.dir.glob("initramfs*.cpio"):
        old.unlink()
    entries: list[tuple[str, int, bytes, int, int]] = []
    for d in ("bin", "dev", "proc", "sys", "newroot", "mods"):
        entries.append((d, 0o040755, b"", 0, 0))
    entries.append(("dev/console", 0o020600, b"", 5, 1))
    entries.append(("bin/busybox", 0o100755, busybox, 0, 0))
    entries.append(("init", 0o100755, INIT_SCRIPT.encode(), 0, 0))
    names = []
    for m in mods:
        name = Path(m).name
        names.append(name)
        entries.append((f"mods/{name}", 0o100644, (base / m).read_bytes(), 0, 0))
    entries.append(("modules.list", 0o100644, ("\n".join(names) + "\n").encode(), 0, 0))
    tmp = k.dir / "initramfs.cpio.tmp"
    tmp.write_bytes(cpio_newc(entries))
    os.replace(tmp, path)
    return path


# --- root filesystem ------------------------------------------------------------

def runtime_packages(binaries: list[Path]) -> list[str]:
    """Debian packages of the shared libraries the build's binaries link."""
    libs: set[str] = set()
    for b in binaries:
        out = run(["ldd", str(b)]).stdout
        if "not found" in out:
            raise MatrixError(f"{b}: unresolved libraries on this host:\n{out}")
        libs.update(re.findall(r"=>\s*(/\S+)", out))
    pkgs: set[str] = set()
    for lib in sorted(libs):
        cands = {lib, os.path.realpath(lib)}
        for c in list(cands):
            if c.startswith("/usr/"):
                cands.add(c[4:])
            else:
                cands.add("/usr" + c)
        r = subprocess.run(["dpkg", "-S", *sorted(cands)], capture_output=True, text=True, timeout=60)
        found = [l.split(":")[0] for l in r.stdout.splitlines() if ": " in l]
        if not found:
            raise MatrixError(f"no Debian package owns {lib} (needed by the build's binaries)")
        pkgs.add(found[0])
    return sorted(pkgs)


def build_rootfs(cache: Path, mirror: str, binaries: list[Path]) -> Path:
    pkgs = sorted(set(ROOTFS_PACKAGES) | set(runtime_packages(binaries)))
    recipe = json.dumps({"suite": ROOTFS_SUITE, "mirror": mirror, "packages": pkgs,
                         "recipe": ROOTFS_RECIPE}, sort_keys=True)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    d = cache / f"rootfs-{ROOTFS_SUITE}-{key}"
    img = d / "rootfs.img"
    if (d / ".complete").exists():
        return img
    # Stale images (another recipe) and targets of interrupted builds go
    # (the cache lock is held: nobody else is building); only ours are touched.
    for old in list(cache.glob(f"rootfs-{ROOTFS_SUITE}-*")) + list(cache.glob("kmatrix-rootfs-*")):
        if old != d:
            log(f"removing stale rootfs cache {old.name}")
            remove_tree(old)
    remove_tree(d)
    d.mkdir(parents=True)
    (d / "recipe.json").write_text(recipe + "\n")
    target = Path(tempfile.mkdtemp(prefix="kmatrix-rootfs-", dir=cache))
    CLEANUP.dirs.append(target)
    debs = cache / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    log(f"building rootfs ({ROOTFS_SUITE} minbase + {len(pkgs)} packages, mirror {mirror}); "
        "debootstrap takes a few minutes")
    t0 = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(pkgs)}",
             f"--cache-dir={debs}", "--components=main", ROOTFS_SUITE, str(target), mirror],
            timeout=1800)
    except MatrixError as e:
        dlog = target / "debootstrap" / "debootstrap.log"
        tail = dlog.read_text(errors="replace")[-2000:] if dlog.exists() else ""
        raise MatrixError(f"{e}\n{tail}") from None
    finally:
        for mp in sorted(mounts_below(target), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=60)
    (target / "etc" / "hostname").write_text("kmatrix\n")
    # No service starts in the guest; its runner is PID 1.
    (target / "etc" / "machine-id").write_text("")
    shutil.rmtree(target / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    shutil.rmtree(target / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    used = int(run(["du", "-sxm", str(target)]).stdout.split()[0])
    size_mb = used + 1024  # room for the tests' temp files (writes go to a qemu snapshot)
    run(["mke2fs", "-q", "-t", "ext4", "-d", str(target), "-L", "kmatrix-root", str(img),
         f"{size_mb}M"], timeout=900)
    remove_tree(target)
    CLEANUP.dirs.remove(target)
    (d / ".complete").write_text(f"{time.monotonic() - t0:.0f} s\n")
    log(f"rootfs ready: {img} ({used} MB used) in {time.monotonic() - t0:.0f} s")
    return img


# --- guest --------------------------------------------------------------------

def fentry_expected(k: Kernel) -> bool:
    """fentry attaches (BPF trampolines) and may use socket storage (5.11+)."""
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", k.release).groups())
    return (k.config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y"
            and (major, minor) >= (5, 11))


def expected_backend(k: Kernel) -> str:
    """From the kernel's config, not from the agent: kprobe with
    CONFIG_KPROBES=y, else fentry with BPF trampolines, else tp_btf."""
    if k.config.get("CONFIG_KPROBES") == "y" and k.config.get("CONFIG_KPROBE_EVENTS") == "y":
        return "kprobe"
    if k.config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y":
        return "fentry"
    return "tp_btf"


def guest_steps(k: Kernel, bdir: Path, fast: bool) -> list[dict]:
    py = "/usr/bin/python3"
    steps = [
        {"name": "verifier", "argv": [str(bdir / "tests" / "kernel_matrix" / "tlswall_verifier_stats")],
         "timeout": 300, "json_lines": True},
        {"name": "e2e_attribution",
         "argv": [py, str(REPO / "tests" / "e2e" / "test_attribution_e2e.py"), "--build-dir", str(bdir),
                  "--expect-backend", expected_backend(k)], "timeout": 600},
        {"name": "missing_btf",
         "argv": [py, str(HERE / "test_missing_btf.py"), "--build-dir", str(bdir)], "timeout": 120},
    ]
    if fentry_expected(k) and expected_backend(k) != "fentry":
        # The preferred backend is kprobe there; fentry must work too when
        # it is the one configured (a fleet may prefer it).
        steps.insert(2, {"name": "e2e_attribution_fentry",
                         "argv": [py, str(REPO / "tests" / "e2e" / "test_attribution_e2e.py"),
                                  "--build-dir", str(bdir), "--backends", "fentry",
                                  "--expect-backend", "fentry"], "timeout": 600})
    if not fast:
        steps += [
            {"name": "e2e_enforce",
             "argv": [py, str(REPO / "tests" / "e2e" / "test_enforce_e2e.py"), "--build-dir", str(bdir)],
             "timeout": 600},
            {"name": "bpf_fixtures",
             "argv": [str(bdir / "tests" / "bpf" / "tlswall_bpf_fixture_tests"), "--gtest_brief=1"],
             "timeout": 600},
        ]
    return steps


def boot(k: Kernel, rootfs: Path, bdir: Path, out: Path, fast: bool, accel: str,
         timeout: float) -> dict:
    """Boots `k`, runs the steps, returns the guest's results (plus host-side
    timings). The console goes to out/console-<kernel>.log."""
    # In the build tree, so that a runner killed outright leaves nothing in
    # /tmp and the next run replaces it.
    job = out / f"job-{k.spec.key}"
    remove_tree(job)
    job.mkdir()
    CLEANUP.dirs.append(job)
    steps = guest_steps(k, bdir, fast)
    (job / "job.json").write_text(json.dumps({"steps": steps}, indent=1))
    shares = [("src", REPO, "ro"), ("build", bdir, "ro"), ("mods", Path("/lib/modules"), "ro")]
    (job / "mounts.txt").write_text(
        "".join(f"{tag} {path} cache=loose,{mode}\n" for tag, path, mode in shares))
    (job / "runner.txt").write_text(str(HERE / "guest_run.py") + "\n")
    for _, path, _ in shares:
        if " " in str(path):
            raise MatrixError(f"path with a space cannot be shared: {path}")
    host_paths = {"src": REPO, "build": bdir, "mods": modules_dir(k)}
    argv = ["qemu-system-x86_64", "-machine", "q35",
            "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi",
            "-cpu", "host" if accel == "kvm" else "max",
            "-smp", "2", "-m", "2048", "-nodefaults", "-no-reboot", "-display", "none",
            "-serial", "stdio", "-monitor", "none", "-nic", "none",
            "-kernel", str(k.vmlinuz), "-initrd", str(k.initramfs),
            "-append", "console=ttyS0 panic=-1 loglevel=4 quiet",
            "-drive", f"file={rootfs},if=virtio,format=raw,snapshot=on",
            "-virtfs", f"local,path={job},mount_tag=job,security_model=none,multidevs=remap"]
    for tag, _, mode in shares:
        argv += ["-virtfs", f"local,path={host_paths[tag]},mount_tag={tag},security_model=none,"
                            f"multidevs=remap{',readonly=on' if mode == 'ro' else ''}"]
    console = out / f"console-{k.spec.key}.log"
    log(f"{k.spec.key}: booting {k.release} ({accel}); console {console}")
    t0 = time.monotonic()
    first_guest_line: list[float] = []
    with open(console, "w") as con:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace",
                             preexec_fn=die_with_parent)
        CLEANUP.procs.append(p)

        def pump() -> None:
            assert p.stdout is not None
            for line in p.stdout:
                con.write(line)
                con.flush()
                if "kmatrix-guest: kernel" in line and not first_guest_line:
                    first_guest_line.append(time.monotonic() - t0)
                if line.startswith(("kmatrix-guest:", "kmatrix-init:")) or \
                        re.match(r"\[\w+\] (PASS|FAIL|\d+ passed)", line) or "Kernel panic" in line:
                    print(f"  {k.spec.key}| {line.rstrip()}", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{k.spec.key}: guest still running after {timeout:.0f} s: killing qemu")
            p.kill()
            p.wait()
        reader.join(timeout=10)
        CLEANUP.procs.remove(p)
    wall = time.monotonic() - t0
    res_file = job / "results.json"
    if res_file.exists():
        res = json.loads(res_file.read_text())
    else:
        tail = "".join(console.read_text(errors="replace").splitlines(True)[-40:])
        res = {"kernel": k.release, "steps": [], "error": f"no results from the guest; console tail:\n{tail}"}
    if not res.get("done") and "error" not in res:
        res["error"] = "guest stopped before finishing its steps (see the console log)"
    for st in steps:  # steps the guest never reached are failures
        if not any(s["name"] == st["name"] for s in res["steps"]):
            res["steps"].append({"name": st["name"], "ok": False, "rc": None, "seconds": 0,
                                 "summary": [], "error": "not run"})
    judge_verifier(res)
    for f in job.glob("*.log"):
        shutil.copy(f, out / f"{k.spec.key}-{f.name}")
    res.update(wall_s=round(wall, 1), qemu_rc=p.returncode, accel=accel,
               package=f"{k.package} {k.version}", expected_backend=expected_backend(k),
               boot_to_runner_s=round(first_guest_line[0], 1) if first_guest_line else None)
    remove_tree(job)
    CLEANUP.dirs.remove(job)
    return res


def known_rejection(rec: dict) -> str:
    """Why a rejected program is acceptable (KNOWN_REJECTIONS), or ""."""
    for obj, prog, words, why in KNOWN_REJECTIONS:
        if rec.get("object") == obj and rec.get("program") == prog and words in rec.get("error", ""):
            return why
    return ""


def judge_verifier(res: dict) -> None:
    """The verifier step passes when every program loaded or was rejected
    for a known, handled reason (the tool's own exit status counts every
    rejection)."""
    for st in res["steps"]:
        # rc 1: some program rejected; anything else (a crash) stays a failure.
        if st["name"] != "verifier" or st.get("error") or not st.get("records") or st.get("rc") not in (0, 1):
            continue
        unknown = [r for r in st["records"] if not r.get("loaded") and not known_rejection(r)]
        st["ok"] = not unknown
        st["summary"] = [f"FAIL {r['object']}/{r['program']}: {r.get('error', '')[:300]}" for r in unknown] + [
            f"KNOWN {r['object']}/{r['program']}: {known_rejection(r)}"
            for r in st["records"] if not r.get("loaded") and known_rejection(r)]


# --- report -------------------------------------------------------------------

def host_verifier_records(bdir: Path) -> list[dict]:
    """The same tool on this host's kernel, for comparison (it loads and
    unloads programs; nothing is attached)."""
    r = subprocess.run([str(bdir / "tests" / "kernel_matrix" / "tlswall_verifier_stats")],
                       capture_output=True, text=True, timeout=300)
    return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]


def verifier_table(results: dict[str, dict], kernels: dict[str, Kernel],
                   host: list[dict] | None = None) -> str:
    cols = [k for k in results if any(s["name"] == "verifier" for s in results[k]["steps"])]
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    types: dict[tuple[str, str], str] = {}
    labels = [f"{kernels[k].spec.label} `{results[k]['kernel']}`" for k in cols]
    for kk in cols:
        st = next(s for s in results[kk]["steps"] if s["name"] == "verifier")
        for r in st.get("records", []):
            rows.setdefault((r["object"], r["program"]), {})[kk] = r
            types[(r["object"], r["program"])] = r.get("type", "")
    if host:
        cols.append("host")
        labels.append(f"this host `{os.uname().release}`")
        for r in host:
            rows.setdefault((r["object"], r["program"]), {})["host"] = r
            types.setdefault((r["object"], r["program"]), r.get("type", ""))
    head = "| object | program | type | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (3 + len(cols))]
    for (obj, prog), per in rows.items():
        cells = []
        for kk in cols:
            r = per.get(kk)
            if not r:
                cells.append("-")
            elif not r.get("loaded"):
                if kk == "host":
                    cells.append("not loadable here (" + r.get("error", "").split(";")[0] + ")")
                else:
                    cells.append("rejected (known)" if known_rejection(r) else "**rejected**")
            else:
                v = r.get("verified_insns", -1)
                cells.append(str(v) if v >= 0 else f"{r.get('processed_insns')} (log)")
        lines.append(f"| {obj} | {prog} | {types[(obj, prog)]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def status_table(results: dict[str, dict]) -> str:
    names: list[str] = []  # every step of any kernel, in order (some run on some kernels only)
    for r in results.values():
        for s in r["steps"]:
            if s["name"] not in names:
                names.append(s["name"])
    out = ["| kernel | package | accel | boot to runner | guest wall | " + " | ".join(names) + " |",
           "|" + "---|" * (5 + len(names))]
    for kk, r in results.items():
        by_name = {s["name"]: s for s in r["steps"]}
        cells = [f"{'PASS' if by_name[n]['ok'] else 'FAIL'} ({by_name[n]['seconds']} s)"
                 if n in by_name else "-" for n in names]
        boot_s = r.get("boot_to_runner_s")
        out.append(f"| {r.get('kernel', kk)} | {r.get('package', '')} | {r.get('accel', '')} | "
                   f"{boot_s if boot_s is not None else '-'} s | {r.get('wall_s', '-')} s | " +
                   " | ".join(cells) + " |")
    return "\n".join(out)


def verifier_reason(rec: dict) -> str:
    """The verifier's own last word on a rejected program (the line before
    its "processed N insns" statistics), else the error's start."""
    err = rec.get("error", "")
    parts = [x.strip() for x in err.split("verifier:", 1)[-1].split(" | ")]
    words = [x for x in parts if x and not x.startswith("processed ")]
    return words[-1] if "verifier:" in err and words else err[:200]


def rejection_notes(results: dict[str, dict], full: bool) -> list[str]:
    out = []
    for kk, r in results.items():
        for st in r["steps"]:
            if st["name"] != "verifier":
                continue
            for rec in st.get("records", []):
                if rec.get("loaded"):
                    continue
                known = known_rejection(rec)
                detail = rec.get("error", "")[:600] if full else f"`{verifier_reason(rec)}`"
                out.append(f"- {r.get('kernel', kk)}: {rec['object']}/{rec['program']} rejected"
                           f"{' (known: ' + known + ')' if known else ' (NOT known)'}: {detail}")
    return out


INSNS_NOTE = ("Verifier-processed instructions per program (`verified_insns` from bpf_prog_info "
              "on 5.16+; `(log)`: the verifier log's \"processed N insns\" where bpf_prog_info "
              "has no such field):")


def report(results: dict[str, dict], kernels: dict[str, Kernel], host: list[dict]) -> str:
    out = ["## Kernel matrix", "", status_table(results), "", INSNS_NOTE, "",
           verifier_table(results, kernels, host), ""]
    out += rejection_notes(results, full=True)
    return "\n".join(out) + "\n"


def benchmarks_body(results: dict[str, dict], kernels: dict[str, Kernel], host: list[dict]) -> str:
    accels = sorted({f"{r.get('accel', '')}: {r.get('accel_why', '')}" for r in results.values()})
    out = [f"Kernel matrix (`tests/kernel_matrix/run_matrix.py`, {time.strftime('%Y-%m-%d')}): stock "
           f"Debian kernels under qemu ({'; '.join(accels)}), a debootstrapped bookworm rootfs, "
           "the build shared in over 9p. Steps per kernel: tests/kernel_matrix/README.md.", "",
           status_table(results), "", INSNS_NOTE, "", verifier_table(results, kernels, host), ""]
    out += rejection_notes(results, full=False)
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("TLSWALL_BUILD_DIR", "build"))
    ap.add_argument("--kernels", default=None,
                    help=f"comma-separated, from {', '.join(KERNELS)} (default: all; --fast: bookworm)")
    ap.add_argument("--fast", action="store_true",
                    help="the ctest subset: bookworm only; verifier, e2e_attribution, missing_btf")
    ap.add_argument("--cache-dir", default=os.environ.get("TLSWALL_KMATRIX_CACHE", "/var/cache/tlswall-kmatrix"))
    ap.add_argument("--mirror", default=None, help="Debian mirror (default: the host apt's)")
    ap.add_argument("--timeout", type=float, default=0, help="per-guest limit, seconds")
    ap.add_argument("--write", action="store_true", help="write the verifier table into BENCHMARKS.md")
    a = ap.parse_args()

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    keys = (a.kernels or ("bookworm" if a.fast else ",".join(KERNELS))).split(",")
    for kk in keys:
        if kk not in KERNELS:
            log(f"unknown kernel {kk!r}; known: {', '.join(KERNELS)}")
            return 2
    bdir = Path(a.build_dir).resolve()
    out = bdir / "kernel_matrix"
    t_start = time.monotonic()
    results: dict[str, dict] = {}
    kernels: dict[str, Kernel] = {}
    failures: list[str] = []
    try:
        require_host_tools()
        bins = [bdir / "agent" / "tlswalld", bdir / "agent" / "tlswallctl",
                bdir / "tests" / "kernel_matrix" / "tlswall_verifier_stats"]
        if not a.fast:
            bins.append(bdir / "tests" / "bpf" / "tlswall_bpf_fixture_tests")
        for b in bins:
            if not b.exists():
                raise MatrixError(f"{b} missing: build first (cmake --build {bdir})")
        out.mkdir(parents=True, exist_ok=True)
        cache = Path(a.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        mirror = a.mirror or debian_mirror()
        accel, why = pick_accel()
        log(f"accelerator {accel}: {why}" + (" (TCG: slower)" if accel == "tcg" else ""))
        # Per guest; the fast subset stays inside ctest's TIMEOUT (1500 s).
        timeout = a.timeout or (600 if accel == "kvm" else 900 if a.fast else 2400)
        # One run at a time per cache (rootfs and kernels are built in place).
        lock = open(cache / ".lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        rootfs = build_rootfs(cache, mirror, bins)
        prep_s = time.monotonic() - t0
        for kk in keys:
            t1 = time.monotonic()
            try:
                kernels[kk] = resolve_kernel(KERNELS[kk], cache, mirror)
            except MatrixError as e:
                failures.append(f"{kk}: kernel not available: {e}")
                log(failures[-1])
                continue
            prep_s += time.monotonic() - t1
        log(f"prepared rootfs and kernels in {prep_s:.0f} s")
        for kk, k in kernels.items():
            r = boot(k, rootfs, bdir, out, a.fast, accel, timeout)
            r["accel_why"] = why
            results[kk] = r
            if r.get("error"):
                failures.append(f"{kk}: {r['error']}")
            for s in r["steps"]:
                if not s["ok"]:
                    failures.append(f"{kk} ({r.get('kernel')}): step {s['name']} failed"
                                    f" ({s.get('error') or 'rc=' + str(s.get('rc'))}):"
                                    f" {[l for l in s.get('summary', []) if l.startswith('FAIL')][:8]}")
            backend_ok = any(s["name"] == "e2e_attribution" and s["ok"] for s in r["steps"])
            log(f"{kk}: expected attribution backend {r['expected_backend']}: "
                f"{'active and attributing' if backend_ok else 'NOT shown active/attributing'}")
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e})")
    except MatrixError as e:
        failures.append(str(e))
    finally:
        CLEANUP.close()
    if results:
        try:
            host = host_verifier_records(bdir)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log(f"no host column in the verifier table: {e}")
            host = []
        text = report(results, kernels, host)
        (out / "report.md").write_text(text)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(text, flush=True)
        if a.write:
            path = bench_report.write_section(VERIFIER_SECTION, benchmarks_body(results, kernels, host))
            log(f"wrote section {VERIFIER_SECTION} of {path}")
    log(f"total {time.monotonic() - t_start:.0f} s")
    for f in failures:
        log(f"FAIL {f}")
    ok = not failures and results and all(s["ok"] for r in results.values() for s in r["steps"])
    log("kernel matrix: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
