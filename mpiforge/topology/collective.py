"""``TopologyCollective``: the shared ``Collective`` interface, every collective topology-aware.

    coll = TopologyCollective(MPI.COMM_WORLD)      # collective: discovers nodes, splits communicators
    total = coll.allreduce(grads)                  # the plan the cost model picks for this size
    total = coll.allreduce(grads, quantize="int8") # int8 on the inter-node step only (sum, float32)
    mine = coll.reduce_scatter(grads)              # block `rank` of the sum
    everyone = coll.allgather(shard); coll.broadcast(params, root=0); coll.reduce(x, root=0)
    coll.plan("allreduce", grads.nbytes)           # Plan(algorithm='hierarchical', inter='ring', segments=4, ...)

The machine's figures come from ``mpiforge calibrate --levels`` (``topology.profile``) or the
defaults; an algorithm of ours replaces MPI's own only where predicted 20% faster (``MARGIN``).
``MPIFORGE_ALGO`` (or ``algo=``) forces algorithms: one name for allreduce (``ring``), or per
collective (``allreduce=hierarchical,bcast=mpi``); ``mpi`` is MPI's own.
``MPIFORGE_QUANTIZE=int8|fp8`` (or ``quantize=``) compresses the inter-node step of every sum
allreduce of float32. Device arrays (``__cuda_array_interface__``) are staged through host
memory and come back as device arrays.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from mpi4py import MPI

from ..comms.collective import Handle, MPICollective, check_op
from ..comms.quantize import get_codec
from ..datatypes.buffers import is_device
from . import algorithms as alg
from .cost import ALGORITHMS, COLLECTIVES, Machine, Plan
from .hierarchical import Hierarchy
from .profile import machine_for
from .schedule import run

__all__ = ["TopologyCollective", "parse_forced"]

_NO_DIRECT = (None, None, None, None)
#: an algorithm of ours replaces MPI's own only when predicted at most this fraction of MPI's
#: time: predictions and calibration are good to 10-30% on a noisy machine, and a wrong switch
#: away from MPI costs more than a missed gain of a few percent
MARGIN = 0.8
_MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}


def parse_forced(text: str | None) -> dict[str, str]:
    """``MPIFORGE_ALGO``: "ring" (allreduce) or "allreduce=ring,bcast=mpi"; "auto" forces nothing."""
    forced: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item or item == "auto":
            continue
        collective, _, name = item.rpartition("=")
        collective = collective or "allreduce"
        if collective not in COLLECTIVES or name not in ALGORITHMS[collective]:
            choices = "; ".join(f"{c}: {', '.join(a)}" for c, a in ALGORITHMS.items())
            raise ValueError(f"MPIFORGE_ALGO={text!r}: {item!r} is not a known algorithm ({choices})")
        forced[collective] = name
    return forced


class _Deferred:
    """A request that is complete at once (the work runs in ``Handle.wait``)."""

    def Test(self) -> bool:
        return True

    def Wait(self) -> None:
        return None


class TopologyCollective(MPICollective):
    """Each collective by the plan the cost model picks for (collective, size, topology)."""

    def __init__(self, comm: MPI.Comm, algo: str | None = None, machine: Machine | None = None,
                 quantize: str | None = None) -> None:
        super().__init__(comm)
        self.forced = parse_forced(algo if algo is not None else os.environ.get("MPIFORGE_ALGO"))
        self.quantize = quantize if quantize is not None else os.environ.get("MPIFORGE_QUANTIZE") or None
        get_codec(self.quantize)  # a bad name fails here, not in the middle of training
        self.hierarchy = Hierarchy(comm)
        self.topology = self.hierarchy.topology
        self.machine = machine or machine_for(self.topology)
        nodes = self.topology.nodes
        self.shape = (len(nodes), max(len(n) for n in nodes))
        self._ring = [int(r) for r in self.machine.topology_order()]
        self._plans: dict[tuple, Plan] = {}
        # (array, out, op, MPI op) of the last call planned onto MPI's Allreduce, per quantize=
        # value (None: ``_direct``): the same buffers again go straight there (training loops
        # reuse theirs). Identity tests are the cheapest check there is, and on an oversubscribed
        # machine any Python before a small collective costs ~10x its own time (a shape compare
        # and a dict lookup: +16 us on 213).
        self._direct: tuple = _NO_DIRECT
        self._direct_quantized: dict[str, tuple] = {}

    # -- planning -------------------------------------------------------------------------------

    def plan(self, collective: str, nbytes: int, quantized: bool = False) -> Plan:
        """The forced algorithm, or the cost model's choice, for ``collective`` on ``nbytes``."""
        key = (collective, nbytes, quantized)
        plan = self._plans.get(key)
        if plan is None:
            name = self.forced.get(collective)
            if name and not self.machine.supports(collective, name):
                raise ValueError(f"{collective} algorithm {name!r} does not fit this job "
                                 f"({self.size} ranks, nodes {self.shape}); choose another in MPIFORGE_ALGO")
            plan = self.machine.best(collective, nbytes, candidates=[name] if name else None)
            if quantized and self.machine.supports(collective, "hierarchical") \
                    and name in (None, "hierarchical"):  # compress only where it pays
                plan = min(plan, self.machine.best(collective, nbytes, True), key=lambda p: p.seconds)
            if name is None and plan.algorithm != "mpi":  # ours only where the model is sure it pays
                mpi = self.machine.best(collective, nbytes, candidates=["mpi"])
                if plan.seconds > MARGIN * mpi.seconds:
                    plan = mpi
            self._plans[key] = plan
        return plan

    def algorithm_for(self, nbytes: int, collective: str = "allreduce") -> str:
        return self.plan(collective, nbytes).algorithm

    # -- allreduce ------------------------------------------------------------------------------

    def allreduce_async(self, array: Any, op: str = "sum", out: Any = None, quantize: str | None = None) -> Handle:
        return self._allreduce(array, op, out, quantize, blocking=False)

    def allreduce(self, array: Any, op: str = "sum", out: Any = None, quantize: str | None = None) -> Any:
        """``array`` reduced over all ranks; ``quantize`` overrides the codec of the inter-node step."""
        direct = self._direct if quantize is None else self._direct_quantized.get(quantize, _NO_DIRECT)
        if array is direct[0] and out is direct[1] and op == direct[2]:
            self.comm.Allreduce(array, out, direct[3])
            return out
        return self._allreduce(array, op, out, quantize, blocking=True).wait()

    def _mpi_allreduce(self, array: np.ndarray, op: str, out: np.ndarray | None) -> np.ndarray:
        """MPI's blocking Allreduce into a new array or ``out`` (``array`` itself: in place)."""
        result = _checked_out(array, out)
        self.comm.Allreduce(MPI.IN_PLACE if result is array else array, result, _MPI_OPS["sum" if op == "avg" else op])
        if op == "avg":
            np.divide(result, self.size, out=result)
        return result

    def _allreduce(self, array: Any, op: str, out: Any, quantize: str | None, blocking: bool) -> Handle:
        if is_device(array):
            return _on_device(lambda host: self.allreduce(host, op, quantize=quantize), array, out)
        array = np.ascontiguousarray(array)
        check_op(op, array.dtype)
        if quantize is not None and op not in ("sum", "avg"):
            raise ValueError(f"quantize={quantize!r} applies to sum and avg, not {op!r}: drop it for this call")
        codec = get_codec(quantize if quantize is not None else self.quantize)
        quantized = codec is not None and op in ("sum", "avg") and array.dtype == np.float32
        plan = self.plan("allreduce", array.nbytes, quantized)
        _checked_out(array, out, allocate=False)
        if plan.algorithm == "mpi":
            if blocking and op in _MPI_OPS and type(out) is np.ndarray \
                    and out is not array and out.shape == array.shape and out.dtype == array.dtype \
                    and out.flags.c_contiguous and not np.shares_memory(out, array):
                direct = (array, out, op, _MPI_OPS[op])
                if quantize is None:
                    self._direct = direct
                else:
                    self._direct_quantized[quantize] = direct
            if blocking:
                result = self._mpi_allreduce(array, op, out)
                return Handle(_Deferred(), lambda: result)
            if out is array:
                array = array.copy()  # a nonblocking reduction cannot read and write one buffer
            return super().allreduce_async(array, op, out)

        def finish() -> np.ndarray:
            result = self.run_plan(plan, array, "sum" if op == "avg" else op, out, codec)
            if op == "avg":
                np.divide(result, self.size, out=result)
            return result

        return Handle(_Deferred(), finish)

    def run_plan(self, plan: Plan, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None,
                 codec=None) -> np.ndarray:
        """Allreduce ``array`` by ``plan`` (one of ours; ``codec`` when it is quantized), into
        ``out`` when given (collective; calibration times plans through this)."""
        if plan.algorithm == "hierarchical":
            result = self.hierarchy.allreduce(array, op, plan.inter or "ring", plan.segments,
                                              codec=codec if plan.quantized else None, out=out)
        elif plan.algorithm == "ring":
            result = np.array(array, copy=True)
            run(alg.ring_allreduce_steps(self.comm, result.reshape(-1), op, self._ring))
        else:
            result = alg.FLAT_ALLREDUCE_FN[plan.algorithm](self.comm, array, op)
        if out is None or result is out:
            return result
        out[...] = result
        return out

    # -- the other collectives --------------------------------------------------------------

    def reduce_scatter(self, array: Any, op: str = "sum") -> Any:
        """Block ``rank`` (of ``size`` equal blocks along axis 0) of ``array`` reduced over all ranks."""
        if is_device(array):
            return _on_device(lambda host: self.reduce_scatter(host, op), array).wait()
        array = np.ascontiguousarray(array)
        check_op(op, array.dtype)
        if array.shape[:1] != (self.size,) and array.size % self.size:
            raise ValueError(f"reduce_scatter needs {self.size} equal blocks, got shape {array.shape}")
        block_shape = array.shape[1:] if array.shape[:1] == (self.size,) else (array.size // self.size,)
        reduce_op = "sum" if op == "avg" else op
        algorithm = self.plan("reduce_scatter", array.nbytes).algorithm
        if algorithm == "mpi":
            result = np.empty(block_shape, array.dtype)
            self.comm.Reduce_scatter_block(array, result, op=_MPI_OPS[reduce_op])
        elif algorithm == "hierarchical":
            result = self.hierarchy.reduce_scatter(array, reduce_op).reshape(block_shape)
        else:
            flat = np.array(array, copy=True).reshape(-1)
            bounds = alg.chunk_bounds(flat.size, self.size)
            if algorithm == "ring":
                run(alg.ring_reduce_scatter_steps(self.comm, flat, reduce_op, self._ring,
                                                  chunks=alg.block_ring_chunks(bounds, self._ring)))
            else:
                run(alg.recursive_halving_reduce_scatter_steps(self.comm, flat, reduce_op))
            a, b = bounds[self.rank]
            result = flat[a:b].reshape(block_shape).copy()
        if op == "avg":
            np.divide(result, self.size, out=result)
        return result

    def allgather(self, array: Any) -> Any:
        if is_device(array):
            return _on_device(self.allgather, array).wait()
        array = np.ascontiguousarray(array)
        algorithm = self.plan("allgather", array.nbytes * self.size).algorithm
        if algorithm == "mpi":
            return super().allgather(array)
        if algorithm == "hierarchical":
            return self.hierarchy.allgather(array)
        result = np.empty((self.size, *array.shape), dtype=array.dtype)
        flat = result.reshape(-1)
        bounds = alg.chunk_bounds(flat.size, self.size)
        flat[slice(*bounds[self.rank])] = array.reshape(-1)
        if algorithm == "ring":
            run(alg.ring_allgather_steps(self.comm, flat, self._ring, chunks=alg.block_ring_chunks(bounds, self._ring)))
        else:
            run(alg.recursive_doubling_allgather_steps(self.comm, flat))
        return result

    def broadcast(self, array: Any, root: int = 0) -> Any:
        if is_device(array):
            return _on_device(lambda host: self.broadcast(host, root), array, array).wait()
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise TypeError("broadcast needs a C-contiguous array (it is filled in place)")
        algorithm = self.plan("bcast", array.nbytes).algorithm
        if algorithm == "mpi":
            return super().broadcast(array, root)
        if algorithm == "hierarchical":
            return self.hierarchy.bcast(array, root)
        return alg.binomial_bcast(self.comm, array, root)

    def reduce(self, array: Any, op: str = "sum", root: int = 0) -> Any:
        """``array`` reduced over all ranks, on ``root`` (None elsewhere)."""
        if is_device(array):
            return _on_device(lambda host: self.reduce(host, op, root), array).wait()
        array = np.ascontiguousarray(array)
        check_op(op, array.dtype)
        reduce_op = "sum" if op == "avg" else op
        algorithm = self.plan("reduce", array.nbytes).algorithm
        if algorithm == "mpi":
            result = np.empty_like(array) if self.rank == root else None
            self.comm.Reduce(array, result, op=_MPI_OPS[reduce_op], root=root)
        elif algorithm == "hierarchical":
            result = self.hierarchy.reduce(array, reduce_op, root)
        else:
            result = alg.binomial_reduce(self.comm, array, reduce_op, root)
        if result is not None and op == "avg":
            np.divide(result, self.size, out=result)
        return result

    def free(self) -> None:
        self._direct, self._direct_quantized = _NO_DIRECT, {}
        self.hierarchy.free()


def _checked_out(array: np.ndarray, out: Any, allocate: bool = True) -> np.ndarray | None:
    """``out`` if it can hold ``array``'s result (else ValueError), or a new array."""
    if out is None:
        return np.empty_like(array) if allocate else None
    if not isinstance(out, np.ndarray) or out.shape != array.shape or out.dtype != array.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {array.shape}")
    return out


def _on_device(host_call, array: Any, out: Any = None) -> Handle:
    """Run ``host_call`` on a host copy of the device ``array``; the result back on the device
    (into ``out`` when given)."""
    from ..bindings import cuda_memory

    cai = array.__cuda_array_interface__
    host = np.empty(tuple(cai["shape"]), dtype=np.dtype(cai["typestr"]))
    cuda_memory.to_host(array, host.reshape(-1).view(np.uint8))
    result = host_call(host)
    if result is None:
        return Handle(_Deferred(), lambda: None)
    result = np.ascontiguousarray(result)
    target = out if out is not None else cuda_memory.device_like(result)
    cuda_memory.to_device(result.reshape(-1).view(np.uint8), target)
    return Handle(_Deferred(), lambda: target)
