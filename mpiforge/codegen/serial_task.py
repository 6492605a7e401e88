"""A task made from a serial program and example inputs: what ``mpiforge parallelize`` checks against.

    with tempfile.TemporaryDirectory() as tmp:
        task = serial_task(Path("heat.c"), [Path("small.in"), Path("odd.in")], Path(tmp))

The serial program follows the task contract (:mod:`.contract`: numbers in argv[1], numbers out
in argv[2]); it is compiled once, and its output on each example input is the expected answer.
An example input the serial program itself fails on is discarded, as a generated test would be.
"""
from __future__ import annotations

import re
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .build import build
from .contract import read_output, write_input
from .sandbox import Limits, run_sandboxed
from .tasks import Task

__all__ = ["SerialProgramError", "serial_task"]

_INTEGER = re.compile(r"[-+]?\d+")
SERIAL_LIMITS = Limits(wall_seconds=60, cpu_seconds=60)


class SerialProgramError(ValueError):
    """The serial program does not build, or an example input cannot be read."""


def _numbers(path: Path) -> np.ndarray:
    tokens = Path(path).read_text(errors="replace").split()
    try:
        if all(_INTEGER.fullmatch(t) for t in tokens):
            return np.array([int(t) for t in tokens], dtype=np.int64)
        return np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as exc:
        raise SerialProgramError(f"{path}: an input file holds whitespace-separated numbers only ({exc})") from None


def serial_task(source: Path, inputs: Sequence[Path], workdir: Path, rtol: float = 1e-9, atol: float = 1e-12,
                limits: Limits = SERIAL_LIMITS) -> Task:
    """A :class:`Task` whose tests are ``inputs`` and whose reference is ``source`` run serially."""
    if not inputs:
        raise SerialProgramError("give at least one example input (--input FILE) for the serial program")
    examples = [_numbers(p) for p in inputs]
    (workdir / "serial-build").mkdir()
    built = build(Path(source), workdir / "serial-build", strict_send=False)
    if not built.ok:
        raise SerialProgramError(f"the serial program {source} does not build:\n{built.log[-2000:]}")
    runs = workdir / "serial-runs"
    runs.mkdir()

    def generate(rng: np.random.Generator, index: int) -> list:
        return [examples[index]]

    def reference(fields: list) -> np.ndarray:
        given, answer = runs / "in.txt", runs / "out.txt"
        write_input(fields, given)
        answer.unlink(missing_ok=True)
        res = run_sandboxed([*built.argv, str(given), str(answer)], runs, limits)
        if not res.ok:
            raise RuntimeError(f"the serial program failed on this input: {res.describe()} {res.stderr[-300:]}")
        return read_output(answer)

    return Task(name=Path(source).stem, category="parallelize",
                description=f"the MPI version of the serial program {Path(source).name}",
                signature="", input="the serial program's input file", output="the serial program's output",
                sizes=list(range(len(examples))), rtol=rtol, atol=atol, directory=workdir,
                _module=types.SimpleNamespace(generate=generate, reference=reference))
