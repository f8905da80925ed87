"""Live standings at contest scale: ``python -m bench.standings_scale`` (loopback, bounded).

Starts ``realtime serve`` (redis broker, a unique prefix), fills a board of
``--contestants`` through the bridge, then holds ``--watchers`` WebSocket connections, each
subscribed like a standings page to ``leaderboard:<C>`` (the top N), ``standings:<C>``
(every move, merged per 500 ms window) and ``presence:standings:<C>`` (the watcher count):

* light watchers (picows, ``--clients`` processes, source addresses 127.0.0.2 ..
  127.0.0.(1 + ``--source-ips``)) count frames and bytes per channel and decode no JSON;
* ``--checkers`` full watchers (``StandingsView``, in their own process: the watcher process
  of tests/integration/test_standings_contest.py) apply every move to their own row and a
  page and keep the top N.

Each of ``--repeat`` bursts records verdicts paced at ``--rate`` a minute for
``--seconds`` (in a thread of this process, through the bridge) and measures frames and bytes
per light watcher per window, the server's CPU (share of a core; per delivered frame) and
RSS, how long the checkers took to show the board version of sampled moments, and, once
the burst is over, that every checker's own row, page and top N equal the store's board.
Results print as one JSON document (``--out`` writes it too); medians over the bursts.

The fd limit is raised here where allowed (``RLIMIT_NOFILE``, inherited by the server and
the client processes; raising the hard limit needs CAP_SYS_RESOURCE). Where it is not, a
process holds at most the hard limit of descriptors: ``--server-workers 2`` (the default)
serves the watchers from two processes sharing the port (SO_REUSEPORT, one node each,
presence counts aggregated across them), so that each holds about half. CPU and RSS are
summed over the server's processes. The server's ``max_send_buffer`` is raised to 64 MiB
(``REALTIME_MAX_SEND_BUFFER`` overrides): the checkers' process may read late on a shared
machine, and must not be dropped as a slow consumer (at the 1 MiB default a checker's
connection was closed by the server in a run at load average 13: most likely that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import statistics
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from bench import procstat
from bench.client import start_pipe_reader
from bench.run import TARGETS, running
from bench.standings import Judge, _configure_django
from tests.integration import standings_watchers

WINDOW_S = 0.5
ALLOWANCE_S = 0.25  # as in the standings contest test: one window + this
NOFILE = 262_144
KINDS = ("leaderboard", "standings", "presence")
EVENT_HEAD = b'{"op":"event","channel":"'
SUBSCRIBED = b'"op":"subscribed"'


def raise_fd_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE to ``NOFILE``, else the soft limit to the hard one; return it."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: the hard limit stays
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def open_files_limit(pid: int) -> str:
    """Return the ``Max open files`` line of a process's limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    return "?"


def waiting_ns(pids: list[int]) -> int:
    """Return the time the threads of ``pids`` spent runnable but waiting for a CPU.

    The second field of ``schedstat``: on a shared machine it tells a server that had no
    work from one that had no core.
    """
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total


# ------------------------------------------------------------------- light watchers


class Counters:
    """Frames and bytes per channel kind, shared by the connections of one process."""

    def __init__(self) -> None:
        self.frames = dict.fromkeys(KINDS, 0)
        self.bytes = dict.fromkeys(KINDS, 0)
        self.subscribed = 0
        self.resubscribed = 0
        self.closed = 0


class Light(WSListener):
    """A standings page that only counts: no JSON decoded for events."""

    def __init__(self, counters: Counters, channels: list[str]) -> None:
        super().__init__()
        self.counters = counters
        self.channels = channels
        self.subscribed = 0
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        for channel in self.channels:
            transport.send(WSMsgType.TEXT, orjson.dumps({"op": "subscribe", "channel": channel}))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        c = self.counters
        if payload.startswith(EVENT_HEAD):
            # the first event names the frame's channel: '{"op":"event","channel":"standings:'
            kind = payload[25:36].split(b":", 1)[0].decode()
            if kind in c.frames:
                c.frames[kind] += 1
                c.bytes[kind] += len(payload)
        elif SUBSCRIBED in payload:
            self.subscribed += 1
            if self.subscribed <= len(self.channels):
                c.subscribed += 1
            elif b'"recovered":false' in payload:
                c.resubscribed += 1  # unasked: the server resynced this connection
            if self.subscribed == len(self.channels) and not self.ready.done():
                self.ready.set_result(True)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.counters.closed += 1
        if not self.ready.done():
            self.ready.set_result(False)


async def _light(
    url: str, channels: list[str], count: int, first: int, source_ips: int, pipe: Connection
) -> None:
    counters = Counters()
    transports: list[WSTransport] = []
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    start_pipe_reader(pipe, inbox)
    gate = asyncio.Semaphore(200)

    async def one(index: int) -> bool:
        local = (f"127.0.0.{2 + index % source_ips}", 0)
        async with gate:
            try:
                transport, listener = await ws_connect(
                    lambda: Light(counters, channels),
                    url,
                    local_addr=local,
                    websocket_handshake_timeout=30,
                )
                transports.append(transport)
                return await asyncio.wait_for(cast(Light, listener).ready, 60)
            except (OSError, TimeoutError):
                counters.closed += 1
                return False

    while True:
        cmd = await inbox.get()
        if cmd[0] == "open":
            began = time.monotonic()
            ok = await asyncio.gather(*(one(first + i) for i in range(count)))
            pipe.send(("opened", sum(ok), time.monotonic() - began))
        elif cmd[0] == "reset":
            frames, sizes = dict(counters.frames), dict(counters.bytes)
            counters.frames, counters.bytes = dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0)
            pipe.send(("reset", frames, sizes))
        elif cmd[0] == "collect":
            cpu = time.process_time()
            pipe.send(
                (
                    "collected",
                    dict(counters.frames),
                    dict(counters.bytes),
                    counters.resubscribed,
                    counters.closed,
                    cpu,
                )
            )
        elif cmd[0] in ("close", "dead"):
            for transport in transports:
                transport.disconnect()
            pipe.send(("closed",))
            return


def light_main(
    url: str, channels: list[str], count: int, first: int, source_ips: int, pipe: Connection
) -> None:
    """A light watcher process: hold ``count`` connections until told to close."""
    import uvloop

    uvloop.run(_light(url, channels, count, first, source_ips, pipe))


# ------------------------------------------------------------------- the run


def _ask(pipes: list[Connection], msg: tuple[Any, ...], timeout: float) -> list[Any]:
    for pipe in pipes:
        pipe.send(msg)
    replies = []
    for pipe in pipes:
        if not pipe.poll(timeout):
            raise TimeoutError(f"a client process did not answer {msg[0]!r} in {timeout} s")
        replies.append(pipe.recv())
    return replies


def _pace(judge: Judge, rate_per_min: float, stop: threading.Event) -> None:
    step = 60.0 / rate_per_min
    due = time.monotonic()
    while not stop.is_set():
        judge.record()
        due += step
        stop.wait(max(0.0, due - time.monotonic()))


async def _watching(url: str, channel: str) -> int:
    """Return the watcher count a page shows: ``presence:<channel>``'s state."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": channel}).decode())
        async for text in ws:
            msg = orjson.loads(text)
            if msg.get("op") == "subscribed":
                state = msg.get("state")
                return int(state["data"]["count"]) if state else -1
    return -1


def _check_quiet_board(
    judge: Judge, who: list[tuple[str, int]], shown: list[tuple[Any, ...]], v: int
) -> tuple[list[str], list[str]]:
    """Compare every checker's parts with the store's board (quiet: at version ``v``);
    return the parts not at ``v`` yet and those at ``v`` with other rows."""
    board, contest = judge.board, judge.contest
    top = board.snapshot(contest)
    assert top["v"] == v, f"the board moved after the burst: v{top['v']} != v{v}"
    want_top = standings_watchers.cmp_rows(top["top"], "icpc")
    behind: list[str] = []
    wrong: list[str] = []
    for (me, start), (versions, own, page, top_rows) in zip(who, shown, strict=True):
        want_own = standings_watchers.cmp_rows(
            board.window(contest, around=me, k=0)["rows"], "icpc"
        )
        page_rows = board.window(contest, start, standings_watchers.PAGE)["rows"]
        want_page = standings_watchers.cmp_rows(page_rows, "icpc")
        for part, got, want, at in (
            ("own", own, want_own, versions[0]),
            ("page", page, want_page, versions[1]),
            ("top", top_rows, want_top, versions[2]),
        ):
            if at != v:
                behind.append(f"{me} {part} at v{at} (board v{v})")
            elif got != want:
                wrong.append(f"{me} {part} at v{at}: {got} != {want}")
    return behind, wrong


async def _bursts(
    args: argparse.Namespace, log_dir: Path, fd_limit: tuple[int, int]
) -> dict[str, Any]:
    target = TARGETS["realtime-w2" if args.server_workers == 2 else "realtime"]
    ctx = multiprocessing.get_context("spawn")
    with running(target, args.redis_url, log_dir) as (root, port, prefix):
        await asyncio.sleep(1.0)  # the workers start
        pids = procstat.process_tree(root)
        server_nofile = sorted({open_files_limit(pid) for pid in pids})
        _configure_django(args.redis_url, prefix)
        judge = Judge(args.redis_url, prefix, args.contestants, args.seed)
        began = time.perf_counter()
        for user in judge.users:
            judge.record(user)
        fill_rate = args.contestants / (time.perf_counter() - began)
        cid = judge.contest.id
        url = f"ws://127.0.0.1:{port}/ws"
        channels = [f"leaderboard:{cid}", f"standings:{cid}", f"presence:standings:{cid}"]
        # light watchers
        per = args.watchers // args.clients
        pipes, procs = [], []
        for i in range(args.clients):
            parent, child = ctx.Pipe()
            count = per if i < args.clients - 1 else args.watchers - per * (args.clients - 1)
            proc = ctx.Process(
                target=light_main, args=(url, channels, count, i * per, args.source_ips, child)
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        # full watchers, each on its own row and a random page
        rng = random.Random(args.seed)
        who = [
            (rng.choice(judge.users), rng.randrange(0, args.contestants - standings_watchers.PAGE))
            for _ in range(args.checkers)
        ]
        check_pipe, check_child = ctx.Pipe()
        spec = {"id": cid, "rules": "icpc", "top_n": judge.contest.top_n}
        checker = ctx.Process(
            target=standings_watchers.run,
            args=(url, args.redis_url, prefix, spec, who, check_child),
        )
        try:
            opened_at = time.monotonic()
            opened = _ask(pipes, ("open",), 600)
            held = sum(o[1] for o in opened)
            open_s = time.monotonic() - opened_at
            checker.start()
            assert check_pipe.poll(300), "checkers not subscribed in 300 s"
            ready = check_pipe.recv()
            assert ready == ("ready", None), ready
            await asyncio.sleep(2 * args.presence_wait)  # presence counts settle
            watching = await _watching(url, f"presence:standings:{cid}")
            runs = []
            for rep in range(args.repeat):
                runs.append(await _one_burst(args, judge, pids, pipes, check_pipe, who, rep))
            collected = _ask(pipes, ("collect",), 60)
            closed = sum(c[4] for c in collected)
            resyncs = sum(c[3] for c in collected)
        finally:
            for pipe in [*pipes, check_pipe]:
                with contextlib.suppress(OSError):
                    pipe.send(("close",) if pipe is not check_pipe else ("stop",))
            for proc in [*procs, checker]:
                if proc.pid is None:
                    continue  # never started
                proc.join(60)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "contestants": args.contestants,
        "watchers": args.watchers,
        "held": held,
        "open_s": round(open_s, 1),
        "closed_during_run": closed,
        "resyncs": resyncs,
        "client_processes": args.clients,
        "source_ips": args.source_ips,
        "checkers": args.checkers,
        "fd_limit": list(fd_limit),
        "server_processes": len(pids),
        "server_open_files_limit": server_nofile,
        "server_max_send_buffer": int(os.environ["REALTIME_MAX_SEND_BUFFER"]),
        "watching_shown": watching,
        "rate_per_min": args.rate,
        "seconds": args.seconds,
        "fill_verdicts_per_s": round(fill_rate, 1),
        "median": {
            key: round(med(key), 4)
            for key in runs[0]
            if isinstance(runs[0][key], (int, float)) and not isinstance(runs[0][key], bool)
        },
        "runs": runs,
    }


async def _one_burst(
    args: argparse.Namespace,
    judge: Judge,
    pids: list[int],
    pipes: list[Connection],
    check_pipe: Connection,
    who: list[tuple[str, int]],
    rep: int,
) -> dict[str, Any]:
    """One paced burst: per light watcher per window, server CPU and RSS, checker lags."""
    board, contest = judge.board, judge.contest
    _ask(pipes, ("reset",), 60)
    before, waited = procstat.sample(pids), waiting_ns(pids)
    clients_cpu = [c[5] for c in _ask(pipes, ("collect",), 60)]
    began = time.monotonic()
    recorded0 = judge.count
    stop = threading.Event()
    thread = threading.Thread(target=_pace, args=(judge, args.rate, stop), daemon=True)
    thread.start()
    rss: list[int] = []
    sids: list[tuple[int, float, int]] = []
    step = args.seconds / (args.samples + 1)
    for k in range(args.samples):
        await asyncio.sleep(max(0.0, began + (k + 1) * step - time.monotonic()))
        at = time.monotonic()
        v = board.window(contest, 0, 0)["v"]
        sid = rep * 1000 + k
        check_pipe.send(("sample", sid, v, at + WINDOW_S + ALLOWANCE_S))
        sids.append((sid, at, v))
        rss.append(procstat.sample(pids).rss_bytes)
    await asyncio.sleep(max(0.0, began + args.seconds - time.monotonic()))
    stop.set()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(2 * WINDOW_S)  # the last window out
    wall = time.monotonic() - began
    after, waited = procstat.sample(pids), waiting_ns(pids) - waited
    clients_cpu = [
        c[5] - c0 for c, c0 in zip(_ask(pipes, ("collect",), 60), clients_cpu, strict=True)
    ]
    recorded = judge.count - recorded0
    counts = _ask(pipes, ("reset",), 60)
    frames = {k: sum(c[1][k] for c in counts) for k in KINDS}
    sizes = {k: sum(c[2][k] for c in counts) for k in KINDS}
    # the quiet board: every checker shows its final version and equals the store
    v_end = board.window(contest, 0, 0)["v"]
    at = time.monotonic()
    final_sid = rep * 1000 + 999
    check_pipe.send(("sample", final_sid, v_end, at + WINDOW_S + ALLOWANCE_S))
    replies: dict[int, tuple[Any, ...]] = {}
    while final_sid not in replies:
        if not check_pipe.poll(120):
            raise TimeoutError("the checker process did not answer a sample")
        reply = check_pipe.recv()
        assert reply[0] == "sample", reply
        replies[reply[1]] = reply
    behind, wrong = _check_quiet_board(judge, who, replies[final_sid][2], v_end)
    lags: list[float] = []
    late = 0
    capture_late = 0.0  # how late the checker process got to a sample (its own CPU)
    for sid, at_s, v in sids:
        _, _, shown, reached, capture, _ = replies[sid]
        capture_late = max(capture_late, capture)
        sample_lags = [float("inf") if r is None else r - at_s for r in reached]
        lags.extend(sample_lags)
        late += sum(
            1
            for lag, (versions, *_) in zip(sample_lags, shown, strict=True)
            if lag > WINDOW_S + ALLOWANCE_S or min(versions) < v
        )
    lags.sort()
    windows = wall / WINDOW_S
    n = args.watchers
    cpu_s = (after.cpu_ns - before.cpu_ns) / 1e9
    deliveries = sum(frames.values())  # the light watchers' (the checkers' are not counted)
    q = statistics.quantiles(lags, n=100) if len(lags) > 1 else lags * 99
    return {
        "verdicts": recorded,
        "wall_s": round(wall, 2),
        "frames_per_watcher_per_window": sum(frames.values()) / n / windows,
        "bytes_per_watcher_per_window": sum(sizes.values()) / n / windows,
        **{f"frames_{k}": frames[k] / n / windows for k in KINDS},
        **{f"bytes_{k}": sizes[k] / n / windows for k in KINDS},
        "server_cpu": cpu_s / wall,
        "server_cpu_us_per_delivery": cpu_s / max(deliveries, 1) * 1e6,
        "server_waiting_for_cpu": waited / 1e9 / wall,
        "light_client_cpu": sum(clients_cpu) / wall,
        "load_average_1m": os.getloadavg()[0],
        "server_rss_mb": max([*rss, after.rss_bytes]) / 2**20,
        "checker_lag_p50_s": q[49],
        "checker_lag_p95_s": q[94],
        "checker_lag_max_s": lags[-1],
        "checker_late": late,  # watcher samples not at v(t) by t + window + allowance
        "checker_samples": len(lags),
        "checker_capture_late_max_s": capture_late,
        "checker_behind_after_burst": len(behind),  # parts not at the final version
        "checker_wrong_after_burst": len(wrong),  # parts at it whose rows differ
        # a checker whose connection ended (reported, not fatal: its rows then count wrong)
        "checker_error": replies[final_sid][5] or "",
        "checker_wrong_examples": (wrong + behind)[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--contestants", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=20_000, help="light watchers")
    parser.add_argument("--clients", type=int, default=2, help="light watcher processes")
    parser.add_argument("--server-workers", type=int, default=2, help="1 or 2 processes")
    parser.add_argument("--source-ips", type=int, default=50)
    parser.add_argument("--checkers", type=int, default=200, help="full watchers")
    parser.add_argument("--rate", type=float, default=1_000.0, help="verdicts a minute")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of one burst")
    parser.add_argument("--samples", type=int, default=5, help="checker samples per burst")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--presence-wait", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--log-dir", default="/tmp/bench-standings-scale")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    fd_limit = raise_fd_limit()  # before the server starts: it inherits the limit
    # the checkers share one Python process on a shared machine: reading late must not make
    # them slow consumers (1 MiB by default) whose connections the server drops
    os.environ.setdefault("REALTIME_MAX_SEND_BUFFER", str(64 << 20))
    if args.server_workers not in (1, 2):
        parser.error("--server-workers is 1 or 2")
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    doc = asyncio.run(_bursts(args, log_dir, fd_limit))
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
