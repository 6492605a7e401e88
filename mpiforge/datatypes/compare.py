"""Compare the engine with Open MPI's own MPI_Pack/MPI_Unpack on one datatype, in this process.

    result = compare_with_mpi(dt, buffer)   # bytes identical? medians of interleaved runs
    print(result.pack_speedup, result.identical)
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from mpi4py import MPI

from .packer import packer_for

__all__ = ["Comparison", "compare_with_mpi"]


@dataclass(frozen=True)
class Comparison:
    """Median seconds per call of each of the four operations, and whether the bytes agree."""

    nbytes: int
    engine_pack: float
    mpi_pack: float
    engine_unpack: float
    mpi_unpack: float
    identical: bool

    @property
    def pack_speedup(self) -> float:
        return self.mpi_pack / self.engine_pack

    @property
    def unpack_speedup(self) -> float:
        return self.mpi_unpack / self.engine_unpack


def compare_with_mpi(datatype: MPI.Datatype, user: np.ndarray, samples: int = 9,
                     min_bytes: int = 1 << 20) -> Comparison:
    """Pack one element of ``datatype`` from ``user`` both ways, check the bytes, time all four calls.

    Calls are interleaved (engine, MPI, engine, MPI, ...) so that a machine whose speed drifts
    treats both alike; each sample repeats a call until about ``min_bytes`` have moved.
    """
    packer = packer_for(datatype)
    extent = datatype.extent
    window = MPI.buffer.fromaddress(user.ctypes.data, extent, readonly=False)
    scratch = user.copy()
    scratch_window = MPI.buffer.fromaddress(scratch.ctypes.data, extent, readonly=False)
    ours, theirs = np.zeros(datatype.size, np.uint8), np.zeros(datatype.size, np.uint8)
    calls: dict[str, Callable[[], object]] = {
        "engine_pack": lambda: packer.pack(user, ours),
        "mpi_pack": lambda: datatype.Pack(window, theirs, 0, MPI.COMM_SELF),
        "engine_unpack": lambda: packer.unpack(ours, 0, scratch),
        "mpi_unpack": lambda: datatype.Unpack(theirs, 0, scratch_window, MPI.COMM_SELF),
    }
    for call in calls.values():
        call()  # warm-up: page faults, and the first engine call may compile a kernel
    identical = bool(np.array_equal(ours, theirs))
    reps = max(1, min_bytes // max(datatype.size, 1))
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(samples):
        for key, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            times[key].append((time.perf_counter() - t0) / reps)
    medians = {key: statistics.median(v) for key, v in times.items()}
    return Comparison(datatype.size, identical=identical, **medians)
