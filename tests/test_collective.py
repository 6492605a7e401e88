"""The shared Collective interface, MPI backend: every op and dtype against numpy, at 1-4 ranks."""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.testing import run_ranks

TIMEOUT = 120


def values(rank: int, n: int, dtype: str) -> np.ndarray:
    return ((np.arange(n) * 3 + rank * 7) % 11 + 1).astype(dtype)


def body_collective(comm: MPI.Comm) -> None:
    from mpiforge.comms.collective import MPICollective

    coll = MPICollective(comm)
    assert (coll.size, coll.rank) == (comm.size, comm.rank)
    everyone = lambda n, dt: np.stack([values(r, n, dt) for r in range(comm.size)])  # noqa: E731
    for dtype in ("float32", "float64", "int32", "int64"):
        for n in (1, 7, 1001):
            mine, allv = values(comm.rank, n, dtype), everyone(n, dtype)
            for op, ref in (("sum", allv.sum(0)), ("max", allv.max(0)), ("min", allv.min(0)), ("prod", allv.prod(0))):
                got = coll.allreduce(mine, op)
                assert got.dtype == mine.dtype and np.array_equal(got, ref.astype(dtype)), (op, dtype, n)
            if dtype.startswith("float"):
                np.testing.assert_allclose(coll.allreduce(mine, "avg"), allv.mean(0), rtol=1e-6)
            handle = coll.allreduce_async(mine, "sum")
            assert np.array_equal(handle.wait(), allv.sum(0).astype(dtype)) and handle.done()
            assert np.array_equal(coll.allgather(mine), allv)
            root = comm.size - 1
            data = mine.copy() if comm.rank == root else np.zeros(n, dtype)
            assert np.array_equal(coll.broadcast(data, root=root), values(root, n, dtype))
    with pytest.raises(ValueError, match="floating-point"):
        coll.allreduce(np.arange(3), "avg")
    with pytest.raises(ValueError, match="unknown reduction"):
        coll.allreduce(np.arange(3.0), "median")


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_mpi_collective(nprocs: int) -> None:
    run_ranks(body_collective, nprocs, TIMEOUT)
