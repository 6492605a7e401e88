"""Two-level allreduce that moves each byte over the slow (inter-node) links once per rail.

    hier = Hierarchy(comm)                      # collective: splits node and rail communicators
    total = hier.allreduce(grads, "sum")        # intra-node reduce-scatter -> inter-node
                                                # allreduce per rail -> intra-node allgather

With L ranks on each of K nodes, local rank i of every node reduces chunk i of the node's
data, the K ranks holding chunk i (a "rail") allreduce it across nodes, and each node gathers
its chunks back: every rank sends about 2(L-1)/L x n bytes inside its node and 2(K-1)/K x n/L
bytes across nodes, instead of 2(p-1)/p x n over links that rank order may route across nodes.
Nodes of unequal size use a leader per node instead (reduce to the leader, allreduce among
leaders, broadcast). Nodes come from ``topology.discovery`` (``MPIFORGE_TOPOLOGY`` too).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from mpi4py import MPI

from .algorithms import (binomial_bcast, binomial_reduce, chunk_bounds, rabenseifner_allreduce, ring_allgather,
                         ring_reduce_scatter)
from .discovery import Topology, discover

__all__ = ["Hierarchy"]

FlatAllreduce = Callable[[MPI.Comm, np.ndarray, str], np.ndarray]


class Hierarchy:
    """A communicator split by node (``node``) and by local rank across nodes (``rail``)."""

    def __init__(self, comm: MPI.Comm, topology: Topology | None = None,
                 inter: FlatAllreduce = rabenseifner_allreduce) -> None:
        self.comm = comm
        self.topology = topology or discover(comm)
        self.inter = inter
        me = self.topology.places[comm.rank]
        self.node = comm.Split(color=me.node, key=comm.rank)
        sizes = {len(ranks) for ranks in self.topology.nodes}
        self.uniform = len(sizes) == 1
        # with uniform nodes every local rank forms a rail; otherwise only the leaders (local 0)
        color = me.local_rank if self.uniform or me.local_rank == 0 else MPI.UNDEFINED
        self.rail = comm.Split(color=color, key=me.node)

    def allreduce(self, array: np.ndarray, op: str = "sum", inter: FlatAllreduce | None = None) -> np.ndarray:
        """``array`` reduced over the whole communicator (the same bits on every rank); ``inter``
        replaces the inter-node algorithm for this call."""
        inter = inter or self.inter
        if self.uniform:
            acc = np.array(array, copy=True)
            flat = acc.reshape(-1)
            local = list(range(self.node.size))
            owned = ring_reduce_scatter(self.node, flat, op, local)
            chunks = chunk_bounds(flat.size, self.node.size)
            a, b = chunks[owned]
            if self.rail.size > 1:
                flat[a:b] = inter(self.rail, flat[a:b], op)
            ring_allgather(self.node, flat, local)
            return acc
        reduced = binomial_reduce(self.node, np.ascontiguousarray(array), op, root=0)
        result = np.empty_like(array)
        if self.node.rank == 0:
            result[...] = inter(self.rail, reduced, op) if self.rail.size > 1 else reduced
        return binomial_bcast(self.node, result, root=0)

    def free(self) -> None:
        for comm in (self.node, self.rail):
            if comm != MPI.COMM_NULL:
                comm.Free()

