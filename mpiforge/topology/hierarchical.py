"""Two-level allreduce that moves each byte over the slow (inter-node) links once per rail.

    hier = Hierarchy(comm)                      # collective: splits node and rail communicators
    total = hier.allreduce(grads, "sum")        # intra-node reduce-scatter -> inter-node
                                                # allreduce per rail -> intra-node allgather
    total = hier.allreduce(grads, "sum", inter="ring", segments=8, codec=get_codec("int8"))

With L ranks on each of K nodes, local rank i of every node reduces chunk i of the node's
data, the K ranks holding chunk i (a "rail") allreduce it across nodes, and each node gathers
its chunks back: every rank sends about 2(L-1)/L x n bytes inside its node and 2(K-1)/K x n/L
bytes across nodes, instead of 2(p-1)/p x n over links that rank order may route across nodes.

``segments`` > 1 cuts the array into that many pieces and runs their stages as a pipeline
(``depth`` pieces in flight), so one piece's reduction and copies inside the node overlap
another's transfer across nodes. A ``codec`` (``comms.quantize``) compresses the inter-node
step only: each chunk is quantized once by its owner, so every rank decodes the same bytes.
Nodes of unequal size use a leader per node instead (reduce to the leader, allreduce among
leaders, broadcast). Nodes come from ``topology.discovery`` (``MPIFORGE_TOPOLOGY`` too).
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .algorithms import (
    FLAT_ALLREDUCE,
    TAG,
    binomial_bcast_steps,
    binomial_reduce_steps,
    block_ring_chunks,
    chunk_bounds,
    ring_allgather_steps,
    ring_reduce_scatter_steps,
)
from .discovery import Topology, discover
from .quantized import quantized_ring_allreduce_steps
from .schedule import Steps, run, run_pipelined

__all__ = ["Hierarchy"]


class Hierarchy:
    """A communicator split by node (``node``) and by local rank across nodes (``rail``)."""

    def __init__(self, comm: MPI.Comm, topology: Topology | None = None) -> None:
        self.comm = comm
        self.topology = topology or discover(comm)
        me = self.topology.places[comm.rank]
        self.node = comm.Split(color=me.node, key=comm.rank)
        sizes = {len(ranks) for ranks in self.topology.nodes}
        self.uniform = len(sizes) == 1
        # with uniform nodes every local rank forms a rail; otherwise only the leaders (local 0)
        color = me.local_rank if self.uniform or me.local_rank == 0 else MPI.UNDEFINED
        self.rail = comm.Split(color=color, key=me.node)
        self.axes = self._axes() if self.uniform else []

    def _axes(self) -> list[MPI.Comm]:
        """Per level of ``topology.coordinates()`` (outermost first) the ranks that differ only
        there: [rail, node] on two levels; [rail, sockets of a node, socket] on three."""
        coords = self.topology.coordinates()
        if len(coords[0]) == 2:
            return [self.rail, self.node]
        mine = coords[self.comm.rank]
        axes = []
        for j in range(len(mine)):
            others = sorted({c[:j] + c[j + 1:] for c in coords})
            axes.append(self.comm.Split(color=others.index(mine[:j] + mine[j + 1:]), key=mine[j]))
        return axes

    def allreduce(self, array: np.ndarray, op: str = "sum", inter: str = "ring", segments: int = 1,
                  depth: int = 2, codec=None, out: np.ndarray | None = None) -> np.ndarray:
        """``array`` reduced over the whole communicator (the same bits on every rank), in a new
        array or in ``out`` (C-contiguous, same shape and dtype; may be ``array`` itself).

        ``inter`` names the flat algorithm across nodes (``algorithms.FLAT_ALLREDUCE``);
        ``codec`` quantizes that step (sum only, float32)."""
        if inter not in FLAT_ALLREDUCE:
            raise ValueError(f"unknown inter-node algorithm {inter!r}: use one of {', '.join(FLAT_ALLREDUCE)}")
        if codec is not None and (op != "sum" or np.asarray(array).dtype != np.float32):
            raise ValueError(f"quantized allreduce needs op='sum' on float32, got {op!r} on {np.asarray(array).dtype}")
        array = np.ascontiguousarray(array)
        if out is None:
            acc = np.empty_like(array)
        elif out.shape != array.shape or out.dtype != array.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {array.shape}")
        else:
            acc = out
        flat, source = acc.reshape(-1), array.reshape(-1)
        if not (self.uniform and self.node.size > 1) or np.shares_memory(acc, array):
            if acc is not array:
                np.copyto(acc, array)  # the leaders' path works in place
            source = None
        segments = max(1, min(segments, flat.size // max(1, self.comm.size)))
        bounds = chunk_bounds(flat.size, segments)
        run_pipelined((self._steps(flat[a:b], None if source is None else source[a:b], op, inter, codec,
                                   TAG + 32 * i) for i, (a, b) in enumerate(bounds)), depth=depth)
        return acc

    def _steps(self, flat: np.ndarray, source: np.ndarray | None, op: str, inter: str, codec, tag: int) -> Steps:
        """One segment into ``flat`` from ``source`` (None: in place): the three stages, or the
        leaders' version."""
        if not self.uniform or self.node.size == 1:
            yield from self._leader_steps(flat, op, inter, codec, tag)
            return
        top, *inner = self.axes
        held = []  # (axis, the piece reduce-scattered over it)
        piece = flat
        for level, axis in enumerate(reversed(inner)):  # innermost level first
            order = list(range(axis.size))
            owned = yield from ring_reduce_scatter_steps(axis, piece, op, order, tag=tag + 10 * level,
                                                         source=source)
            held.append((axis, piece, level))
            a, b = chunk_bounds(piece.size, axis.size)[owned]
            piece, source = piece[a:b], None
        if top.size > 1:
            if codec is not None:
                yield from quantized_ring_allreduce_steps(top, piece, codec, tag=tag + 2)
            else:
                yield from FLAT_ALLREDUCE[inter](top, piece, op, tag=tag + 2)
        for axis, whole, level in reversed(held):
            yield from ring_allgather_steps(axis, whole, list(range(axis.size)), tag=tag + 10 * level + 1)

    def _leader_steps(self, flat: np.ndarray, op: str, inter: str, codec, tag: int) -> Steps:
        """In place on a copy: reduce to local rank 0, allreduce among those, broadcast."""
        is_root = yield from binomial_reduce_steps(self.node, flat, op, root=0, tag=tag)
        if is_root and self.rail.size > 1:
            if codec is not None:
                yield from quantized_ring_allreduce_steps(self.rail, flat, codec, tag=tag + 2)
            else:
                yield from FLAT_ALLREDUCE[inter](self.rail, flat, op, tag=tag + 2)
        yield from binomial_bcast_steps(self.node, flat, root=0, tag=tag + 10)

    # -- the other collectives (nodes of equal size) -------------------------------------------

    def _rails_order(self) -> list[int]:
        """World ranks rail by rail (local rank 0 of every node, then local 1, ...)."""
        nodes = self.topology.nodes
        return [node[local] for local in range(len(nodes[0])) for node in nodes]

    def _need_uniform(self, what: str) -> None:
        if not self.uniform:
            raise ValueError(f"hierarchical {what} needs nodes with equal rank counts; use another algorithm")

    def reduce_scatter(self, array: np.ndarray, op: str = "sum") -> np.ndarray:
        """Block r of the reduction of ``array`` (p equal blocks) on rank r: reduce-scatter inside
        the node into one part per local rank, then across the nodes along each rail."""
        self._need_uniform("reduce_scatter")
        p, per = self.comm.size, self.node.size
        blocks = np.ascontiguousarray(array).reshape(p, -1)
        work = blocks[self._rails_order()].reshape(-1)  # the blocks of rail 0, of rail 1, ...
        parts = chunk_bounds(work.size, per)
        run(ring_reduce_scatter_steps(self.node, work, op, list(range(per)),
                                      chunks=block_ring_chunks(parts, list(range(per)))))
        a, b = parts[self.node.rank]
        part = work[a:b]
        k = self.rail.size
        run(ring_reduce_scatter_steps(self.rail, part, op, list(range(k)),
                                      chunks=block_ring_chunks(chunk_bounds(part.size, k), list(range(k)))))
        lo, hi = chunk_bounds(part.size, k)[self.rail.rank]
        return part[lo:hi].reshape(blocks.shape[1:]).copy()

    def allgather(self, array: np.ndarray) -> np.ndarray:
        """Every rank's ``array`` stacked in rank order: along the rails first, then inside the node."""
        self._need_uniform("allgather")
        array = np.ascontiguousarray(array)
        p, per, k = self.comm.size, self.node.size, self.rail.size
        work = np.empty((p, array.size), dtype=array.dtype)
        flat = work.reshape(-1)
        parts = chunk_bounds(flat.size, per)
        a, b = parts[self.node.rank]
        part = flat[a:b]
        rail_blocks = chunk_bounds(part.size, k)
        lo, hi = rail_blocks[self.rail.rank]
        part[lo:hi] = array.reshape(-1)
        run(ring_allgather_steps(self.rail, part, list(range(k)), chunks=block_ring_chunks(rail_blocks, list(range(k)))))
        run(ring_allgather_steps(self.node, flat, list(range(per)), chunks=block_ring_chunks(parts, list(range(per)))))
        result = np.empty((p, *array.shape), dtype=array.dtype)
        result.reshape(p, -1)[self._rails_order()] = work
        return result

    def bcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """``root``'s array on every rank (in place): along root's rail, then inside every node."""
        self._need_uniform("bcast")
        place = self.topology.places[root]
        if self.topology.places[self.comm.rank].local_rank == place.local_rank:
            run(binomial_bcast_steps(self.rail, array, root=place.node))
        run(binomial_bcast_steps(self.node, array, root=place.local_rank))
        return array

    def reduce(self, array: np.ndarray, op: str = "sum", root: int = 0) -> np.ndarray | None:
        """The reduction on ``root`` (None elsewhere): inside every node, then along root's rail."""
        self._need_uniform("reduce")
        place = self.topology.places[root]
        acc = np.array(array, copy=True)
        if run(binomial_reduce_steps(self.node, acc, op, root=place.local_rank)):
            if run(binomial_reduce_steps(self.rail, acc, op, root=place.node)):
                return acc
        return None

    def free(self) -> None:
        for comm in {id(c): c for c in (self.node, self.rail, *self.axes)}.values():
            if comm != MPI.COMM_NULL:
                comm.Free()
