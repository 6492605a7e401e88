"""The demo's collectives part: ``TopologyCollective.allreduce`` against MPI's on this job.

For a few sizes the part shows the plan the cost model picks, the median time of that plan and
of ``MPI_Allreduce``, and checks that the sums are exact (integer-valued float32 data, so every
summation order gives the same bits) and, with int8 on the inter-node step, within the codec's
error bound.
"""
from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..demo import DemoConfig, Section

__all__ = ["collectives_part"]

SIZES = (4 << 10, 256 << 10, 4 << 20)  # bytes of float32
REPS = 9


def _median_seconds(comm: MPI.Comm, *calls) -> list[float]:
    """Per call, the slowest rank's median of ``REPS`` runs, each after a barrier; the calls
    take turns so that a change of background load hits them alike."""
    from mpi4py import MPI

    times: list[list[float]] = [[] for _ in calls]
    for _ in range(REPS):
        for call, mine in zip(calls, times):
            comm.Barrier()
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
    return [comm.allreduce(statistics.median(t), op=MPI.MAX) for t in times]


def collectives_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    """Plans, times and exactness of the topology-aware allreduce (collective over ``comm``)."""
    from mpi4py import MPI

    from ..demo import Section
    from .collective import TopologyCollective
    from .simulate import format_size, label

    coll = TopologyCollective(comm)
    rows, ok = [], True
    for nbytes in SIZES:
        n = nbytes // 4
        x = (np.arange(n, dtype=np.float32) % 97 + comm.rank).astype(np.float32)
        want = np.empty_like(x)
        comm.Allreduce(x, want, MPI.SUM)
        got = coll.allreduce(x)
        exact = bool(comm.allreduce(int(np.array_equal(got, want)), op=MPI.MIN))
        quantized = coll.allreduce(x, quantize="int8")
        bound = 0.02 * float(np.abs(want).max())  # int8: half a step of a block's scale per hop, a few hops
        close = bool(comm.allreduce(int(np.abs(quantized - want).max() <= bound), op=MPI.MIN))
        mpi_s, ours_s = _median_seconds(comm, lambda x=x, want=want: comm.Allreduce(x, want, MPI.SUM),
                                        lambda x=x, got=got: coll.allreduce(x, out=got))
        ok = ok and exact and close
        rows.append((format_size(nbytes), label(coll.plan("allreduce", nbytes)), f"{mpi_s * 1e3:.2f}",
                     f"{ours_s * 1e3:.2f}", f"{mpi_s / ours_s:.2f}", "exact" if exact else "WRONG",
                     "within bound" if close else "OUT OF BOUND"))
    nodes = coll.topology.nodes
    note = (f"{len(nodes)} node(s) x {max(len(r) for r in nodes)} rank(s); plans from the cost model "
            "(mpiforge calibrate --levels measures it on a job; scripts/bench_allreduce.py runs an emulated cluster)")
    return [Section("Topology-aware allreduce (float32 sum)", rows,
                    ("size", "plan", "MPI ms", "mpiforge ms", "x MPI", "result", "int8 inter-node"), note, ok)]
