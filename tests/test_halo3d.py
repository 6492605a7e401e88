"""The 26-neighbour halo exchange (``mpiforge.comms.halo``) at 1-4 ranks, its device path in
numba's CUDA simulator, and ``scripts/halo3d.py --check`` through the interposer.

Results are checked against a reference built here from the global array, straight from the
definition (27 ``np.roll`` terms), independent of the exchange and of the module's stencil:
the data are small integers and the weights powers of two, so the arithmetic is exact and
every correct computation gives the same bits. Bodies run on every rank through
``mpiforge.testing.run_ranks``; they are module level and import nothing from tests/.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from mpiforge.comms.halo import Halo3D, bits_equal, cartesian, compare, global_values
from mpiforge.launch import mpiexec_command
from mpiforge.testing import run_ranks

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "halo3d.py"
SIM = {"NUMBA_ENABLE_CUDASIM": "1"}
TIMEOUT = 120
SIZES = [(5, 1), (6, 2)]  # (n, h): local interior n^3, halo width h
STEPS = 3
VARIANTS = [("mpi", None), ("numpy", None), ("mpiforge", None), ("mpiforge", "native"), ("mpiforge", "host")]


# ---------------------------------------------------------------- reference (every rank)

def initial_global(shape: tuple[int, int, int]) -> np.ndarray:
    return global_values([np.arange(s) for s in shape], shape)


def reference(shape: tuple[int, int, int], steps: int) -> np.ndarray:
    """The global grid after ``steps`` steps: each point sum(2^(3 - |d|_1) * g[p + d]) / 64, periodic."""
    g = initial_global(shape)
    for _ in range(steps):
        new = np.zeros_like(g)
        for d in itertools.product((-1, 0, 1), repeat=3):
            new += 2.0 ** (3 - sum(map(abs, d))) * np.roll(g, tuple(-x for x in d), axis=(0, 1, 2))
        g = new / 64.0
    return g


def window(g: np.ndarray, coords, n: int, grow: int) -> np.ndarray:
    """The block of rank ``coords`` (n^3 per rank) grown by ``grow`` cells, wrapped periodically."""
    idx = [np.arange(c * n - grow, (c + 1) * n + grow) % s for c, s in zip(coords, g.shape)]
    return g[np.ix_(*idx)]


# ---------------------------------------------------------------- bodies

def body_modes_match_reference(comm: MPI.Comm) -> None:
    """Every mode and forced method: the first exchange fills each halo cell with its periodic
    neighbour's value, and STEPS iterations give the reference bit for bit, on every rank."""
    cart = cartesian(comm)
    for n, h in SIZES:
        with Halo3D(cart, n, h) as halo:
            where = f"rank {comm.rank}, dims {halo.dims}, n={n}, h={h}"
            start = initial_global(halo.global_shape)
            exchanged = window(start, halo.coords, n, h)
            expected = window(reference(halo.global_shape, STEPS), halo.coords, n, 0)
            finals = {}
            for mode, method in VARIANTS:
                what = f"{mode}/{method or 'auto'} on {where}"
                grid = halo.initial_grid()
                assert bits_equal(grid[halo.interior], window(start, halo.coords, n, 0)), what
                assert np.isnan(grid).sum() == grid.size - n ** 3, f"{what}: halo cells must start NaN"
                halo.exchange(grid, mode, method)
                assert bits_equal(grid, exchanged), f"{what}: wrong halo after one exchange"
                finals[what] = final = halo.iterate(halo.initial_grid(), STEPS, mode, method)
                assert bits_equal(final[halo.interior], expected), f"{what}: differs from the reference"
                if method:
                    assert halo.methods_chosen(grid, method) == {method: 52}, what
            first = next(iter(finals.values()))
            for what, final in finals.items():
                assert bits_equal(final, first), f"{what}: halo cells differ from mode mpi's"
            assert bits_equal(halo.expected_interior(STEPS), expected), f"{where}: local recomputation"
    cart.Free()


def body_compare_names_the_ranks(comm: MPI.Comm) -> None:
    """``compare`` reports, on every rank, exactly the ranks and grids that differ."""
    cart = cartesian(comm)
    last = comm.size - 1
    with Halo3D(cart, 4, 1) as halo:
        a, b = halo.initial_grid(), halo.initial_grid()
        halo.exchange(a, "mpi")
        halo.exchange(b, "mpiforge")
        assert compare(cart, {"mpi": a, "mpiforge": b}).ok
        if comm.rank == last:
            b[0, 1, 1] += 1.0
        result = compare(cart, {"mpi": a, "mpiforge": b}, halo.exchanged_initial_grid())
        assert not result.ok and result.differ == {"mpi": [], "mpiforge": [last]}, result
        if comm.rank == 0:
            a[1, 1, 1] = -0.0 if a[1, 1, 1] == 0.0 else 0.0  # bits, not values: -0.0 != 0.0
        result = compare(cart, {"mpi": a})
        assert result.differ == {"mpi": []} and result.reference == "mpi"  # the first grid is the reference
        assert compare(cart, {"mpi": a}, halo.exchanged_initial_grid()).differ == {"mpi": [0]}
    cart.Free()


def body_device_staged_oneshot(comm: MPI.Comm) -> None:
    """Grids in (fake) device memory, packed by the device kernels in the CUDA simulator."""
    from mpiforge.bindings.fake_cuda import FakeDeviceArray

    cart = cartesian(comm)
    with Halo3D(cart, 3, 1) as halo:
        host = halo.initial_grid()
        halo.exchange(host, "mpi")
        host = halo.step(host, np.full(halo.shape, np.nan))
        halo.exchange(host, "mpi")
        for method in ("staged", "oneshot"):
            grid = halo.initial_grid()
            assert halo.methods_chosen(FakeDeviceArray(grid), method) == {method: 52}
            halo.exchange(FakeDeviceArray(grid), "mpiforge", method)
            assert bits_equal(grid, halo.exchanged_initial_grid()), f"rank {comm.rank}: {method} first exchange"
            grid = halo.step(grid, np.full(halo.shape, np.nan))
            halo.exchange(FakeDeviceArray(grid), "mpiforge", method)
            assert bits_equal(grid, host), f"rank {comm.rank}: {method} differs from the host exchange"
        with pytest.raises(TypeError, match="mode 'mpiforge' for device buffers"):
            halo.exchange(FakeDeviceArray(grid), "numpy")
    cart.Free()


# ---------------------------------------------------------------- tests

@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_modes_match_reference(nprocs: int) -> None:
    run_ranks(body_modes_match_reference, nprocs, timeout=TIMEOUT)


@pytest.mark.mpi
def test_compare_names_the_ranks() -> None:
    run_ranks(body_compare_names_the_ranks, 3, timeout=TIMEOUT)


@pytest.mark.mpi
def test_device_staged_and_oneshot() -> None:
    run_ranks(body_device_staged_oneshot, 2, timeout=300, env=SIM)


@pytest.mark.mpi
def test_script_check_through_the_interposer() -> None:
    argv = [sys.executable, "-m", "mpiforge", "run", str(SCRIPT), "--check", "--n", "6", "--halo", "2", "--iters", "3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "MPIFORGE_"))}
    proc = subprocess.run(mpiexec_command(2, argv), capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert "interposed by mpiforge" in out
    assert "modes bit-identical: PASS" in out and "equal to the recomputed result: PASS" in out
    sums = {line.split()[0]: line.rsplit("checksum", 1)[1].strip() for line in out.splitlines() if "checksum" in line}
    assert set(sums) == {"mpi", "numpy", "mpiforge"} and len(set(sums.values())) == 1, out


def test_bad_arguments_say_what_to_do() -> None:
    cart = cartesian(MPI.COMM_SELF)
    with pytest.raises(ValueError, match="halo"):
        Halo3D(cart, 4, 5)
    flat = MPI.COMM_SELF.Create_cart([1, 1, 1], periods=[True, False, True])
    with pytest.raises(ValueError, match="periodic"):
        Halo3D(flat, 4, 1)
    with Halo3D(cart, 4, 1) as halo:
        grid = halo.initial_grid()
        with pytest.raises(ValueError, match="expected one of mpi, numpy, mpiforge"):
            halo.exchange(grid, "shmem")
        with pytest.raises(ValueError, match="applies to mode 'mpiforge' only"):
            halo.exchange(grid, "mpi", "host")
        with pytest.raises(ValueError, match="unknown method 'fast'"):
            halo.exchange(grid, "mpiforge", "fast")
    flat.Free()
    cart.Free()
