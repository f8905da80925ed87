"""Read a server's CPU time and memory from /proc (Linux only).

CPU time comes from ``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU, every thread)
because the tick-based ``utime+stime`` of ``/proc/<pid>/stat`` has a 10 ms resolution, too
coarse for a 20 ms publish window; ``stat`` ticks are kept as a cross-check. A server
with worker processes is measured as the sum over the process and its descendants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU and memory of a process tree at one instant."""

    cpu_ns: int  # schedstat, all threads
    tick_ns: int  # utime + stime from /proc/<pid>/stat, in ns (10 ms steps)
    rss_bytes: int


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """Return ``root`` and all its descendants (a snapshot)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _one(pid: int) -> tuple[int, int, int]:
    """Return (schedstat ns, stat ticks in ns, rss bytes) of one process; zeros if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        rss = int(fields[21]) * PAGE_SIZE  # field 24
        cpu = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                cpu += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except OSError:
                continue  # the thread ended between listdir and read
    except OSError:
        return 0, 0, 0
    return cpu, ticks * 1_000_000_000 // CLK_TCK, rss


def sample(pids: list[int]) -> Sample:
    """Sum CPU and RSS over ``pids`` (use ``process_tree`` for a server with workers)."""
    cpu = ticks = rss = 0
    for pid in pids:
        c, t, r = _one(pid)
        cpu, ticks, rss = cpu + c, ticks + t, rss + r
    return Sample(cpu_ns=cpu, tick_ns=ticks, rss_bytes=rss)


def pss_bytes(pids: list[int]) -> int:
    """Sum the proportional set size of ``pids``: pages shared by forked workers count once.

    RSS summed over a supervisor and the workers it forked counts every shared page (the
    interpreter, imported modules) once per process; PSS splits each page among its sharers.
    """
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def listening_pid(port: int) -> int | None:
    """Find the process that listens on a TCP port (via /proc/net/tcp{,6} socket inodes)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    owners: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    owners.append(int(entry))
                    break
            except OSError:
                continue
    if not owners:
        return None
    # workers sharing the port all hold the socket: the root of the tree is their parent
    owner_set = set(owners)
    roots = [pid for pid in owners if _ppid(pid) not in owner_set]
    return min(roots or owners)
