"""compare_with_mpi: the same bytes as Open MPI, and timings that are real numbers."""
import numpy as np
from mpi4py import MPI

from mpiforge.datatypes.compare import compare_with_mpi


def test_compare_reports_identical_bytes_and_positive_times():
    dt = MPI.DOUBLE.Create_vector(64, 3, 5).Commit()
    try:
        user = np.random.default_rng(0).integers(0, 256, dt.extent, dtype=np.uint8)
        result = compare_with_mpi(dt, user, samples=3, min_bytes=1 << 12)
        assert result.identical
        assert result.nbytes == dt.size
        for seconds in (result.engine_pack, result.mpi_pack, result.engine_unpack, result.mpi_unpack):
            assert 0 < seconds < 1
        assert result.pack_speedup == result.mpi_pack / result.engine_pack
    finally:
        dt.Free()


def test_compare_leaves_the_user_buffer_alone():
    dt = MPI.INT.Create_indexed([2, 1, 3], [5, 0, 9]).Commit()
    try:
        user = np.arange(dt.extent, dtype=np.uint8)
        before = user.copy()
        compare_with_mpi(dt, user, samples=2, min_bytes=64)
        assert np.array_equal(user, before), "unpack must go to a scratch copy, never into the caller's data"
    finally:
        dt.Free()
