"""Hypothesis strategies for random nested MPI datatypes, plus MPI-side reference helpers.

A strategy draws a *recipe*: a small frozen dataclass tree that says which constructors to
nest and with which parameters. ``committed(recipe)`` builds the real mpi4py datatype,
commits it, frees every intermediate type on the way and the final type on exit, so each
hypothesis example cleans up after itself and a failing example prints a readable recipe.

Displacements that depend on a child's extent (hvector strides, byte displacements, struct
members) are stored as gaps and resolved at build time against the extents MPI reports,
never against the engine under test.

    @given(datatype_recipes())
    def test_x(recipe):
        with committed(recipe) as dt:
            ...

``non_overlapping=True`` draws only types whose typemap never names a byte twice, even for
several consecutive elements: the only ones MPI allows on the receive side (unpack).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from hypothesis import strategies as st
from mpi4py import MPI

__all__ = [
    "Recipe", "datatype_recipes", "committed", "build", "free",
    "touched_span", "fits", "mpi_pack", "mpi_unpack", "mpi_typemap", "mpi_self_consistent", "layout_typemap",
    "MAX_BYTES",
]

# Keep every example small: packed bytes and touched span of all elements under this.
MAX_BYTES = 1 << 20
TOP_BUDGET = 1 << 16  # span budget of one element when drawing

# Left out on purpose, because Open MPI itself is not a usable reference for them:
# - long double types: in vector/indexed layouts Open MPI moves only the 10 value bytes of an
#   x87 long double and leaves the 6 padding bytes untouched (see test_pack_differential.py);
# - complex types: resized to half their size (one component), Open MPI repeats them all at
#   offset 0 (contiguous(3, resized(C_DOUBLE_COMPLEX, 0, 8)) packs bytes 0..15 three times).
NAMED = (
    "BYTE", "CHAR", "SHORT", "INT", "FLOAT", "DOUBLE", "INT64_T", "C_BOOL",
    "SHORT_INT", "DOUBLE_INT", "FLOAT_INT", "TWOINT", "LONG_INT",
)
DISTRIBS = ("NONE", "BLOCK", "CYCLIC")



def _ompi_safe(stride: int, unit: int) -> int:
    """A vector stride (in ``unit`` bytes) that avoids a byte stride of exactly -1.

    Open MPI 5.0 builds a vector/hvector whose stride is -1 byte as if the blocks were
    contiguous (hvector(2, 2, -1) of INT packs bytes 0..15), so it is no reference there; the
    recipes take twice the stride instead. test_pack_differential.py checks the engine keeps
    to the standard in that case.
    """
    return 2 * stride if stride * unit == -1 else stride


# ---------------------------------------------------------------- MPI helpers

def free(dt: MPI.Datatype) -> None:
    """Free a datatype we own (predefined ones are left alone)."""
    if dt != MPI.DATATYPE_NULL and not dt.is_predefined:
        dt.Free()


def true_bounds(dt: MPI.Datatype) -> tuple[int, int]:
    """(true_lb, true_extent), with (0, 0) for empty types (Open MPI reports garbage for some)."""
    return (dt.true_lb, dt.true_extent) if dt.size else (0, 0)


def touched_span(dt: MPI.Datatype, count: int) -> tuple[int, int]:
    """Bytes [lo, hi) that ``count`` consecutive elements touch, relative to displacement 0
    (from MPI's true bounds and extent)."""
    if count <= 0 or dt.size == 0:
        return 0, 0
    true_lb, true_extent = true_bounds(dt)
    reach = (count - 1) * dt.extent
    return true_lb + min(0, reach), true_lb + true_extent + max(0, reach)


def fits(dt: MPI.Datatype, count: int) -> bool:
    """True when ``count`` elements stay inside the size budget and never reach before the buffer."""
    lo, hi = touched_span(dt, count)
    return lo >= 0 and hi <= MAX_BYTES and dt.size * count <= MAX_BYTES and abs(dt.extent) * count <= MAX_BYTES


def _elements(addr: int, dt: MPI.Datatype, count: int, readonly: bool):
    """A buffer view that makes mpi4py hand MPI exactly ``count`` elements starting at ``addr``."""
    return MPI.buffer.fromaddress(addr, count * dt.extent, readonly=readonly)


def mpi_pack(dt: MPI.Datatype, src: np.ndarray, count: int, out, position: int) -> int:
    """Open MPI's MPI_Pack of ``count`` elements of ``dt`` from ``src`` (extent must be > 0)."""
    assert dt.extent > 0, "the reference needs a positive extent"
    return dt.Pack(_elements(src.ctypes.data, dt, count, True), out, position, MPI.COMM_SELF)


def mpi_unpack(dt: MPI.Datatype, packed, position: int, dst: np.ndarray, count: int) -> int:
    """Open MPI's MPI_Unpack of ``count`` elements of ``dt`` into ``dst`` (extent must be > 0)."""
    assert dt.extent > 0, "the reference needs a positive extent"
    return dt.Unpack(packed, position, _elements(dst.ctypes.data, dt, count, False), MPI.COMM_SELF)


def mpi_typemap(dt: MPI.Datatype, count: int) -> np.ndarray:
    """For every packed byte, the user-buffer offset MPI reads it from (packed order).

    Found by packing the byte offsets themselves, one byte of the offset per pass, so the
    answer comes from Open MPI alone.
    """
    _, hi = touched_span(dt, count)
    assert hi < 1 << 24
    idx = np.arange(max(hi, 1), dtype=np.int64)
    offsets = np.zeros(dt.size * count, dtype=np.int64)
    for shift in (0, 8, 16):
        src = ((idx >> shift) & 0xFF).astype(np.uint8)
        out = bytearray(dt.size * count)
        mpi_pack(dt, src, count, out, 0)
        offsets |= np.frombuffer(out, dtype=np.uint8).astype(np.int64) << shift
    return offsets


def mpi_self_consistent(dt: MPI.Datatype, count: int) -> bool:
    """True when MPI packs ``count`` elements as ``count`` copies of one element, each
    ``extent`` further on, i.e. when Open MPI is a usable reference for this type and count.

    Open MPI 5.0 breaks this for some types it flags as contiguous although their extent is
    larger than their size (struct {BYTE at 0, contiguous(0) at 2}: extent 2, but 3 elements
    are packed from bytes 0, 1, 2), while contiguous(3, dt) is packed from 0, 2, 4.
    """
    if count == 1 or dt.size == 0:
        return True
    one = mpi_typemap(dt, 1)
    tiled = (np.arange(count, dtype=np.int64)[:, None] * dt.extent + one[None, :]).ravel()
    return np.array_equal(mpi_typemap(dt, count), tiled)


def layout_typemap(layout, count: int) -> np.ndarray:
    """The same per-byte offsets, computed from the engine's canonical layout."""
    from mpiforge.datatypes import BlockList

    def dims_offsets(counts, strides) -> np.ndarray:
        off = np.zeros(1, dtype=np.int64)
        for c, s in zip(reversed(counts), reversed(strides)):  # outermost first, innermost fastest
            off = (off[:, None] + np.arange(c, dtype=np.int64) * s).ravel()
        return off

    if isinstance(layout, BlockList):
        block_off, block_len = np.asarray(layout.offsets, np.int64), np.asarray(layout.lengths, np.int64)
        outer = dims_offsets(layout.counts, layout.strides)
    else:
        block_off = np.array([layout.start], dtype=np.int64)
        block_len = np.array([layout.counts[0]], dtype=np.int64)
        assert layout.strides[0] == 1, layout
        outer = dims_offsets(layout.counts[1:], layout.strides[1:])
    one_block_set = np.concatenate([o + np.arange(n, dtype=np.int64) for o, n in zip(block_off, block_len)]
                                   or [np.zeros(0, np.int64)])
    one = (outer[:, None] + one_block_set[None, :]).ravel()
    return (np.arange(count, dtype=np.int64)[:, None] * layout.extent + one[None, :]).ravel()


# ---------------------------------------------------------------- recipes

class Recipe:
    """A buildable description of a datatype. ``build()`` returns a new, uncommitted type the
    caller owns (or a predefined one)."""

    def build(self) -> MPI.Datatype:
        raise NotImplementedError


def _with_child(child: Recipe, make) -> MPI.Datatype:
    base = child.build()
    try:
        return make(base)
    finally:
        free(base)


@dataclass(frozen=True)
class Named(Recipe):
    name: str

    def build(self) -> MPI.Datatype:
        return getattr(MPI, self.name)


@dataclass(frozen=True)
class Contiguous(Recipe):
    count: int
    child: Recipe

    def build(self):
        return _with_child(self.child, lambda t: t.Create_contiguous(self.count))


@dataclass(frozen=True)
class Vector(Recipe):
    count: int
    blocklength: int
    stride: int  # in child extents
    child: Recipe

    def build(self):
        def make(t):
            return t.Create_vector(self.count, self.blocklength, _ompi_safe(self.stride, t.extent))
        return _with_child(self.child, make)


@dataclass(frozen=True)
class HVector(Recipe):
    """Stride = sign * (bytes ``blocklength`` children span + gap)."""

    count: int
    blocklength: int
    gap: int
    sign: int
    child: Recipe

    def build(self):
        def make(t):
            lo, hi = touched_span(t, self.blocklength)
            stride = self.sign * (hi - lo + self.gap)
            return t.Create_hvector(self.count, self.blocklength, _ompi_safe(stride, 1))
        return _with_child(self.child, make)


@dataclass(frozen=True)
class Indexed(Recipe):
    blocklengths: tuple[int, ...]
    displacements: tuple[int, ...]  # in child extents
    child: Recipe

    def build(self):
        return _with_child(self.child, lambda t: t.Create_indexed(list(self.blocklengths), list(self.displacements)))


@dataclass(frozen=True)
class IndexedBlock(Recipe):
    blocklength: int
    displacements: tuple[int, ...]  # in child extents
    child: Recipe

    def build(self):
        return _with_child(self.child, lambda t: t.Create_indexed_block(self.blocklength, list(self.displacements)))


def _placed(spans: list[tuple[int, int]], gaps: tuple[int, ...], order: tuple[int, ...]) -> list[int]:
    """Byte displacements that lay blocks side by side (in ``order``, separated by ``gaps``)."""
    disps = [0] * len(spans)
    cursor = 0
    for slot, i in enumerate(order):
        lo, hi = spans[i]
        disps[i] = cursor - lo
        cursor += (hi - lo) + gaps[slot]
    return disps


@dataclass(frozen=True)
class HIndexed(Recipe):
    """Blocks laid out in memory in ``order`` with byte ``gaps``; typemap order is list order."""

    blocklengths: tuple[int, ...]
    gaps: tuple[int, ...]
    order: tuple[int, ...]
    child: Recipe

    def build(self):
        def make(t):
            disps = _placed([touched_span(t, n) for n in self.blocklengths], self.gaps, self.order)
            return t.Create_hindexed(list(self.blocklengths), disps)
        return _with_child(self.child, make)


@dataclass(frozen=True)
class HIndexedBlock(Recipe):
    blocklength: int
    gaps: tuple[int, ...]
    order: tuple[int, ...]
    child: Recipe

    def build(self):
        def make(t):
            disps = _placed([touched_span(t, self.blocklength)] * len(self.gaps), self.gaps, self.order)
            return t.Create_hindexed_block(self.blocklength, disps)
        return _with_child(self.child, make)


@dataclass(frozen=True)
class Subarray(Recipe):
    sizes: tuple[int, ...]
    subsizes: tuple[int, ...]
    starts: tuple[int, ...]
    fortran: bool
    child: Recipe

    def build(self):
        order = MPI.ORDER_FORTRAN if self.fortran else MPI.ORDER_C
        return _with_child(self.child, lambda t: t.Create_subarray(
            list(self.sizes), list(self.subsizes), list(self.starts), order))


@dataclass(frozen=True)
class Darray(Recipe):
    psizes: tuple[int, ...]
    rank: int
    gsizes: tuple[int, ...]
    distribs: tuple[str, ...]
    dargs: tuple[int, ...]  # 0 means MPI.DISTRIBUTE_DFLT_DARG
    fortran: bool
    child: Recipe

    def build(self):
        distribs = [getattr(MPI, f"DISTRIBUTE_{d}") for d in self.distribs]
        dargs = [a if a > 0 else MPI.DISTRIBUTE_DFLT_DARG for a in self.dargs]
        order = MPI.ORDER_FORTRAN if self.fortran else MPI.ORDER_C
        size = int(np.prod(self.psizes))

        def make(t):
            if t.size == 0:  # Open MPI refuses darray of empty types (MPI_ERR_TYPE): use bytes instead
                t = MPI.BYTE
            return t.Create_darray(size, self.rank, list(self.gsizes), distribs, dargs, list(self.psizes), order)
        return _with_child(self.child, make)


@dataclass(frozen=True)
class Struct(Recipe):
    """Members laid out in memory in ``order`` with byte ``gaps``; typemap order is list order."""

    blocklengths: tuple[int, ...]
    gaps: tuple[int, ...]
    order: tuple[int, ...]
    children: tuple[Recipe, ...]

    def build(self):
        types = []
        try:
            for c in self.children:
                types.append(c.build())
            spans = [touched_span(t, n) for t, n in zip(types, self.blocklengths)]
            return MPI.Datatype.Create_struct(list(self.blocklengths), _placed(spans, self.gaps, self.order), types)
        finally:
            for t in types:
                free(t)


@dataclass(frozen=True)
class Resized(Recipe):
    """lb = true_lb - lb_below; extent = true_extent * scale + extra (may be <= 0 when overlapping)."""

    lb_below: int
    scale: float
    extra: int
    child: Recipe

    def build(self):
        def make(t):
            true_lb, true_extent = true_bounds(t)
            return t.Create_resized(true_lb - self.lb_below, int(true_extent * self.scale) + self.extra)
        return _with_child(self.child, make)


@dataclass(frozen=True)
class Dup(Recipe):
    child: Recipe

    def build(self):
        return _with_child(self.child, lambda t: t.Dup())


@dataclass(frozen=True)
class Top(Recipe):
    """The final type: shifted by a struct so nothing lies before displacement 0, and resized
    to a positive extent if needed (the MPI reference counts elements as len // extent)."""

    pad: int
    child: Recipe

    def build(self):
        t = self.child.build()
        true_lb, _ = true_bounds(t)
        if true_lb < 0 or self.pad:
            shifted = MPI.Datatype.Create_struct([1], [max(0, -true_lb) + self.pad], [t])
            free(t)
            t = shifted
        if t.extent <= 0:
            true_lb, true_extent = true_bounds(t)
            lb = min(t.lb, true_lb)
            fixed = t.Create_resized(lb, max(1, true_lb + true_extent - lb))
            free(t)
            t = fixed
        return t


def build(recipe: Recipe) -> MPI.Datatype:
    """Build and commit; the caller frees."""
    dt = recipe.build()
    if dt.is_predefined:
        return dt
    dt.Commit()
    return dt


@contextlib.contextmanager
def committed(recipe: Recipe) -> Iterator[MPI.Datatype]:
    """The committed datatype of ``recipe``, freed on exit."""
    dt = build(recipe)
    try:
        yield dt
    finally:
        free(dt)


# ---------------------------------------------------------------- strategies

def _gaps(draw, n: int, overlap: bool) -> tuple[int, ...]:
    lo = -12 if overlap else 0
    return tuple(draw(st.lists(st.integers(lo, 24), min_size=n, max_size=n)))


def _order(draw, n: int) -> tuple[int, ...]:
    return tuple(draw(st.permutations(range(n)))) if n else ()


def _count(draw, hi: int) -> int:
    """0 now and then (one draw in ten), else 1..hi: zero counts without emptying most types."""
    return draw(st.integers(1, hi)) if draw(st.integers(0, 9)) else 0


def _counts(draw, n_lo: int, n_hi: int, hi: int) -> tuple[int, ...]:
    return tuple(_count(draw, hi) for _ in range(draw(st.integers(n_lo, n_hi))))


@st.composite
def _named(draw, budget: int, max_run: int) -> Recipe:
    fitting = [n for n in NAMED if getattr(MPI, n).extent <= max(budget, 1)] or ["BYTE"]
    leaf = Named(draw(st.sampled_from(fitting)))
    if draw(st.integers(0, 3)) == 0:
        # a longer dense run: exercises every copy width of the kernels (1 byte .. max_run)
        extent = getattr(MPI, leaf.name).extent
        return Contiguous(draw(st.integers(1, max(1, min(max_run // extent, budget // extent)))), leaf)
    return leaf


@st.composite
def _node(draw, depth: int, budget: int, overlap: bool, max_run: int) -> Recipe:
    if depth == 0 or budget < 8 or draw(st.integers(0, 4)) == 0:
        return draw(_named(budget, max_run))
    kind = draw(st.sampled_from([
        "contiguous", "vector", "hvector", "indexed", "hindexed", "indexed_block", "hindexed_block",
        "subarray", "darray", "struct", "resized", "dup",
    ]))

    def child(factor: int) -> Recipe:
        return draw(_node(depth - 1, budget // max(1, factor), overlap, max_run))

    if kind == "contiguous":
        n = _count(draw, 4)
        return Contiguous(n, child(n))
    if kind == "vector":
        count, bl = _count(draw, 4), _count(draw, 3)
        if overlap:
            stride = draw(st.integers(-6, 8))
        else:
            stride = draw(st.integers(bl, bl + 4)) * draw(st.sampled_from([1, -1]))
        return Vector(count, bl, stride, child(max(count - 1, 0) * abs(stride) + bl))
    if kind == "hvector":
        count, bl = _count(draw, 4), _count(draw, 3)
        sign = draw(st.sampled_from([1, -1]))
        gap = draw(st.integers(-24, 24) if overlap else st.integers(0, 24))
        return HVector(count, bl, gap, sign, child(count * max(bl, 1) + 1))
    if kind == "indexed":
        lens = _counts(draw, 0, 4, 3)
        gaps = _gaps(draw, len(lens), overlap)
        disps, cursor = [0] * len(lens), 0
        for slot, i in enumerate(_order(draw, len(lens))):
            gap = gaps[slot] // 4  # in elements
            disps[i] = cursor
            cursor += lens[i] + gap
        return Indexed(tuple(lens), tuple(disps), child(sum(lens) + sum(abs(g) for g in gaps) // 4 + 1))
    if kind == "indexed_block":
        n, bl = _count(draw, 4), _count(draw, 3)
        step = draw(st.integers(bl, bl + 3) if not overlap else st.integers(-3, 4))
        disps = [i * step for i in range(n)]
        disps = [disps[i] for i in _order(draw, n)]
        shift = max(0, -min(disps, default=0)) if draw(st.booleans()) else 0
        return IndexedBlock(bl, tuple(d + shift for d in disps), child(n * (abs(step) + bl) + 1))
    if kind == "hindexed":
        lens = _counts(draw, 0, 4, 3)
        return HIndexed(tuple(lens), _gaps(draw, len(lens), overlap), _order(draw, len(lens)),
                        child(sum(lens) + len(lens) + 1))
    if kind == "hindexed_block":
        n, bl = _count(draw, 4), _count(draw, 3)
        return HIndexedBlock(bl, _gaps(draw, n, overlap), _order(draw, n), child(n * (bl + 1) + 1))
    if kind == "subarray":
        nd = draw(st.integers(1, 3))
        sizes = tuple(draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd)))
        subsizes = tuple(draw(st.integers(1, s)) for s in sizes)
        starts = tuple(draw(st.integers(0, s - n)) for s, n in zip(sizes, subsizes))
        return Subarray(sizes, subsizes, starts, draw(st.booleans()), child(int(np.prod(sizes))))
    if kind == "darray":
        nd = draw(st.integers(1, 3))
        psizes, gsizes, distribs, dargs = [], [], [], []
        for _ in range(nd):
            g = draw(st.integers(1, 7))
            distrib = draw(st.sampled_from(DISTRIBS))
            p = 1 if distrib == "NONE" else draw(st.integers(1, 3))
            if distrib == "BLOCK":
                darg = draw(st.sampled_from([0, -(-g // p), -(-g // p) + 1]))
            elif distrib == "CYCLIC":
                darg = draw(st.integers(0, 3))
            else:
                darg = 0
            psizes.append(p), gsizes.append(g), distribs.append(distrib), dargs.append(darg)
        rank = draw(st.integers(0, int(np.prod(psizes)) - 1))
        return Darray(tuple(psizes), rank, tuple(gsizes), tuple(distribs), tuple(dargs), draw(st.booleans()),
                      child(int(np.prod(gsizes))))
    if kind == "struct":
        n = draw(st.integers(1, 3))
        lens = tuple(_count(draw, 3) for _ in range(n))
        per_member = n * max(max(lens), 1) + 1
        children = tuple(child(per_member) for _ in range(n))
        return Struct(lens, _gaps(draw, n, overlap), _order(draw, n), children)
    if kind == "resized":
        lb_below = draw(st.integers(-4, 16) if overlap else st.integers(0, 16))
        scale = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0] if overlap else [1.0, 1.5, 2.0, 3.0]))
        extra = draw(st.integers(-8, 16))
        if not overlap:
            extra = lb_below + abs(extra)  # extent covers the data even after moving lb down
        return Resized(lb_below, scale, extra, child(4))
    return Dup(child(1))


def datatype_recipes(max_depth: int = 3, non_overlapping: bool = False, budget: int = TOP_BUDGET,
                     max_run: int = 320):
    """Random nested datatypes (recipes), up to ``max_depth`` constructors deep.

    The final type has true_lb >= 0 and a positive extent; its inner levels may have negative
    strides, displacements and lower bounds, zero-length blocks and zero counts. Leaves are
    named types or dense runs of up to ``max_run`` bytes.
    """
    return st.builds(Top, st.integers(0, 8), _node(max_depth, budget, not non_overlapping, max_run))
