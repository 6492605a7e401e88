"""The engine's pack/unpack against Open MPI's MPI_Pack/MPI_Unpack on random nested datatypes.

Every comparison covers the whole output buffer (prefix and tail bytes included) and the
returned position, so a kernel that writes one byte too many or too few is caught.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from datatype_strategies import (
    committed, datatype_recipes, fits, free, layout_typemap, mpi_pack, mpi_self_consistent, mpi_typemap,
    mpi_unpack, touched_span,
)
from mpiforge.datatypes import UnsupportedDatatype, canonical_layout, pack, packer_for, unpack

RANDOM = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

counts = st.integers(1, 3)
positions = st.integers(0, 64)
slack = st.integers(0, 16)  # extra bytes after what the call touches (0: buffer fits exactly)
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------- helpers

def random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, n, dtype=np.uint8)


def user_buffer(rng: np.random.Generator, dt: MPI.Datatype, count: int, tail: int) -> np.ndarray:
    """Random bytes covering every byte ``count`` elements touch, plus ``tail``."""
    _, hi = touched_span(dt, count)
    return random_bytes(rng, hi + tail)


def assert_same_bytes(got, want, what: str) -> None:
    got, want = np.frombuffer(got, np.uint8), np.frombuffer(want, np.uint8)
    assert got.shape == want.shape, f"{what}: {got.size} bytes vs MPI's {want.size}"
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} bytes differ from MPI, first at {bad[0]}: "
        f"engine {got[bad[:8]].tolist()} MPI {want[bad[:8]].tolist()}"
    )


def check_pack(dt: MPI.Datatype, count: int, position: int, rng: np.random.Generator, tail: int) -> None:
    """Pack with the engine and with MPI into identically pre-filled buffers; compare everything."""
    src = user_buffer(rng, dt, count, tail)
    ours = random_bytes(rng, position + count * dt.size + tail)
    theirs = ours.copy()
    end = pack(src, count, dt, ours, position)
    assert end == mpi_pack(dt, src, count, theirs, position) == position + count * dt.size
    assert_same_bytes(ours, theirs, f"pack of {count} element(s) at position {position}")


def check_unpack(dt: MPI.Datatype, count: int, position: int, rng: np.random.Generator, tail: int) -> None:
    """Unpack the same random stream with the engine and with MPI into identical destinations."""
    packed = random_bytes(rng, position + count * dt.size + tail).tobytes()  # read-only input is fine
    ours = user_buffer(rng, dt, count, tail)
    theirs = ours.copy()
    end = unpack(packed, position, ours, count, dt)
    assert end == mpi_unpack(dt, packed, position, theirs, count) == position + count * dt.size
    assert_same_bytes(ours, theirs, f"unpack of {count} element(s) from position {position}")


def comparable(dt: MPI.Datatype, count: int) -> bool:
    """Small enough, nothing before the buffer start, and Open MPI consistent with itself."""
    return fits(dt, count) and mpi_self_consistent(dt, count)


def non_overlapping(dt: MPI.Datatype, count: int) -> bool:
    """MPI allows only receive types that name every byte once (checked with MPI's own typemap)."""
    offsets = mpi_typemap(dt, count)
    return np.unique(offsets).size == offsets.size


# ---------------------------------------------------------------- random datatypes

@settings(RANDOM, max_examples=120)
@given(datatype_recipes(), counts, positions, slack, seeds)
def test_pack_matches_mpi(recipe, count, position, tail, seed) -> None:
    with committed(recipe) as dt:
        assume(comparable(dt, count))
        assert packer_for(dt).pack_size(count) == dt.Pack_size(count, MPI.COMM_SELF)
        check_pack(dt, count, position, np.random.default_rng(seed), tail)


@settings(RANDOM, max_examples=90)
@given(datatype_recipes(non_overlapping=True), counts, positions, slack, seeds)
def test_unpack_matches_mpi(recipe, count, position, tail, seed) -> None:
    with committed(recipe) as dt:
        assume(comparable(dt, count) and non_overlapping(dt, count))
        check_unpack(dt, count, position, np.random.default_rng(seed), tail)


@settings(RANDOM, max_examples=45)
@given(datatype_recipes(), counts)
def test_canonical_layout_lists_mpis_typemap(recipe, count) -> None:
    """Expanding the canonical layout byte by byte gives the offsets MPI packs, in MPI's order."""
    with committed(recipe) as dt:
        assume(comparable(dt, count))
        layout = canonical_layout(dt)
        assume(layout is not None)  # MPI fallback: nothing of ours to check
        assert layout.extent == dt.extent
        ours, theirs = layout_typemap(layout, count), mpi_typemap(dt, count)
        assert ours.size == theirs.size, f"{layout}: {ours.size} bytes, MPI packs {theirs.size}"
        bad = np.flatnonzero(ours != theirs)
        assert bad.size == 0, f"{layout}: packed byte {bad[0]} comes from {ours[bad[0]]}, MPI: {theirs[bad[0]]}"


@settings(RANDOM, max_examples=35)
@given(datatype_recipes(max_depth=2), datatype_recipes(max_depth=2), counts, counts, positions, seeds)
def test_two_types_packed_one_after_another(first, second, n1, n2, position, seed) -> None:
    """Partial packs: position in/out chains two types into one buffer exactly as MPI does."""
    rng = np.random.default_rng(seed)
    with committed(first) as a, committed(second) as b:
        assume(comparable(a, n1) and comparable(b, n2))
        src_a, src_b = user_buffer(rng, a, n1, 0), user_buffer(rng, b, n2, 3)
        ours = random_bytes(rng, position + n1 * a.size + n2 * b.size + 5)
        theirs = ours.copy()
        mid = pack(src_a, n1, a, ours, position)
        end = pack(src_b, n2, b, ours, mid)
        mpi_mid = mpi_pack(a, src_a, n1, theirs, position)
        assert (mid, end) == (mpi_mid, mpi_pack(b, src_b, n2, theirs, mpi_mid))
        assert_same_bytes(ours, theirs, "two partial packs")


@settings(RANDOM, max_examples=25)
@given(datatype_recipes(non_overlapping=True), counts, positions, seeds)
def test_mpi_fallback_matches_mpi(recipe, count, position, seed) -> None:
    """Types the engine cannot express go to MPI's own Pack; force that path for random types."""
    def unsupported(dt):
        raise UnsupportedDatatype("forced by the test")

    with committed(recipe) as built:
        assume(comparable(built, count) and non_overlapping(built, count))
        dt = built.Dup()  # a fresh handle: never leave a fallback Packer cached for a named type
        try:
            with mock.patch("mpiforge.datatypes.packer.translate", unsupported):
                assert packer_for(dt).layout is None
            rng = np.random.default_rng(seed)
            check_pack(dt, count, position, rng, 2)
            check_unpack(dt, count, position, rng, 2)
        finally:
            dt.Free()


# ---------------------------------------------------------------- streaming (non-temporal) kernels

def _force_streaming():
    """Patch every ``STREAM_MIN_*`` threshold of the tuning rules to 0: the streaming paths (L1
    tile, direct streams, aligned lines), which start at 4 MiB by default, then run at every size."""
    from mpiforge.datatypes import tuning

    thresholds = {name: 0 for name in vars(tuning) if name.startswith("STREAM_MIN")}
    assert "STREAM_MIN_BYTES" in thresholds, "the streaming threshold moved: update this test"
    return mock.patch.multiple(tuning, **thresholds)


@settings(RANDOM, max_examples=45)
@given(datatype_recipes(non_overlapping=True, budget=1 << 17, max_run=6000), counts, positions, seeds)
def test_streaming_kernels_match_mpi(recipe, count, position, seed) -> None:
    with committed(recipe) as built:
        assume(comparable(built, count) and non_overlapping(built, count))
        dt = built.Dup()  # a fresh Packer, so no plan made without streaming is reused (and none is left)
        try:
            with _force_streaming():
                rng = np.random.default_rng(seed)
                check_pack(dt, count, position, rng, 3)
                check_unpack(dt, count, position, rng, 3)
        finally:
            dt.Free()


def _strided(run: int, nbytes: int) -> MPI.Datatype:
    """Runs of ``run`` bytes, 1.5 runs apart (rounded), ``nbytes`` in all."""
    return MPI.BYTE.Create_vector(nbytes // run, run, run + run // 2 + 1)


def _block_list(mean: int, nbytes: int) -> MPI.Datatype:
    """Blocks of mean, mean/2 and 3 mean/2 bytes with uneven gaps, ``nbytes`` in all."""
    lengths = [mean, mean // 2, 3 * mean // 2]
    disps = [0, mean + 3, 2 * mean + 17]
    group = MPI.BYTE.Create_hindexed(lengths, disps).Create_resized(0, disps[-1] + lengths[-1] + 5)
    dt = group.Create_contiguous(nbytes // sum(lengths))
    group.Free()
    return dt


@pytest.mark.parametrize("make, run", [
    (_strided, 8), (_strided, 64), (_strided, 200), (_strided, 700), (_strided, 3000), (_strided, 5000),
    (_block_list, 16), (_block_list, 300), (_block_list, 2600),
])
def test_large_transfers_match_mpi(make, run) -> None:
    """Past 4 MiB the kernels may stream; misaligned positions and odd runs included."""
    dt = make(run, 5 << 20)
    dt.Commit()
    try:
        assert dt.size >= 4 << 20
        rng = np.random.default_rng(run)
        check_pack(dt, 1, 13, rng, 7)
        check_unpack(dt, 1, 13, rng, 7)
    finally:
        dt.Free()


# ---------------------------------------------------------------- the packer cache

@settings(RANDOM, max_examples=25)
@given(datatype_recipes(max_depth=2), datatype_recipes(max_depth=2), seeds)
def test_cache_is_reused_and_forgets_freed_types(first, second, seed) -> None:
    """One Packer per live type; a freed type's handle, reused by a new type, gets a fresh Packer."""
    rng = np.random.default_rng(seed)
    with committed(first) as a:
        assume(comparable(a, 2))
        packer = packer_for(a)
        assert packer_for(a) is packer
        for _ in range(3):  # repeated calls: same answer, same cached plan
            check_pack(a, 2, 5, rng, 1)
        assert packer.plan(2) is packer.plan(2)
        assert packer_for(a) is packer
    with committed(second) as b:  # often gets the freed type's handle back
        assume(comparable(b, 2))
        check_pack(b, 2, 3, rng, 0)
        layout = canonical_layout(b)
        if layout is not None and b.size:
            assert np.array_equal(layout_typemap(layout, 1), mpi_typemap(b, 1)), "stale cached layout"


def test_dup_has_its_own_packer_and_freeing_it_keeps_the_original() -> None:
    base = MPI.INT.Create_vector(3, 1, 2)
    base.Commit()
    try:
        original = packer_for(base)
        dup = base.Dup()
        assert packer_for(dup) is not original
        assert canonical_layout(dup) == original.layout
        dup.Free()
        assert packer_for(base) is original
        check_pack(base, 2, 0, np.random.default_rng(0), 0)
    finally:
        free(base)


def test_handle_reuse_after_free_never_serves_a_stale_layout() -> None:
    """Free and recreate types in a loop: handles get recycled, layouts must not be."""
    rng = np.random.default_rng(1)
    seen = set()
    for i in range(40):
        dt = MPI.DOUBLE.Create_vector(2 + i % 3, 1, 2 + i % 4) if i % 2 else MPI.SHORT.Create_contiguous(1 + i % 5)
        dt.Commit()
        seen.add(dt.handle)
        check_pack(dt, 2, i % 7, rng, 0)
        dt.Free()
    assert len(seen) < 40  # the allocator did recycle handles, so the check above meant something


# ---------------------------------------------------------------- fixed corner cases

def _pack_any_extent(dt: MPI.Datatype, src: np.ndarray, count: int, out, position: int) -> int:
    """MPI_Pack of ``count`` elements for any extent: one element of contiguous(count, dt)
    resized to extent 1, so mpi4py's len // extent is 1."""
    run = dt.Create_contiguous(count)
    one = run.Create_resized(0, 1)
    run.Free()
    one.Commit()
    try:
        return one.Pack(MPI.buffer.fromaddress(src.ctypes.data, 1, readonly=True), out, position, MPI.COMM_SELF)
    finally:
        one.Free()


def _offset_negative_extent() -> MPI.Datatype:
    """An int at byte 8 whose extent is -4: element i sits at 8 - 4 i."""
    back = MPI.INT.Create_resized(0, -4)
    dt = MPI.Datatype.Create_struct([1], [8], [back])
    back.Free()
    return dt


@pytest.mark.parametrize("make, count", [
    (lambda: MPI.INT.Create_resized(0, 0), 3),  # every element on the same bytes
    (lambda: MPI.DOUBLE.Create_resized(0, 4), 3),  # elements overlap by half
    (_offset_negative_extent, 3),  # elements step backwards
    (lambda: MPI.SHORT_INT.Create_contiguous(3), 2),  # pair type with a hole
    (lambda: MPI.DOUBLE_INT.Create_vector(2, 1, 3), 2),
])
def test_extents_that_overlap_or_step_backwards(make, count) -> None:
    dt = make()
    dt.Commit()
    try:
        assert touched_span(dt, count)[0] >= 0
        rng = np.random.default_rng(count)
        src = user_buffer(rng, dt, count, 0)
        ours = random_bytes(rng, 3 + count * dt.size + 2)
        theirs = ours.copy()
        assert pack(src, count, dt, ours, 3) == _pack_any_extent(dt, src, count, theirs, 3)
        assert_same_bytes(ours, theirs, f"pack with extent {dt.extent}")
    finally:
        dt.Free()


def test_elements_step_by_the_extent_mpi_reports() -> None:
    """Open MPI reports extent 2 for struct {BYTE at 0, contiguous(0) at 2} yet packs 3 elements
    from bytes 0, 1, 2 (its contiguous(3, dt) uses 0, 2, 4). The engine must follow the extent."""
    empty = MPI.BYTE.Create_contiguous(0)
    dt = MPI.Datatype.Create_struct([1, 1], [0, 2], [MPI.BYTE, empty])
    empty.Free()
    dt.Commit()
    try:
        assert dt.extent == 2
        src = np.arange(8, dtype=np.uint8)
        out = bytearray(3)
        assert pack(src, 3, dt, out) == 3
        assert list(out) == [0, 2, 4]
        expected = bytearray(3)
        _pack_any_extent(dt, src, 3, expected, 0)
        assert out == expected
    finally:
        dt.Free()


def test_byte_stride_minus_one_follows_the_standard() -> None:
    """Open MPI builds hvector(2, 2, stride=-1 byte) as if it were contiguous; the standard puts
    the second block one byte *before* the first. Compared with the same layout as hindexed."""
    made = []
    try:
        for make in (lambda: MPI.INT.Create_hvector(2, 2, -1), lambda: MPI.INT.Create_hindexed([2, 2], [0, -1])):
            inner = make()
            made.append(MPI.Datatype.Create_struct([1], [1], [inner]))  # move it to true_lb 0
            inner.Free()
            made[-1].Commit()
        hvector, hindexed = made
        src = np.arange(16, dtype=np.uint8)
        ours, theirs = bytearray(16), bytearray(16)
        assert pack(src, 1, hvector, ours) == mpi_pack(hindexed, src, 1, theirs, 0) == 16
        assert list(ours) == list(range(1, 9)) + list(range(0, 8))
        assert ours == theirs
    finally:
        for dt in made:
            dt.Free()


def test_count_zero_packs_nothing() -> None:
    dt = MPI.INT.Create_vector(2, 1, 3)
    dt.Commit()
    try:
        out = bytearray(b"\xab" * 8)
        assert pack(np.zeros(0, np.uint8), 0, dt, out, 5) == 5
        assert unpack(bytes(8), 5, np.zeros(0, np.uint8), 0, dt) == 5
        assert out == bytearray(b"\xab" * 8)
    finally:
        dt.Free()


@pytest.mark.xfail(strict=True, reason=(
    "Open MPI moves only the 10 value bytes of an x87 long double in vector/indexed layouts and leaves "
    "the 6 padding bytes untouched (but moves all 16 in resized or subarray layouts); the engine moves 16"))
@pytest.mark.parametrize("make", [
    lambda: MPI.LONG_DOUBLE.Create_vector(2, 1, 2),
    lambda: MPI.LONG_DOUBLE.Create_indexed([1, 2], [3, 0]),
    lambda: MPI.C_LONG_DOUBLE_COMPLEX.Create_vector(2, 1, 2),
], ids=["vector", "indexed", "complex_vector"])
def test_long_double_padding_like_open_mpi(make) -> None:
    """The engine's contract is MPI's bytes exactly, padding included. Open MPI is not even
    consistent with itself here (resized(LONG_DOUBLE, 0, 32) moves all 16 bytes), so this is
    kept as a known, documented difference: remove the xfail if the engine ever matches."""
    dt = make()
    dt.Commit()
    try:
        rng = np.random.default_rng(7)
        check_pack(dt, 1, 0, rng, 0)
        check_unpack(dt, 1, 0, rng, 0)
    finally:
        dt.Free()
