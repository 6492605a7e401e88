"""Flat collective algorithms on numpy arrays over mpi4py point-to-point messages.

Each algorithm is written once, as a generator of nonblocking steps (``*_steps``, driven by
``schedule.run`` or several at once by ``schedule.run_pipelined``), and offered as a plain
function that takes a communicator and an array and returns a new array. The same value arrives
on every rank (operands are always combined in the same order, so floating-point results are
bit-identical across ranks). Reductions: sum, prod, max, min.

- ring reduce-scatter / allgather / allreduce: 2(p-1)/p x n bytes per rank (bandwidth-optimal;
  2(p-1) steps). ``order`` gives the ring's rank order (e.g. one that follows the nodes).
- recursive doubling allreduce: log2(p) exchanges of the whole array (latency-optimal).
- Rabenseifner allreduce: recursive-halving reduce-scatter + recursive-doubling allgather.
- binomial bcast / reduce: trees of depth log2(p).

Rank counts that are not powers of two are folded first: the extra ranks hand their data to a
partner, wait, and get the result back.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from mpi4py import MPI

from ..comms.pool import host_pool
from .schedule import Steps, run

__all__ = [
    "FLAT_ALLREDUCE",
    "FLAT_ALLREDUCE_FN",
    "REDUCE",
    "binomial_bcast",
    "binomial_bcast_steps",
    "binomial_reduce",
    "binomial_reduce_steps",
    "block_ring_chunks",
    "chunk_bounds",
    "rabenseifner_allreduce",
    "rabenseifner_steps",
    "recursive_doubling_allgather_steps",
    "recursive_doubling_allreduce",
    "recursive_doubling_steps",
    "recursive_halving_reduce_scatter_steps",
    "ring_allgather",
    "ring_allgather_steps",
    "ring_allreduce",
    "ring_allreduce_steps",
    "ring_reduce_scatter",
    "ring_reduce_scatter_steps",
]

REDUCE = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
TAG = 7300  # tags TAG + 0..15 per call; concurrent calls pass tag=TAG + 16 k


@contextmanager
def scratch(count: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """A 1-D work array of ``count`` items from the buffer pool (a fresh one would cost page
    faults on first touch every call), given back afterwards."""
    dtype = np.dtype(dtype)
    buf = host_pool.take(max(count, 1) * dtype.itemsize)
    try:
        yield buf.view(dtype)[:count]
    finally:
        host_pool.give(buf)


def _combine(op: str, lower: np.ndarray, upper: np.ndarray, out: np.ndarray) -> None:
    """out = lower (op) upper, lower rank's operand first."""
    REDUCE[op](lower, upper, out=out)


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` nearly equal slices of ``n`` items (the first ones one longer)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (i < extra)
        out.append((start, stop))
        start = stop
    return out


def _sendrecv(comm: MPI.Comm, send: np.ndarray, dest: int, recv: np.ndarray, source: int, tag: int) -> list:
    return [comm.Irecv(recv, source, tag), comm.Isend(send, dest, tag)]


def ring_reduce_scatter_steps(comm: MPI.Comm, flat: np.ndarray, op: str, order: Sequence[int],
                              chunks: Sequence[tuple[int, int]] | None = None, tag: int = TAG,
                              source: np.ndarray | None = None) -> Steps:
    """Reduce the 1-D ``flat`` in place around the ring ``order``; return the index of the chunk
    (of ``chunks``, default ``chunk_bounds(flat.size, p)``) this rank then holds fully reduced:
    position pos in the ring holds chunk (pos + 1) % p. Each chunk is combined once, along the
    ring from its first holder, so every rank that later receives it gets the same bits.
    With ``source`` this rank's data is read from there and ``flat`` is only written (every
    chunk but this position's own, which ``ring_allgather_steps`` fills): no copy up front."""
    p = comm.size
    pos = order.index(comm.rank)
    if p == 1:
        return 0
    right, left = order[(pos + 1) % p], order[(pos - 1) % p]
    chunks = chunks or chunk_bounds(flat.size, p)
    source = flat if source is None else source
    with scratch(max(b - a for a, b in chunks), flat.dtype) as incoming:
        for step in range(p - 1):
            send_a, send_b = chunks[(pos - step) % p]
            recv_a, recv_b = chunks[(pos - step - 1) % p]
            got = incoming[:recv_b - recv_a]
            yield _sendrecv(comm, (source if step == 0 else flat)[send_a:send_b], right, got, left, tag)
            # the partial result so far, then this rank's own data
            _combine(op, got, source[recv_a:recv_b], flat[recv_a:recv_b])
    return (pos + 1) % p


def ring_allgather_steps(comm: MPI.Comm, flat: np.ndarray, order: Sequence[int],
                         chunks: Sequence[tuple[int, int]] | None = None, tag: int = TAG + 1) -> Steps:
    """Spread the chunks ``ring_reduce_scatter_steps`` left (position pos holds chunk (pos + 1) % p)."""
    p = comm.size
    pos = order.index(comm.rank)
    right, left = order[(pos + 1) % p], order[(pos - 1) % p]
    chunks = chunks or chunk_bounds(flat.size, p)
    for step in range(p - 1):
        send_a, send_b = chunks[(pos + 1 - step) % p]
        recv_a, recv_b = chunks[(pos - step) % p]
        yield _sendrecv(comm, flat[send_a:send_b], right, flat[recv_a:recv_b], left, tag)


def ring_allreduce_steps(comm: MPI.Comm, flat: np.ndarray, op: str, order: Sequence[int] | None = None,
                         tag: int = TAG) -> Steps:
    """Ring reduce-scatter + allgather of ``flat`` in place; ``order`` is the ring (default: rank order)."""
    order = list(order) if order is not None else list(range(comm.size))
    yield from ring_reduce_scatter_steps(comm, flat, op, order, tag=tag)
    yield from ring_allgather_steps(comm, flat, order, tag=tag + 1)


def _fold_steps(comm: MPI.Comm, acc: np.ndarray, op: str, tag: int) -> Steps:
    """Fold p ranks onto the largest power of two p2 <= p: of the first 2(p - p2) ranks, the odd
    ones send their data to their even partner and sit out. Returns (p2, new rank or -1)."""
    p, rank = comm.size, comm.rank
    p2 = 1 << (p.bit_length() - 1)
    extra = p - p2
    if rank < 2 * extra:
        if rank % 2:
            yield [comm.Isend(acc, rank - 1, tag)]
            return p2, -1
        other = np.empty_like(acc)
        yield [comm.Irecv(other, rank + 1, tag)]
        _combine(op, acc, other, acc)
        return p2, rank // 2
    return p2, rank - extra


def _real(vrank: int, extra: int) -> int:
    """The rank behind folded rank ``vrank``."""
    return 2 * vrank if vrank < extra else vrank + extra


def _unfold_steps(comm: MPI.Comm, acc: np.ndarray, p2: int, tag: int) -> Steps:
    extra = comm.size - p2
    if comm.rank < 2 * extra:
        if comm.rank % 2:
            yield [comm.Irecv(acc, comm.rank - 1, tag)]
        else:
            yield [comm.Isend(acc, comm.rank + 1, tag)]


def recursive_doubling_steps(comm: MPI.Comm, acc: np.ndarray, op: str, tag: int = TAG) -> Steps:
    """log2(p) rounds in place, each exchanging the whole array with the partner at distance 2^k."""
    p2, vrank = yield from _fold_steps(comm, acc, op, tag + 2)
    if vrank >= 0:
        extra = comm.size - p2
        with scratch(acc.size, acc.dtype) as buf:
            other = buf.reshape(acc.shape)
            mask = 1
            while mask < p2:
                peer = _real(vrank ^ mask, extra)
                yield _sendrecv(comm, acc, peer, other, peer, tag + 4)
                if vrank ^ mask < vrank:
                    _combine(op, other, acc, acc)
                else:
                    _combine(op, acc, other, acc)
                mask <<= 1
    yield from _unfold_steps(comm, acc, p2, tag + 3)


def rabenseifner_steps(comm: MPI.Comm, acc: np.ndarray, op: str, tag: int = TAG) -> Steps:
    """Recursive-halving reduce-scatter, then recursive-doubling allgather, in place (n bytes per
    rank instead of n log p): the bandwidth-efficient choice for large arrays."""
    p2, vrank = yield from _fold_steps(comm, acc, op, tag + 2)
    if vrank >= 0:
        extra = comm.size - p2
        flat = acc.reshape(-1)
        real = [_real(v, extra) for v in range(p2)]
        exchanges = yield from _halving_steps(comm, flat, op, vrank, real, tag + 5)
        yield from _doubling_steps(comm, flat, exchanges, real, tag + 6)
    yield from _unfold_steps(comm, acc, p2, tag + 3)


def _halving_steps(comm: MPI.Comm, flat: np.ndarray, op: str, vrank: int, real: list[int], tag: int) -> Steps:
    """Recursive halving among the p2 = len(real) ranks ``real`` (vrank: this rank's index):
    afterwards block vrank of ``chunk_bounds(flat.size, p2)`` is reduced here. Returns the
    exchanges [(peer, kept span, given span)] for ``_doubling_steps``."""
    p2 = len(real)
    blocks = chunk_bounds(flat.size, p2)
    span = lambda lo, hi: (blocks[lo][0], blocks[hi - 1][1])
    lo, hi = 0, p2  # the blocks this rank is still responsible for
    mask = p2 >> 1
    exchanges = []
    with scratch((flat.size + 1) // 2, flat.dtype) as other:
        while mask:  # keep the half of [lo, hi) that contains vrank's block
            vpeer = vrank ^ mask
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if vrank < vpeer else ((mid, hi), (lo, mid))
            (ka, kb), (ga, gb) = span(*keep), span(*give)
            got = other[:kb - ka]
            yield _sendrecv(comm, flat[ga:gb], real[vpeer], got, real[vpeer], tag)
            mine = flat[ka:kb]
            if vpeer < vrank:
                _combine(op, got, mine, mine)
            else:
                _combine(op, mine, got, mine)
            exchanges.append((real[vpeer], (ka, kb), (ga, gb)))
            lo, hi = keep
            mask >>= 1
    return exchanges


def _doubling_steps(comm: MPI.Comm, flat: np.ndarray, exchanges: list, real: list[int], tag: int) -> Steps:
    """Undo ``_halving_steps``' split: hand every kept span to the partner it was kept from."""
    for peer, (ka, kb), (ga, gb) in reversed(exchanges):
        yield _sendrecv(comm, flat[ka:kb], peer, flat[ga:gb], peer, tag)


def recursive_halving_reduce_scatter_steps(comm: MPI.Comm, flat: np.ndarray, op: str, tag: int = TAG) -> Steps:
    """Reduce ``flat`` so that rank r holds block r of ``chunk_bounds(flat.size, p)`` (p a power of two)."""
    p = comm.size
    if p & (p - 1):
        raise ValueError(f"recursive halving needs a power-of-two rank count, got {p}")
    yield from _halving_steps(comm, flat, op, comm.rank, list(range(p)), tag)


def recursive_doubling_allgather_steps(comm: MPI.Comm, flat: np.ndarray, tag: int = TAG + 1) -> Steps:
    """Fill ``flat`` from every rank's block r of ``chunk_bounds(flat.size, p)`` (p a power of two):
    log2(p) exchanges of doubling size."""
    p, rank = comm.size, comm.rank
    if p & (p - 1):
        raise ValueError(f"recursive doubling allgather needs a power-of-two rank count, got {p}")
    blocks = chunk_bounds(flat.size, p)
    mask = 1
    while mask < p:
        mine, theirs = rank & ~(mask - 1), (rank ^ mask) & ~(mask - 1)
        send = slice(blocks[mine][0], blocks[mine + mask - 1][1])
        recv = slice(blocks[theirs][0], blocks[theirs + mask - 1][1])
        yield _sendrecv(comm, flat[send], rank ^ mask, flat[recv], rank ^ mask, tag)
        mask <<= 1


def block_ring_chunks(bounds: Sequence[tuple[int, int]], order: Sequence[int]) -> list[tuple[int, int]]:
    """Chunks for the ring functions such that ring position pos ends with block ``order[pos]``
    (reduce-scatter) or starts from it (allgather)."""
    p = len(order)
    return [bounds[order[(k - 1) % p]] for k in range(p)]


def binomial_bcast_steps(comm: MPI.Comm, array: np.ndarray, root: int = 0, tag: int = TAG + 7) -> Steps:
    """``root``'s array into ``array`` on every rank, down a binomial tree."""
    p, vrank = comm.size, (comm.rank - root) % comm.size
    mask = 1
    while mask < p:  # receive from the parent: the rank that differs in the lowest set bit
        if vrank & mask:
            yield [comm.Irecv(array, (vrank - mask + root) % p, tag)]
            break
        mask <<= 1
    mask >>= 1
    sends = []
    while mask:
        if vrank + mask < p:
            sends.append(comm.Isend(array, (vrank + mask + root) % p, tag))
        mask >>= 1
    if sends:
        yield sends


def binomial_reduce_steps(comm: MPI.Comm, acc: np.ndarray, op: str = "sum", root: int = 0,
                          tag: int = TAG + 8) -> Steps:
    """Reduce ``acc`` in place up a binomial tree; True on ``root`` (which then holds the result).
    Operands combine in rank order relative to the root."""
    p, vrank = comm.size, (comm.rank - root) % comm.size
    other = np.empty_like(acc)
    mask = 1
    while mask < p:
        if vrank & mask:
            yield [comm.Isend(acc, (vrank - mask + root) % p, tag)]
            return False
        if vrank + mask < p:
            yield [comm.Irecv(other, (vrank + mask + root) % p, tag)]
            _combine(op, acc, other, acc)
        mask <<= 1
    return True


def ring_reduce_scatter(comm: MPI.Comm, flat: np.ndarray, op: str, order: Sequence[int]) -> int:
    """Blocking ``ring_reduce_scatter_steps``."""
    return run(ring_reduce_scatter_steps(comm, flat, op, order))


def ring_allgather(comm: MPI.Comm, flat: np.ndarray, order: Sequence[int]) -> None:
    """Blocking ``ring_allgather_steps``."""
    run(ring_allgather_steps(comm, flat, order))


def ring_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum", order: Sequence[int] | None = None) -> np.ndarray:
    """Ring reduce-scatter + allgather; ``order`` is the ring (default: rank order)."""
    acc = np.array(array, copy=True)
    run(ring_allreduce_steps(comm, acc.reshape(-1), op, order))
    return acc


def recursive_doubling_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum") -> np.ndarray:
    acc = np.array(array, copy=True)
    run(recursive_doubling_steps(comm, acc, op))
    return acc


def rabenseifner_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum") -> np.ndarray:
    acc = np.array(array, copy=True)
    run(rabenseifner_steps(comm, acc, op))
    return acc


def binomial_bcast(comm: MPI.Comm, array: np.ndarray, root: int = 0) -> np.ndarray:
    """``root``'s array on every rank (in place; returned)."""
    run(binomial_bcast_steps(comm, array, root))
    return array


def binomial_reduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum", root: int = 0) -> np.ndarray | None:
    """The reduction on ``root`` (None elsewhere)."""
    acc = np.array(array, copy=True)
    return acc if run(binomial_reduce_steps(comm, acc, op, root)) else None


# in-place allreduce step generators by name: (comm, flat, op, tag) -> Steps
FLAT_ALLREDUCE = {
    "ring": lambda comm, flat, op, tag=TAG: ring_allreduce_steps(comm, flat, op, tag=tag),
    "recursive_doubling": recursive_doubling_steps,
    "rabenseifner": rabenseifner_steps,
}

# blocking allreduce functions by name: (comm, array, op) -> new array
FLAT_ALLREDUCE_FN = {"ring": ring_allreduce, "recursive_doubling": recursive_doubling_allreduce,
                     "rabenseifner": rabenseifner_allreduce}
