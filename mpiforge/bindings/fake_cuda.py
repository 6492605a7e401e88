"""Host memory dressed as a CUDA array: exercises GPU code paths on machines without a GPU.

``FakeDeviceArray(np.zeros(10))`` exposes ``__cuda_array_interface__`` (v3) pointing at the
numpy array's memory, like mpi4py's test suite does. Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) mpiforge's device kernels run on it for real.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FakeDeviceArray"]


class FakeDeviceArray:
    """A view of a C-contiguous numpy array that presents itself as device memory."""

    def __init__(self, host: np.ndarray, readonly: bool = False) -> None:
        if not host.flags.c_contiguous:
            raise ValueError("FakeDeviceArray needs a C-contiguous array")
        self.host = host
        self.readonly = readonly

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.host.shape,
            "typestr": self.host.dtype.str,
            "data": (self.host.ctypes.data, self.readonly),
            "version": 3,
            "strides": None,
            "stream": None,
        }

    def __len__(self) -> int:
        return len(self.host)
