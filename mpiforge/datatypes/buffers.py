"""Resolve user buffers to addresses: host memory through the buffer protocol or DLPack (via
mpi4py's own buffer reader), device memory through ``__cuda_array_interface__`` or DLPack.
No array library is imported to recognise a buffer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from .errors import PackError

__all__ = ["HOST_TYPES", "host_buffer", "is_device", "DeviceBuffer", "device_buffer"]

# DLPack device types whose memory the CPU cannot touch directly.
_DLPACK_GPU = {2, 4, 10, 13, 14}  # CUDA, OpenCL, ROCm, CUDA managed, oneAPI
HOST_TYPES = frozenset({np.ndarray, bytes, bytearray, memoryview})  # never device memory
_device_types: dict[type, bool] = dict.fromkeys(HOST_TYPES, False)


def is_device(obj: Any) -> bool:
    """True for objects that describe GPU memory (``__cuda_array_interface__`` or a GPU DLPack device).

    Types that speak DLPack are asked per object: one tensor type (torch.Tensor) lives on the
    host or a GPU, and its ``__cuda_array_interface__`` property raises on the host.
    """
    kind = type(obj)
    known = _device_types.get(kind)
    if known is None:
        if hasattr(kind, "__dlpack_device__"):
            return obj.__dlpack_device__()[0] in _DLPACK_GPU
        known = _device_types[kind] = hasattr(kind, "__cuda_array_interface__")
    return known


def host_buffer(obj: Any, writable: bool, what: str) -> tuple[int, int]:
    """(address, nbytes) of a contiguous host buffer, without copying."""
    try:
        buf = MPI.buffer(obj)
    except (TypeError, ValueError, BufferError) as exc:
        raise PackError(MPI.ERR_BUFFER, f"{what}: {type(obj).__name__} is not a contiguous buffer "
                        f"(buffer protocol, DLPack or __cuda_array_interface__): {exc}") from None
    if writable and buf.readonly:
        raise PackError(MPI.ERR_BUFFER, f"{what} is read-only")
    return buf.address, buf.nbytes


@dataclass(frozen=True)
class DeviceBuffer:
    """A contiguous device allocation: address, size in bytes and the object keeping it alive."""

    ptr: int
    nbytes: int
    readonly: bool
    owner: Any


def device_buffer(obj: Any, what: str) -> DeviceBuffer:
    """Read ``__cuda_array_interface__`` (v2/v3); the array must be C-contiguous."""
    if not hasattr(obj, "__cuda_array_interface__"):
        raise PackError(MPI.ERR_BUFFER, f"{what}: DLPack GPU tensors need __cuda_array_interface__ "
                        "(CuPy, Numba and PyTorch CUDA arrays have it)")
    cai = obj.__cuda_array_interface__
    shape = tuple(cai["shape"])
    itemsize = np.dtype(cai["typestr"]).itemsize
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    strides = cai.get("strides")
    if strides is not None and nbytes:
        expected, step = [], itemsize
        for extent in reversed(shape):
            expected.append(step)
            step *= extent
        if any(n > 1 and s != e for n, s, e in zip(shape, strides, reversed(expected))):
            raise PackError(MPI.ERR_BUFFER, f"{what}: device array is not C-contiguous")
    ptr, readonly = cai["data"]
    return DeviceBuffer(int(ptr or 0), nbytes, bool(readonly), obj)
