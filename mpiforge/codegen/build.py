"""Turn a candidate source file into a command line: compile C/C++ with the MPI wrappers,
byte-compile Python (mpi4py) to catch syntax errors. Compilation runs in the sandbox.

C and C++ are compiled with ``-DMPI_Send=MPI_Ssend`` by default: the MPI standard lets
``MPI_Send`` block until the receive is posted, so a program that only works because small
messages are buffered (send-send exchanges, receive-after-send rings) is unsafe; with
synchronous sends it deadlocks in the tests instead of at scale.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .sandbox import Limits, find_compiler, run_sandboxed
from .tasks import INCLUDE_DIR

__all__ = ["BuildResult", "build", "language_of"]

_LANGUAGES = {".c": "c", ".cc": "cxx", ".cpp": "cxx", ".cxx": "cxx", ".C": "cxx", ".py": "python"}
COMPILE_LIMITS = Limits(wall_seconds=60, cpu_seconds=60, network=True)


@dataclass
class BuildResult:
    """A runnable command (``argv``, to which INPUT and OUTPUT are appended) or a compiler log."""

    ok: bool
    argv: list[str] = field(default_factory=list)
    log: str = ""
    seconds: float = 0.0


def language_of(source: Path) -> str:
    """``c``, ``cxx`` or ``python`` from the file name; ValueError for anything else."""
    try:
        return _LANGUAGES[Path(source).suffix]
    except KeyError:
        raise ValueError(f"{source}: unsupported file type (use {', '.join(sorted(_LANGUAGES))})") from None


def build(source: Path, workdir: Path, limits: Limits = COMPILE_LIMITS, strict_send: bool = True) -> BuildResult:
    """Compile (or syntax-check) ``source`` into ``workdir``; ``strict_send`` makes MPI_Send synchronous."""
    lang = language_of(source)
    local = Path(workdir, "candidate" + Path(source).suffix)
    shutil.copyfile(source, local)
    if lang == "python":
        res = run_sandboxed([sys.executable, "-m", "py_compile", local.name], workdir, limits)
        argv = [sys.executable, str(local)]
    else:
        exe = Path(workdir, "candidate")
        flags = ["-DMPI_Send=MPI_Ssend"] if strict_send else []
        res = run_sandboxed([find_compiler(lang), "-O2", *flags, "-I", str(INCLUDE_DIR), "-o", exe.name, local.name,
                             "-lm"], workdir, limits)
        argv = [str(exe)]
    log = (res.stderr + res.stdout).strip() if not res.ok else ""
    if res.timed_out:
        log = f"compiler {res.describe()}"
    return BuildResult(res.ok, argv if res.ok else [], log, res.seconds)
