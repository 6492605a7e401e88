"""The canonical layout of an MPI datatype: one strided block, or a compact block list.

All offsets, strides and lengths are in bytes, relative to the buffer address MPI would
be given. The typemap order (the order MPI_Pack writes bytes in) is preserved.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["StridedBlock", "BlockList", "Layout", "outer_offsets"]


def outer_offsets(counts: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """Offsets of every index of the dims (innermost first), innermost varying fastest."""
    off = np.zeros(1, dtype=np.int64)
    for c, s in zip(reversed(counts), reversed(strides)):
        off = (off[:, None] + np.arange(c, dtype=np.int64) * s).ravel()
    return off


@dataclass(frozen=True)
class StridedBlock:
    """``counts[0]`` contiguous bytes at ``start``, repeated over dims ``counts[1:]``/``strides[1:]``.

    ``strides[0]`` is 1 (bytes are contiguous); dims are ordered innermost first and may be
    any number (TEMPI stops at 3). ``extent`` is the datatype's extent, the step between
    consecutive elements when count > 1.
    """

    start: int
    extent: int
    counts: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def run(self) -> int:
        return self.counts[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.counts, dtype=np.int64))

    @property
    def nblocks(self) -> int:
        return self.size // self.run if self.run else 0

    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Every block (offset, length) of one element, in typemap order."""
        off = self.start + outer_offsets(self.counts[1:], self.strides[1:])
        return off, np.full(len(off), self.run, dtype=np.int64)

    def span(self) -> tuple[int, int]:
        """Lowest byte touched and one past the highest, for one element."""
        lo = hi = self.start
        for c, s in zip(self.counts[1:], self.strides[1:]):
            reach = (c - 1) * s
            lo, hi = (lo, hi + reach) if reach >= 0 else (lo + reach, hi)
        return lo, hi + self.run


@dataclass(frozen=True, eq=False)
class BlockList:
    """Blocks (``offsets[i]``, ``lengths[i]``) in typemap order, repeated over outer dims.

    The outer dims (innermost first) let a vector of structs stay one small list instead
    of a block per struct member per element.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    extent: int
    counts: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    _span: tuple[int, int] = field(default=(0, 0), repr=False)

    def __post_init__(self) -> None:
        lo = int((self.offsets).min()) if len(self.offsets) else 0
        hi = int((self.offsets + self.lengths).max()) if len(self.offsets) else 0
        for c, s in zip(self.counts, self.strides):
            reach = (c - 1) * s
            lo, hi = (lo, hi + reach) if reach >= 0 else (lo + reach, hi)
        object.__setattr__(self, "_span", (lo, hi))

    @property
    def size(self) -> int:
        return int(self.lengths.sum()) * int(np.prod(self.counts, dtype=np.int64))

    @property
    def nblocks(self) -> int:
        return len(self.offsets) * int(np.prod(self.counts, dtype=np.int64))

    def blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Every block (offset, length) of one element, in typemap order."""
        outer = outer_offsets(self.counts, self.strides)
        return (outer[:, None] + self.offsets[None, :]).ravel(), np.tile(self.lengths, len(outer))

    def span(self) -> tuple[int, int]:
        return self._span

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BlockList)
            and (self.extent, self.counts, self.strides) == (other.extent, other.counts, other.strides)
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.lengths, other.lengths)
        )

    def __hash__(self) -> int:
        return hash((self.extent, self.counts, self.strides, self.offsets.tobytes(), self.lengths.tobytes()))


Layout = StridedBlock | BlockList
