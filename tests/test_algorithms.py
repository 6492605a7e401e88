"""Flat collective algorithms against MPI's own collectives, at 1-4 ranks (odd counts too)."""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.testing import run_ranks

TIMEOUT = 180
MPI_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}


def values(rank: int, n: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(1000 * rank + n)
    if dtype.startswith("float"):
        return rng.uniform(0.5, 1.5, n).astype(dtype)
    return rng.integers(1, 4, n).astype(dtype)


def same_everywhere(comm: MPI.Comm, result: np.ndarray) -> bool:
    return all(np.array_equal(result.view(np.uint8), other.view(np.uint8)) for other in comm.allgather(result))


def body_allreduce(comm: MPI.Comm) -> None:
    from mpiforge.topology import algorithms as alg

    reversed_ring = list(range(comm.size))[::-1]
    variants = {
        "ring": alg.ring_allreduce,
        "ring_reversed": lambda c, x, op: alg.ring_allreduce(c, x, op, order=reversed_ring),
        "recursive_doubling": alg.recursive_doubling_allreduce,
        "rabenseifner": alg.rabenseifner_allreduce,
    }
    for dtype in ("float32", "float64", "int32", "int64"):
        for n in (1, 3, 7, 1000, 4099):
            mine = values(comm.rank, n, dtype)
            for op, mpi_op in MPI_OPS.items():
                want = np.empty_like(mine)
                comm.Allreduce(mine, want, op=mpi_op)
                for name, fn in variants.items():
                    got = fn(comm, mine, op)
                    what = f"{name} {op} {dtype} n={n}"
                    assert got.dtype == mine.dtype and got.shape == mine.shape, what
                    if dtype.startswith("float"):
                        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=what)
                    else:
                        assert np.array_equal(got, want), what
                    assert same_everywhere(comm, got), f"{what}: ranks disagree"
                    assert np.array_equal(mine, values(comm.rank, n, dtype)), f"{what}: input changed"


def body_trees(comm: MPI.Comm) -> None:
    from mpiforge.topology import algorithms as alg

    for root in range(comm.size):
        for n in (1, 5, 1000):
            data = values(root, n, "float64") if comm.rank == root else np.zeros(n)
            assert np.array_equal(alg.binomial_bcast(comm, data, root), values(root, n, "float64"))
            mine = values(comm.rank, n, "int64")
            want = np.empty_like(mine)
            comm.Reduce(mine, want, op=MPI.SUM, root=root)
            got = alg.binomial_reduce(comm, mine, "sum", root)
            if comm.rank == root:
                assert np.array_equal(got, want), (root, n)
            else:
                assert got is None


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_allreduce_algorithms_match_mpi(nprocs: int) -> None:
    run_ranks(body_allreduce, nprocs, TIMEOUT)


@pytest.mark.parametrize("nprocs", [1, 3, 4])
def test_tree_bcast_and_reduce_match_mpi(nprocs: int) -> None:
    run_ranks(body_trees, nprocs, TIMEOUT)


def body_hierarchical(comm: MPI.Comm, inter: str) -> None:
    from mpiforge.topology.hierarchical import Hierarchy

    hier = Hierarchy(comm)
    for dtype in ("float32", "int64"):
        for n in (1, 5, 1000, 4099):
            mine = values(comm.rank, n, dtype)
            for op, mpi_op in MPI_OPS.items():
                want = np.empty_like(mine)
                comm.Allreduce(mine, want, op=mpi_op)
                segments = 1 + n % 4
                got = hier.allreduce(mine, op, inter, segments=segments, depth=2)
                what = f"hierarchical/{inter} x{segments} {op} {dtype} n={n} ({hier.topology.placement})"
                if dtype.startswith("float"):
                    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=what)
                else:
                    assert np.array_equal(got, want), what
                assert same_everywhere(comm, got), f"{what}: ranks disagree"
    hier.free()


@pytest.mark.parametrize("nprocs,layout,inter", [
    (4, "nodes=2", "rabenseifner"),
    (4, "nodes=2,placement=roundrobin", "ring"),
    (4, "nodes=4", "recursive_doubling"),
    (3, "nodes=2", "rabenseifner"),  # nodes of 2 and 1 ranks: the leader path
    (3, "nodes=1", "ring"),
    (1, "nodes=1", "ring"),
])
def test_hierarchical_allreduce_matches_mpi(nprocs: int, layout: str, inter: str) -> None:
    run_ranks(body_hierarchical, nprocs, TIMEOUT, args=(inter,), env={"MPIFORGE_TOPOLOGY": layout})


def body_topology_collective(comm: MPI.Comm, algo: str) -> None:
    from mpiforge.topology.collective import TopologyCollective

    coll = TopologyCollective(comm, algo=algo)
    for n in (1, 1000, 70000):
        mine = values(comm.rank, n, "float64")
        want = np.empty_like(mine)
        comm.Allreduce(mine, want, op=MPI.SUM)
        np.testing.assert_allclose(coll.allreduce(mine, "sum"), want, rtol=1e-12)
        np.testing.assert_allclose(coll.allreduce(mine, "avg"), want / comm.size, rtol=1e-12)
        out = np.empty_like(mine)
        assert coll.allreduce_async(mine, "max", out=out).wait() is out
        comm.Allreduce(mine, want, op=MPI.MAX)
        assert np.array_equal(out, want)
        if algo != "auto":
            assert coll.algorithm_for(mine.nbytes) == algo
    coll.free()


@pytest.mark.parametrize("algo", ["auto", "mpi", "ring", "recursive_doubling", "rabenseifner", "hierarchical"])
def test_topology_collective(algo: str) -> None:
    run_ranks(body_topology_collective, 4, TIMEOUT, args=(algo,), env={"MPIFORGE_TOPOLOGY": "nodes=2,placement=roundrobin"})


def test_cost_model_choices() -> None:
    from mpiforge.topology.cost import Machine

    flat = Machine.cluster(1, 4)
    assert flat.best("allreduce", 64, candidates=["ring", "recursive_doubling", "rabenseifner"]).algorithm \
        == "recursive_doubling"  # tiny: fewest messages
    rr = Machine.cluster(3, 2, placement="roundrobin")
    big = rr.best("allreduce", 64 << 20, candidates=["ring", "rabenseifner", "hierarchical"])
    assert big.algorithm == "hierarchical"  # large over slow links: fewest bytes across
    assert rr.predict("allreduce", "hierarchical", 16 << 20) < rr.predict("allreduce", "rabenseifner", 16 << 20)
    with pytest.raises(ValueError, match="unknown algorithm"):
        rr.predict("allreduce", "butterfly", 1)


def test_bad_algo_is_explained(monkeypatch) -> None:
    from mpiforge.topology.collective import TopologyCollective

    monkeypatch.setenv("MPIFORGE_ALGO", "butterfly")
    with pytest.raises(ValueError, match="MPIFORGE_ALGO"):
        TopologyCollective(MPI.COMM_SELF)


def body_three_levels(comm: MPI.Comm) -> None:
    from mpiforge.topology.hierarchical import Hierarchy

    hier = Hierarchy(comm)
    assert len(hier.axes) == 3, hier.topology.coordinates()
    for n in (1, 7, 4099):
        mine = values(comm.rank, n, "int64")
        for op, mpi_op in MPI_OPS.items():
            want = np.empty_like(mine)
            comm.Allreduce(mine, want, op=mpi_op)
            got = hier.allreduce(mine, op, "rabenseifner", segments=2)
            assert np.array_equal(got, want), (op, n)
        floats = values(comm.rank, n, "float32")
        got = hier.allreduce(floats, "sum", "ring")
        assert same_everywhere(comm, got)
    hier.free()


def test_three_level_allreduce() -> None:
    """Nodes of two sockets of two ranks: reduce-scatter in the socket, then across the node's
    sockets, allreduce across nodes, allgather back."""
    run_ranks(body_three_levels, 8, TIMEOUT, env={"MPIFORGE_TOPOLOGY": "nodes=2,sockets=2"})
