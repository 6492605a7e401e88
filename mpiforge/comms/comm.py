"""``Comm``: an mpi4py communicator that sends derived datatypes and device buffers the fast way.

    from mpiforge.comms.comm import Comm
    comm = Comm(MPI.COMM_WORLD)                       # collective, like Dup (but shares the handle)
    comm.Send([grid, 1, face_type], dest=1)          # packed by mpiforge or sent natively: measured
    req = comm.Irecv([halo, 1, halo_type], source=1) # Wait/Test/Waitall unpack when it completes

For every message the method (see ``methods``) comes from the profile measured by
``mpiforge calibrate`` (``model``), is cached per (datatype, bytes, side, device, peer locality), and
can be forced with ``MPIFORGE_METHOD`` or ``Comm(comm, method=...)``. Anything it does not
accelerate (named types on host memory, pickled lowercase calls, collectives on contiguous
data) goes straight to mpi4py. The class is a real subclass of the wrapped communicator's
class (Intracomm, Cartcomm, ...), and communicators created from it are wrapped as well.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from mpi4py import MPI

from ..bindings.mpi_ext import cuda_aware
from ..datatypes import pack, packer_for, unpack
from ..datatypes.buffers import HOST_TYPES
from ..datatypes.errors import PackError
from ..datatypes.ir import StridedBlock
from .message import Message, parse, parse_segments, worth_staging
from .methods import Incoming, Method, Outgoing, user_view
from .model import Profile, choose, forced_method, load_profile
from .requests import wrap, wrap_persistent

__all__ = ["Comm", "Interposed"]

log = logging.getLogger(__name__)

_profile: Profile | None = None
_Comm = MPI.Comm  # MPI's own methods, called directly (faster than super())
_Send, _Isend, _Recv, _Irecv = _Comm.Send, _Comm.Isend, _Comm.Recv, _Comm.Irecv
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
    """Mean bytes per contiguous run of one element (1 when the layout is MPI's own business)."""
    lay = packer.layout
    if lay is None:
        return 1.0
    if isinstance(lay, StridedBlock):
        return float(lay.run)
    return lay.size / max(lay.nblocks, 1)


class Interposed:
    """The accelerated methods; mixed in before an mpi4py communicator class (see ``Comm``)."""

    _forced: Method | None = None
    _native: list[dict]
    _remote: frozenset = frozenset()
    _cuda_aware = False

    def _setup(self, method: Method | str | None) -> None:
        """Collective over the communicator: learns which peers live on other nodes."""
        self._forced = _forced(method)
        self._cuda_aware = bool(cuda_aware())
        here = MPI.Get_processor_name()
        self._remote = frozenset(i for i, name in enumerate(self.allgather(here)) if name != here)
        # [2 * remote + sending]: id(datatype object) -> host buffer type that goes natively
        self._native = [{}, {}, {}, {}]
        self._recv_local, self._send_local = self._native[0], self._native[1]
        # what the C fast path reads: the local caches, or (peers on other nodes) dicts that
        # stay empty, so every call takes the Python path, which tells the peers apart
        self._recv_fast, self._send_fast = (self._native[0], self._native[1]) if not self._remote else ({}, {})
        self._decisions: dict[tuple, Method] = {}  # (packer, bytes, side, device, remote) -> method

    # -- choosing --

    def _plain(self, spec: Any, sending: bool, peer: int) -> bool:
        """True when ``spec`` is known to go to MPI as it is: the hot path, a few hundred ns.

        Only native answers for host buffers are cached (the model picks those whatever the
        size); a stale entry (a freed datatype's id reused) can only cost speed, not results.
        """
        kind = type(spec)
        if (kind is list or kind is tuple) and spec:
            return self._native[2 * (peer in self._remote) + sending].get(id(spec[-1])) is type(spec[0])
        return kind in HOST_TYPES

    def _route(self, spec: Any, sending: bool, peer: int) -> tuple[Message, Method] | None:
        """The message and method for ``spec``, or None to hand the call to MPI as it is."""
        msg = parse(spec)
        remote = peer in self._remote
        method = Method.NATIVE if msg is None else self._method(msg, sending, remote)
        if method is Method.NATIVE:
            if (msg is None or msg.device is None) and isinstance(spec, (list, tuple)) and spec:
                cache = self._native[2 * remote + sending]
                if len(cache) > 4096:
                    cache.clear()
                cache[id(spec[-1])] = type(spec[0])
            return None
        return msg, method

    def _method(self, msg: Message, sending: bool, remote: bool) -> Method:
        device = msg.device is not None
        packer = packer_for(msg.datatype)
        if packer.layout is None and not device:
            return Method.NATIVE  # MPI's own engine: the layout needs it
        if not device:
            lo, hi = packer.bounds(msg.count)
            if lo < 0 or hi > msg.nbytes - msg.offset:
                return Method.NATIVE  # MPI does with out-of-buffer layouts whatever it does
        key = (id(packer), msg.packed_bytes, sending, device, remote)
        method = self._decisions.get(key)
        if method is None:  # a stale key (an id reused) can only cost speed: every method is exact
            run = _mean_run(packer)
            method = choose(profile(), msg.packed_bytes, run, sending, device, self._cuda_aware, self._forced, remote)
            if len(self._decisions) > 4096:
                self._decisions.clear()
            self._decisions[key] = method
        return method

    def method_for(self, spec: Any, sending: bool = True, peer: int = 0) -> Method:
        """The method this communicator uses for ``spec`` sent to (received from) ``peer``."""
        route = self._route(spec, sending, peer)
        return Method.NATIVE if route is None else route[1]

    def _stage(self, spec: Any, sending: bool, peer: int) -> tuple[Any, Outgoing | Incoming | None]:
        """The spec MPI moves (a staging buffer, packed now if sending, unless the message goes
        natively) and the staging to keep until MPI is done (an Incoming's ``finish`` unpacks)."""
        if self._plain(spec, sending, peer):
            return spec, None
        route = self._route(spec, sending, peer)
        if route is None:
            return spec, None
        staging = (Outgoing if sending else Incoming)([route[0]], route[1])
        if sending:
            staging.fill()
        return staging.spec, staging

    # -- point to point --

    def _blocking_send(self, call, buf: Any, dest: int, tag: int) -> None:
        spec, out = self._stage(buf, True, dest)
        call(self, spec, dest, tag)
        if out is not None:
            out.release()

    # The four hot calls test for a cached native route inline (a call less: ~0.2 us of ~0.4).

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        kind = type(buf)
        if kind in HOST_TYPES or (kind is list and buf and self._send_local.get(id(buf[-1])) is type(buf[0])
                                  and dest not in self._remote):
            return _Send(self, buf, dest, tag)
        self._blocking_send(_Comm.Send, buf, dest, tag)

    def Ssend(self, buf: Any, dest: int, tag: int = 0) -> None:
        self._blocking_send(_Comm.Ssend, buf, dest, tag)

    def Bsend(self, buf: Any, dest: int, tag: int = 0) -> None:  # MPI copies into the attached buffer
        self._blocking_send(_Comm.Bsend, buf, dest, tag)

    def Rsend(self, buf: Any, dest: int, tag: int = 0) -> None:
        self._blocking_send(_Comm.Rsend, buf, dest, tag)

    def _isend(self, start, buf: Any, dest: int, tag: int) -> MPI.Request:
        spec, out = self._stage(buf, True, dest)
        request = start(self, spec, dest, tag)
        return request if out is None else wrap(request, out)

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        kind = type(buf)
        if kind in HOST_TYPES or (kind is list and buf and self._send_local.get(id(buf[-1])) is type(buf[0])
                                  and dest not in self._remote):
            return _Isend(self, buf, dest, tag)
        return self._isend(_Comm.Isend, buf, dest, tag)

    def Issend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(_Comm.Issend, buf, dest, tag)

    def Ibsend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(_Comm.Ibsend, buf, dest, tag)

    def Irsend(self, buf: Any, dest: int, tag: int = 0) -> MPI.Request:
        return self._isend(_Comm.Irsend, buf, dest, tag)

    def Recv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,
             status: MPI.Status | None = None) -> None:
        kind = type(buf)
        if kind in HOST_TYPES or (kind is list and buf and self._recv_local.get(id(buf[-1])) is type(buf[0])
                                  and source not in self._remote):
            return _Recv(self, buf, source, tag, status)
        spec, inc = self._stage(buf, False, source)
        if inc is None:
            return _Comm.Recv(self, spec, source, tag, status)
        status = MPI.Status() if status is None else status
        try:
            _Comm.Recv(self, spec, source, tag, status)
            inc.finish(status)
        finally:
            inc.release()

    def Irecv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> MPI.Request:
        kind = type(buf)
        if kind in HOST_TYPES or (kind is list and buf and self._recv_local.get(id(buf[-1])) is type(buf[0])
                                  and source not in self._remote):
            return _Irecv(self, buf, source, tag)
        spec, inc = self._stage(buf, False, source)
        request = _Comm.Irecv(self, spec, source, tag)
        return request if inc is None else wrap(request, inc, inc.finish)

    def Sendrecv(self, sendbuf: Any, dest: int, sendtag: int = 0, recvbuf: Any = None,
                 source: int = MPI.ANY_SOURCE, recvtag: int = MPI.ANY_TAG, status: MPI.Status | None = None) -> None:
        if self._plain(sendbuf, True, dest) and (recvbuf is None or self._plain(recvbuf, False, source)):
            return _Comm.Sendrecv(self, sendbuf, dest, sendtag, recvbuf, source, recvtag, status)
        sspec, out = self._stage(sendbuf, True, dest)
        rspec, inc = self._stage(recvbuf, False, source) if recvbuf is not None else (None, None)
        if inc is not None and status is None:
            status = MPI.Status()
        try:
            _Comm.Sendrecv(self, sspec, dest, sendtag, rspec, source, recvtag, status)
            if inc is not None:
                inc.finish(status)
        finally:
            for staging in (out, inc):
                if staging is not None:
                    staging.release()

    # -- persistent --

    def _send_init(self, init, buf: Any, dest: int, tag: int) -> MPI.Prequest:
        route = None if self._plain(buf, True, dest) else self._route(buf, True, dest)
        if route is None:
            return init(self, buf, dest, tag)
        out = Outgoing([route[0]], route[1])
        return wrap_persistent(init(self, out.spec, dest, tag), out, before_start=out.fill)

    def Send_init(self, buf: Any, dest: int, tag: int = 0) -> MPI.Prequest:
        return self._send_init(_Comm.Send_init, buf, dest, tag)

    def Ssend_init(self, buf: Any, dest: int, tag: int = 0) -> MPI.Prequest:
        return self._send_init(_Comm.Ssend_init, buf, dest, tag)

    def Recv_init(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> MPI.Prequest:
        spec, inc = self._stage(buf, False, source)
        request = _Comm.Recv_init(self, spec, source, tag)
        return request if inc is None else wrap_persistent(request, inc, finish=inc.finish)

    # -- v/w collectives: each side packed into one buffer of bytes, or given to MPI natively --

    def _segments_method(self, messages: list[Message], sending: bool) -> Method:
        device = messages[0].device is not None
        nbytes = sum(m.packed_bytes for m in messages)
        if not device:
            for m in messages:
                packer = packer_for(m.datatype)
                lo, hi = packer.bounds(m.count)
                if packer.layout is None or lo < 0 or hi > m.nbytes - m.offset:
                    return Method.NATIVE
        blocks = sum(m.packed_bytes / _mean_run(packer_for(m.datatype)) for m in messages if m.packed_bytes)
        run = nbytes / blocks if blocks else 1.0
        return choose(profile(), nbytes, run, sending, device, self._cuda_aware, self._forced, bool(self._remote))

    def _w_side(self, spec: Any, sending: bool, byte_displs: bool) -> tuple[Any, Any]:
        """(w-form spec for MPI, staging or None); (None, None) if this side goes as given."""
        messages = parse_segments(spec, byte_displs)
        if messages is None:
            return None, None
        as_given = [spec[0], spec[1], [m.offset for m in messages], [m.datatype for m in messages]]
        if not worth_staging(messages):
            return as_given, None
        method = self._segments_method(messages, sending)
        if method is Method.NATIVE:
            return as_given, None
        staging = (Outgoing if sending else Incoming)(messages, method)
        if sending:
            staging.fill()
        sizes = [m.packed_bytes for m in messages]
        starts = [0, *np.cumsum(sizes[:-1], dtype=np.int64).tolist()] if sizes else []
        return [staging.buffer, sizes, starts, [MPI.BYTE] * len(sizes)], staging

    def _w_collective(self, call_w, call_as_given, sendbuf: Any, recvbuf: Any, byte_displs: bool) -> None:
        sspec, sstage = self._w_side(sendbuf, True, byte_displs)
        rspec, rstage = self._w_side(recvbuf, False, byte_displs)
        if (sstage is None and rstage is None) or sspec is None or rspec is None:
            return call_as_given(self, sendbuf, recvbuf)
        try:
            call_w(self, sspec, rspec)
            if rstage is not None:
                rstage.finish()
        finally:
            for staging in (sstage, rstage):
                if staging is not None:
                    staging.release()

    def Alltoallv(self, sendbuf: Any, recvbuf: Any) -> None:
        self._w_collective(_Comm.Alltoallw, _Comm.Alltoallv, sendbuf, recvbuf, False)

    def Alltoallw(self, sendbuf: Any, recvbuf: Any) -> None:
        self._w_collective(_Comm.Alltoallw, _Comm.Alltoallw, sendbuf, recvbuf, True)

    def Neighbor_alltoallv(self, sendbuf: Any, recvbuf: Any) -> None:
        self._w_collective(MPI.Topocomm.Neighbor_alltoallw, MPI.Topocomm.Neighbor_alltoallv, sendbuf, recvbuf, False)

    def Neighbor_alltoallw(self, sendbuf: Any, recvbuf: Any) -> None:
        self._w_collective(MPI.Topocomm.Neighbor_alltoallw, MPI.Topocomm.Neighbor_alltoallw, sendbuf, recvbuf, True)

    # -- pack / unpack, like MPI_Pack on this communicator --

    def Pack(self, inbuf: Any, outbuf: Any, position: int = 0) -> int:
        """Pack the message ``inbuf`` (``[buf, count, datatype]``) into ``outbuf`` at ``position``."""
        msg = parse(inbuf)
        if msg is None:
            window, datatype = _mpi_window(inbuf, readonly=True)
            return datatype.Pack(window, outbuf, position, self)
        return pack(user_view(msg), msg.count, msg.datatype, outbuf, position)

    def Unpack(self, inbuf: Any, position: int, outbuf: Any) -> int:
        """Unpack from ``inbuf`` at ``position`` into the message ``outbuf``; the new position."""
        msg = parse(outbuf)
        if msg is None:
            window, datatype = _mpi_window(outbuf, readonly=False)
            return datatype.Unpack(inbuf, position, window, self)
        return unpack(inbuf, position, user_view(msg), msg.count, msg.datatype)

    def Pack_size(self, count: int, datatype: MPI.Datatype) -> int:
        """Bytes ``count`` elements of ``datatype`` need once packed."""
        return datatype.Pack_size(count, self)


def _mpi_window(spec: Any, readonly: bool) -> tuple[Any, MPI.Datatype]:
    """For MPI's own Pack/Unpack (which count elements by buffer size): ``[buf, count, datatype]``
    as a window of exactly ``count`` extents, or ``[buf, datatype]`` as it is."""
    if not (isinstance(spec, (list, tuple)) and len(spec) in (2, 3) and isinstance(spec[-1], MPI.Datatype)):
        raise PackError(MPI.ERR_ARG, "expected [buffer, datatype] or [buffer, count, datatype]")
    buf, datatype = spec[0], spec[-1]
    if len(spec) == 2:
        return buf, datatype
    mem = MPI.buffer(buf)
    return MPI.buffer.fromaddress(mem.address, int(spec[1]) * datatype.extent, readonly=readonly), datatype


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


def _install_fast_path() -> bool:
    """Put the C fast path (``_fastpath.FastCall``) in front of the four hot calls, if built
    (``MPIFORGE_FASTPATH=0`` keeps them in Python)."""
    if os.environ.get("MPIFORGE_FASTPATH", "1").strip() == "0":
        return False
    try:
        from ._fastpath import FastCall
    except ImportError:
        log.info("mpiforge.comms._fastpath not built: the interposer's hot calls run in Python")
        return False
    for name, cache in (("Send", "_send_fast"), ("Isend", "_send_fast"), ("Recv", "_recv_fast"),
                        ("Irecv", "_recv_fast")):
        setattr(Interposed, name, FastCall(getattr(_Comm, name), getattr(Interposed, name), cache, np.ndarray))
    return True


FAST_PATH = _install_fast_path()


_classes: dict[type, type] = {}


def _interposed_class(base: type) -> type:
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type(base.__name__, (Interposed, base),
                                    {"__doc__": f"{base.__name__} with mpiforge's interposed methods.",
                                     "__module__": __name__})
    return cls


def _forced(method: Method | str | None) -> Method | None:
    """The method to force: ``method`` ("auto": none), or else ``MPIFORGE_METHOD``'s."""
    if method is None:
        return forced_method()
    return None if method == "auto" else Method(method)


def Comm(comm: MPI.Comm, method: Method | str | None = None) -> Interposed:
    """``comm`` (same handle, not a duplicate) as an interposed communicator of its own class.

    Collective over ``comm`` (it learns which peers are on other nodes). ``method`` forces
    one method ("auto" lets the model choose even when MPIFORGE_METHOD is set); wrapping an
    interposed communicator with a different ``method`` gives a second view of the same handle.
    """
    if isinstance(comm, Interposed) and (method is None or _forced(method) is comm._forced):
        return comm
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"expected an mpi4py communicator, got {type(comm).__name__}")
    base = next(c for c in type(comm).__mro__ if c.__module__ == "mpi4py.MPI")
    wrapped = _interposed_class(base)(comm)
    wrapped._setup(method)
    return wrapped
