"""Walk an mpi4py datatype with Get_envelope/Get_contents into a small layout tree.

The tree has four node kinds, all in bytes and in typemap order:
``Dense(n)`` (n contiguous bytes at offset 0), ``Repeat(child, count, stride)``,
``Seq(((disp, child), ...))`` and ``Indexed(child, disps, blocklens, extent)`` (numpy arrays,
so a million-block indexed type stays three arrays). Extents come from MPI itself, so resized types, struct
padding and markers need no special rules here.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from mpi4py import MPI

__all__ = ["Dense", "Repeat", "Seq", "Indexed", "Node", "translate", "UnsupportedDatatype"]


class UnsupportedDatatype(Exception):
    """The datatype has a combiner the engine cannot express; MPI's own Pack handles it."""


@dataclass(frozen=True)
class Dense:
    nbytes: int


@dataclass(frozen=True)
class Repeat:
    child: "Node"
    count: int
    stride: int


@dataclass(frozen=True)
class Seq:
    items: tuple[tuple[int, "Node"], ...]


@dataclass(frozen=True, eq=False)
class Indexed:
    """``blocklens[i]`` copies of ``child`` (spaced ``extent``) at byte displacement ``disps[i]``."""

    child: "Node"
    disps: np.ndarray
    blocklens: np.ndarray
    extent: int


Node = Dense | Repeat | Seq | Indexed

# Named "pair" types: a value then an int, possibly with a hole between them (MPI_SHORT_INT).
_PAIRS = {
    pair.handle: first for pair, first in (
        (MPI.SHORT_INT, MPI.SHORT), (MPI.FLOAT_INT, MPI.FLOAT), (MPI.DOUBLE_INT, MPI.DOUBLE),
        (MPI.LONG_INT, MPI.LONG), (MPI.LONG_DOUBLE_INT, MPI.LONG_DOUBLE), (MPI.TWOINT, MPI.INT),
    )
}
_F90 = {MPI.COMBINER_F90_REAL, MPI.COMBINER_F90_COMPLEX, MPI.COMBINER_F90_INTEGER}


def translate(dt: MPI.Datatype) -> Node:
    """The layout tree of ``dt`` (committed or not), or UnsupportedDatatype."""
    combiner = dt.Get_envelope()[-1]
    if combiner == MPI.COMBINER_NAMED or combiner in _F90:
        return _named(dt)
    ints, addrs, counts, types = dt.Get_contents()
    try:
        if counts:
            raise UnsupportedDatatype(f"large-count constructor (combiner {combiner})")
        return _derived(combiner, ints, addrs, types)
    finally:
        for t in types:
            if not t.is_predefined:
                t.Free()


def _named(dt: MPI.Datatype) -> Node:
    if dt.size == dt.true_extent and dt.true_lb == 0:
        return Dense(dt.size)
    first = _PAIRS.get(dt.handle)
    if first is None:
        raise UnsupportedDatatype(f"named type {dt.Get_name()} with holes")
    return Seq(((0, Dense(first.size)), (dt.true_extent - MPI.INT.size, Dense(MPI.INT.size))))


def _block(child: Node, count: int, extent: int) -> Node:
    return child if count == 1 else Repeat(child, count, extent)


def _derived(combiner: int, ints: list[int], addrs: list[int], types: list[MPI.Datatype]) -> Node:
    if combiner == MPI.COMBINER_DUP or combiner == MPI.COMBINER_RESIZED:
        return translate(types[0])
    if combiner == MPI.COMBINER_STRUCT:
        n = ints[0]
        return Seq(tuple(
            (addrs[i], _block(translate(t), ints[1 + i], t.extent)) for i, t in enumerate(types[:n])
        ))
    base = types[0]
    child, ext = translate(base), base.extent
    if combiner == MPI.COMBINER_CONTIGUOUS:
        return Repeat(child, ints[0], ext)
    if combiner == MPI.COMBINER_VECTOR:
        return Repeat(_block(child, ints[1], ext), ints[0], ints[2] * ext)
    if combiner == MPI.COMBINER_HVECTOR:
        return Repeat(_block(child, ints[1], ext), ints[0], addrs[0])
    if combiner in (MPI.COMBINER_INDEXED, MPI.COMBINER_HINDEXED):
        n = ints[0]
        lens = np.array(ints[1:1 + n], dtype=np.int64)
        if combiner == MPI.COMBINER_INDEXED:
            return Indexed(child, np.array(ints[1 + n:1 + 2 * n], dtype=np.int64) * ext, lens, ext)
        return Indexed(child, np.array(addrs, dtype=np.int64), lens, ext)
    if combiner in (MPI.COMBINER_INDEXED_BLOCK, MPI.COMBINER_HINDEXED_BLOCK):
        n, blen = ints[0], ints[1]
        lens = np.full(n, blen, dtype=np.int64)
        if combiner == MPI.COMBINER_INDEXED_BLOCK:
            return Indexed(child, np.array(ints[2:2 + n], dtype=np.int64) * ext, lens, ext)
        return Indexed(child, np.array(addrs, dtype=np.int64), lens, ext)
    if combiner == MPI.COMBINER_SUBARRAY:
        nd = ints[0]
        sizes, subs, starts = ints[1:1 + nd], ints[1 + nd:1 + 2 * nd], ints[1 + 2 * nd:1 + 3 * nd]
        runs = [[(s, n)] for s, n in zip(starts, subs)]
        return _grid(child, ext, sizes, runs, ints[1 + 3 * nd])
    if combiner == MPI.COMBINER_DARRAY:
        return _darray(child, ext, ints)
    raise UnsupportedDatatype(f"combiner {combiner}")


def _grid(child: Node, ext: int, sizes: list[int], runs: list[list[tuple[int, int]]], order: int) -> Node:
    """An n-d array of ``child`` of shape ``sizes``; per dim the owned index runs (start, length)."""
    if order == MPI.ORDER_FORTRAN:
        sizes, runs = sizes[::-1], runs[::-1]
    strides = [ext * p for p in _suffix_products(sizes)]
    node = child
    for dim in reversed(range(len(sizes))):
        st = strides[dim]
        node = Seq(tuple((start * st, _block(node, n, st)) for start, n in runs[dim] if n > 0))
    return node


def _suffix_products(sizes: list[int]) -> list[int]:
    out, acc = [], 1
    for s in reversed(sizes):
        out.append(acc)
        acc *= s
    return out[::-1]


def _darray(child: Node, ext: int, ints: list[int]) -> Node:
    rank, nd = ints[1], ints[2]  # ints[0] is the process count; psizes say the same
    gsizes = ints[3:3 + nd]
    distribs = ints[3 + nd:3 + 2 * nd]
    dargs = ints[3 + 2 * nd:3 + 3 * nd]
    psizes = ints[3 + 3 * nd:3 + 4 * nd]
    order = ints[3 + 4 * nd]
    coords, r = [], rank  # the process grid is row-major whatever the array order
    for p in reversed(psizes):
        coords.append(r % p)
        r //= p
    coords.reverse()
    runs = [_owned_runs(g, d, a, p, c) for g, d, a, p, c in zip(gsizes, distribs, dargs, psizes, coords)]
    return _grid(child, ext, gsizes, runs, order)


def _owned_runs(g: int, distrib: int, darg: int, p: int, c: int) -> list[tuple[int, int]]:
    """Index runs (start, length) of one dimension owned by process coordinate c."""
    if distrib == MPI.DISTRIBUTE_NONE:
        return [(0, g)]
    if distrib == MPI.DISTRIBUTE_BLOCK:
        b = -(-g // p) if darg == MPI.DISTRIBUTE_DFLT_DARG else darg
        lo = min(c * b, g)
        return [(lo, min(lo + b, g) - lo)]
    k = 1 if darg == MPI.DISTRIBUTE_DFLT_DARG else darg
    return [(s, min(k, g - s)) for s in range(c * k, g, p * k)]
