"""A deterministic asyncio loop with virtual time, and fake sockets registered in it.

``SimLoop`` is an ``asyncio.BaseEventLoop`` whose selector never blocks: when nothing is
ready, ``select(timeout)`` advances the virtual clock by ``timeout`` (like CPython's
test_asyncio ``TestLoop``). Ready file descriptors are reported in fd order, timers keep
asyncio's own order, so a run depends only on its inputs.

``SimSocket`` is the server's end of a simulated TCP connection: ``send`` takes only what
fits in the simulated kernel buffer (the congestion a slow reader causes), ``recv`` returns
what the client wrote. The client end (``Pipe``) is driven by the simulated client.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Any


class _Selector:
    """Reports ready fake sockets; with none ready it moves virtual time forward."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[tuple[int, int]]:
        loop = self._loop
        events: list[tuple[int, int]] = []
        pipes, writers = loop.pipes, loop.writers
        for fd in loop.readers:
            pipe = pipes.get(fd)
            if pipe is not None and (pipe.up or pipe.client_closed):
                events.append((fd, selectors.EVENT_READ))
        for fd in writers:
            pipe = pipes.get(fd)
            if pipe is not None and pipe.server_writable():
                events.append((fd, selectors.EVENT_WRITE))
        if len(events) > 1:
            events.sort()  # fd order, reads first: the same on every run
        if events:
            return events
        if timeout is None:
            # nothing scheduled and nothing ready: the world is idle for good
            loop.idle = True
        elif timeout > 0:
            loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    """An event loop whose clock only moves when every task waits."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start
        self._selector = _Selector(self)
        self.readers: dict[int, asyncio.Handle] = {}
        self.writers: dict[int, asyncio.Handle] = {}
        self.pipes: dict[int, Pipe] = {}
        self.idle = False
        self.errors: list[str] = []
        self.set_exception_handler(self._on_exception)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.errors.append(f"{context.get('message')}: {exc!r}")

    def add_reader(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        self.readers[fd] = asyncio.Handle(callback, args, self)

    def remove_reader(self, fd: Any) -> bool:
        return self.readers.pop(fd, None) is not None

    def add_writer(self, fd: Any, callback: Callable[..., Any], *args: Any) -> None:  # type: ignore[override]
        self.writers[fd] = asyncio.Handle(callback, args, self)

    def remove_writer(self, fd: Any) -> bool:
        return self.writers.pop(fd, None) is not None

    def _process_events(self, event_list: list[tuple[int, int]]) -> None:
        for fd, mask in event_list:
            if mask & selectors.EVENT_READ and fd in self.readers:
                self._add_callback(self.readers[fd])  # type: ignore[attr-defined]
            if mask & selectors.EVENT_WRITE and fd in self.writers:
                self._add_callback(self.writers[fd])  # type: ignore[attr-defined]

    def _write_to_self(self) -> None:
        pass


class Pipe:
    """Both directions of one simulated TCP connection.

    ``down`` holds what the server sent and the client has not read yet; its ``capacity``
    is the kernel's socket buffers. ``up`` holds what the client sent.
    """

    def __init__(self, loop: SimLoop, fd: int, capacity: int, on_down: Callable[[], None]) -> None:
        self.loop = loop
        self.fd = fd
        self.capacity = capacity
        self.down = bytearray()
        self.up = bytearray()
        self.server_closed = False
        self.client_closed = False
        self._on_down = on_down
        loop.pipes[fd] = self

    def server_readable(self) -> bool:
        return bool(self.up) or self.client_closed

    def server_writable(self) -> bool:
        return not self.client_closed and len(self.down) < self.capacity

    def client_write(self, data: bytes) -> None:
        if not self.client_closed and not self.server_closed:
            self.up += data

    def client_read(self, limit: int) -> bytes:
        data = bytes(self.down[:limit])
        del self.down[:limit]
        return data

    def client_close(self) -> None:
        self.client_closed = True
        self.down.clear()

    def forget(self) -> None:
        self.loop.pipes.pop(self.fd, None)


class SimSocket:
    """The server's end of a ``Pipe``: what ``realtime.connection.Connection`` calls."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe

    def fileno(self) -> int:
        return self._pipe.fd

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def send(self, data: bytes | bytearray | memoryview) -> int:
        pipe = self._pipe
        if pipe.server_closed:
            raise OSError("send on a closed socket")
        if pipe.client_closed:
            raise BrokenPipeError("peer closed")
        room = pipe.capacity - len(pipe.down)
        if room <= 0:
            raise BlockingIOError
        chunk = bytes(data[:room])
        pipe.down += chunk
        pipe._on_down()
        return len(chunk)

    def recv(self, size: int) -> bytes:
        pipe = self._pipe
        if pipe.up:
            data = bytes(pipe.up[:size])
            del pipe.up[:size]
            return data
        if pipe.client_closed:
            return b""
        raise BlockingIOError

    def close(self) -> None:
        pipe = self._pipe
        if not pipe.server_closed:
            pipe.server_closed = True
            pipe._on_down()
