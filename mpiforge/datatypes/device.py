"""Pack and unpack device buffers (``__cuda_array_interface__``) with numba.cuda kernels.

Runs on a real GPU, or on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) where "device"
memory is host memory, which is how the paths are tested on machines without a GPU. A device
pointer is never handed to the host kernels, nor to MPI.
"""
from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
from mpi4py import MPI

from .buffers import device_buffer, is_device
from .errors import PackError
from .ir import BlockList, StridedBlock

__all__ = ["device_move", "cuda_runtime"]

_WORDS = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}


def cuda_runtime():
    """numba.cuda if it can run kernels here (a GPU, or the simulator), else a PackError."""
    try:
        from numba import cuda
    except ImportError:
        raise PackError(MPI.ERR_BUFFER, "device buffer given but numba.cuda is missing: "
                        "pip install 'mpiforge[gpu]' (numba-cuda)") from None
    if not cuda.is_available():
        raise PackError(MPI.ERR_BUFFER, "device buffer given but no CUDA device is usable here; on a "
                        "machine without a GPU set NUMBA_ENABLE_CUDASIM=1 to run the kernels in numba's simulator")
    return cuda


def _simulated(cuda) -> bool:
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def _word_view(cuda, ptr: int, nbytes: int, word: int, owner: Any):
    """A 1-D array of ``word``-byte units over device memory a kernel can index."""
    n = nbytes // word
    if _simulated(cuda):
        if n == 0:
            return np.zeros(0, dtype=_WORDS[word])
        raw = (ctypes.c_uint8 * (n * word)).from_address(ptr)
        return np.frombuffer(raw, dtype=_WORDS[word])
    desc = {"shape": (n,), "typestr": np.dtype(_WORDS[word]).str, "data": (ptr, False), "version": 3,
            "strides": None}
    return cuda.from_cuda_array_interface(desc, owner=owner, sync=False)


def _word_size(*values: int) -> int:
    g = 0
    for v in values:
        g = math.gcd(g, int(v))
    for w in (8, 4, 2):
        if g % w == 0:
            return w
    return 1


def _metadata(packer, plan, word: int, cuda, build) -> tuple:
    """Kernel metadata arrays on the device, copied once per (plan, word size) and kept."""
    key = (id(plan), word)
    hit = packer.device_cache.get(key)
    if hit is None:
        hit = packer.device_cache[key] = (plan, tuple(cuda.to_device(np.ascontiguousarray(a)) for a in build()))
    return hit[1]


def _launch(cuda, total: int) -> tuple[int, int]:
    if _simulated(cuda):
        return 1, 16  # the simulator runs every thread in Python: few threads, grid-stride loops
    return max(1, min(-(-total // 256), 4096)), 256


def device_move(packer, plan, user_obj: Any, packed_obj: Any, position: int, to_packed: bool) -> int:
    """Pack (``to_packed``) or unpack ``plan.nbytes`` bytes between two device buffers."""
    if not (is_device(user_obj) and is_device(packed_obj)):
        raise PackError(MPI.ERR_BUFFER, "one buffer is on the device and the other on the host: pack on "
                        "the device into a device buffer, then copy (mpiforge.comms stages this for you)")
    user = device_buffer(user_obj, "user buffer")
    packed = device_buffer(packed_obj, "packed buffer")
    if (to_packed and packed.readonly) or (not to_packed and user.readonly):
        raise PackError(MPI.ERR_BUFFER, "output device buffer is read-only")
    end = position + plan.nbytes
    if position < 0 or end > packed.nbytes or plan.lo < 0 or plan.hi > user.nbytes:
        packer.check_bounds(plan, user.nbytes, packed.nbytes, position, to_packed)
    if plan.nbytes == 0:
        return end
    if plan.kind is None:
        raise PackError(MPI.ERR_TYPE, f"this datatype has no device kernel ({packer.fallback_reason}); "
                        "pack it on the host")
    cuda = cuda_runtime()
    from . import device_kernels as k

    if plan.kind is StridedBlock:
        counts, strides = plan.dims
        w = _word_size(user.ptr + plan.start, plan.run, packed.ptr + position, *strides)
        total = plan.nbytes // w
        meta = _metadata(packer, plan, w, cuda, lambda: (counts, strides // w))
        blocks, threads = _launch(cuda, total)
        k.strided_kernel[blocks, threads](
            _word_view(cuda, user.ptr, user.nbytes, w, user_obj),
            _word_view(cuda, packed.ptr, packed.nbytes, w, packed_obj),
            plan.start // w, plan.run // w, *meta, position // w, total, to_packed)
    else:
        lay: BlockList = packer.layout
        counts, strides = plan.dims
        w = _word_size(user.ptr, packed.ptr + position, *lay.offsets, *lay.lengths, *strides)
        nrows = int(np.prod(counts))
        meta = _metadata(packer, plan, w, cuda, lambda: (
            lay.offsets // w, lay.lengths // w, np.concatenate([[0], np.cumsum(lay.lengths)]) // w,
            counts, strides // w))
        blocks, threads = _launch(cuda, len(lay.offsets) * nrows)
        k.blocks_kernel[blocks, threads](
            _word_view(cuda, user.ptr, user.nbytes, w, user_obj),
            _word_view(cuda, packed.ptr, packed.nbytes, w, packed_obj),
            *meta, position // w, nrows, to_packed)
    cuda.synchronize()
    return end
