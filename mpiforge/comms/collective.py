"""The ``Collective`` interface every backend implements, and its MPI implementation.

DiLoCo and user code talk to a ``Collective`` and do not care what runs underneath: an MPI
communicator (``MPICollective``), the topology-aware collectives, or the fault-tolerant peer
group. Arrays are numpy arrays (C-contiguous); results are new arrays unless ``out`` is given.

    coll = MPICollective(MPI.COMM_WORLD)
    mean = coll.allreduce(grads, op="avg")
    handle = coll.allreduce_async(grads, op="sum"); ...; total = handle.wait()
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

__all__ = ["OPS", "Collective", "ElasticCollective", "Handle", "MPICollective"]

OPS = ("sum", "avg", "max", "min", "prod")
_MPI_OPS = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}


class Handle:
    """An operation in flight: ``wait()`` returns its result (once finished), ``done()`` polls."""

    def __init__(self, request: Any, finish: Callable[[], np.ndarray]) -> None:
        self._request, self._finish, self._result = request, finish, None

    def done(self) -> bool:
        return self._result is not None or bool(self._request.Test())

    def wait(self) -> np.ndarray:
        if self._result is None:
            self._request.Wait()
            self._result = self._finish()
        return self._result


class Collective(abc.ABC):
    """Collectives on arrays over a group of workers."""

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    @property
    @abc.abstractmethod
    def rank(self) -> int: ...

    @abc.abstractmethod
    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> Handle:
        """Start reducing ``array`` over all workers with ``op`` (one of OPS)."""

    def allreduce(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> np.ndarray:
        """``array`` reduced over all workers with ``op`` (avg: the sum divided by ``size``)."""
        return self.allreduce_async(array, op, out).wait()

    @abc.abstractmethod
    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """``root``'s ``array`` on every worker (in place; returned for convenience)."""

    @abc.abstractmethod
    def allgather(self, array: np.ndarray) -> np.ndarray:
        """Every worker's ``array`` (all the same shape and dtype), stacked along a new axis 0."""


class ElasticCollective(Collective):
    """A ``Collective`` whose members may die during a collective or join between two.

    When a collective raised, ``recover(error)`` rebuilds the group from the survivors (which
    also admits waiting joiners) and says whether to retry. Members take joiners in with
    ``admit()`` when ``joiners_waiting()`` (every member asks at the same point of its program).
    ``sync_state`` then makes a dict of arrays identical everywhere; a member that entered a
    group already sharing a state (``needs_state``) only receives it.
    """

    @property
    @abc.abstractmethod
    def needs_state(self) -> bool:
        """Whether this member joined a group that shares a state it has not received yet."""

    @abc.abstractmethod
    def recover(self, error: BaseException) -> bool:
        """After a collective raised ``error``: rebuild the group and return True (retry), or
        return False when ``error`` is not a membership failure."""

    @abc.abstractmethod
    def joiners_waiting(self) -> bool:
        """Whether joiners wait for ``admit()`` (the same answer on every member at the same point)."""

    @abc.abstractmethod
    def admit(self) -> bool:
        """Take waiting joiners in (every member calls it; dead members are dropped too); True when
        someone joined."""

    @abc.abstractmethod
    def sync_state(self, state: dict[str, np.ndarray]) -> None:
        """Make ``state`` (updated in place) identical on every member: the most common one wins
        (ties: the first member's); a member that ``needs_state`` receives it."""


def check_op(op: str, dtype: np.dtype) -> None:
    """Raise ValueError for an unknown op, or an average of integers."""
    if op not in OPS:
        raise ValueError(f"unknown reduction {op!r}: use one of {', '.join(OPS)}")
    if op == "avg" and not np.issubdtype(dtype, np.inexact):
        raise ValueError(f"op='avg' needs a floating-point array, got {dtype}; reduce with 'sum' and divide")


def prepare_allreduce(array: np.ndarray, op: str, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(the contiguous input, the array the result goes to) after checking ``op`` and ``out``."""
    array = _contiguous(array, "array")
    check_op(op, array.dtype)
    result = np.empty_like(array) if out is None else out
    if result.shape != array.shape or result.dtype != array.dtype or not result.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {array.dtype} array of shape {array.shape}")
    return array, result


def _contiguous(array: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(array).__name__}")
    return np.ascontiguousarray(array)


class MPICollective(Collective):
    """``Collective`` over an mpi4py communicator, with MPI's own collectives."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def rank(self) -> int:
        return self.comm.rank

    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> Handle:
        array, result = prepare_allreduce(array, op, out)
        request = self.comm.Iallreduce(array, result, op=_MPI_OPS[op])

        def finish() -> np.ndarray:
            if op == "avg":
                np.divide(result, self.size, out=result)
            return result

        handle = Handle(request, finish)
        handle.keep = array  # MPI reads the input until the request completes; mpi4py does not hold it
        return handle

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise TypeError("broadcast needs a C-contiguous numpy array (it is filled in place)")
        self.comm.Bcast(array, root=root)
        return array

    def allgather(self, array: np.ndarray) -> np.ndarray:
        array = _contiguous(array, "array")
        result = np.empty((self.size, *array.shape), dtype=array.dtype)
        self.comm.Allgather(array, result)
        return result
