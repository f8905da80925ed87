"""Server CPU per heartbeat ping and its pong: ``python -m bench.heartbeat_cost``.

Starts ``realtime serve`` (memory broker) with a short heartbeat, holds ``--connections``
idle picows connections (they answer pings, as browsers do), and reads the server's CPU
time from /proc over ``--seconds``: with nothing published, that CPU is the heartbeat's.
Prints µs per ping+pong, the median of ``--repeat`` windows. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys

from bench import procstat
from bench.loadgen import LoadConfig, LoadGenerator, raise_fd_limit
from bench.run import SECRET, free_port, stop, wait_listening


async def measure(
    port: int, pid: int, connections: int, heartbeat: int, seconds: float, repeat: int
) -> list[float]:
    """Return µs of server CPU per ping+pong, one figure per window."""
    url = f"ws://127.0.0.1:{port}/ws"
    gen = LoadGenerator(LoadConfig(url=url, connections=connections, server_pids=[pid]))
    try:
        await gen.open()
        await asyncio.sleep(2 * heartbeat)  # every connection pinged at least once
        out = []
        for _ in range(repeat):
            before = procstat.sample([pid]).cpu_ns
            await asyncio.sleep(seconds)
            used = procstat.sample([pid]).cpu_ns - before
            out.append(used / 1000 / (connections * seconds / heartbeat))
        return out
    finally:
        await gen.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--heartbeat", type=int, default=1, help="seconds")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one window")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    port = free_port()
    env = dict(
        os.environ,
        REALTIME_BROKER_URL="memory://",
        REALTIME_SECRET=SECRET,
        REALTIME_HEARTBEAT=str(args.heartbeat),
        REALTIME_LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "realtime", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env)
    try:
        wait_listening(port, proc, 30)
        runs = asyncio.run(
            measure(port, proc.pid, args.connections, args.heartbeat, args.seconds, args.repeat)
        )
    finally:  # stopped by PID, whatever happened
        stop(proc)
    shown = ", ".join(f"{r:.1f}" for r in runs)
    print(
        f"server CPU per ping+pong (N={args.connections}, heartbeat {args.heartbeat} s): "
        f"median {statistics.median(runs):.1f} µs, windows {shown}"
    )


if __name__ == "__main__":
    main()
