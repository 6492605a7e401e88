"""Make an unmodified mpi4py program use mpiforge's communicators.

    mpiexec -n 4 python -m mpiforge run app.py [args]     # or, in code: mpiforge.interpose()

``interpose()`` replaces ``MPI.COMM_WORLD`` and ``MPI.COMM_SELF`` with interposed
communicators (every communicator derived from them is interposed too) and ``MPI.Request`` /
``MPI.Prequest`` with subclasses whose ``Waitall``-style class methods also finish staged
receives. ``isinstance(r, MPI.Request)`` still holds for every request. Call it before the
program copies those names (``from mpi4py.MPI import COMM_WORLD``); ``MPIFORGE_DISABLE=1``
turns it into a no-op.
"""
from __future__ import annotations

import logging
import os
import runpy
import sys

from mpi4py import MPI

from . import requests
from .comm import Comm, Interposed
from .methods import Method

__all__ = ["interpose", "is_interposed", "disabled", "run_program"]

log = logging.getLogger(__name__)


def disabled() -> bool:
    """True when ``MPIFORGE_DISABLE`` is set to 1/true/yes."""
    return os.environ.get("MPIFORGE_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def is_interposed() -> bool:
    return isinstance(MPI.COMM_WORLD, Interposed)


def interpose(method: Method | str | None = None) -> bool:
    """Interpose mpi4py's world and self communicators and its request classes; True if done.

    Safe to call twice. ``method`` forces one method (like ``MPIFORGE_METHOD``).
    """
    if disabled():
        log.info("MPIFORGE_DISABLE is set: mpi4py runs unchanged")
        return False
    if is_interposed():
        return True
    if not MPI.Is_initialized() or MPI.Is_finalized():
        raise RuntimeError("interpose() needs an initialised MPI: import mpi4py.MPI first (it initialises MPI)")
    MPI.COMM_WORLD = Comm(MPI.COMM_WORLD, method)
    MPI.COMM_SELF = Comm(MPI.COMM_SELF, method)
    MPI.Request = requests.Request
    MPI.Prequest = requests.Prequest
    log.info("mpi4py interposed by mpiforge (method: %s)", method or os.environ.get("MPIFORGE_METHOD") or "auto")
    return True


def run_program(target: str, args: list[str], module: bool = False, method: str | None = None) -> None:
    """Run a Python script (or ``-m`` module) as ``__main__`` with mpi4py interposed."""
    interpose(method)
    sys.argv = [target, *args]
    if module:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        if not os.path.exists(target):
            raise FileNotFoundError(f"no such program: {target}")
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        runpy.run_path(target, run_name="__main__")
