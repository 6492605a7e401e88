"""Point-to-point bandwidth tests between peers, for ``optimize_topology()``.

``measure`` sends ``nbytes`` to another peer's data listener (an authenticated ``bench``
request) and times it until that peer confirms it has everything; ``serve`` is the other end.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .errors import ProtocolError
from .wire import DATA, Connection, field

__all__ = ["measure", "serve"]

_SEGMENT = 1 << 20
_MAX_BENCH = 256 << 20


def serve(conn: Connection, request: dict) -> None:
    """Receive and drop the announced bytes, then confirm."""
    nbytes = field(request, "nbytes", int)
    if nbytes > _MAX_BENCH:
        raise ProtocolError(f"bandwidth test of {nbytes} bytes exceeds {_MAX_BENCH}")
    sink = memoryview(bytearray(min(nbytes, _SEGMENT) or 1))
    left = nbytes
    while left:
        header = conn.read_header()
        assert header is not None
        kind, length = header
        if kind != DATA:
            raise ProtocolError("expected bandwidth-test data")
        *_, size = conn.recv_data_header(length)
        if not 0 < size <= min(left, sink.nbytes):
            raise ProtocolError(f"bandwidth-test frame of {size} bytes, {left} expected")
        conn.recv_into(sink[:size])
        left -= size
    conn.send_control({"t": "bench_ok"})


def measure(open_conn: Callable[[dict], Connection], nbytes: int = 4 << 20) -> float:
    """Bytes per second to the peer that ``open_conn(hello)`` connects to."""
    payload = memoryview(np.zeros(min(nbytes, _SEGMENT), np.uint8))
    conn = open_conn({"t": "bench", "nbytes": nbytes})
    try:
        start, left = time.perf_counter(), nbytes
        while left:
            k = min(left, payload.nbytes)
            conn.send_data(0, 0, 0, 0, payload[:k])
            left -= k
        reply = conn.recv_control(idle=conn.timeout)
        if reply is None or reply["t"] != "bench_ok":
            raise ProtocolError("bandwidth test not confirmed")
        return nbytes / max(time.perf_counter() - start, 1e-9)
    finally:
        conn.close()
