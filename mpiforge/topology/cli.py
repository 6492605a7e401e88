"""``mpiforge topo``: print where the ranks of a job live."""
from __future__ import annotations

import subprocess
import sys

import click


@click.command()
@click.option("-n", "--ranks", type=int, default=4, show_default=True,
              help="Ranks to launch when not already under mpiexec.")
def topo(ranks: int) -> None:
    """Print the job's topology tree: nodes, ranks, NUMA domains, GPUs, placement.

    \b
      mpiexec -n 8 mpiforge topo                       the real layout of a job
      MPIFORGE_TOPOLOGY=nodes=2,placement=roundrobin mpiforge topo   a layout to plan with
    """
    from ..launch import in_mpi_job, mpiexec_command

    if not in_mpi_job():
        code = subprocess.call(mpiexec_command(ranks, [sys.executable, "-m", "mpiforge", "topo"]))
        if code:
            raise SystemExit(code)
        return
    from mpi4py import MPI

    from .discovery import discover

    try:
        topology = discover(MPI.COMM_WORLD)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if MPI.COMM_WORLD.rank == 0:
        click.echo(topology.describe())
