"""CPU and memory of processes, and of the whole machine, from /proc: what a figure cost, and who else
was busy meanwhile (the machine is shared)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime in ticks) of a live process, None if it has gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw.rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] == pid:
                found.append(int(entry))
    return sorted(found)


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def others_pct(busy: float, ours: float, seconds: float) -> float:
    """Share of the machine's CPUs (in %) used by processes other than the ones measured."""
    return round(max(0.0, busy - ours) * 100 / (seconds * (os.cpu_count() or 1)), 1) if seconds else 0.0


def self_cpu() -> float:
    """CPU seconds of this process and of its harvest worker process (harvester.worker), which
    converts a harvest's pages: a harvester's CPU is both. The worker lives as long as this
    process once started, so the difference of two readings holds all of its work between them."""
    t = os.times()
    return t.user + t.system + sum(ticks for _, ticks in _workers()) / CLK_TCK


def _workers() -> list[tuple[int, int]]:
    """(pid, CPU ticks) of this process's live harvest worker children (harvester.worker)."""
    found = []
    for pid in children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        st = _stat(pid)
        if any(b"harvester.worker" in part for part in cmdline) and st is not None:
            found.append((pid, st[1]))
    return found
