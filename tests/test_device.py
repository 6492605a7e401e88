"""Device pack/unpack: numba.cuda kernels on fake device arrays, run in numba's CUDA simulator.

Bodies run in fresh processes (through the rank harness) so NUMBA_ENABLE_CUDASIM is set
before numba.cuda is first imported.
"""
import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.testing import run_ranks

SIM = {"NUMBA_ENABLE_CUDASIM": "1"}
NO_GPU = {"NUMBA_ENABLE_CUDASIM": "0", "CUDA_VISIBLE_DEVICES": ""}


def _types():
    """A mix of layouts: strided of several word sizes, block lists, nested, odd byte runs."""
    struct = MPI.Datatype.Create_struct([1, 2, 1], [0, 8, 24], [MPI.DOUBLE, MPI.INT, MPI.SHORT])
    return {
        "subarray3d": MPI.DOUBLE.Create_subarray([6, 5, 4], [2, 3, 2], [1, 1, 1]),
        "vector_bytes": MPI.BYTE.Create_vector(5, 3, 7),
        "indexed": MPI.INT.Create_indexed([2, 1, 3], [5, 0, 9]),
        "struct": struct,
        "vector_of_struct": struct.Create_resized(0, 32).Create_vector(3, 1, 2),
        "darray": MPI.SHORT.Create_darray(4, 3, [9, 7], [MPI.DISTRIBUTE_CYCLIC, MPI.DISTRIBUTE_BLOCK],
                                          [2, MPI.DISTRIBUTE_DFLT_DARG], [2, 2]),
    }


def body_device_matches_host(comm):
    from mpiforge.bindings.fake_cuda import FakeDeviceArray
    from mpiforge.datatypes import pack, unpack

    rng = np.random.default_rng(comm.rank)
    for name, dt in _types().items():
        dt.Commit()
        for count, position in ((1, 0), (2, 3)):
            src = rng.integers(0, 256, count * dt.extent + 64, dtype=np.uint8)
            host = rng.integers(0, 256, position + count * dt.size + 8, dtype=np.uint8)
            dev = host.copy()
            assert pack(src, count, dt, host, position) == position + count * dt.size
            assert pack(FakeDeviceArray(src), count, dt, FakeDeviceArray(dev), position) == position + count * dt.size
            assert np.array_equal(dev, host), f"{name}: device pack differs from host pack"
            back_host = rng.integers(0, 256, src.size, dtype=np.uint8)
            back_dev = back_host.copy()
            unpack(host, position, back_host, count, dt)
            unpack(FakeDeviceArray(dev), position, FakeDeviceArray(back_dev), count, dt)
            assert np.array_equal(back_dev, back_host), f"{name}: device unpack differs from host unpack"
        dt.Free()


def body_device_exchange(comm):
    """Pack on the 'device', ship the bytes, unpack on the peer's 'device': equals MPI's own exchange."""
    from mpiforge.bindings.fake_cuda import FakeDeviceArray
    from mpiforge.datatypes import pack, unpack

    n = 10
    face = MPI.DOUBLE.Create_subarray([n, n, n], [n, n, 2], [0, 0, 1]).Commit()
    halo = MPI.DOUBLE.Create_subarray([n, n, n], [n, n, 2], [0, 0, n - 2]).Commit()
    grid = np.arange(n ** 3, dtype=np.float64) + 1000.0 * comm.rank
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    expected = grid.copy()
    comm.Sendrecv([grid, 1, face], right, 0, [expected, 1, halo], left, 0)
    sendbuf = np.zeros(face.size, np.uint8)
    recvbuf = np.zeros(face.size, np.uint8)
    pack(FakeDeviceArray(grid), 1, face, FakeDeviceArray(sendbuf))
    comm.Sendrecv(sendbuf, right, 1, recvbuf, left, 1)
    got = grid.copy()
    unpack(FakeDeviceArray(recvbuf), 0, FakeDeviceArray(got), 1, halo)
    assert np.array_equal(got, expected)


def body_errors_without_gpu(comm):
    from mpiforge.bindings.fake_cuda import FakeDeviceArray
    from mpiforge.datatypes import PackError, pack

    dt = MPI.DOUBLE.Create_vector(4, 1, 2).Commit()
    src = np.arange(8.0)
    out = np.full(dt.size, 7, np.uint8)
    try:
        pack(FakeDeviceArray(src), 1, dt, FakeDeviceArray(out))
    except PackError as exc:
        assert exc.Get_error_class() == MPI.ERR_BUFFER
        assert "NUMBA_ENABLE_CUDASIM" in str(exc) or "numba-cuda" in str(exc)
    else:
        raise AssertionError("a device buffer without a GPU must raise")
    assert (out == 7).all(), "nothing may be written when the device path is unavailable"
    try:  # mixing host and device memory is refused before any kernel runs
        pack(FakeDeviceArray(src), 1, dt, out)
    except PackError as exc:
        assert "host" in str(exc)
    else:
        raise AssertionError("mixed host/device buffers must raise")


def body_device_bounds(comm):
    from mpiforge.bindings.fake_cuda import FakeDeviceArray
    from mpiforge.datatypes import PackError, pack

    dt = MPI.DOUBLE.Create_vector(4, 1, 2).Commit()
    out = np.full(dt.size - 1, 7, np.uint8)
    try:
        pack(FakeDeviceArray(np.arange(8.0)), 1, dt, FakeDeviceArray(out))
    except PackError as exc:
        assert exc.Get_error_class() == MPI.ERR_TRUNCATE
    else:
        raise AssertionError("too small a device output must raise")
    assert (out == 7).all()
    try:
        pack(FakeDeviceArray(np.arange(8.0)), 1, dt, FakeDeviceArray(np.zeros(dt.size, np.uint8), readonly=True))
    except PackError as exc:
        assert "read-only" in str(exc)
    else:
        raise AssertionError("a read-only device output must raise")


@pytest.mark.parametrize("nprocs", [1, 2])
def test_device_kernels_match_host(nprocs):
    run_ranks(body_device_matches_host, nprocs, timeout=300, env=SIM)


@pytest.mark.parametrize("nprocs", [2, 3])
def test_device_halo_exchange(nprocs):
    run_ranks(body_device_exchange, nprocs, timeout=300, env=SIM)


def test_device_bounds_in_simulator():
    run_ranks(body_device_bounds, 1, timeout=120, env=SIM)


def test_device_buffer_without_gpu_is_a_clear_error():
    run_ranks(body_errors_without_gpu, 1, timeout=120, env=NO_GPU)
