"""Collectives that survive a dead rank inside an MPI job, with ULFM (``mpiexec --with-ft ulfm``).

``ULFMCollective(comm)`` implements the shared ``Collective`` interface over a duplicate of
``comm`` whose errors are returned (mpi4py raises ``MPI.Exception``) instead of aborting the job.
When a peer dies, the collective raises :class:`PeerFailure` on every survivor, the caller's
input untouched, and from then on runs on the survivors (``rank`` and ``size`` change), so the
caller simply retries::

    coll = ULFMCollective(MPI.COMM_WORLD)
    while True:
        try:
            total = coll.allreduce(grads, "sum")
            break
        except PeerFailure as exc:
            log.warning("%s", exc)          # or: total = run_resilient(lambda: coll.allreduce(grads))

How one outcome is guaranteed on every survivor. Every operation ends with an agreement:

1. run the MPI collective; an error of class ``ERR_PROC_FAILED``/``ERR_REVOKED`` marks it
   failed *on this rank*, which then revokes the communicator so that peers blocked in the
   same collective (waiting for this rank rather than for the dead one) return too;
2. every rank calls ``MPIX_Comm_agree`` with 1 (succeeded here) or 0 (failed here). The
   agreement is fault tolerant and returns the bitwise AND of the survivors' flags to every
   survivor, so a collective that completed on some ranks and failed on others becomes a
   failure everywhere, and one that completed everywhere (the dead rank had already done its
   part) is a success everywhere. The agreement may itself raise ``ERR_PROC_FAILED`` for a
   failure nobody has acknowledged; its flag is still valid (read through ``Iagree``, which
   writes it into our buffer, where the blocking ``Agree`` of mpi4py would lose it);
3. on 0, every survivor shrinks the communicator to the live ranks and raises PeerFailure
   naming the ranks lost. Results land only in fresh arrays, ``out`` or a scratch buffer
   copied to the caller's on success, so a failed operation never writes into the input.

The agreement costs one small extra collective per operation. Async handles must be waited in
the same order on every rank (the agreements are collectives too). A handle started before a
failure shrank the communicator agrees on the old one and, if it failed, raises PeerFailure
without shrinking again. Revoked communicators are kept (a handle may still refer to them).

Errors other than process failures (a bad argument) are raised as they are, like MPICollective.

Launching. Start FT jobs with ``mpiexec_command(n, argv, ulfm_mpiexec_args())``; measured
with the PyPI Open MPI 5.0.11 wheel:

- a SIGKILLed rank is reported within tens of milliseconds, but one that exits on its own
  (``os._exit(3)``, a crash that exits) is never reported and the survivors wait forever,
  unless the heartbeat detector runs (then: after about its timeout);
- a rank that makes no MPI call for longer than the detector timeout is declared dead by its
  observer and aborts itself ("reported dead by someone else ... Aborting"), so the timeout
  must exceed the longest compute stretch without an MPI call. The threaded detector
  (``mpi_ft_detector_thread``) would lift that limit, but makes ``MPI_Finalize`` spin forever;
- after a failure, ``MPI_Finalize`` hangs now and then (in ~7% of runs) in its closing
  barrier; ``async_mpi_finalize`` skips that barrier (no hang in 100 runs);
- ``MPI_Abort`` does not end a ``--with-ft ulfm`` job: it hangs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from mpi4py import MPI

from ...bindings import mpi_ext
from ..collective import _MPI_OPS, Collective, Handle, _contiguous, prepare_allreduce
from .errors import CollectiveAborted

__all__ = ["PeerFailure", "ULFMCollective", "run_resilient", "ulfm_mpiexec_args"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# error classes that mean "a process failed" (or "someone saw one and revoked the communicator")
_FAILURE_CLASSES = frozenset({MPI.ERR_PROC_FAILED, MPI.ERR_PROC_FAILED_PENDING, MPI.ERR_REVOKED})


class PeerFailure(CollectiveAborted):
    """A rank died during a collective: it failed on every survivor, which now run without it.

    ``lost`` are ranks of the communicator the operation started on; the collective object
    already runs on the ``size_after`` survivors, where this process is ``rank_after``.
    The caller's input is unchanged: retry the operation.
    """

    def __init__(self, operation: str, lost: tuple[int, ...], size_before: int, size_after: int,
                 rank_after: int) -> None:
        self.operation, self.lost = operation, lost
        self.size_before, self.size_after, self.rank_after = size_before, size_after, rank_after
        who = (f"rank(s) {list(lost)} of the {size_before}-rank communicator died"
               if lost else "another rank's part of it failed")
        super().__init__(
            f"{operation} failed on every survivor: {who}; now running on {size_after} rank(s), "
            f"this one as rank {rank_after}. The input is unchanged: retry the operation."
        )


def _is_failure(exc: MPI.Exception) -> bool:
    return exc.Get_error_class() in _FAILURE_CLASSES


def _attempt(call: Callable[[], Any]) -> MPI.Exception | None:
    """Run an MPI call; return the process-failure error it raised (None if it succeeded)."""
    try:
        call()
    except MPI.Exception as exc:
        if not _is_failure(exc):
            raise
        return exc
    return None


class _Watched:
    """An MPI request whose process-failure errors are recorded in ``error`` instead of raised.

    It holds the request's buffers: mpi4py does not keep a temporary input alive while a
    nonblocking collective reads it (measured: a freed input was reused and summed).
    """

    def __init__(self, request: MPI.Request, *buffers: np.ndarray) -> None:
        self.request, self.error, self._buffers = request, None, buffers

    def Test(self) -> bool:
        if self.error is None:
            done = []
            self.error = _attempt(lambda: done.append(self.request.Test()))
            return self.error is not None or done[0]
        return True

    def Wait(self) -> None:
        if self.error is None:
            self.error = _attempt(self.request.Wait)


def _agree(comm: MPI.Comm, ok: bool) -> bool:
    """True when ``ok`` on every live rank of ``comm`` (fault-tolerant, same answer everywhere)."""
    flag = np.array([1 if ok else 0], dtype=np.intc)
    try:
        comm.Iagree(flag).Wait()
    except MPI.Exception as exc:
        if not _is_failure(exc):
            raise
        # a failure nobody acknowledged: raised on every survivor, and the flag is still agreed
        log.debug("agreement saw an unacknowledged failure: %s", exc.Get_error_string())
    return bool(flag[0])


def _lost(old: MPI.Comm, new: MPI.Comm) -> tuple[int, ...]:
    """Ranks of ``old`` that are not in ``new``."""
    old_group, new_group = old.Get_group(), new.Get_group()
    try:
        kept = MPI.Group.Translate_ranks(new_group, list(range(new.size)), old_group)
    finally:
        old_group.Free()
        new_group.Free()
    return tuple(sorted(set(range(old.size)) - set(kept)))


def _returning_errors(comm: MPI.Comm) -> MPI.Comm:
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    return comm


class ULFMCollective(Collective):
    """``Collective`` over an MPI communicator that survives dead ranks (see the module doc)."""

    def __init__(self, comm: MPI.Comm) -> None:
        if mpi_ext.ulfm_enabled() is False:
            log.warning("ULFM is off in this job: a dead rank will abort it. Start it with "
                        "mpiexec %s", " ".join(ulfm_mpiexec_args()))
        self._comm = _returning_errors(comm.Dup())

    @property
    def comm(self) -> MPI.Comm:
        """The communicator the collectives run on now (the survivors after a failure)."""
        return self._comm

    @property
    def size(self) -> int:
        return self._comm.size

    @property
    def rank(self) -> int:
        return self._comm.rank

    def allreduce_async(self, array: np.ndarray, op: str = "sum", out: np.ndarray | None = None) -> Handle:
        array, result = prepare_allreduce(array, op, out)
        if np.may_share_memory(result, array):
            raise ValueError("out must not overlap array: the input is kept intact for a retry")
        comm = self._comm
        watched = _Watched(comm.Iallreduce(array, result, op=_MPI_OPS[op]), array, result)

        def finish() -> np.ndarray:
            self._settle(comm, "allreduce", watched.error)
            if op == "avg":
                np.divide(result, comm.size, out=result)
            return result

        return Handle(watched, finish)

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise TypeError("broadcast needs a C-contiguous numpy array (it is filled in place)")
        comm = self._comm
        # non-roots receive into scratch: a broadcast that fails leaves every caller's array as it was
        buffer = array if comm.rank == root else np.empty_like(array)
        self._settle(comm, "broadcast", _attempt(lambda: comm.Bcast(buffer, root=root)))
        if buffer is not array:
            array[...] = buffer
        return array

    def allgather(self, array: np.ndarray) -> np.ndarray:
        array = _contiguous(array, "array")
        comm = self._comm
        result = np.empty((comm.size, *array.shape), dtype=array.dtype)
        self._settle(comm, "allgather", _attempt(lambda: comm.Allgather(array, result)))
        return result

    def _settle(self, comm: MPI.Comm, operation: str, error: MPI.Exception | None) -> None:
        """Agree on the outcome of ``operation`` on ``comm``; on failure shrink and raise PeerFailure."""
        if error is not None:
            log.warning("rank %d/%d: %s failed here (%s); revoking the communicator",
                        comm.rank, comm.size, operation, error.Get_error_string())
            comm.Revoke()
        if _agree(comm, error is None):
            return
        if comm is self._comm:
            self._comm = _returning_errors(comm.Shrink())
        # else: an earlier failure already shrank it; this handle was started before
        failure = PeerFailure(operation, _lost(comm, self._comm), comm.size, self.size, self.rank)
        log.warning("rank %d/%d: %s", comm.rank, comm.size, failure)
        raise failure


def run_resilient(fn: Callable[[], T], max_failures: int | None = None) -> T:
    """``fn()``, called again after each PeerFailure (the collective already runs on the survivors).

    Gives up, re-raising, after ``max_failures`` failures (None: never; every failure
    removes at least one rank, so this ends).
    """
    failures = 0
    while True:
        try:
            return fn()
        except PeerFailure as exc:
            failures += 1
            if max_failures is not None and failures > max_failures:
                raise
            log.info("retrying on %d rank(s) after: %s", exc.size_after, exc)


def ulfm_mpiexec_args(detector_period: float = 0.5, detector_timeout: float = 2.0,
                      detector: bool = True) -> list[str]:
    """mpiexec arguments for a fault-tolerant job: ULFM on, heartbeat detector on, no closing barrier.

    Each rank sends a heartbeat every ``detector_period`` s and is declared dead after
    ``detector_timeout`` s of silence (Open MPI requires timeout > 3 x period). Without the
    detector a rank that exits with an error code is never reported and the survivors hang.
    The timeout must exceed the longest stretch a rank spends without calling MPI.
    ``async_mpi_finalize`` avoids MPI_Finalize's barrier, which can hang after a failure.
    """
    args = ["--with-ft", "ulfm", "--mca", "async_mpi_finalize", "true"]
    if not detector:
        return args
    if detector_period <= 0 or detector_timeout <= 3 * detector_period:
        raise ValueError(
            f"detector_timeout ({detector_timeout} s) must exceed 3 x detector_period "
            f"({detector_period} s, > 0): raise the timeout or shorten the period"
        )
    return args + ["--mca", "mpi_ft_detector", "true",
                   "--mca", "mpi_ft_detector_period", f"{detector_period:g}",
                   "--mca", "mpi_ft_detector_timeout", f"{detector_timeout:g}"]
