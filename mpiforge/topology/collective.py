"""``TopologyCollective``: the shared ``Collective`` interface with topology-aware allreduce.

    coll = TopologyCollective(MPI.COMM_WORLD)     # collective: discovers nodes, splits communicators
    total = coll.allreduce(grads)                 # the algorithm the cost model picks for this size
    coll.algorithm_for(grads.nbytes)              # "hierarchical", "rabenseifner", ...

``MPIFORGE_ALGO`` (or ``algo=``) forces one of ``cost.ALGORITHMS`` or ``mpi`` (MPI's own
Allreduce). Broadcast and allgather are MPI's own; the asynchronous allreduce runs the chosen
algorithm when its handle is waited on.
"""
from __future__ import annotations

import os

import numpy as np
from mpi4py import MPI

from ..comms.collective import Handle, MPICollective, check_op
from . import algorithms as alg
from .cost import ALGORITHMS, CostModel
from .hierarchical import Hierarchy

__all__ = ["TopologyCollective"]

_FLAT = {"ring": alg.ring_allreduce, "recursive_doubling": alg.recursive_doubling_allreduce,
         "rabenseifner": alg.rabenseifner_allreduce}


class _Deferred:
    """A request that is complete at once (the work runs in ``Handle.wait``)."""

    def Test(self) -> bool:
        return True

    def Wait(self) -> None:
        return None


class TopologyCollective(MPICollective):
    """Allreduce by the algorithm the cost model picks for (size, topology); the rest as MPI."""

    def __init__(self, comm: MPI.Comm, algo: str | None = None, model: CostModel | None = None) -> None:
        super().__init__(comm)
        forced = algo or os.environ.get("MPIFORGE_ALGO") or None
        if forced not in (None, "auto", "mpi", *ALGORITHMS):
            raise ValueError(f"MPIFORGE_ALGO={forced!r}: use auto, mpi or one of {', '.join(ALGORITHMS)}")
        self.forced = None if forced == "auto" else forced
        self.model = model or CostModel()
        self.hierarchy = Hierarchy(comm)
        nodes = self.hierarchy.topology.nodes
        self.shape = (len(nodes), max(len(n) for n in nodes))

    def algorithm_for(self, nbytes: int) -> str:
        """The forced algorithm, or the cost model's choice for ``nbytes`` on this topology."""
        return self.forced or self.model.best(nbytes, *self.shape)

    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> Handle:
        algorithm = self.algorithm_for(np.asarray(array).nbytes)
        if algorithm == "mpi":
            return super().allreduce_async(array, op, out)
        array = np.ascontiguousarray(array)
        check_op(op, array.dtype)
        reduce_op = "sum" if op == "avg" else op

        def finish() -> np.ndarray:
            if algorithm == "hierarchical":
                inter = self.model.inter_algorithm(array.nbytes, *self.shape)
                result = self.hierarchy.allreduce(array, reduce_op, _FLAT[inter])
            else:
                result = _FLAT[algorithm](self.comm, array, reduce_op)
            if op == "avg":
                np.divide(result, self.size, out=result)
            if out is None:
                return result
            out[...] = result
            return out

        return Handle(_Deferred(), finish)
