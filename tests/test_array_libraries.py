"""Buffers from array libraries other than numpy: the engine reads them without copying."""
from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.bindings.fake_cuda import FakeDeviceArray
from mpiforge.datatypes import pack, unpack
from mpiforge.datatypes.buffers import is_device


def test_torch_cpu_tensors_pack_like_numpy() -> None:
    torch = pytest.importorskip("torch")
    dt = MPI.FLOAT.Create_subarray([5, 7], [3, 2], [1, 4]).Commit()
    try:
        values = np.arange(35, dtype=np.float32)
        tensor = torch.from_numpy(values.copy())
        assert not is_device(tensor), "a CPU tensor is host memory (its CUDA interface raises there)"
        want, got = np.zeros(6, np.float32), torch.zeros(6, dtype=torch.float32)
        pack(values, 1, dt, want)
        assert pack(tensor, 1, dt, got) == 24
        assert np.array_equal(got.numpy(), want)
        back = torch.full((35,), -1.0, dtype=torch.float32)
        unpack(got, 0, back, 1, dt)
        expect = np.full(35, -1.0, np.float32)
        unpack(want, 0, expect, 1, dt)
        assert np.array_equal(back.numpy(), expect)
    finally:
        dt.Free()


def test_device_detection() -> None:
    assert is_device(FakeDeviceArray(np.zeros(3)))
    assert not is_device(np.zeros(3)) and not is_device(bytearray(3)) and not is_device(memoryview(b"ab"))
