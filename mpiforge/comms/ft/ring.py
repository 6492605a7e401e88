"""Pipelined ring collectives over ``links.Links``: all-reduce (reduce-scatter + all-gather),
all-gather and broadcast, exact or with block-quantized chunks.

The flat array is cut into one chunk per peer and each chunk into segments of about
``segment_bytes``; segment ``j`` travels on lane ``j`` (mod the lane count), so several TCP
connections per neighbour carry a step at once. A segment is combined by the lane thread that
received it, 256 KiB at a time as the bytes come in (``links.PIECE_BYTES``: each piece is added
while it is still in the core's cache instead of after the whole segment has gone through
memory), and queued for the next step at once (pipelining, and the reductions of several lanes
run in parallel: numpy and the codecs release the GIL). Receives land directly in the
result (or in a payload buffer when quantized) and sends go straight from numpy memory: no copy
of the input is made.

Every peer ends bit-identical: chunk ``c`` is reduced in one fixed order along the ring and the
all-gather copies its owner's bytes. Quantized (``codec`` from ``mpiforge.comms.quantize``): the
partial sums of the reduce-scatter travel encoded, and each chunk's final value is encoded once
by its owner, who keeps the decoded values too, so every peer decodes the very same payload.

Ring positions: peer ``r`` sends to ``r + 1`` and receives from ``r - 1``. Reduce-scatter step
``s`` (0..n-2) sends chunk ``r - s`` and receives ``r - s - 1``; all-gather step ``n - 1 + s``
sends chunk ``r + 1 - s`` and receives ``r - s``; after the reduce-scatter peer ``r`` owns chunk
``r + 1``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from .links import Links

__all__ = ["OPS", "AllGather", "AllReduce", "Broadcast", "RingOp", "check_op"]

OPS = ("sum", "avg", "max", "min", "prod")  # as mpiforge.comms.collective.OPS (which imports mpi4py)
_UFUNCS = {"sum": np.add, "avg": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}


def check_op(op: str, dtype: np.dtype) -> None:
    """Raise ValueError for an unknown op, or an average of integers (as ``collective.check_op``)."""
    if op not in OPS:
        raise ValueError(f"unknown reduction {op!r}: use one of {', '.join(OPS)}")
    if op == "avg" and not np.issubdtype(dtype, np.inexact):
        raise ValueError(f"op='avg' needs a floating-point array, got {dtype}; reduce with 'sum' and divide")


def _segments(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, hi)) for a in range(lo, hi, size)]


def _bytes(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint8)


class RingOp:
    """One collective's bookkeeping: where each (step, segment) lands and what to do once it has.

    The links call ``target``/``arrived``/``sent``/``fail`` from their lane threads; ``arrived``
    runs the segment's handler (combine, forward) right there. ``run`` (in the caller's thread)
    posts the first sends and waits until every expected segment has been handled and every send
    is out; it fails when the links fail or nothing moves for ``stall_timeout`` seconds.
    """

    def __init__(self, op_id: int, rank: int, n: int, stall_timeout: float) -> None:
        self.op_id, self.rank, self.n = op_id, rank, n
        self.stall_timeout = stall_timeout
        self.error: str | None = None
        self.bytes_sent = self.bytes_received = 0
        self._targets: dict[tuple[int, int], tuple[memoryview, Callable[[], None] | None,
                                                   Callable[[int, int], None] | None]] = {}
        self._arrived: set[tuple[int, int]] = set()
        self._handled = 0
        self._in_flight = 0
        self._progress = time.monotonic()
        self._cv = threading.Condition()
        self._links: Links | None = None

    # -- called by the links ------------------------------------------------------------------

    def target(self, step: int, segment: int) -> tuple[memoryview, Callable[[int, int], None] | None] | None:
        """Where segment (step, segment) lands, and what to call for each byte range ``[lo, hi)`` of
        it as soon as that range is in (None: nothing before ``arrived``); None if unexpected."""
        key = (step, segment)
        found = self._targets.get(key)
        if found is None or key in self._arrived:
            return None
        piece = found[2]
        return found[0], None if piece is None else partial(self._piece, piece, step, segment)

    def _piece(self, piece: Callable[[int, int], None], step: int, segment: int, lo: int, hi: int) -> None:
        if self.error is not None:
            return
        try:
            piece(lo, hi)
        except Exception as exc:  # noqa: BLE001 - fail the op, not the lane thread
            self.fail(f"handling step {step} segment {segment}: {exc}")

    def arrived(self, step: int, segment: int, nbytes: int) -> None:
        with self._cv:
            self._arrived.add((step, segment))
            self.bytes_received += nbytes
        handler = self._targets[(step, segment)][1]
        try:
            if handler is not None and self.error is None:
                handler()
        except Exception as exc:  # noqa: BLE001 - a bad value (non-finite for a codec), closed links: fail the op
            self.fail(f"handling step {step} segment {segment}: {exc}")
        with self._cv:
            self._handled += 1
            self._progress = time.monotonic()
            self._wake_if_done()

    def sent(self, nbytes: int) -> None:
        with self._cv:
            self._in_flight -= 1
            self.bytes_sent += nbytes
            self._progress = time.monotonic()
            self._wake_if_done()

    def _wake_if_done(self) -> None:
        """Wake ``run`` once everything is in and out (not for every segment: each wake-up costs
        the lane threads the GIL); it notices stalls from ``_progress`` on its own."""
        if self._handled == len(self._targets) and not self._in_flight:
            self._cv.notify_all()

    def fail(self, reason: str) -> None:
        with self._cv:
            if self.error is None:
                self.error = reason
            self._cv.notify_all()

    # -- used by the collectives --------------------------------------------------------------

    def _expect(self, step: int, segment: int, view: np.ndarray, handler: Callable[[], None] | None = None,
                piece: Callable[[int, int], None] | None = None) -> None:
        """Segment (step, segment) lands in ``view``; ``piece(lo, hi)`` runs for each byte range of
        it as it comes in, then ``handler()`` once it is all in (both in the lane thread)."""
        self._targets[(step, segment)] = (memoryview(_bytes(view)), handler, piece)

    def _post(self, step: int, segment: int, view: np.ndarray) -> None:
        assert self._links is not None
        with self._cv:
            self._in_flight += 1
        try:
            self._links.send(self, segment, step, segment, memoryview(_bytes(view)))
        except BaseException:
            with self._cv:
                self._in_flight -= 1
            raise

    def run(self, links: Links) -> None:
        """Move the data; ConnectionError / TimeoutError if the links fail or stall."""
        self._links = links
        links.register(self)
        try:
            self._start()
            self._finish()
        finally:
            links.unregister(self)

    def _finish(self) -> None:
        with self._cv:
            while self._handled < len(self._targets) or self._in_flight:
                if self.error is not None:
                    raise ConnectionError(self.error)
                left = self._progress + self.stall_timeout - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"collective {self.op_id}: no data moved for {self.stall_timeout:.0f} s "
                                       f"({self._handled} of {len(self._targets)} segments in)")
                self._cv.wait(left)
            if self.error is not None:
                raise ConnectionError(self.error)

    def _start(self) -> None:
        """Post the first sends (in the caller's thread)."""
        raise NotImplementedError


class AllReduce(RingOp):
    """``out = op(x over all peers)``, ``x`` and ``out`` flat and of one dtype; ``codec`` quantizes."""

    def __init__(self, op_id: int, rank: int, n: int, x: np.ndarray, out: np.ndarray, op: str,
                 codec=None, segment_bytes: int = 1 << 20, stall_timeout: float = 30.0) -> None:
        super().__init__(op_id, rank, n, stall_timeout)
        self.x, self.out, self.op, self.codec = x, out, op, codec
        self.ufunc = _UFUNCS[op]
        seg = max(1, segment_bytes // x.itemsize)
        if codec is not None:
            seg = max(codec.block, seg // codec.block * codec.block)
        bounds = [c * x.size // n for c in range(n + 1)]
        self.segs = [_segments(bounds[c], bounds[c + 1], seg) for c in range(n)]
        if codec is not None:
            self._alloc_payloads()
        for s in range(n - 1):
            chunk = self._rs_recv(s)
            for j, (a, b) in enumerate(self.segs[chunk]):
                if codec is None:  # combined piece by piece as it arrives, while it is in the cache
                    self._expect(s, j, out[a:b], partial(self._reduced, s, j, chunk, a, b),
                                 partial(self._combine_piece, a))
                else:
                    self._expect(s, j, self.payload[("in", s, j)], partial(self._reduced, s, j, chunk, a, b))
            chunk = self._ag_recv(s)
            for j, (a, b) in enumerate(self.segs[chunk]):
                view = out[a:b] if codec is None else self.payload[("ag", chunk, j)]
                self._expect(n - 1 + s, j, view, partial(self._gathered, s, j, a, b, view))

    def _rs_recv(self, s: int) -> int:
        return (self.rank - s - 1) % self.n

    def _ag_recv(self, s: int) -> int:
        return (self.rank - s) % self.n

    def _alloc_payloads(self) -> None:
        """Payload regions: reduce-scatter sends and receives per (step, segment), all-gather per chunk."""
        n, size = self.n, self.codec.payload_nbytes
        layout: dict[tuple, tuple[int, int]] = {}
        total = 0
        for s in range(n - 1):
            for kind, chunk in (("out", (self.rank - s) % n), ("in", self._rs_recv(s))):
                for j, (a, b) in enumerate(self.segs[chunk]):
                    layout[(kind, s, j)] = (total, size(b - a))
                    total += size(b - a)
        for c in range(n):
            for j, (a, b) in enumerate(self.segs[c]):
                layout[("ag", c, j)] = (total, size(b - a))
                total += size(b - a)
        buf = np.empty(total, np.uint8)
        self.payload = {key: buf[off:off + nb] for key, (off, nb) in layout.items()}

    def _start(self) -> None:
        x = self.x
        if self.n == 1:
            np.copyto(self.out, x)
            return
        for j, (a, b) in enumerate(self.segs[self.rank]):
            self._post(0, j, x[a:b] if self.codec is None else self.codec.encode(x[a:b], out=self.payload[("out", 0, j)]))

    def _reduced(self, s: int, j: int, chunk: int, a: int, b: int) -> None:
        """Reduce-scatter segment in: combine it with ours (quantized; exact ones are combined
        already), pass it on (or finish the owned chunk)."""
        if self.codec is not None:
            self._combine(s, j, a, b)
        out = self.out[a:b]
        if s < self.n - 2:
            self._post(s + 1, j, out if self.codec is None else
                       self.codec.encode(out, out=self.payload[("out", s + 1, j)]))
        else:
            self._post(self.n - 1, j, self._finalize(chunk, j, a, b))

    def _gathered(self, s: int, j: int, a: int, b: int, view: np.ndarray) -> None:
        """All-gather segment in (already in place, or decoded now): pass it on unless the ring is done."""
        if self.codec is not None:
            self._decode(view, self.out[a:b])
        if s < self.n - 2:
            self._post(self.n + s, j, view)

    def _combine_piece(self, a: int, lo: int, hi: int) -> None:
        """Bytes [lo, hi) of the segment starting at element ``a`` are in ``out``: combine them with ours."""
        size = self.x.itemsize
        lo, hi = a + lo // size, a + hi // size
        out = self.out[lo:hi]
        self.ufunc(out, self.x[lo:hi], out=out)

    def _combine(self, s: int, j: int, a: int, b: int) -> None:
        """out[a:b] = op(x[a:b], what arrived for (s, j))."""
        x, out = self.x[a:b], self.out[a:b]
        if self.codec is None:
            self.ufunc(out, x, out=out)
        elif self.ufunc is np.add and out.dtype == np.float32:
            np.copyto(out, x)
            self.codec.decode_add(self.payload[("in", s, j)], out)
        else:
            self.ufunc(x, self.codec.decode(self.payload[("in", s, j)], np.empty(b - a, np.float32)), out=out)

    def _finalize(self, chunk: int, j: int, a: int, b: int) -> np.ndarray:
        """This peer owns ``chunk``: average it, quantize it once (keeping the decoded values)."""
        out = self.out[a:b]
        if self.op == "avg":
            np.divide(out, self.n, out=out)
        if self.codec is None:
            return out
        payload = self.codec.encode(out, out=self.payload[("ag", chunk, j)])
        self._decode(payload, out)
        return payload

    def _decode(self, payload: np.ndarray, out: np.ndarray) -> None:
        if out.dtype == np.float32:
            self.codec.decode(payload, out)
        else:
            out[...] = self.codec.decode(payload, np.empty(out.size, np.float32))


class AllGather(RingOp):
    """``out[c]`` = peer ``c``'s ``x`` (``out`` flat, n * x.size)."""

    def __init__(self, op_id: int, rank: int, n: int, x: np.ndarray, out: np.ndarray,
                 segment_bytes: int = 1 << 20, stall_timeout: float = 30.0) -> None:
        super().__init__(op_id, rank, n, stall_timeout)
        self.x, self.out, self.count = x, out, x.size
        self.segs = _segments(0, x.size, max(1, segment_bytes // max(1, x.itemsize)))
        for s in range(n - 1):
            base = (rank - s - 1) % n * self.count
            for j, (a, b) in enumerate(self.segs):
                view = out[base + a:base + b]
                self._expect(s, j, view, partial(self._post, s + 1, j, view) if s < n - 2 else None)

    def _start(self) -> None:
        r, c = self.rank, self.count
        self.out[r * c:(r + 1) * c] = self.x
        if self.n > 1:
            for j, (a, b) in enumerate(self.segs):
                self._post(0, j, self.x[a:b])


class Broadcast(RingOp):
    """The ring position ``root``'s ``buf`` into every peer's ``buf`` (flat, in place), pipelined."""

    def __init__(self, op_id: int, rank: int, n: int, buf: np.ndarray, root: int,
                 segment_bytes: int = 1 << 20, stall_timeout: float = 30.0) -> None:
        super().__init__(op_id, rank, n, stall_timeout)
        self.buf = buf
        self.hops = (rank - root) % n  # 0 for the root
        self.segs = _segments(0, buf.size, max(1, segment_bytes // max(1, buf.itemsize)))
        if self.hops:
            forward = self.hops < n - 1
            for j, (a, b) in enumerate(self.segs):
                view = buf[a:b]
                self._expect(0, j, view, partial(self._post, 0, j, view) if forward else None)

    def _start(self) -> None:
        if self.hops == 0 and self.n > 1:
            for j, (a, b) in enumerate(self.segs):
                self._post(0, j, self.buf[a:b])
