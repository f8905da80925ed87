"""A loopback TCP proxy whose connections can be cut: the AMQP "connection close" fault.

The shared RabbitMQ has no management plugin, and ``rabbitmqctl`` against it would need its
Erlang cookie; a proxy between one node and the broker cuts exactly that node's AMQP
connection (both sockets aborted: the node sees a reset, the broker a dropped client) and
touches nobody else's. It runs its own event loop in a thread so that a busy client loop
does not slow the broker traffic down.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class CuttableProxy:
    """Forward 127.0.0.1:<port> to ``target``; ``cut()`` aborts every live connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.port = 0
        self.cuts = 0

    def start(self) -> None:
        self._thread.start()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        future = asyncio.run_coroutine_threadsafe(self._listen(sock), self._loop)
        future.result(5)

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    def cut(self) -> int:
        """Abort every proxied connection now; return how many were cut."""

        def abort() -> int:
            pairs = list(self._pairs)
            for pair in pairs:
                for w in pair:
                    w.transport.abort()
            return len(pairs)

        future = asyncio.run_coroutine_threadsafe(_call(abort), self._loop)
        count = future.result(5)
        self.cuts += 1
        return count

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _call(fn: object) -> int:
    assert callable(fn)
    result: int = fn()
    return result


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()
