"""Requests whose completion runs a finishing step: unpack a staged receive, drop a staging buffer.

``Request`` and ``Prequest`` are real ``MPI.Request`` subclasses, so they mix freely with plain
requests in ``Waitall`` and friends. Their class methods (``Request.Waitall(reqs)``...) complete
the requests through MPI, then finish the interposed ones that completed; the interposer
installs these classes as ``MPI.Request`` / ``MPI.Prequest`` so unmodified programs call them.
A finishing step runs exactly once per completed operation (per ``Start`` for persistent ones).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from mpi4py import MPI

__all__ = ["Request", "Prequest", "wrap", "wrap_persistent"]

# the original classes, saved before anything replaces the names in mpi4py.MPI
_Request, _Prequest = MPI.Request, MPI.Prequest
_waitall = _Request.Waitall
Finish = Callable[[MPI.Status], None]
_orphans: list[Any] = []  # staging buffers of requests freed while active: MPI may still use them
_live: set[int] = set()  # ids of requests with a finishing step still to run: when empty, the
#                          class methods below are MPI's own (no statuses to create, no loops)


def _activate(req: Any) -> None:
    req._active = True
    _live.add(id(req))


def _finish(req: Any, status: MPI.Status) -> None:
    if getattr(req, "_active", False):
        req._active = False
        _live.discard(id(req))
        if req._finish is not None:
            req._finish(status)
        if not isinstance(req, _Prequest) and req._keep is not None:
            req._keep.release()  # the staging buffers are no longer needed
            req._keep = None


def _statuses(requests: Sequence[Any], statuses: list | None) -> list[MPI.Status]:
    if statuses is None:
        return [MPI.Status() for _ in requests]
    while len(statuses) < len(requests):
        statuses.append(MPI.Status())
    return statuses


class _Finishing:
    """Completion methods shared by Request and Prequest (mixed in before the MPI class)."""

    _finish: Finish | None = None
    _keep: Any = None
    _active = False

    def Wait(self, status: MPI.Status | None = None) -> bool:
        status = MPI.Status() if status is None else status
        super().Wait(status)
        _finish(self, status)
        return True

    def Test(self, status: MPI.Status | None = None) -> bool:
        status = MPI.Status() if status is None else status
        done = super().Test(status)
        if done:
            _finish(self, status)
        return done

    def Free(self) -> None:
        if self._active:
            _orphans.append(self._keep)
            _live.discard(id(self))
        super().Free()

    @classmethod
    def Waitall(cls, requests: Sequence[Any], statuses: list | None = None) -> bool:
        if not _live:
            return _waitall(requests, statuses)
        statuses = _statuses(requests, statuses)
        _Request.Waitall(requests, statuses)
        for req, status in zip(requests, statuses):
            _finish(req, status)
        return True

    @classmethod
    def Testall(cls, requests: Sequence[Any], statuses: list | None = None) -> bool:
        if not _live:
            return _Request.Testall(requests, statuses)
        statuses = _statuses(requests, statuses)
        done = _Request.Testall(requests, statuses)
        if done:
            for req, status in zip(requests, statuses):
                _finish(req, status)
        return done

    @classmethod
    def Waitany(cls, requests: Sequence[Any], status: MPI.Status | None = None) -> int:
        if not _live:
            return _Request.Waitany(requests, status)
        status = MPI.Status() if status is None else status
        index = _Request.Waitany(requests, status)
        if index != MPI.UNDEFINED:
            _finish(requests[index], status)
        return index

    @classmethod
    def Testany(cls, requests: Sequence[Any], status: MPI.Status | None = None) -> tuple[int, bool]:
        if not _live:
            return _Request.Testany(requests, status)
        status = MPI.Status() if status is None else status
        index, done = _Request.Testany(requests, status)
        if done and index != MPI.UNDEFINED:
            _finish(requests[index], status)
        return index, done

    @classmethod
    def Waitsome(cls, requests: Sequence[Any], statuses: list | None = None) -> list[int] | None:
        return _some(_Request.Waitsome, requests, statuses)

    @classmethod
    def Testsome(cls, requests: Sequence[Any], statuses: list | None = None) -> list[int] | None:
        return _some(_Request.Testsome, requests, statuses)


def _some(call, requests: Sequence[Any], statuses: list | None) -> list[int] | None:
    """MPI's Waitsome/Testsome, then the finishing steps of the requests it completed."""
    if not _live:
        return call(requests, statuses)
    statuses = _statuses(requests, statuses)
    indices = call(requests, statuses)
    for i, index in enumerate(indices or ()):
        _finish(requests[index], statuses[i])
    return indices


class _CoversPlain(type):
    """Once these classes replace ``MPI.Request`` / ``MPI.Prequest``, requests created anywhere
    else must still pass ``isinstance(r, MPI.Request)``: the check is made against the MPI class."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._plain)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._plain)


class Request(_Finishing, _Request, metaclass=_CoversPlain):
    """A nonblocking operation through a staging buffer; finishes (unpacks) when it completes."""

    _plain = _Request


class Prequest(_Finishing, _Prequest, metaclass=_CoversPlain):
    """A persistent operation through a staging buffer: packs on every Start, unpacks on completion."""

    _plain = _Prequest
    _before_start: Callable[[], None] | None = None

    def Start(self) -> None:
        if self._before_start is not None:
            self._before_start()
        super().Start()
        _activate(self)

    @classmethod
    def Startall(cls, requests: Sequence[Any]) -> None:
        for req in requests:
            before = getattr(req, "_before_start", None)
            if before is not None:
                before()
        _Prequest.Startall(requests)
        for req in requests:
            if isinstance(req, _Finishing):
                _activate(req)


def wrap(request: MPI.Request, keep: Any, finish: Finish | None = None) -> Request:
    """A Request over ``request``'s handle that keeps ``keep`` alive and runs ``finish`` once."""
    out = Request(request)
    out._keep, out._finish = keep, finish
    _activate(out)
    return out


def wrap_persistent(request: MPI.Prequest, keep: Any, before_start: Callable[[], None] | None = None,
                    finish: Finish | None = None) -> Prequest:
    """A Prequest over ``request``: ``before_start`` fills the staging buffer, ``finish`` empties it."""
    out = Prequest(request)
    out._keep, out._before_start, out._finish, out._active = keep, before_start, finish, False
    return out
