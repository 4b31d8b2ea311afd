"""Commands in Redis's protocol (RESP), packed by hand for the hot paths that write without
waiting for the answer (the workers' dedup marks, the streams' XADDs).

redis-py's own packing encodes each argument through several layers; for a command of twenty
arguments that is most of a write's CPU time. Here an argument is ``bytes``, ``str`` (UTF-8) or
``int``, packed in one pass.
"""

from __future__ import annotations


def bulk(arg: bytes | str | int) -> bytes:
    """One argument: ``$<length>``, then the argument."""
    data = arg if type(arg) is bytes else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(*args: bytes | str | int) -> bytes:
    """A command: ``*<count>``, then each argument."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))
