"""Run a test body on N ranks under a real ``mpiexec``, with a hard timeout.

A body is a module-level function ``body(comm)`` in an importable file. Every rank
runs it; a rank that raises records its traceback and aborts the job, so one failure
never leaves the others hanging. The launcher kills the whole process group when
the timeout expires and says which ranks never finished.

    from mpiforge.testing import run_ranks
    def body(comm): assert comm.allreduce(1) == comm.size
    def test_sum(): run_ranks(body, 3)
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .launch import mpiexec_command

__all__ = ["run_ranks", "MPIRunError", "RankOutcome"]


@dataclass
class RankOutcome:
    rank: int
    ok: bool
    error: str = ""


class MPIRunError(AssertionError):
    """A multi-rank body failed, crashed or timed out; the message says which rank and why."""


def _locate(body: Callable | str) -> tuple[str, str]:
    if isinstance(body, str):
        path, _, name = body.partition("::")
        return str(Path(path).resolve()), name
    if "<locals>" in body.__qualname__:
        raise ValueError(f"{body.__qualname__} must be a module-level function to run on ranks")
    return str(Path(inspect.getsourcefile(body)).resolve()), body.__name__


def run_ranks(
    body: Callable | str,
    nprocs: int,
    timeout: float = 120.0,
    args: tuple = (),
    env: dict[str, str] | None = None,
    mpiexec_args: list[str] | None = None,
) -> list[RankOutcome]:
    """Run ``body(comm, *args)`` on ``nprocs`` ranks; raise MPIRunError unless every rank succeeds.

    ``body`` is a module-level function or ``"path.py::name"``; ``args`` must be JSON-serialisable.
    """
    path, name = _locate(body)
    with tempfile.TemporaryDirectory(prefix="mpiforge-ranks-") as outdir:
        argv = [sys.executable, "-m", "mpiforge.testing", path, name, outdir, json.dumps(list(args))]
        cmd = mpiexec_command(nprocs, argv, mpiexec_args)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, env={**os.environ, "TMPDIR": outdir, **(env or {})},  # session files die with it
        )
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        outcomes = _collect(outdir, nprocs)
    failed = [o for o in outcomes if not o.ok]
    if timed_out or failed or proc.returncode != 0:
        raise MPIRunError(_explain(name, nprocs, timeout, timed_out, proc.returncode, outcomes, out, err))
    return outcomes


def _collect(outdir: str, nprocs: int) -> list[RankOutcome]:
    outcomes = []
    for rank in range(nprocs):
        f = Path(outdir, f"{rank}.json")
        if f.exists():
            outcomes.append(RankOutcome(rank, **json.loads(f.read_text())))
        else:
            outcomes.append(RankOutcome(rank, False, "did not finish"))
    return outcomes


def _explain(name, nprocs, timeout, timed_out, code, outcomes, out, err) -> str:
    lines = [f"{name} on {nprocs} rank(s): "
             + (f"timed out after {timeout:.0f} s (deadlock?)" if timed_out else f"mpiexec exit code {code}")]
    raised = [o for o in outcomes if not o.ok and o.error != "did not finish"]
    unfinished = [o.rank for o in outcomes if o.error == "did not finish"]
    for o in raised:
        lines.append(f"--- rank {o.rank} raised:\n{o.error.rstrip()}")
    if unfinished:
        lines.append(f"ranks that never finished: {unfinished}")
    if not raised:
        lines.append("--- stdout (tail):\n" + out[-2000:] + "\n--- stderr (tail):\n" + err[-4000:])
    return "\n".join(lines)


def _worker(path: str, name: str, outdir: str, args_json: str) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    result = Path(outdir, f"{comm.rank}.json")
    try:
        spec = importlib.util.spec_from_file_location(f"_mpiforge_body_{Path(path).stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        getattr(module, name)(comm, *json.loads(args_json))
    except BaseException:  # noqa: BLE001 - any failure must reach the launcher, then abort
        import traceback

        result.write_text(json.dumps({"ok": False, "error": traceback.format_exc()}))
        comm.Abort(1)
    else:
        result.write_text(json.dumps({"ok": True}))


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
