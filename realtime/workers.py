"""``--workers N``: a supervisor process and N forked workers sharing one listening socket.

The parent binds the port once and forks the workers. Each worker is a whole server
(``realtime.server.serve_worker``) with its own broker connection and subscriptions;
they share the port by accepting from the same inherited socket, so a worker that dies
takes nothing but its own connections with it. The parent serves nothing; it only:

- restarts a worker that dies, after a back-off that grows while it keeps dying young;
- on SIGTERM or SIGINT forwards SIGTERM to every worker (each closes its connections
  with 1012 and exits), waits for them up to ``shutdown_timeout``, SIGKILLs stragglers
  and exits 0;
- owns the metrics directory the workers write into (``realtime.metrics``), deleted on exit.

The parent blocks its signals and takes them with ``sigtimedwait``: no handler runs
between a fork and the child's own setup, and no child death can be missed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import NoReturn

import tornado.netutil

from realtime.config import Settings
from realtime.metrics import SupervisorMetrics, enable_multiprocess, mark_dead

logger = logging.getLogger(__name__)

SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
STABLE_AFTER = 10.0  # a worker that lived this long was healthy: reset its back-off
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
POLL = 1.0  # wake up at least this often even if a SIGCHLD got lost
PR_SET_PDEATHSIG = 1


@dataclass(slots=True)
class _Worker:
    index: int
    pid: int
    started: float


def restart_delay(failures: int) -> float:
    """Return the back-off before restart number ``failures`` of a worker dying young."""
    base = min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(0, failures - 1))
    return base * random.uniform(0.8, 1.2)


def describe_exit(status: int) -> str:
    """Return 'exit code N' or 'signal NAME' for a ``waitpid`` status."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _share_before_fork(settings: Settings) -> None:
    """Load what every worker needs once, in the parent, and keep its pages shared.

    Modules imported before the fork are shared copy-on-write by all workers instead of
    loaded N times; ``gc.freeze`` moves them out of the collector's reach, whose passes
    would otherwise write to (and so copy) every page holding an object header.
    """
    import realtime.server  # noqa: F401 - imported for its side effect: loaded once
    from realtime.brokers import preload_broker

    preload_broker(settings)
    gc.collect()
    gc.freeze()


class Supervisor:
    """Fork, watch and stop the workers of one ``realtime serve --workers N``."""

    def __init__(self, settings: Settings, sockets: list[socket.socket], metrics_dir: str) -> None:
        self.settings = settings
        self.sockets = sockets
        self.metrics_dir = metrics_dir
        self.workers: dict[int, _Worker] = {}  # by pid
        self.restarts: dict[int, float] = {}  # worker index -> monotonic time to restart it
        self.failures: dict[int, int] = {}  # worker index -> deaths in a row, each young
        self.stopping = False
        self.metrics = SupervisorMetrics()
        self._mask: set[int | signal.Signals] = set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT and the workers are gone; return the exit code (0)."""
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        _share_before_fork(self.settings)
        try:
            for index in range(self.settings.workers):
                self._spawn(index)
            while not self.stopping:
                signo = self._wait(self._next_timeout())
                if signo in (signal.SIGTERM, signal.SIGINT):
                    logger.info("supervisor got %s", signal.Signals(signo).name)
                    self.stopping = True
                self._reap()
                if not self.stopping:
                    self._restart_due()
            return self._drain()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)

    # -- workers ------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._child(index)
        self.workers[pid] = _Worker(index, pid, time.monotonic())
        self.metrics.workers.set(len(self.workers))
        logger.info("worker %d started (pid %d)", index, pid)

    def _child(self, index: int) -> NoReturn:
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            _die_with_parent(os.getppid())
            enable_multiprocess(self.metrics_dir)
            from realtime.server import serve_worker

            serve_worker(self.settings, self.sockets)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            logger.exception("worker %d crashed", index)
        finally:
            # never return into the parent's code (or a test runner's) from a fork
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            mark_dead(pid, self.metrics_dir)
            self.metrics.workers.set(len(self.workers))
            self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        how = describe_exit(status)
        if self.stopping:
            logger.info("worker %d (pid %d) stopped (%s)", worker.index, worker.pid, how)
            return
        lived = time.monotonic() - worker.started
        failures = 1 if lived >= STABLE_AFTER else self.failures.get(worker.index, 0) + 1
        self.failures[worker.index] = failures
        delay = restart_delay(failures)
        self.restarts[worker.index] = time.monotonic() + delay
        logger.warning(
            "worker %d (pid %d) died after %.1fs (%s); restarting in %.1fs",
            worker.index,
            worker.pid,
            lived,
            how,
            delay,
        )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in sorted(self.restarts.items()):
            if when <= now:
                del self.restarts[index]
                self.metrics.worker_restarts.inc()
                self._spawn(index)

    def _next_timeout(self) -> float:
        if not self.restarts:
            return POLL
        return max(0.0, min(POLL, min(self.restarts.values()) - time.monotonic()))

    def _wait(self, timeout: float) -> int | None:
        info = signal.sigtimedwait(SIGNALS, timeout)
        return info.si_signo if info is not None else None

    # -- shutdown -----------------------------------------------------------------------

    def _drain(self) -> int:
        """Forward SIGTERM, wait up to the shutdown timeout, SIGKILL stragglers; return 0."""
        self.restarts.clear()
        logger.info("stopping %d workers", len(self.workers))
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # the contract: exit within the shutdown timeout; the workers use it to drain
        deadline = time.monotonic() + max(0.5, self.settings.shutdown_timeout - 0.2)
        while self.workers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wait(min(0.2, left))  # a second SIGTERM changes nothing
            self._reap()
        for pid, worker in list(self.workers.items()):
            logger.warning("worker %d (pid %d) did not stop in time: SIGKILL", worker.index, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            mark_dead(pid, self.metrics_dir)
            del self.workers[pid]
        logger.info("stopped")
        return 0


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this worker when the supervisor dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def supervise(settings: Settings) -> int:
    """Bind the port, run ``settings.workers`` worker processes until SIGTERM; return 0.

    Returns 2 (configuration error) for the memory broker: its channels live inside one
    process, so a client of one worker would never see events published through another.

    Raises:
        OSError: the port cannot be bound.
    """
    if settings.broker_url.startswith("memory:"):
        logger.error(
            "workers: %d workers need a shared broker (redis:// or amqp://); "
            "memory:// lives inside one process",
            settings.workers,
        )
        return 2
    sockets = tornado.netutil.bind_sockets(settings.port, settings.host, backlog=4096)
    metrics_dir = tempfile.mkdtemp(prefix="realtime-metrics-")
    port = sockets[0].getsockname()[1]
    logger.info(
        "supervisor (pid %d) on %s:%d: %d workers, metrics in %s",
        os.getpid(),
        settings.host,
        port,
        settings.workers,
        metrics_dir,
    )
    try:
        enable_multiprocess(metrics_dir)
        return Supervisor(settings, sockets, metrics_dir).run()
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
