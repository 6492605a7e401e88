"""The ways a non-contiguous or device message can travel, and the staging each one needs.

- ``native``: the message goes to MPI as given (MPI's own datatype engine; for device memory
  only with a CUDA-aware MPI).
- ``host``: host memory packed by mpiforge into a contiguous buffer, sent as bytes.
- ``device``: device memory packed on the device, the packed device buffer handed to a
  CUDA-aware MPI.
- ``staged``: packed on the device, copied to pinned host memory, sent from there.
- ``oneshot``: the device kernel packs straight into mapped (device-visible) host memory.

Both sides choose independently: on the wire a packed message is the same bytes MPI would
send for the datatype, so a packed send matches a native receive and the other way round.
``Outgoing`` prepares a send (``fill`` packs, again before every persistent start),
``Incoming`` a receive (``finish`` unpacks what arrived, once the status is known). Both take
a list of messages: the segments of a v/w collective travel as one concatenated buffer.
"""
from __future__ import annotations

import enum
from typing import Any

import numpy as np
from mpi4py import MPI

from ..bindings import cuda_memory
from ..datatypes import pack, unpack
from .message import Message
from .pool import host_pool
from .requests import _Request

__all__ = ["Method", "HOST_METHODS", "DEVICE_METHODS", "Outgoing", "Incoming", "user_view"]


class Method(str, enum.Enum):
    NATIVE = "native"
    HOST = "host"
    DEVICE = "device"
    STAGED = "staged"
    ONESHOT = "oneshot"


HOST_METHODS = (Method.NATIVE, Method.HOST)
DEVICE_METHODS = (Method.NATIVE, Method.DEVICE, Method.STAGED, Method.ONESHOT)


class DeviceView:
    """``nbytes`` of device memory at ``ptr`` (inside ``owner``), as a CUDA array of bytes."""

    def __init__(self, ptr: int, nbytes: int, owner: Any, readonly: bool = False) -> None:
        self.ptr, self.nbytes, self.owner, self.readonly = ptr, nbytes, owner, readonly

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": (self.nbytes,), "typestr": "|u1", "data": (self.ptr, self.readonly), "version": 3,
                "strides": None, "stream": None}


def user_view(msg: Message) -> Any:
    """The user's buffer starting at element 0 (after the displacement)."""
    if not msg.offset:
        return msg.obj
    if msg.device is not None:
        return DeviceView(msg.device.ptr + msg.offset, msg.nbytes - msg.offset, msg.obj, msg.device.readonly)
    buf = MPI.buffer(msg.obj)
    return MPI.buffer.fromaddress(buf.address + msg.offset, msg.nbytes - msg.offset, readonly=buf.readonly)


def _allocate(nbytes: int, method: Method, sending: bool) -> tuple[Any, Any]:
    """(host, device) staging buffers of ``method`` for one direction; either may be None."""
    if method is Method.HOST:
        return host_pool.take(nbytes), None
    if method is Method.ONESHOT:
        return cuda_memory.mapped_empty(nbytes)
    if method is Method.STAGED:
        return cuda_memory.pinned_empty(nbytes), (cuda_memory.device_empty(nbytes) if sending else None)
    return None, cuda_memory.device_empty(nbytes)


class _Staging:
    """Staging buffers for the concatenated packed bytes of ``messages`` (segments, in order)."""

    def __init__(self, messages: list[Message], method: Method, sending: bool) -> None:
        self.messages, self.method = messages, method
        self.nbytes = sum(m.packed_bytes for m in messages)
        self.host, self.device = _allocate(self.nbytes, method, sending)
        self.buffer = self.device if method is Method.DEVICE else self.host  # what MPI moves
        self.spec = [self.buffer, MPI.BYTE]

    def release(self) -> None:
        """Done with the staging buffers (MPI no longer uses them): host ones go back to the pool."""
        if self.method is Method.HOST and self.host is not None:
            host_pool.give(self.host)
            self.host = self.buffer = self.spec = None


class Outgoing(_Staging):
    """The contiguous bytes MPI sends for ``messages`` under ``method`` (not NATIVE)."""

    def __init__(self, messages: list[Message], method: Method) -> None:
        super().__init__(messages, method, True)

    def fill(self) -> None:
        """Pack the user's data (now) into the staging buffers."""
        target = self.host if self.method is Method.HOST else self.device
        position = 0
        for msg in self.messages:
            position = pack(user_view(msg), msg.count, msg.datatype, target, position)
        if self.method is Method.STAGED:
            cuda_memory.to_host(self.device, self.host)


class Incoming(_Staging):
    """Where MPI receives the bytes of ``messages`` under ``method`` (not NATIVE); ``finish`` unpacks."""

    def __init__(self, messages: list[Message], method: Method) -> None:
        super().__init__(messages, method, False)

    def finish(self, status: MPI.Status | None = None) -> None:
        """Unpack what arrived into the user's buffers: ``status`` says how many bytes (None: all)."""
        received = self.nbytes if status is None else status.Get_count(MPI.BYTE)
        source = self.device if self.method is not Method.HOST else self.host
        if self.method is Method.STAGED and received:
            source = cuda_memory.device_empty(self.nbytes)
            cuda_memory.to_device(self.host, source)
        position = 0
        for msg in self.messages:
            size = msg.datatype.size
            whole = min(msg.count, (received - position) // size) if size else 0
            if whole > 0:
                unpack(source, position, user_view(msg), whole, msg.datatype)
            if whole < msg.count and received > position + whole * size:
                self._partial(msg, whole, position + whole * size, received)
            position += msg.packed_bytes
            if position >= received:
                break

    def _partial(self, msg: Message, whole: int, start: int, received: int) -> None:
        """A trailing part of an element: let MPI place it, exactly as a native receive would."""
        tail = np.ascontiguousarray(self._host_bytes()[start:received])
        at = msg.offset + whole * msg.datatype.extent
        if msg.device is None:
            _place_partial(msg.obj, at, tail, msg.datatype)
            return
        host = np.empty(msg.nbytes, np.uint8)  # round trip through the host for this rare case
        cuda_memory.to_host(msg.obj, host)
        _place_partial(host, at, tail, msg.datatype)
        cuda_memory.to_device(host, msg.obj)

    def _host_bytes(self) -> np.ndarray:
        if self.host is not None:
            return self.host
        host = np.empty(self.nbytes, np.uint8)
        cuda_memory.to_host(self.device, host)
        return host


def _place_partial(obj: Any, at: int, tail: np.ndarray, datatype: MPI.Datatype) -> None:
    buf = MPI.buffer(obj)
    window = MPI.buffer.fromaddress(buf.address + at, buf.nbytes - at, readonly=False)
    comm = MPI.COMM_SELF  # MPI's own methods, even when the interposer wraps COMM_SELF
    request = MPI.Comm.Irecv(comm, [window, 1, datatype], 0, 0)
    MPI.Comm.Send(comm, [tail, MPI.BYTE], 0, 0)
    _Request.Wait(request)
