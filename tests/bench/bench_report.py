"""Helpers the benchmark scripts share: medians, a process's CPU time, and
writing one benchmark's marked section of BENCHMARKS.md (the others keep
theirs)."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def med(xs) -> float:
    """Median of the values that are not None; NaN if there are none."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads, also exited ones), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_section(name: str, body: str, path: Path | None = None) -> Path:
    """Replaces the section between <!-- name --> and <!-- /name --> of
    BENCHMARKS.md with `body` (appends it where there is none)."""
    path = path or REPO / "BENCHMARKS.md"
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{begin}\n{body.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# tlswall benchmarks\n\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.write_text(new)
    return path
