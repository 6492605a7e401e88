"""Reduce a layout tree to its canonical form: one StridedBlock, or a compact BlockList.

Rules, applied bottom-up: drop count-1 dimensions, fold a dimension whose stride equals the
run into the run (dense folding), merge a dimension into the next when the outer stride is
count x inner stride, and recognise block lists whose offsets form a (nested) arithmetic
pattern. Different constructors of the same layout therefore meet in the same form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import BlockList, Layout, StridedBlock, outer_offsets
from .translate import Dense, Indexed, Node, Repeat, Seq, UnsupportedDatatype

__all__ = ["canonicalize", "MAX_BLOCKS"]

# Beyond this many blocks a layout is not worth materialising: MPI's own Pack takes over.
MAX_BLOCKS = 1 << 26
# Repeated block lists up to this many blocks are flattened and re-folded, so that every
# constructor of a layout meets in one form; larger ones keep the repetition as built.
FLATTEN_LIMIT = 1 << 20

Dims = tuple[tuple[int, int], ...]  # (count, stride), innermost first


@dataclass(frozen=True)
class _Strided:
    start: int
    run: int
    dims: Dims


@dataclass(frozen=True)
class _Blocks:
    offsets: np.ndarray
    lengths: np.ndarray
    dims: Dims


_Part = _Strided | _Blocks | None


def canonicalize(node: Node, extent: int) -> Layout:
    """The canonical layout of a tree whose datatype has ``extent``."""
    part = _canon(node)
    if part is None:
        return StridedBlock(0, extent, (0,), (1,))
    if isinstance(part, _Blocks):
        return BlockList(part.offsets, part.lengths, extent,
                         tuple(c for c, _ in part.dims), tuple(s for _, s in part.dims))
    return StridedBlock(part.start, extent,
                        (part.run,) + tuple(c for c, _ in part.dims), (1,) + tuple(s for _, s in part.dims))


def _merge_dims(dims: Dims) -> Dims:
    """Drop count-1 dims and merge a dim into the next when the outer stride is count x inner."""
    out = [d for d in dims if d[0] != 1]
    i = 0
    while i < len(out) - 1:
        (c1, s1), (c2, s2) = out[i], out[i + 1]
        if s2 == c1 * s1:
            out[i:i + 2] = [(c1 * c2, s1)]
        else:
            i += 1
    return tuple(out)


def _normalize(start: int, run: int, dims: Dims) -> _Strided:
    dims = [d for d in dims if d[0] != 1]
    changed = True
    while changed:
        changed = False
        if dims and dims[0][1] == run:
            run *= dims.pop(0)[0]
            changed = True
            continue
        for i in range(len(dims) - 1):
            (c1, s1), (c2, s2) = dims[i], dims[i + 1]
            if s2 == c1 * s1:
                dims[i:i + 2] = [(c1 * c2, s1)]
                changed = True
                break
    return _Strided(start, run, tuple(dims))


def _canon(node: Node) -> _Part:
    if isinstance(node, Dense):
        return _Strided(0, node.nbytes, ()) if node.nbytes > 0 else None
    if isinstance(node, Repeat):
        part = _canon(node.child)
        if part is None or node.count == 0:
            return None
        if isinstance(part, _Strided):
            return _normalize(part.start, part.run, part.dims + ((node.count, node.stride),))
        repeated = _Blocks(part.offsets, part.lengths, _merge_dims(part.dims + ((node.count, node.stride),)))
        last_end = part.offsets[-1] + part.lengths[-1] + sum((c - 1) * st for c, st in part.dims)
        touching = part.offsets[0] + node.stride == last_end  # copies would merge into longer blocks
        if touching and part.offsets.size * np.prod([c for c, _ in repeated.dims]) <= FLATTEN_LIMIT:
            return _simplify(*_expand(repeated))  # the same normal form as any other block list
        return repeated  # already that form: a minimal block list whose copies cannot merge
    if isinstance(node, Indexed):
        return _canon_indexed(node)
    return _canon_seq(node)


def _canon_indexed(node: Indexed) -> _Part:
    child = _canon(node.child)
    if child is None:
        return None
    if isinstance(child, _Strided) and not child.dims and child.run == node.extent:
        # dense child: every block is one run, so the whole list is built with array arithmetic
        return _simplify(node.disps + child.start, node.blocklens * child.run)
    items = tuple((int(d), Repeat(node.child, int(n), node.extent)) for d, n in zip(node.disps, node.blocklens))
    return _canon_seq(Seq(items))


def _shift(part: _Part, disp: int) -> _Part:
    if isinstance(part, _Strided):
        return _Strided(part.start + disp, part.run, part.dims)
    return _Blocks(part.offsets + disp, part.lengths, part.dims)


def _canon_seq(node: Seq) -> _Part:
    parts = [_shift(p, d) for d, p in ((d, _canon(c)) for d, c in node.items) if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, _Strided) for p in parts):
        first = parts[0]
        if all(p.run == first.run and p.dims == first.dims for p in parts):
            starts = np.array([p.start for p in parts], dtype=np.int64)
            steps = np.diff(starts)
            if (steps == steps[0]).all():
                return _normalize(first.start, first.run, first.dims + ((len(parts), int(steps[0])),))
    blocks = [_expand(p) for p in parts]
    offsets = np.concatenate([b[0] for b in blocks])
    lengths = np.concatenate([b[1] for b in blocks])
    return _simplify(offsets, lengths)


def _outer_offsets(dims: Dims) -> np.ndarray:
    total = int(np.prod([c for c, _ in dims], dtype=np.int64))
    if total > MAX_BLOCKS:
        raise UnsupportedDatatype(f"layout has more than {MAX_BLOCKS} blocks")
    return outer_offsets(tuple(c for c, _ in dims), tuple(s for _, s in dims))


def _expand(part: _Strided | _Blocks) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(part, _Strided):
        off = part.start + _outer_offsets(part.dims)
        return off, np.full(len(off), part.run, dtype=np.int64)
    outer = _outer_offsets(part.dims)
    if len(outer) * len(part.offsets) > MAX_BLOCKS:
        raise UnsupportedDatatype(f"layout has more than {MAX_BLOCKS} blocks")
    off = (outer[:, None] + part.offsets[None, :]).ravel()
    return off, np.tile(part.lengths, len(outer))


def _simplify(offsets: np.ndarray, lengths: np.ndarray) -> _Part:
    """Merge touching blocks, then recognise a strided pattern if there is one."""
    keep = lengths > 0
    offsets, lengths = offsets[keep], lengths[keep]
    if len(offsets) == 0:
        return None
    ends = offsets + lengths
    new_block = np.ones(len(offsets), dtype=bool)
    new_block[1:] = offsets[1:] != ends[:-1]
    heads = np.flatnonzero(new_block)
    merged_len = np.add.reduceat(lengths, heads)
    offsets = offsets[heads]
    if (merged_len == merged_len[0]).all():
        pattern = _strided_pattern(offsets)
        if pattern is not None:
            return _normalize(int(offsets[0]), int(merged_len[0]), pattern)
    period = _period(offsets, merged_len)
    if period is not None:
        k, dims = period
        return _Blocks(offsets[:k], merged_len[:k], _merge_dims(dims))
    return _Blocks(offsets, merged_len, ())


def _period(offsets: np.ndarray, lengths: np.ndarray) -> tuple[int, Dims] | None:
    """The shortest k such that the list is its first k blocks repeated over strided dims."""
    n = len(offsets)
    for k in _divisors(n):
        if lengths[k] != lengths[0] or offsets[k + 1] - offsets[k] != offsets[1] - offsets[0]:
            continue
        rows_len = lengths.reshape(-1, k)
        if not (rows_len == rows_len[0]).all():
            continue
        rows = offsets.reshape(-1, k)
        rel = rows - rows[:, :1]
        if not (rel == rel[0]).all():
            continue
        dims = _strided_pattern(rows[:, 0])
        if dims is not None:
            return k, dims
    return None


def _divisors(n: int) -> list[int]:
    """Divisors k of n with 2 <= k < n, ascending."""
    small = [k for k in range(2, int(n ** 0.5) + 1) if n % k == 0]
    return sorted(set(small + [n // k for k in small if n // k < n]))


def _strided_pattern(offsets: np.ndarray) -> Dims | None:
    """Dims (count, stride) whose offsets, innermost fastest, are exactly ``offsets - offsets[0]``."""
    dims: list[tuple[int, int]] = []
    off = offsets
    while len(off) > 1:
        steps = np.diff(off)
        breaks = np.flatnonzero(steps != steps[0])
        k = int(breaks[0]) + 1 if len(breaks) else len(off)
        if len(off) % k:
            return None
        rows = off.reshape(-1, k)
        if not (rows - rows[:, :1] == rows[0] - rows[0, 0]).all():
            return None
        dims.append((k, int(steps[0])))
        off = rows[:, 0]
    return tuple(dims)
