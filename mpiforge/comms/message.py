"""Read an mpi4py buffer specification the way mpi4py does, to decide whether to accelerate it.

mpi4py accepts ``buf``, ``[buf, datatype]``, ``[buf, count, datatype]`` and
``[buf, (count, displ), datatype]`` (lists or tuples). ``parse`` returns a ``Message`` for the
specs the interposer may handle itself: an explicit derived datatype, or any device buffer.
Everything else (named types on host memory, ``MPI.BOTTOM``, ``None``, ``MPI.IN_PLACE``,
malformed specs) returns None and goes to MPI untouched, so MPI reports its own errors.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from mpi4py import MPI

from ..datatypes.buffers import HOST_TYPES, DeviceBuffer, device_buffer, is_device

__all__ = ["Message", "parse", "parse_segments", "worth_staging"]

_NAMED = MPI.COMBINER_NAMED


class Message(NamedTuple):
    """One side of a point-to-point transfer that the interposer handles."""

    obj: Any  # the user's buffer object
    count: int
    datatype: MPI.Datatype
    offset: int  # bytes from the start of the buffer to element 0 (displ x extent)
    nbytes: int  # size of the buffer object in bytes
    device: DeviceBuffer | None  # set for device memory

    @property
    def packed_bytes(self) -> int:
        return self.count * self.datatype.size


def _is_derived(datatype: MPI.Datatype) -> bool:
    try:
        return datatype.combiner != _NAMED
    except MPI.Exception:
        return False  # DATATYPE_NULL and friends: MPI reports them


def parse(spec: Any, device_ok: bool = True) -> Message | None:
    """A Message for ``spec`` if the interposer should handle it, else None (pass to MPI).

    ``device_ok`` False means device buffers are not wanted either (the caller has no
    device path and MPI can take them).
    """
    if type(spec) in HOST_TYPES:
        return None  # a bare host buffer: a named type, nothing to accelerate
    if isinstance(spec, (list, tuple)):
        if not 2 <= len(spec) <= 3:
            return None
        obj, datatype = spec[0], spec[-1]
        if not isinstance(datatype, MPI.Datatype) or obj is None or obj is MPI.BOTTOM or obj is MPI.IN_PLACE:
            return None
        device = is_device(obj)
        if not device and not _is_derived(datatype):
            return None
        if device and not device_ok:
            return None
        count_spec = spec[1] if len(spec) == 3 else None
        return _message(obj, count_spec, datatype, device)
    if device_ok and spec is not None and is_device(spec):
        dev = device_buffer(spec, "buffer")
        typestr = np.dtype(spec.__cuda_array_interface__["typestr"])
        try:
            datatype = MPI.Datatype.fromcode(typestr.char)
        except (KeyError, ValueError):
            datatype = MPI.BYTE
        count = dev.nbytes // datatype.size if datatype.size else 0
        return Message(spec, count, datatype, 0, dev.nbytes, dev)
    return None


def _message(obj: Any, count_spec: Any, datatype: MPI.Datatype, device: bool) -> Message | None:
    dev = device_buffer(obj, "buffer") if device else None
    if dev is not None:
        nbytes = dev.nbytes
    else:
        try:
            nbytes = MPI.buffer(obj).nbytes
        except (TypeError, ValueError, BufferError):
            return None  # not a buffer: MPI raises its own error
    lb, extent = datatype.Get_extent()
    displ = 0
    if count_spec is None:
        if extent <= 0 or nbytes % extent:
            return None  # mpi4py raises "cannot infer count": let it
        count = nbytes // extent
    elif isinstance(count_spec, tuple) and len(count_spec) == 2:
        count, displ = count_spec
    else:
        count = count_spec
    if not isinstance(count, (int, np.integer)) or not isinstance(displ, (int, np.integer)) or count < 0:
        return None
    return Message(obj, int(count), datatype, int(displ) * extent, nbytes, dev)


def parse_segments(spec: Any, byte_displs: bool) -> list[Message] | None:
    """The segments of a v/w-collective spec ``[buf, counts, displs, datatype(s)]``, else None.

    ``byte_displs``: displacements in bytes (the w collectives) rather than in extents of the
    datatype (the v collectives). Only the explicit four-item form is read; every other form
    goes to MPI as it is.
    """
    if not isinstance(spec, (list, tuple)) or len(spec) != 4:
        return None
    obj, counts, displs, types = spec
    if obj is None or obj is MPI.BOTTOM or obj is MPI.IN_PLACE:
        return None
    if isinstance(types, MPI.Datatype):
        types = [types] * len(counts)
    try:
        if not len(counts) == len(displs) == len(types) or not all(isinstance(t, MPI.Datatype) for t in types):
            return None
        counts, displs = [int(c) for c in counts], [int(d) for d in displs]
    except (TypeError, ValueError):
        return None
    if min(counts, default=0) < 0 or min(displs, default=0) < 0:
        return None
    device = is_device(obj)
    dev = device_buffer(obj, "buffer") if device else None
    try:
        nbytes = dev.nbytes if dev is not None else MPI.buffer(obj).nbytes
    except (TypeError, ValueError, BufferError):
        return None
    return [Message(obj, c, t, d if byte_displs else d * t.extent, nbytes, dev)
            for c, d, t in zip(counts, displs, types)]


def worth_staging(messages: list[Message]) -> bool:
    """True if any segment has a derived datatype or lives on the device."""
    return any(m.device is not None or _is_derived(m.datatype) for m in messages)
