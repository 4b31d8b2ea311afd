"""Event ids: random version-4 UUIDs, made once per event and kept end to end."""

from __future__ import annotations

import os
import threading


class _IdPool:
    """Random version-4 UUIDs from a pool of ``os.urandom`` bytes.

    ``uuid.uuid4()`` calls ``os.urandom`` for every id, which releases the GIL and lets the
    background sender take it for a whole publish in the middle of a request; a pool reads the
    OS's randomness once per 256 ids. A forked child starts with an empty pool, so it never repeats
    its parent's ids. Not :mod:`random`: an application's ``random.seed()`` would repeat ids, and
    dedup would then skip handlers.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A fresh lock too: a fork can copy the parent's lock while another thread holds it.
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = self._SIZE

    def __call__(self) -> str:
        with self._lock:
            pos = self._pos
            if pos >= self._SIZE:
                self._pool, pos = os.urandom(self._SIZE), 0
            self._pos = pos + 16
            h = self._pool[pos : pos + 16].hex()
        # The version (4) and variant (10xx) bits of RFC 4122.
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab89ab89ab89ab"


#: A new event id: a random (version 4) UUID as a string.
new_event_id = _IdPool()
