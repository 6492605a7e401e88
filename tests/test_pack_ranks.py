"""The datatype engine under mpiexec: rank-dependent types, and a halo exchange around a ring.

Bodies run on every rank through ``mpiforge.testing.run_ranks``; they are module level and
import nothing from the tests folder (the worker loads this file by path).
"""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.datatypes import pack, unpack
from mpiforge.testing import run_ranks

NPROCS = [1, 2, 3, 4]
TIMEOUT = 120
D = MPI.DOUBLE.size


# ---------------------------------------------------------------- helpers (every rank)

def mpi_pack(dt: MPI.Datatype, src: np.ndarray, count: int) -> bytearray:
    out = bytearray(count * dt.size)
    dt.Pack(MPI.buffer.fromaddress(src.ctypes.data, count * dt.extent, readonly=True), out, 0, MPI.COMM_SELF)
    return out


def check_against_mpi(dt: MPI.Datatype, what: str, rng: np.random.Generator) -> None:
    """Engine pack == MPI pack and engine unpack == MPI unpack, for 1 and 2 elements."""
    for count in (1, 2):
        src = rng.integers(0, 256, count * dt.extent, dtype=np.uint8)
        ours = bytearray(count * dt.size)
        assert pack(src, count, dt, ours) == len(ours), what
        assert ours == mpi_pack(dt, src, count), f"{what}: engine pack differs from MPI ({count} elements)"
        got, want = np.full_like(src, 0x5A), np.full_like(src, 0x5A)
        assert unpack(bytes(ours), 0, got, count, dt) == len(ours)
        dt.Unpack(bytes(ours), 0, MPI.buffer.fromaddress(want.ctypes.data, count * dt.extent), MPI.COMM_SELF)
        assert np.array_equal(got, want), f"{what}: engine unpack differs from MPI ({count} elements)"


def pair_struct() -> MPI.Datatype:
    """A 16-byte element with a hole: {int at 0, double at 8}."""
    return MPI.Datatype.Create_struct([1, 1], [0, 8], [MPI.INT, MPI.DOUBLE])


DISTRIBUTIONS = [  # per dim: (distrib, darg)
    ((MPI.DISTRIBUTE_BLOCK, MPI.DISTRIBUTE_DFLT_DARG), (MPI.DISTRIBUTE_BLOCK, MPI.DISTRIBUTE_DFLT_DARG)),
    ((MPI.DISTRIBUTE_CYCLIC, MPI.DISTRIBUTE_DFLT_DARG), (MPI.DISTRIBUTE_BLOCK, MPI.DISTRIBUTE_DFLT_DARG)),
    ((MPI.DISTRIBUTE_CYCLIC, 2), (MPI.DISTRIBUTE_CYCLIC, 3)),
    ((MPI.DISTRIBUTE_BLOCK, 4), (MPI.DISTRIBUTE_CYCLIC, 1)),
]


def rank_darrays(comm: MPI.Comm):
    """(name, darray) pieces of a 9 x 10 global array this rank owns, several distributions."""
    psizes = MPI.Compute_dims(comm.size, 2)
    for oldname, old in (("double", MPI.DOUBLE), ("short_int", MPI.SHORT_INT), ("struct", pair_struct())):
        for i, dist in enumerate(DISTRIBUTIONS):
            distribs, dargs = [d for d, _ in dist], [a for _, a in dist]
            if any(a != MPI.DISTRIBUTE_DFLT_DARG and d == MPI.DISTRIBUTE_BLOCK and a * p < g
                   for (d, a), p, g in zip(dist, psizes, (9, 10))):
                continue  # block too small to cover the dimension: not a valid darray
            for order in (MPI.ORDER_C, MPI.ORDER_FORTRAN):
                dt = old.Create_darray(comm.size, comm.rank, [9, 10], distribs, dargs, psizes, order)
                dt.Commit()
                yield f"darray {oldname} dist{i} order{order}", dt
        if not old.is_predefined:
            old.Free()


def rank_subarrays(comm: MPI.Comm):
    r = comm.rank
    sizes = [6, 7, 5]
    subs = [1 + r % 3, 2 + r % 4, 5 - r % 2]
    starts = [s - n - r % (s - n + 1) for s, n in zip(sizes, subs)]
    for order in (MPI.ORDER_C, MPI.ORDER_FORTRAN):
        for oldname, old in (("float", MPI.FLOAT), ("double_int", MPI.DOUBLE_INT)):
            dt = old.Create_subarray(sizes, subs, starts, order)
            dt.Commit()
            yield f"subarray {oldname} order{order} {subs}@{starts}", dt


# ---------------------------------------------------------------- bodies

def body_rank_dependent_types(comm: MPI.Comm) -> None:
    rng = np.random.default_rng(100 + comm.rank)
    for make in (rank_darrays, rank_subarrays):
        for what, dt in make(comm):
            try:
                check_against_mpi(dt, f"rank {comm.rank}: {what}", rng)
            finally:
                dt.Free()
    darray_pieces_tile_the_array(comm)


def darray_pieces_tile_the_array(comm: MPI.Comm) -> None:
    """Every rank moves its darray piece with the engine; together they rebuild the array once."""
    psizes = MPI.Compute_dims(comm.size, 3)
    gsizes = [5, 6, 7]
    glob = np.arange(np.prod(gsizes), dtype=np.float64).reshape(gsizes) + 1
    dist = [MPI.DISTRIBUTE_CYCLIC, MPI.DISTRIBUTE_BLOCK, MPI.DISTRIBUTE_CYCLIC]
    dt = MPI.DOUBLE.Create_darray(comm.size, comm.rank, gsizes, dist, [2, MPI.DISTRIBUTE_DFLT_DARG, 1], psizes)
    dt.Commit()
    try:
        piece = bytearray(dt.size)
        pack(glob, 1, dt, piece)
        mine = np.zeros_like(glob)
        unpack(piece, 0, mine, 1, dt)
        total = np.zeros_like(glob)
        comm.Allreduce(mine, total, MPI.SUM)
        assert comm.allreduce(dt.size) == glob.nbytes
        assert np.array_equal(total, glob), "darray pieces overlap or leave holes"
    finally:
        dt.Free()


def _local_grid(rank: int, shape) -> np.ndarray:
    """Interior values that say who owns them and where; halo cells start at -1."""
    grid = np.full(shape, -1.0)
    z, y, x = np.indices(shape)
    grid[1:-1, 1:-1, 1:-1] = (rank * 1e6 + z * 1e4 + y * 1e2 + x)[1:-1, 1:-1, 1:-1]
    return grid


def _faces(shape):
    """For each axis: (send-high, receive-low-halo, send-low, receive-high-halo) datatypes, built
    with different constructors so the exchange crosses several canonical forms."""
    nz, ny, nx = (n - 2 for n in shape)
    _, Y, X = shape

    def sub(sub_sizes, starts):
        return MPI.DOUBLE.Create_subarray(list(shape), sub_sizes, starts)

    def yface(y):  # nz blocks of nx doubles, one per z plane: hvector of contiguous, shifted
        run = MPI.DOUBLE.Create_contiguous(nx)
        vec = run.Create_hvector(nz, 1, Y * X * D)
        run.Free()
        out = vec.Create_hindexed_block(1, [((1 * Y + y) * X + 1) * D])
        vec.Free()
        return out

    def zface(z):  # a dense-row block: indexed_block of rows
        return MPI.DOUBLE.Create_indexed_block(nx, [(z * Y + y) * X + 1 for y in range(1, ny + 1)])

    return {
        "x": (sub([nz, ny, 1], [1, 1, nx]), sub([nz, ny, 1], [1, 1, 0]),
              sub([nz, ny, 1], [1, 1, 1]), sub([nz, ny, 1], [1, 1, nx + 1])),
        "y": (yface(ny), yface(0), yface(1), yface(ny + 1)),
        "z": (zface(nz), zface(0), zface(1), zface(nz + 1)),
    }


def body_ring_halo_exchange(comm: MPI.Comm) -> None:
    """Send both boundary faces of every axis to the ring neighbours: once packed by the engine
    and sent as bytes, once with MPI derived datatypes. Both grids must end up identical."""
    shape = (5, 6, 7)  # distinct extents per axis, so a face built on the wrong axis cannot fit
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    ours, theirs = _local_grid(comm.rank, shape), _local_grid(comm.rank, shape)
    faces = _faces(shape)
    try:
        for dt in (t for four in faces.values() for t in four):
            dt.Commit()
        for axis, (send_hi, recv_lo, send_lo, recv_hi) in faces.items():
            for send, recv, dest, source in ((send_hi, recv_lo, right, left), (send_lo, recv_hi, left, right)):
                outgoing, incoming = bytearray(send.size), bytearray(recv.size)
                assert pack(ours, 1, send, outgoing) == send.size
                comm.Sendrecv(outgoing, dest, 11, incoming, source, 11)
                assert unpack(incoming, 0, ours, 1, recv) == recv.size
                comm.Sendrecv([theirs, 1, send], dest, 12, [theirs, 1, recv], source, 12)
            assert np.array_equal(ours, theirs), f"rank {comm.rank}: {axis} halo differs from MPI's exchange"
        # and independently of both: the low x halo holds the left neighbour's last x plane
        expected = _local_grid(left, shape)[1:-1, 1:-1, -2]
        assert np.array_equal(ours[1:-1, 1:-1, 0], expected)
        assert np.array_equal(ours[1:-1, 0, 1:-1], _local_grid(left, shape)[1:-1, -2, 1:-1])
        assert np.array_equal(ours[-1, 1:-1, 1:-1], _local_grid(right, shape)[1, 1:-1, 1:-1])
    finally:
        for dt in (t for four in faces.values() for t in four):
            dt.Free()


# ---------------------------------------------------------------- tests

@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", NPROCS)
def test_rank_dependent_types_pack_like_mpi(nprocs) -> None:
    """darray/subarray pieces that differ per rank pack like MPI; together the pieces tile the array."""
    run_ranks(body_rank_dependent_types, nprocs, timeout=TIMEOUT)


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", NPROCS)
def test_ring_halo_exchange_matches_mpi_datatypes(nprocs) -> None:
    run_ranks(body_ring_halo_exchange, nprocs, timeout=TIMEOUT)
