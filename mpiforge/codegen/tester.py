"""Check a candidate MPI program against a task: generated inputs, the serial reference as
the expected answer, runs under mpiexec at several rank counts, a verdict per rank count."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..launch import mpiexec_command
from .build import build
from .contract import read_output, write_input
from .results import CaseResult, RankResult, Verdict, VerifyReport, worst
from .sandbox import Limits, RunResult, run_sandboxed
from .tasks import Task

__all__ = ["DEFAULT_RANKS", "RUN_LIMITS", "TestCase", "generate_cases", "verify"]

log = logging.getLogger(__name__)

DEFAULT_RANKS = (1, 2, 3, 4)
RUN_LIMITS = Limits(wall_seconds=20, cpu_seconds=60)
# candidates run on this machine only: shared memory between ranks, and no TCP transport, whose
# start-up (probing interfaces) costs about a second per launch (MPIFORGE_VERIFY_BTL overrides it);
# waiting ranks yield the CPU, so a deadlocked candidate spins less until it is killed
_RUN_ENV = {"OMPI_MCA_btl": os.environ.get("MPIFORGE_VERIFY_BTL", "self,sm"), "OMPI_MCA_mpi_yield_when_idle": "1"}
Progress = Callable[[str], None]  # called after each step with a short label
POISONS = ("nan", "+", "-", "0")  # what mpf_read puts after the data (MPF_POISON), varied over the runs


@dataclass
class TestCase:
    """One generated input and the serial reference's answer to it."""

    seed: int
    size: int
    fields: list
    expected: np.ndarray


def _size_order(sizes: Sequence[int]) -> list[int]:
    """Largest first (most likely to expose a bug), then the next largest, then the smallest..."""
    desc = sorted(set(sizes), reverse=True)
    return desc[:2] + sorted(desc[2:])


def generate_cases(task: Task, count: int, seed: int = 0) -> tuple[list[TestCase], int]:
    """``count`` tests from the task's generator; tests the reference fails are discarded.

    Returns the tests and how many were discarded (the reference raised or gave no finite answer).
    """
    order = _size_order(task.sizes)
    cases: list[TestCase] = []
    discarded = 0
    attempt = 0
    while len(cases) < count and attempt < 3 * count + 3:
        size = order[(len(cases) + discarded) % len(order)]  # after a discard, try another size
        case_seed = seed + attempt
        attempt += 1
        fields = task.generate(np.random.default_rng(case_seed), size)
        try:
            expected = np.atleast_1d(np.asarray(task.reference(fields), dtype=np.float64)).ravel()
        except Exception as exc:  # noqa: BLE001 - a generated test the reference cannot solve is dropped
            log.warning("task %s: reference failed on seed %d size %d (%s): test discarded",
                        task.name, case_seed, size, exc)
            discarded += 1
            continue
        if not np.all(np.isfinite(expected)):
            log.warning("task %s: reference gave non-finite values on seed %d: test discarded", task.name, case_seed)
            discarded += 1
            continue
        cases.append(TestCase(case_seed, size, fields, expected))
    return cases, discarded


def compare(task: Task, expected: np.ndarray, got: np.ndarray) -> str:
    """"" when ``got`` matches ``expected`` within the task's tolerance, else what differs."""
    if got.shape != expected.shape:
        return f"expected {expected.size} numbers, got {got.size}"
    close = np.isclose(got, expected, rtol=task.rtol, atol=task.atol) if not task.exact else got == expected
    if close.all():
        return ""
    i = int(np.argmin(close))
    return (f"{int((~close).sum())} of {expected.size} values differ; "
            f"first at [{i}]: expected {expected[i]:.10g}, got {got[i]:.10g}")


def _judge(task: Task, res: RunResult, output: Path, expected: np.ndarray) -> tuple[Verdict, str]:
    if res.timed_out:
        return Verdict.TIMEOUT, res.describe()
    if res.returncode != 0:
        tail = " | ".join(line for line in res.stderr.strip().splitlines()[-3:] if line.strip())
        return Verdict.CRASH, res.describe() + (f": {tail[-300:]}" if tail else "")
    if not output.exists():
        return Verdict.WRONG_ANSWER, "rank 0 wrote no output file"
    try:
        got = read_output(output)
    except ValueError as exc:
        return Verdict.WRONG_ANSWER, str(exc)
    diff = compare(task, expected, got)
    return (Verdict.WRONG_ANSWER, diff) if diff else (Verdict.PASS, "")


def _run_case(task: Task, argv: list[str], nranks: int, case: TestCase, input_file: Path, work: Path,
              limits: Limits) -> CaseResult:
    output = work / f"out-{nranks}-{input_file.stem}.txt"
    cmd = mpiexec_command(nranks, argv + [str(input_file), str(output)])
    poison = POISONS[(case.seed + nranks) % len(POISONS)]
    res = run_sandboxed(cmd, work, limits, env={**_RUN_ENV, "MPF_POISON": poison})
    verdict, detail = _judge(task, res, output, case.expected)
    if verdict is not Verdict.PASS:
        log.info("%s on %d ranks, seed %d: %s %s", task.name, nranks, case.seed, verdict, detail)
    return CaseResult(nranks, case.seed, case.size, verdict, detail, res.seconds)


def verify(source: Path, task: Task, ranks: Sequence[int] = DEFAULT_RANKS, inputs: int = 3, seed: int = 0,
           limits: Limits = RUN_LIMITS, stop_at_first_failure: bool = False, strict_send: bool = True,
           progress: Progress | None = None) -> VerifyReport:
    """Compile ``source`` and run it on ``inputs`` generated tests at every rank count in ``ranks``.

    With ``stop_at_first_failure`` the remaining runs are skipped once one fails (mutation testing);
    ``strict_send`` compiles MPI_Send as MPI_Ssend (see :mod:`mpiforge.codegen.build`).
    """
    start = time.monotonic()
    cases, discarded = generate_cases(task, inputs, seed)
    report = VerifyReport(task.name, str(source), Verdict.PASS, discarded_tests=discarded)
    with tempfile.TemporaryDirectory(prefix="mpiforge-verify-") as tmp:
        work = Path(tmp)
        built = build(Path(source), work, strict_send=strict_send)
        if progress:
            progress("compile")
        if not built.ok:
            report.verdict, report.compile_log = Verdict.COMPILE_ERROR, built.log
            report.seconds = time.monotonic() - start
            return report
        inputs_dir = work / "inputs"
        inputs_dir.mkdir()
        for i, case in enumerate(cases):
            write_input(case.fields, inputs_dir / f"{i}.in")
        for nranks in ranks:
            rank_result = RankResult(nranks, Verdict.PASS)
            report.per_ranks.append(rank_result)
            for i, case in enumerate(cases):
                result = _run_case(task, built.argv, nranks, case, inputs_dir / f"{i}.in", work, limits)
                rank_result.cases.append(result)
                if progress:
                    progress(f"{nranks} ranks, test {i + 1}")
                if stop_at_first_failure and result.verdict is not Verdict.PASS:
                    break
            rank_result.verdict = worst([c.verdict for c in rank_result.cases])
            if stop_at_first_failure and rank_result.verdict is not Verdict.PASS:
                break
    report.verdict = worst([r.verdict for r in report.per_ranks])
    report.seconds = time.monotonic() - start
    return report
