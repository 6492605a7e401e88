"""``Comm``: an mpi4py communicator that sends derived datatypes and device buffers the fast way.

    from mpiforge.comms import Comm
    comm = Comm(MPI.COMM_WORLD)                       # collective, like Dup (but shares the handle)
    comm.Send([grid, 1, face_type], dest=1)          # packed by mpiforge or sent natively: measured
    req = comm.Irecv([halo, 1, halo_type], source=1) # Wait/Test/Waitall unpack when it completes

For every message the method (see ``methods``) comes from the profile measured by
``mpiforge calibrate`` (``model``), is cached per (datatype, count, side, buffer type), and
can be forced with ``MPIFORGE_METHOD`` or ``Comm(comm, method=...)``. Anything it does not
accelerate (named types on host memory, pickled lowercase calls, collectives on contiguous
data) goes straight to mpi4py. The class is a real subclass of the wrapped communicator's
class (Intracomm, Cartcomm, ...), and communicators created from it are wrapped as well.
"""
from __future__ import annotations

import logging
from typing import Any

from mpi4py import MPI

from ..bindings.mpi_ext import cuda_aware
from ..datatypes import pack, packer_for, unpack
from ..datatypes.ir import StridedBlock
from .message import Message, parse
from .methods import Incoming, Method, Outgoing, user_view
from .model import Profile, choose, forced_method, load_profile
from .requests import wrap, wrap_persistent

__all__ = ["Comm", "Interposed"]

log = logging.getLogger(__name__)

_profile: Profile | None = None
_CONSTRUCTORS = ("Dup", "Dup_with_info", "Clone", "Split", "Split_type", "Create", "Create_group", "Create_cart",
                 "Create_graph", "Create_dist_graph", "Create_dist_graph_adjacent", "Create_intercomm",
                 "Merge", "Sub")


def profile() -> Profile:
    """The profile every interposed communicator uses (loaded once)."""
    global _profile
    if _profile is None:
        _profile = load_profile()
    return _profile


def _mean_run(packer) -> float:
    lay = packer.layout
    if isinstance(lay, StridedBlock):
        return float(lay.run)
    return lay.size / max(lay.nblocks, 1)


class Interposed:
    """The accelerated methods; mixed in before an mpi4py communicator class (see ``Comm``)."""

    _forced: Method | None = None
    _routes: dict
    _cuda_aware = False

    def _setup(self, method: Method | str | None) -> None:
        self._forced = Method(method) if method else forced_method()
        self._cuda_aware = bool(cuda_aware())
        self._routes = {}

    # -- choosing --

    def _route(self, spec: Any, sending: bool) -> Message | None:
        """The message and method for ``spec``, or None to hand the call to MPI as it is."""
        kind = type(spec)
        if kind is list or kind is tuple:
            if len(spec) not in (2, 3):
                return None
            key = (getattr(spec[-1], "handle", None), type(spec[0]), sending,
                   spec[1] if len(spec) == 3 and type(spec[1]) is int else None)
            if self._routes.get(key) is Method.NATIVE:
                return None
        else:
            key = None
        msg = parse(spec)
        if msg is None:
            if key is not None:
                self._remember(key, Method.NATIVE)
            return None
        method = self._method(msg, sending)
        if key is not None:
            self._remember(key, method)
        return None if method is Method.NATIVE else (msg, method)

    def _remember(self, key: tuple, method: Method) -> None:
        if len(self._routes) > 4096:
            self._routes.clear()
        self._routes[key] = method

    def _method(self, msg: Message, sending: bool) -> Method:
        device = msg.device is not None
        packer = packer_for(msg.datatype)
        if packer.layout is None and not device:
            return Method.NATIVE  # MPI's own engine: the layout needs it
        if not device:
            plan = packer.plan(msg.count)
            if plan.lo < 0 or plan.hi > msg.nbytes - msg.offset:
                return Method.NATIVE  # MPI does with out-of-buffer layouts whatever it does
        run = _mean_run(packer) if packer.layout is not None else 1.0
        return choose(profile(), msg.packed_bytes, run, sending, device, self._cuda_aware, self._forced)

    def method_for(self, spec: Any, sending: bool = True) -> Method:
        """The method this communicator uses for ``spec`` (for inspection and tests)."""
        route = self._route(spec, sending)
        return Method.NATIVE if route is None else route[1]

    def _outgoing(self, spec: Any) -> tuple[Any, Outgoing | None]:
        route = self._route(spec, True)
        if route is None:
            return spec, None
        out = Outgoing(*route)
        out.fill()
        return out.spec, out

    def _incoming(self, spec: Any) -> tuple[Any, Incoming | None]:
        route = self._route(spec, False)
        if route is None:
            return spec, None
        inc = Incoming(*route)
        return inc.spec, inc

    # -- point to point --

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        super().Send(self._outgoing(buf)[0], dest, tag)

    def Ssend(self, buf: Any, dest: int, tag: int = 0) -> None:
        super().Ssend(self._outgoing(buf)[0], dest, tag)

    def Bsend(self, buf: Any, dest: int, tag: int = 0) -> None:
        super().Bsend(self._outgoing(buf)[0], dest, tag)

    def Rsend(self, buf: Any, dest: int, tag: int = 0) -> None:
        super().Rsend(self._outgoing(buf)[0], dest, tag)

    def _isend(self, start, buf: Any, dest: int, tag: int) -> MPI.Request:
        spec, out = self._outgoing(buf)
        request = start(spec, dest, tag)
        return request if out is None else wrap(request, out)

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(super().Isend, buf, dest, tag)

    def Issend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(super().Issend, buf, dest, tag)

    def Ibsend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(super().Ibsend, buf, dest, tag)

    def Irsend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(super().Irsend, buf, dest, tag)

    def Recv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
             status: MPI.Status | None = None) -> None:
        spec, inc = self._incoming(buf)
        if inc is None:
            return super().Recv(spec, source, tag, status)
        status = MPI.Status() if status is None else status
        super().Recv(spec, source, tag, status)
        inc.finish(status)

    def Irecv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> MPI.Request:
        spec, inc = self._incoming(buf)
        request = super().Irecv(spec, source, tag)
        return request if inc is None else wrap(request, inc, inc.finish)

    def Sendrecv(self, sendbuf: Any, dest: int, sendtag: int = 0, recvbuf: Any = None,
                 source: int = MPI.ANY_SOURCE, recvtag: int = MPI.ANY_TAG, status: MPI.Status | None = None) -> None:
        sspec, _out = self._outgoing(sendbuf)
        rspec, inc = self._incoming(recvbuf) if recvbuf is not None else (None, None)
        if inc is not None and status is None:
            status = MPI.Status()
        super().Sendrecv(sspec, dest, sendtag, rspec, source, recvtag, status)
        if inc is not None:
            inc.finish(status)

    # -- persistent --

    def _send_init(self, init, buf: Any, dest: int, tag: int) -> MPI.Prequest:
        route = self._route(buf, True)
        if route is None:
            return init(buf, dest, tag)
        out = Outgoing(*route)
        return wrap_persistent(init(out.spec, dest, tag), out, before_start=out.fill)

    def Send_init(self, buf: Any, dest: int, tag: int = 0) -> MPI.Prequest:
        return self._send_init(super().Send_init, buf, dest, tag)

    def Ssend_init(self, buf: Any, dest: int, tag: int = 0) -> MPI.Prequest:
        return self._send_init(super().Ssend_init, buf, dest, tag)

    def Recv_init(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> MPI.Prequest:
        spec, inc = self._incoming(buf)
        request = super().Recv_init(spec, source, tag)
        return request if inc is None else wrap_persistent(request, inc, finish=inc.finish)

    # -- pack / unpack, like MPI_Pack on this communicator --

    def Pack(self, inbuf: Any, outbuf: Any, position: int = 0) -> int:
        """Pack the message ``inbuf`` (``[buf, count, datatype]``) into ``outbuf`` at ``position``."""
        msg = parse(inbuf)
        if msg is None:
            buf, count, datatype = _explicit(inbuf)
            return datatype.Pack([buf, count, datatype] if count is not None else buf, outbuf, position, self)
        return pack(user_view(msg), msg.count, msg.datatype, outbuf, position)

    def Unpack(self, inbuf: Any, position: int, outbuf: Any) -> int:
        """Unpack from ``inbuf`` at ``position`` into the message ``outbuf``; the new position."""
        msg = parse(outbuf)
        if msg is None:
            buf, count, datatype = _explicit(outbuf)
            return datatype.Unpack(inbuf, position, [buf, count, datatype] if count is not None else buf, self)
        return unpack(inbuf, position, user_view(msg), msg.count, msg.datatype)

    def Pack_size(self, count: int, datatype: MPI.Datatype) -> int:
        """Bytes ``count`` elements of ``datatype`` need once packed."""
        return datatype.Pack_size(count, self)


def _explicit(spec: Any) -> tuple[Any, int | None, MPI.Datatype]:
    if isinstance(spec, (list, tuple)) and len(spec) in (2, 3) and isinstance(spec[-1], MPI.Datatype):
        return spec[0], (spec[1] if len(spec) == 3 else None), spec[-1]
    raise MPI.Exception(MPI.ERR_TYPE)


def _constructor(name: str):
    """``name`` of the MPI class, returning its new communicator interposed as well."""
    def method(self, *args: Any, **kwargs: Any) -> Any:
        result = getattr(super(Interposed, self), name)(*args, **kwargs)
        if isinstance(result, MPI.Comm) and result != MPI.COMM_NULL:
            return Comm(result, method=self._forced)
        return result

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"MPI's {name}; the new communicator is interposed too."
    return method


for _name in _CONSTRUCTORS:  # derived communicators stay interposed
    setattr(Interposed, _name, _constructor(_name))


_classes: dict[type, type] = {}


def _interposed_class(base: type) -> type:
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(base.__name__, (Interposed, base),
                                    {"__doc__": f"{base.__name__} with mpiforge's interposed methods.",
                                     "__module__": __name__})
    return cls


def Comm(comm: MPI.Comm, method: Method | str | None = None) -> Interposed:
    """``comm`` (same handle, not a duplicate) as an interposed communicator of its own class."""
    if isinstance(comm, Interposed):
        return comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"expected an mpi4py communicator, got {type(comm).__name__}")
    base = next(c for c in type(comm).__mro__ if c.__module__ == "mpi4py.MPI")
    wrapped = _interposed_class(base)(comm)
    wrapped._setup(method)
    return wrapped
