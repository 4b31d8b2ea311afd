"""A TCP proxy for fault injection: forwards to a real server, can blackhole, then reset.

One thread serves every connection with a selector, so a fault is applied to all of them at the
same point of the byte stream, and the test thread's commands take effect before they return.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

#: SO_LINGER on, zero seconds: close() then sends RST instead of FIN, as a dropped NAT entry does.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


@dataclass
class _Side:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)
    peer: _Side | None = None


class TCPProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``upstream``.

    :meth:`blackhole` keeps every socket open but drops the bytes read from both sides, like a
    network partition that says nothing; :meth:`reset` ends it by closing every connection with
    RST, after which new connections are forwarded again.

    :param upstream: the real server, ``(host, port)``.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        #: The port it listens on; connections are queued by the kernel from construction on.
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._sides: dict[socket.socket, _Side] = {}
        self._dropping = False
        self._stopping = False
        #: Bytes dropped while blackholed, both directions.
        self.dropped_bytes = 0
        #: Connections accepted so far.
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TCPProxy:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the test's side ----------------------------------------------------------------------

    def blackhole(self) -> None:
        """Keep every connection open, new ones too, but drop what either side sends."""
        self._command(self._start_dropping)

    def reset(self) -> None:
        """Close every connection with RST and stop dropping: the partition is over."""
        self._command(self._reset_all)

    def close(self) -> None:
        """Reset every connection, stop the thread and close the listener."""
        if self._thread.is_alive():
            self._command(self._stop)
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "the proxy thread did not stop"
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _command(self, command: Callable[[], None]) -> None:
        done = threading.Event()
        self._commands.put((command, done))
        self._wake_w.send(b"x")
        assert done.wait(timeout=10), "the proxy thread did not answer"

    # -- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            for key, events in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    self._run_commands()
                elif sock is self._listener:
                    self._accept()
                elif sock in self._sides:  # an earlier event of this round may have closed it
                    self._pump(self._sides[sock], events)
        self._reset_all()

    def _run_commands(self) -> None:
        self._wake_r.recv(1024)
        while not self._commands.empty():
            command, done = self._commands.get()
            command()
            done.set()

    def _start_dropping(self) -> None:
        self._dropping = True
        for side in self._sides.values():
            self.dropped_bytes += len(side.out)
            side.out.clear()
            self._watch(side)

    def _stop(self) -> None:
        self._stopping = True

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            client.close()
            return
        self.accepted += 1
        a, b = _Side(client), _Side(server)
        a.peer, b.peer = b, a
        for side in (a, b):
            side.sock.setblocking(False)
            self._sides[side.sock] = side
            self._selector.register(side.sock, selectors.EVENT_READ)

    def _pump(self, side: _Side, events: int) -> None:
        assert side.peer is not None
        if events & selectors.EVENT_READ:
            try:
                data = side.sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":  # one side closed: close the other the same way a real hop would
                self._close_pair(side, reset=False)
                return
            if data and self._dropping:
                self.dropped_bytes += len(data)
            elif data:
                side.peer.out += data
                self._watch(side.peer)
        if events & selectors.EVENT_WRITE and side.out:
            try:
                sent = side.sock.send(side.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close_pair(side, reset=True)
                return
            del side.out[:sent]
            self._watch(side)

    def _watch(self, side: _Side) -> None:
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if side.out else 0)
        self._selector.modify(side.sock, wanted)

    def _reset_all(self) -> None:
        for side in list(self._sides.values()):
            if side.sock in self._sides:
                self._close_pair(side, reset=True)
        self._dropping = False

    def _close_pair(self, side: _Side, *, reset: bool) -> None:
        for one in (side, side.peer):
            if one is None or one.sock not in self._sides:
                continue
            del self._sides[one.sock]
            self._selector.unregister(one.sock)
            if reset:
                one.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            elif one.out:  # an orderly close: what the other side said before it goes first
                with contextlib.suppress(OSError):
                    one.sock.settimeout(1.0)
                    one.sock.sendall(one.out)
            one.sock.close()
