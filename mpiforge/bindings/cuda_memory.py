"""Device, pinned and mapped host buffers for staging, on a GPU or in numba's CUDA simulator.

On a real GPU these are numba.cuda allocations. Under the simulator (``NUMBA_ENABLE_CUDASIM=1``)
"device" memory is host memory: device buffers are ``FakeDeviceArray`` views of numpy arrays,
so every staged path runs end to end on a machine without a GPU.
"""
from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

import numpy as np

from ..datatypes.buffers import device_buffer
from ..datatypes.device import _simulated, cuda_runtime
from .fake_cuda import FakeDeviceArray

__all__ = ["Mapped", "device_empty", "device_like", "pinned_empty", "mapped_empty", "to_host", "to_device"]


class Mapped(NamedTuple):
    """Host memory the device can address: ``host`` for MPI, ``device`` for kernels."""

    host: np.ndarray
    device: Any


def device_empty(nbytes: int) -> Any:
    """``nbytes`` of device memory, exposing ``__cuda_array_interface__``."""
    cuda = cuda_runtime()
    if _simulated(cuda):
        return FakeDeviceArray(np.empty(nbytes, np.uint8))
    return cuda.device_array(nbytes, np.uint8)


def device_like(host: np.ndarray) -> Any:
    """An uninitialised device array of ``host``'s shape and dtype."""
    cuda = cuda_runtime()
    if _simulated(cuda):
        return FakeDeviceArray(np.empty_like(host, order="C"))
    return cuda.device_array(host.shape, host.dtype)


def pinned_empty(nbytes: int) -> np.ndarray:
    """Page-locked host memory (plain host memory under the simulator)."""
    cuda = cuda_runtime()
    if _simulated(cuda):
        return np.empty(nbytes, np.uint8)
    return cuda.pinned_array(nbytes, np.uint8).view(np.ndarray)


def mapped_empty(nbytes: int) -> Mapped:
    """Pinned host memory mapped into the device's address space (one-shot packing writes it)."""
    cuda = cuda_runtime()
    if _simulated(cuda):
        host = np.empty(nbytes, np.uint8)
        return Mapped(host, FakeDeviceArray(host))
    mapped = cuda.mapped_array(nbytes, np.uint8)
    return Mapped(mapped.view(np.ndarray), mapped)


def to_host(device_obj: Any, host: np.ndarray) -> None:
    """Copy a device buffer into ``host`` (same byte size)."""
    cuda = cuda_runtime()
    dev = device_buffer(device_obj, "device buffer")
    if _simulated(cuda):
        ctypes.memmove(host.ctypes.data, dev.ptr, dev.nbytes)
    else:
        cuda.as_cuda_array(device_obj).view(np.uint8).reshape(-1).copy_to_host(host)


def to_device(host: np.ndarray, device_obj: Any) -> None:
    """Copy ``host`` into a device buffer (same byte size)."""
    cuda = cuda_runtime()
    dev = device_buffer(device_obj, "device buffer")
    if _simulated(cuda):
        ctypes.memmove(dev.ptr, host.ctypes.data, dev.nbytes)
    else:
        cuda.as_cuda_array(device_obj).view(np.uint8).reshape(-1).copy_to_device(host)
