"""The ``mpiforge`` command line: a click group whose commands live with their areas.

Commands are imported only when invoked, so ``mpiforge --help`` stays fast and an area's
heavy dependencies load only for its own commands.
"""
from __future__ import annotations

import importlib
import logging

import click

# name -> "module:attribute" of a click command; each area adds its own line.
COMMANDS: dict[str, str] = {
    "info": "mpiforge.info:info",
    "demo": "mpiforge.demo:demo",
    "run": "mpiforge.comms.cli:run",
    "calibrate": "mpiforge.comms.cli:calibrate",
    "topo": "mpiforge.topology.cli:topo",
    "simulate": "mpiforge.topology.simulate:simulate_command",
    "ft-master": "mpiforge.comms.ft.cli:ft_master",
    "verify": "mpiforge.codegen.cli:verify_command",
    "gen": "mpiforge.codegen.gen_cli:gen_command",
    "eval": "mpiforge.codegen.eval_cli:eval_command",
    "parallelize": "mpiforge.codegen.parallelize_cli:parallelize_command",
    "complete": "mpiforge.codegen.complete_cli:complete_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="mpiforge")
def main(verbose: int) -> None:
    """mpiforge: fast MPI datatypes, collectives and training sync for mpi4py programs.

    \b
    Typical use:
      mpiforge info                    what MPI, GPU and array libraries this job sees
      mpiforge demo                    run the showcase job on the embedded Open MPI
      mpiexec -n 4 mpiforge info       the node/rank layout of a real job
      mpiexec -n 4 python -m mpiforge run app.py   an unmodified mpi4py program, interposed
      mpiforge calibrate --quick       measure the model that picks how messages travel
      mpiexec -n 8 mpiforge topo       nodes, NUMA domains, GPUs and rank placement of a job
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
