"""Flat collective algorithms on numpy arrays over mpi4py point-to-point messages.

Each function takes a communicator and a C-contiguous array and returns a new array; the same
value arrives on every rank (operands are always combined lower rank first, so floating-point
results are bit-identical across ranks). Reductions: sum, prod, max, min.

- ``ring_allreduce``: reduce-scatter then allgather around a ring, 2(p-1)/p x n bytes per rank
  (bandwidth-optimal; latency 2(p-1) steps). ``order`` gives the ring's rank order.
- ``recursive_doubling_allreduce``: log2(p) exchanges of the whole array (latency-optimal).
- ``rabenseifner_allreduce``: recursive-halving reduce-scatter + recursive-doubling allgather.
- ``binomial_bcast`` / ``binomial_reduce``: trees of depth log2(p).

Rank counts that are not powers of two are folded first: the extra ranks hand their data to a
partner, wait, and get the result back.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mpi4py import MPI

__all__ = ["REDUCE", "chunk_bounds", "ring_reduce_scatter", "ring_allgather", "ring_allreduce", "recursive_doubling_allreduce", "rabenseifner_allreduce",
           "binomial_bcast", "binomial_reduce"]

REDUCE = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
_TAG = 7300


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


def ring_reduce_scatter(comm: MPI.Comm, flat: np.ndarray, op: str, order: Sequence[int]) -> int:
    """Reduce the 1-D ``flat`` in place around the ring ``order``; return the index of the
    chunk (of ``chunk_bounds(flat.size, p)``) this rank now holds fully reduced: position pos in the
    ring holds chunk (pos + 1) % p. Each chunk is combined once, along the ring from its first
    holder, so every rank that later receives it gets the same bits."""
    p = comm.size
    pos = order.index(comm.rank)
    if p == 1:
        return 0
    right, left = order[(pos + 1) % p], order[(pos - 1) % p]
    chunks = chunk_bounds(flat.size, p)
    incoming = np.empty(max(b - a for a, b in chunks), dtype=flat.dtype)
    for step in range(p - 1):
        send_a, send_b = chunks[(pos - step) % p]
        recv_a, recv_b = chunks[(pos - step - 1) % p]
        got = incoming[:recv_b - recv_a]
        comm.Sendrecv(flat[send_a:send_b], right, _TAG, got, left, _TAG)
        mine = flat[recv_a:recv_b]
        _combine(op, got, mine, mine)  # the partial result so far, then this rank's own data
    return (pos + 1) % p


def ring_allgather(comm: MPI.Comm, flat: np.ndarray, order: Sequence[int]) -> None:
    """Spread the chunks ``ring_reduce_scatter`` left (position pos holds chunk (pos + 1) % p)."""
    p = comm.size
    pos = order.index(comm.rank)
    right, left = order[(pos + 1) % p], order[(pos - 1) % p]
    chunks = chunk_bounds(flat.size, p)
    for step in range(p - 1):
        send_a, send_b = chunks[(pos + 1 - step) % p]
        recv_a, recv_b = chunks[(pos - step) % p]
        comm.Sendrecv(flat[send_a:send_b], right, _TAG + 1, flat[recv_a:recv_b], left, _TAG + 1)


def ring_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum", order: Sequence[int] | None = None) -> np.ndarray:
    """Ring reduce-scatter + allgather; ``order`` is the ring (default: rank order)."""
    order = list(order) if order is not None else list(range(comm.size))
    acc = np.array(array, copy=True)
    flat = acc.reshape(-1)
    ring_reduce_scatter(comm, flat, op, order)
    ring_allgather(comm, flat, order)
    return acc


def _fold(comm: MPI.Comm, acc: np.ndarray, op: str) -> tuple[int, int]:
    """Fold p ranks onto the largest power of two p2 <= p: of the first 2(p - p2) ranks, the odd
    ones send their data to their even partner and sit out. Returns (p2, new rank or -1)."""
    p, rank = comm.size, comm.rank
    p2 = 1 << (p.bit_length() - 1)
    extra = p - p2
    if rank < 2 * extra:
        if rank % 2:
            comm.Send(acc, rank - 1, _TAG + 2)
            return p2, -1
        other = np.empty_like(acc)
        comm.Recv(other, rank + 1, _TAG + 2)
        _combine(op, acc, other, acc)
        return p2, rank // 2
    return p2, rank - extra


def _real(vrank: int, extra: int) -> int:
    """The rank behind folded rank ``vrank``."""
    return 2 * vrank if vrank < extra else vrank + extra


def _unfold(comm: MPI.Comm, acc: np.ndarray, p2: int) -> None:
    extra = comm.size - p2
    if comm.rank < 2 * extra:
        if comm.rank % 2:
            comm.Recv(acc, comm.rank - 1, _TAG + 3)
        else:
            comm.Send(acc, comm.rank + 1, _TAG + 3)


def recursive_doubling_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum") -> np.ndarray:
    """log2(p) rounds, each exchanging the whole array with the partner at distance 2^k."""
    acc = np.array(array, copy=True)
    p2, vrank = _fold(comm, acc, op)
    if vrank >= 0:
        extra = comm.size - p2
        other = np.empty_like(acc)
        mask = 1
        while mask < p2:
            vpeer = vrank ^ mask
            comm.Sendrecv(acc, _real(vpeer, extra), _TAG + 4, other, _real(vpeer, extra), _TAG + 4)
            if vpeer < vrank:
                _combine(op, other, acc, acc)
            else:
                _combine(op, acc, other, acc)
            mask <<= 1
    _unfold(comm, acc, p2)
    return acc


def rabenseifner_allreduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum") -> np.ndarray:
    """Recursive-halving reduce-scatter, then recursive-doubling allgather (n bytes per rank
    instead of n log p): the bandwidth-efficient choice for large arrays."""
    acc = np.array(array, copy=True)
    p2, vrank = _fold(comm, acc, op)
    if vrank >= 0:
        extra = comm.size - p2
        flat = acc.reshape(-1)
        blocks = chunk_bounds(flat.size, p2)
        lo, hi = 0, p2  # the blocks this rank is still responsible for
        other = np.empty_like(flat)
        mask = p2 >> 1
        steps = []
        while mask:  # halving: keep the half of [lo, hi) that contains vrank's block
            vpeer = vrank ^ mask
            mid = (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if vrank < vpeer else ((mid, hi), (lo, mid))
            ka, kb = blocks[keep[0]][0], blocks[keep[1] - 1][1]
            ga, gb = blocks[give[0]][0], blocks[give[1] - 1][1]
            got = other[:kb - ka]
            comm.Sendrecv(flat[ga:gb], _real(vpeer, extra), _TAG + 5, got, _real(vpeer, extra), _TAG + 5)
            mine = flat[ka:kb]
            if vpeer < vrank:
                _combine(op, got, mine, mine)
            else:
                _combine(op, mine, got, mine)
            steps.append((vpeer, keep, give))
            lo, hi = keep
            mask >>= 1
        for vpeer, keep, give in reversed(steps):  # doubling: hand back what was kept
            ka, kb = blocks[keep[0]][0], blocks[keep[1] - 1][1]
            ga, gb = blocks[give[0]][0], blocks[give[1] - 1][1]
            comm.Sendrecv(flat[ka:kb], _real(vpeer, extra), _TAG + 6, flat[ga:gb], _real(vpeer, extra), _TAG + 6)
    _unfold(comm, acc, p2)
    return acc


def binomial_bcast(comm: MPI.Comm, array: np.ndarray, root: int = 0) -> np.ndarray:
    """``root``'s array on every rank, down a binomial tree (in place; returned)."""
    p, vrank = comm.size, (comm.rank - root) % comm.size
    mask = 1
    while mask < p:  # receive from the parent: the rank that differs in the lowest set bit
        if vrank & mask:
            comm.Recv(array, (vrank - mask + root) % p, _TAG + 7)
            break
        mask <<= 1
    mask >>= 1
    while mask:
        if vrank + mask < p:
            comm.Send(array, (vrank + mask + root) % p, _TAG + 7)
        mask >>= 1
    return array


def binomial_reduce(comm: MPI.Comm, array: np.ndarray, op: str = "sum", root: int = 0) -> np.ndarray | None:
    """The reduction on ``root`` (None elsewhere), up a binomial tree. Operands combine in
    rank order relative to the root."""
    p, vrank = comm.size, (comm.rank - root) % comm.size
    acc, other = np.array(array, copy=True), np.empty_like(array)
    mask = 1
    while mask < p:
        if vrank & mask:
            comm.Send(acc, (vrank - mask + root) % p, _TAG + 8)
            return None
        if vrank + mask < p:
            comm.Recv(other, (vrank + mask + root) % p, _TAG + 8)
            _combine(op, acc, other, acc)
        mask <<= 1
    return acc
