"""One layout, many constructors: the canonical form must not depend on how a type was built.

Every member of a family describes the same bytes; resized to the same lb/extent they must
give the same canonical layout and pack to the same bytes as MPI packs the family's
reference member.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
from mpi4py import MPI

from datatype_strategies import free, mpi_pack
from mpiforge.datatypes import BlockList, StridedBlock, canonical_layout, pack

D = 8  # bytes per double
Builder = Callable[[], MPI.Datatype]


def shifted(dt: MPI.Datatype, disp: int) -> MPI.Datatype:
    """``dt`` moved ``disp`` bytes on (frees ``dt``)."""
    out = MPI.Datatype.Create_struct([1], [disp], [dt])
    dt.Free()
    return out


def with_extent(dt: MPI.Datatype, lb: int, extent: int) -> MPI.Datatype:
    """``dt`` resized and committed (frees ``dt``)."""
    out = dt.Create_resized(lb, extent)
    free(dt)
    out.Commit()
    return out


def temp(make: Callable[[MPI.Datatype], MPI.Datatype], base: MPI.Datatype) -> MPI.Datatype:
    """``make(base)``, freeing the intermediate ``base``."""
    try:
        return make(base)
    finally:
        free(base)


def c_offsets(sizes, starts, subsizes) -> list[int]:
    """Element offsets (C order) of every element of a sub-block, in C order."""
    idx = np.indices(subsizes).reshape(len(sizes), -1).T + np.array(starts)
    return [int(np.ravel_multi_index(tuple(i), sizes)) for i in idx]


# ---------------------------------------------------------------- families

# rows 3..5 x cols 4..7 of a 6 x 8 grid of doubles: 3 runs of 32 bytes, 64 bytes apart
GRID2, SUB2, AT2 = (6, 8), (3, 4), (3, 4)
ROWS2 = [(r * 8 + 4) * D for r in range(3, 6)]
BLOCK2D = {
    "subarray": lambda: MPI.DOUBLE.Create_subarray(list(GRID2), list(SUB2), list(AT2)),
    "subarray_fortran": lambda: MPI.DOUBLE.Create_subarray([8, 6], [4, 3], [4, 3], MPI.ORDER_FORTRAN),
    "vector": lambda: shifted(MPI.DOUBLE.Create_vector(3, 4, 8), ROWS2[0]),
    "vector_of_bytes": lambda: shifted(MPI.BYTE.Create_vector(3, 4 * D, 8 * D), ROWS2[0]),
    "hvector_of_contiguous": lambda: shifted(temp(lambda c: c.Create_hvector(3, 1, 8 * D),
                                                  MPI.DOUBLE.Create_contiguous(4)), ROWS2[0]),
    "contiguous_of_resized_rows": lambda: shifted(temp(lambda r: r.Create_contiguous(3),
                                                       temp(lambda c: c.Create_resized(0, 8 * D),
                                                            MPI.DOUBLE.Create_contiguous(4))), ROWS2[0]),
    "indexed_block": lambda: MPI.DOUBLE.Create_indexed_block(4, [o // D for o in ROWS2]),
    "indexed_every_element": lambda: MPI.DOUBLE.Create_indexed([1] * 12, c_offsets(GRID2, AT2, SUB2)),
    "hindexed": lambda: MPI.DOUBLE.Create_hindexed([4, 4, 4], ROWS2),
    "hindexed_block_of_bytes": lambda: MPI.BYTE.Create_hindexed_block(4 * D, ROWS2),
    "struct_of_equal_blocks": lambda: MPI.Datatype.Create_struct([4, 4, 4], ROWS2, [MPI.DOUBLE] * 3),
    "darray": lambda: MPI.DOUBLE.Create_darray(4, 3, list(GRID2), [MPI.DISTRIBUTE_BLOCK] * 2,
                                               [MPI.DISTRIBUTE_DFLT_DARG] * 2, [2, 2]),
}

# the x = 2 face of a 4 x 5 x 6 grid: 20 single doubles, 48 bytes apart (two dims merge into one)
GRID_X, X = (4, 5, 6), 2
XFACE3D = {
    "subarray": lambda: MPI.DOUBLE.Create_subarray(list(GRID_X), [4, 5, 1], [0, 0, X]),
    "subarray_fortran": lambda: MPI.DOUBLE.Create_subarray([6, 5, 4], [1, 5, 4], [X, 0, 0], MPI.ORDER_FORTRAN),
    "vector": lambda: shifted(MPI.DOUBLE.Create_vector(20, 1, 6), X * D),
    "vector_of_vector": lambda: shifted(temp(lambda v: v.Create_hvector(4, 1, 30 * D),
                                             MPI.DOUBLE.Create_vector(5, 1, 6)), X * D),
    "indexed_block": lambda: MPI.DOUBLE.Create_indexed_block(1, [X + 6 * i for i in range(20)]),
    "hindexed_block_of_bytes": lambda: MPI.BYTE.Create_hindexed_block(D, [(X + 6 * i) * D for i in range(20)]),
    "struct": lambda: MPI.Datatype.Create_struct([1] * 20, [(X + 6 * i) * D for i in range(20)], [MPI.DOUBLE] * 20),
    "darray": lambda: MPI.DOUBLE.Create_darray(6, X, list(GRID_X), [MPI.DISTRIBUTE_NONE] * 2 + [MPI.DISTRIBUTE_BLOCK],
                                               [MPI.DISTRIBUTE_DFLT_DARG] * 3, [1, 1, 6]),
}

# a 2 x 3 x 4 block at (2, 3, 4) of a 4 x 6 x 8 grid: runs of 32 bytes over 3 rows over 2 planes
GRID3, SUB3, AT3 = (4, 6, 8), (2, 3, 4), (2, 3, 4)
RUNS3 = [((z * 6 + y) * 8 + 4) * D for z in (2, 3) for y in (3, 4, 5)]
BLOCK3D = {
    "subarray": lambda: MPI.DOUBLE.Create_subarray(list(GRID3), list(SUB3), list(AT3)),
    "subarray_fortran": lambda: MPI.DOUBLE.Create_subarray([8, 6, 4], [4, 3, 2], [4, 3, 2], MPI.ORDER_FORTRAN),
    "nested_hvector": lambda: shifted(temp(lambda plane: plane.Create_hvector(2, 1, 48 * D),
                                           temp(lambda row: row.Create_hvector(3, 1, 8 * D),
                                                MPI.DOUBLE.Create_contiguous(4))), RUNS3[0]),
    "vector_of_vector": lambda: shifted(temp(lambda plane: plane.Create_hvector(2, 1, 48 * D),
                                             MPI.DOUBLE.Create_vector(3, 4, 8)), RUNS3[0]),
    "hindexed_every_run": lambda: MPI.BYTE.Create_hindexed([4 * D] * 6, RUNS3),
    "indexed_every_element": lambda: MPI.DOUBLE.Create_indexed([1] * 24, c_offsets(GRID3, AT3, SUB3)),
    "struct_of_equal_blocks": lambda: MPI.Datatype.Create_struct([4] * 6, RUNS3, [MPI.DOUBLE] * 6),
    "darray": lambda: MPI.DOUBLE.Create_darray(8, 7, list(GRID3), [MPI.DISTRIBUTE_BLOCK] * 3,
                                               [MPI.DISTRIBUTE_DFLT_DARG] * 3, [2, 2, 2]),
}

STRIDED = {  # name: (members, lb, extent, expected canonical layout)
    "block2d": (BLOCK2D, 0, 48 * D, StridedBlock(ROWS2[0], 48 * D, (4 * D, 3), (1, 8 * D))),
    "xface3d": (XFACE3D, 0, 120 * D, StridedBlock(X * D, 120 * D, (D, 20), (1, 6 * D))),
    "block3d": (BLOCK3D, 0, 192 * D, StridedBlock(RUNS3[0], 192 * D, (4 * D, 3, 2), (1, 8 * D, 48 * D))),
}


# ---------------------------------------------------------------- checks

def build(make: Builder, lb: int, extent: int) -> MPI.Datatype:
    return with_extent(make(), lb, extent)


def assert_packs_like(dt: MPI.Datatype, reference: MPI.Datatype) -> None:
    """The engine packs ``dt`` to exactly the bytes MPI packs ``reference`` to (1 and 2 elements)."""
    assert dt.extent == reference.extent and dt.size == reference.size
    rng = np.random.default_rng(dt.size)
    for count in (1, 2):
        src = rng.integers(0, 256, count * dt.extent, dtype=np.uint8)
        ours, theirs = bytearray(3 + count * dt.size), bytearray(3 + count * dt.size)
        assert pack(src, count, dt, ours, 3) == mpi_pack(reference, src, count, theirs, 3)
        assert ours == theirs, f"{count} element(s) packed differently"


FAMILY_CASES = [pytest.param(family, name, id=f"{family}-{name}")
                for family, (members, *_rest) in STRIDED.items() for name in members]


@pytest.mark.parametrize("family, name", FAMILY_CASES)
def test_every_constructor_meets_in_one_strided_block(family, name) -> None:
    members, lb, extent, expected = STRIDED[family]
    dt, reference = build(members[name], lb, extent), build(members["subarray"], lb, extent)
    try:
        assert canonical_layout(dt) == expected
        assert_packs_like(dt, reference)
    finally:
        dt.Free()
        reference.Free()


def test_a_repeated_block_list_meets_in_one_form() -> None:
    """Three copies, 32 bytes apart, of {int at 0, double at 8, short at 20}: built as a vector,
    a contiguous, an hindexed_block, a struct of structs and an hindexed of every block."""
    struct = MPI.Datatype.Create_struct([1, 1, 1], [0, 8, 20], [MPI.INT, MPI.DOUBLE, MPI.SHORT])
    padded = struct.Create_resized(0, 32)
    members = {
        "vector": lambda: padded.Create_vector(3, 1, 1),
        "contiguous": lambda: padded.Create_contiguous(3),
        "hindexed_block": lambda: struct.Create_hindexed_block(1, [0, 32, 64]),
        "struct_of_structs": lambda: MPI.Datatype.Create_struct([1] * 3, [0, 32, 64], [struct] * 3),
        "hindexed_of_every_block": lambda: MPI.BYTE.Create_hindexed(
            [4, 8, 2] * 3, [o + 32 * i for i in range(3) for o in (0, 8, 20)]),
    }
    built = {name: build(make, 0, 96) for name, make in members.items()}
    try:
        layouts = {name: canonical_layout(dt) for name, dt in built.items()}
        for name, dt in built.items():
            assert_packs_like(dt, built["vector"])
        forms = {repr(layout) for layout in layouts.values()}
        assert len(forms) == 1, "one layout, several canonical forms:\n" + "\n".join(
            f"  {name}: {layout}" for name, layout in layouts.items())
    finally:
        for dt in built.values():
            dt.Free()
        struct.Free()
        padded.Free()


# ---------------------------------------------------------------- dense layouts and count-1 dims

DENSE = {  # name: (builder, packed bytes)
    "contiguous_of_contiguous": (lambda: temp(lambda c: c.Create_contiguous(3), MPI.INT.Create_contiguous(4)), 48),
    "vector_stride_eq_blocklength": (lambda: MPI.INT.Create_vector(3, 2, 2), 24),
    "hvector_stride_eq_extent": (lambda: MPI.DOUBLE.Create_hvector(4, 1, D), 32),
    "full_subarray": (lambda: MPI.FLOAT.Create_subarray([4, 5], [4, 5], [0, 0]), 80),
    "indexed_block_touching": (lambda: MPI.INT.Create_indexed_block(2, [0, 2, 4]), 24),
    "indexed_touching_unequal": (lambda: MPI.INT.Create_indexed([1, 3, 2], [0, 1, 4]), 24),
    "struct_without_holes": (lambda: MPI.Datatype.Create_struct([1, 1, 1], [0, 4, 8],
                                                                [MPI.INT, MPI.FLOAT, MPI.DOUBLE]), 16),
    "darray_one_process": (lambda: MPI.SHORT.Create_darray(1, 0, [3, 4], [MPI.DISTRIBUTE_BLOCK] * 2,
                                                           [MPI.DISTRIBUTE_DFLT_DARG] * 2, [1, 1]), 24),
    "vector_of_dense_rows": (lambda: temp(lambda c: c.Create_vector(2, 1, 1), MPI.INT.Create_contiguous(5)), 40),
}


@pytest.mark.parametrize("name", DENSE)
def test_dense_layouts_collapse_to_one_run(name) -> None:
    make, nbytes = DENSE[name]
    dt = make()
    dt.Commit()
    try:
        assert canonical_layout(dt) == StridedBlock(0, dt.extent, (nbytes,), (1,))
        assert_packs_like(dt, dt)
    finally:
        dt.Free()


def _bare_struct() -> MPI.Datatype:
    return MPI.Datatype.Create_struct([1, 1, 1], [0, 8, 20], [MPI.INT, MPI.DOUBLE, MPI.SHORT])


COUNT_ONE = {  # name: (builder, builder of the same type without the count-1 level)
    "vector_count_1": (lambda: MPI.INT.Create_vector(1, 3, 10), lambda: MPI.INT.Create_contiguous(3)),
    "hvector_of_vector_count_1": (lambda: temp(lambda v: v.Create_hvector(1, 1, 1000), MPI.INT.Create_vector(3, 1, 2)),
                                  lambda: MPI.INT.Create_vector(3, 1, 2)),
    "subarray_dim_of_1": (lambda: MPI.DOUBLE.Create_subarray([4, 1, 6], [2, 1, 3], [1, 0, 2]),
                          lambda: MPI.DOUBLE.Create_subarray([4, 6], [2, 3], [1, 2])),
    "contiguous_1_of_strided": (lambda: temp(lambda v: v.Create_contiguous(1), MPI.INT.Create_vector(3, 1, 2)),
                                lambda: MPI.INT.Create_vector(3, 1, 2)),
    "contiguous_1_of_struct": (lambda: temp(lambda s: s.Create_contiguous(1), _bare_struct()), _bare_struct),
    "vector_1_of_struct": (lambda: temp(lambda s: s.Create_vector(1, 1, 5), _bare_struct()), _bare_struct),
    "struct_blocklength_1_of_struct": (lambda: temp(lambda s: MPI.Datatype.Create_struct([1], [0], [s]),
                                                    _bare_struct()), _bare_struct),
}


def _dims_of(layout) -> tuple[int, ...]:
    return layout.counts[1:] if isinstance(layout, StridedBlock) else layout.counts


@pytest.mark.parametrize("name", COUNT_ONE)
def test_count_one_dims_are_dropped(name) -> None:
    make, make_plain = COUNT_ONE[name]
    plain = make_plain()
    dt = with_extent(make(), plain.lb, plain.extent)
    plain.Commit()
    try:
        layout = canonical_layout(dt)
        assert 1 not in _dims_of(layout), f"count-1 dim kept: {layout}"
        assert layout == canonical_layout(plain)
        assert_packs_like(dt, plain)
    finally:
        dt.Free()
        plain.Free()


def test_block_list_layout_shape() -> None:
    """A struct with holes is a BlockList in typemap order, with no outer dims."""
    dt = MPI.Datatype.Create_struct([1, 1, 1], [20, 0, 8], [MPI.SHORT, MPI.INT, MPI.DOUBLE])
    dt.Commit()
    try:
        layout = canonical_layout(dt)
        assert isinstance(layout, BlockList)
        assert layout.offsets.tolist() == [20, 0, 8] and layout.lengths.tolist() == [2, 4, 8]
        assert layout.counts == () and layout.extent == dt.extent
    finally:
        dt.Free()
