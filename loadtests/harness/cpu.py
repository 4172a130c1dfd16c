"""CPU accounting from Linux /proc: the CPU seconds of a process tree between two snapshots."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds) for every process; this process's own
    figure includes its waited-for children."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        seconds = int(fields[11]) + int(fields[12])
        if int(pid) == os.getpid():  # with its waited-for children (wrk runs)
            seconds += int(fields[13]) + int(fields[14])
        out[int(pid)] = (name, int(fields[1]), seconds / TICK)
    return out


def _tree(procs: dict[int, tuple[str, int, float]], root: int | None) -> set[int]:
    if root is None:
        return set()
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (_, ppid, _) in procs.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


@dataclass
class Cpu:
    """CPU seconds so far: machine busy, the server tree, Redis, PostgreSQL, the projector,
    this benchmark (load generator included)."""

    wall: float = 0.0
    busy: float = 0.0
    steal: float = 0.0
    """Time the hypervisor gave our virtual CPUs to someone else (counted in busy)."""
    server: float = 0.0
    redis: float = 0.0
    postgres: float = 0.0
    projector: float = 0.0
    bench: float = 0.0
    postgres_pids: dict[int, float] = field(default_factory=dict)
    """Per PostgreSQL process (backends come and go; only their growth counts)."""

    _SUMMED = ("wall", "busy", "steal", "server", "redis", "postgres", "projector", "bench")

    def __sub__(self, other: Cpu) -> Cpu:
        out = Cpu(*(getattr(self, f) - getattr(other, f) for f in self._SUMMED))
        if self.postgres_pids:
            out.postgres = sum(
                s - other.postgres_pids.get(pid, 0.0) for pid, s in self.postgres_pids.items()
            )
        return out

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(*(getattr(self, f) + getattr(other, f) for f in self._SUMMED))

    def percent(self, name: str) -> float:
        return 100 * getattr(self, name) / self.wall if self.wall > 0 else math.nan

    @property
    def other(self) -> float:
        parts = self.server + self.redis + self.postgres + self.projector + self.bench
        return self.busy - self.steal - parts


def cpu_snapshot(server_pid: int | None, projector_pid: int | None = None) -> Cpu:
    """The CPU seconds so far (subtract two snapshots for a load's share): `server` is the
    process tree of `server_pid`, `projector` that of `projector_pid`, `postgres` every
    PostgreSQL process, `bench` this process's tree; all zeros but `wall` without /proc."""
    cpu = Cpu(wall=time.monotonic())
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return cpu
    cpu.busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK
    cpu.steal = ticks[7] / TICK
    procs = processes()
    server, projector = _tree(procs, server_pid), _tree(procs, projector_pid)
    bench = _tree(procs, os.getpid()) - server - projector
    cpu.server = sum(procs[p][2] for p in server if p in procs)
    cpu.projector = sum(procs[p][2] for p in projector if p in procs)
    cpu.bench = sum(procs[p][2] for p in bench if p in procs)
    cpu.redis = sum(s for n, _, s in procs.values() if n.startswith("redis-server"))
    cpu.postgres_pids = {p: s for p, (n, _, s) in procs.items() if n == "postgres"}
    cpu.postgres = sum(cpu.postgres_pids.values())
    return cpu
