"""``mpiforge run`` (an unmodified mpi4py program, interposed) and ``mpiforge calibrate``."""
from __future__ import annotations

import click

from .methods import Method

_METHODS = click.Choice(["auto"] + [m.value for m in Method])


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-m", "--module", is_flag=True, help="TARGET is a module name (like python -m).")
@click.option("--method", type=_METHODS, default=None,
              help="Force one method for every message (default: MPIFORGE_METHOD, else the model).")
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(module: bool, method: str | None, target: str, args: tuple[str, ...]) -> None:
    """Run an unmodified mpi4py program with mpiforge's communicators.

    \b
      mpiexec -n 4 python -m mpiforge run app.py --steps 10
      MPIFORGE_METHOD=host mpiexec -n 2 python -m mpiforge run app.py
      MPIFORGE_DISABLE=1 ...           runs the program with plain mpi4py

    Derived datatypes and device buffers then travel the way the calibrated model (see
    `mpiforge calibrate`) says is fastest; everything else goes straight to MPI.
    """
    from .interpose import run_program

    run_program(target, list(args), module=module, method=None if method in (None, "auto") else method)


@click.command()
@click.option("--quick", is_flag=True, help="Fewer sizes and repetitions (a few seconds).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the profile (default: MPIFORGE_PROFILE, else ~/.cache/mpiforge/profile.json).")
@click.option("-n", "--ranks", type=int, default=2, show_default=True,
              help="Ranks to launch when not already under mpiexec.")
@click.option("--levels", is_flag=True,
              help="Calibrate the collectives' cost model instead: link figures inside and between "
                   "nodes, reduction speed, step overhead and MPI's own collectives, all ranks at once.")
def calibrate(quick: bool, output: str | None, ranks: int, levels: bool) -> None:
    """Measure this system's speeds for mpiforge's choices.

    \b
      mpiexec -n 2 mpiforge calibrate            transfer and packing speeds (the interposer's methods)
      mpiexec -n 8 mpiforge calibrate --levels   the topology cost model of this job's layout

    Under mpiexec it measures the job (put ranks on several nodes to calibrate the network);
    otherwise it launches itself on this node with --ranks ranks.
    """
    if levels:
        from ..topology.calibrate import main as main_levels

        return main_levels(quick, output, ranks)
    from .calibrate import main

    main(quick, output, ranks)
