#!/usr/bin/env python
"""A 3-D stencil application: exchange the halo with all 26 neighbours, apply a 27-point stencil.

    mpiexec -n 4 python scripts/halo3d.py --n 64 --halo 1 --iters 10 --mode mpi
    mpiexec -n 4 python scripts/halo3d.py --mode mpiforge --method host
    mpiexec -n 4 python scripts/halo3d.py --check            # all three modes: bit-identical?
    mpiexec -n 4 python -m mpiforge run scripts/halo3d.py --mode mpi   # unmodified, interposed

Rank 0 prints the checksum of the final grid and the time per iteration. ``--check`` runs the
modes mpi, numpy and mpiforge from the same initial grid and exits with code 1 unless their
final grids are bit-identical, on every rank, to each other and to the result each rank
recomputes alone from the initial values (no exchange involved).
"""
from __future__ import annotations

import logging
import time

import click
from mpi4py import MPI

from mpiforge.comms.halo import MODES, Halo3D, cartesian, compare
from mpiforge.comms.interpose import is_interposed
from mpiforge.comms.methods import Method


def run_mode(halo: Halo3D, iters: int, mode: str, method: str | None):
    """(final grid, seconds of the first iteration, seconds per later iteration) of ``iters`` steps
    in ``mode``; times are the slowest rank's. The first iteration pays one-time costs (datatypes
    translated, kernels loaded, interposed communicators set up)."""
    grid = halo.initial_grid()
    times = []
    for steps in (min(iters, 1), max(iters - 1, 0)):
        halo.comm.Barrier()
        t0 = time.perf_counter()
        grid = halo.iterate(grid, steps, mode, method)
        times.append(halo.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / max(steps, 1))
    return grid, *times


def _label(mode: str, method: str | None) -> str:
    return mode if method is None else f"{mode} ({method})"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--n", "n", type=click.IntRange(min=1), default=64, show_default=True,
              help="Local interior grid points per dimension (each rank holds n^3).")
@click.option("--halo", "h", type=click.IntRange(min=1), default=1, show_default=True, help="Halo width (at most --n).")
@click.option("--iters", type=click.IntRange(min=0), default=10, show_default=True,
              help="Iterations of exchange + stencil.")
@click.option("--mode", type=click.Choice(MODES), default="mpi", show_default=True,
              help="mpi: mpi4py derived datatypes; numpy: manual packing; mpiforge: the interposed communicator.")
@click.option("--method", type=click.Choice(["auto"] + [m.value for m in Method]), default="auto", show_default=True,
              help="How mode mpiforge sends (auto: its model, or MPIFORGE_METHOD).")
@click.option("--check", is_flag=True, help="Run all three modes and verify bit-identical results (exit 1 if not).")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(n: int, h: int, iters: int, mode: str, method: str, check: bool, verbose: int) -> None:
    """Iterate a 26-neighbour halo exchange and a 27-point stencil on a periodic 3-D grid."""
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if h > n:
        raise click.BadParameter(f"halo {h} is wider than the local grid n={n}", param_hint="--halo")
    forced = None if method == "auto" else method
    if forced and mode != "mpiforge" and not check:
        raise click.BadParameter(f"--method applies to --mode mpiforge, not {mode}", param_hint="--method")
    comm = MPI.COMM_WORLD  # looked up now: `mpiforge run` may have interposed it
    cart = cartesian(comm)
    rank0 = comm.rank == 0
    with Halo3D(cart, n, h) as halo:
        if rank0:
            click.echo(f"{comm.size} rank(s), dims {'x'.join(map(str, halo.dims))}, local {n}^3 + halo {h}, "
                       f"{iters} iteration(s); mpi4py {'interposed by mpiforge' if is_interposed() else 'as is'}")
        runs = [(m, forced if m == "mpiforge" else None) for m in MODES] if check else [(mode, forced)]
        grids = {}
        for run, run_method in runs:
            grid, first, later = run_mode(halo, iters, run, run_method)
            grids[_label(run, run_method)] = grid
            total = halo.checksum(grid)
            if rank0:
                click.echo(f"{_label(run, run_method):<16} first {first * 1e3:8.2f} ms, then {later * 1e3:8.2f} ms/iter"
                           f"   checksum {total!r}")
        ok = True
        if check:
            identical = compare(cart, grids)
            expected = compare(cart, {k: g[halo.interior] for k, g in grids.items()}, halo.expected_interior(iters),
                               reference="recomputed")
            ok = identical.ok and expected.ok
            if rank0:
                for what, v in (("modes bit-identical", identical), ("equal to the recomputed result", expected)):
                    failed = {k: ranks for k, ranks in v.differ.items() if ranks}
                    click.echo(f"{what}: " + ("PASS" if v.ok else f"FAIL {failed} (mode: ranks)"))
    cart.Free()
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
