"""Event ids: random version-4 UUIDs, made once per event and kept end to end."""

from __future__ import annotations

import os
import threading


class _IdPool:
    """Random version-4 UUIDs, made in batches from one read of ``os.urandom`` each.

    ``uuid.uuid4()`` calls ``os.urandom`` for every id, which releases the GIL and lets the
    background sender take it for a whole publish in the middle of a request; a pool reads the
    OS's randomness once per 256 ids, and a call only pops one. A forked child starts with an
    empty pool, so it never repeats its parent's ids. Not :mod:`random`: an application's
    ``random.seed()`` would repeat ids, and dedup would then skip handlers.
    """

    #: Ids made per read of the OS's randomness.
    _BATCH = 256

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A fresh lock too: a fork can copy the parent's lock while another thread holds it.
        self._lock = threading.Lock()
        self._ids: list[str] = []

    def __call__(self) -> str:
        while True:
            try:
                return self._ids.pop()  # atomic: threads sharing the pool need no lock here
            except IndexError:
                self._refill()

    def _refill(self) -> None:
        with self._lock:
            if not self._ids:
                h = os.urandom(16 * self._BATCH).hex()
                v = _VARIANT
                # The version (4) and variant (10xx) bits of RFC 4122, set in the text.
                self._ids = [
                    f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{v[h[i + 16]]}{h[i + 17 : i + 20]}-"
                    f"{h[i + 20 : i + 32]}"
                    for i in range(0, len(h), 32)
                ]


#: A hex digit -> the variant digit with the same two low bits (8, 9, a or b).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


#: A new event id: a random (version 4) UUID as a string.
new_event_id = _IdPool()
