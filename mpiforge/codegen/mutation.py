"""Mutation testing of the verifier: our oracles must pass, their mutants should be killed."""
from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .mutants import Mutant, mutate
from .results import Verdict, worst
from .sandbox import Limits
from .tasks import Task
from .tester import DEFAULT_RANKS, verify

__all__ = ["MutantOutcome", "TaskScore", "score_task", "summarize"]

log = logging.getLogger(__name__)

MUTANT_RANKS = (3, 2, 4, 1)  # most bugs show at 3 ranks: try there first


@dataclass
class MutantOutcome:
    """How the verifier judged one mutant (``pass`` means it survived)."""

    name: str
    description: str
    verdict: Verdict


@dataclass
class TaskScore:
    """The oracles' verdict (the worst of them) and every mutant's, for one task."""

    task: str
    category: str
    oracle: Verdict
    oracle_detail: str = ""  # why the first failing oracle failed, naming its file
    mutants: list[MutantOutcome] = field(default_factory=list)
    oracles: dict[str, Verdict] = field(default_factory=dict)  # every oracle file's verdict, by file name

    @property
    def killed(self) -> int:
        return sum(m.verdict is not Verdict.PASS for m in self.mutants)


def _verify_mutant(task: Task, mutant: Mutant, inputs: int, limits: Limits) -> Verdict:
    with tempfile.TemporaryDirectory(prefix="mpiforge-mutant-") as tmp:
        path = Path(tmp, "mutant" + task.oracle.suffix)
        path.write_text(mutant.source)
        return verify(path, task, ranks=MUTANT_RANKS, inputs=inputs, limits=limits,
                      stop_at_first_failure=True).verdict


def score_task(task: Task, ranks: Sequence[int] = DEFAULT_RANKS, oracle_inputs: int = 3, mutant_inputs: int = 2,
               limits: Limits = Limits(wall_seconds=10, cpu_seconds=30),
               mutant_limits: Limits = Limits(wall_seconds=5, cpu_seconds=15), with_mutants: bool = True,
               progress: Callable[[str], None] | None = None) -> TaskScore:
    """Verify every oracle of ``task`` at ``ranks``, then every mutant of its main oracle (each mutant
    stops at its first failing run). The task's oracle verdict is the worst of its oracles'.

    Mutants get their own, shorter limits: most of them deadlock, and a deadlocked job spins until killed.
    """
    score = TaskScore(task.name, task.category, Verdict.PASS)
    for path in task.oracles:
        report = verify(path, task, ranks=ranks, inputs=oracle_inputs, limits=limits)
        score.oracles[path.name] = report.verdict
        if report.verdict is not Verdict.PASS and not score.oracle_detail:
            why = report.compile_log or next((r.detail for r in report.per_ranks if r.verdict is not Verdict.PASS), "")
            score.oracle_detail = f"{path.name}: {report.verdict}: {why}"
        if progress:
            progress(f"{task.name}: {path.name} {report.verdict}")
    score.oracle = worst(list(score.oracles.values()))
    if not with_mutants:
        return score
    for mutant in mutate(task.oracle.read_text()):
        verdict = _verify_mutant(task, mutant, mutant_inputs, mutant_limits)
        score.mutants.append(MutantOutcome(mutant.name, mutant.description, verdict))
        if verdict is Verdict.PASS:
            log.info("%s: mutant %s (%s) survived", task.name, mutant.name, mutant.description)
        if progress:
            progress(f"{task.name}: {mutant.name} {verdict}")
    return score


def summarize(scores: list[TaskScore]) -> dict:
    """The benchmark's JSON: oracle files passed, mutants killed by verdict, mutation score."""
    outcomes = [m for s in scores for m in s.mutants]
    killed = [m for m in outcomes if m.verdict is not Verdict.PASS]
    by_verdict = Counter(m.verdict.value for m in killed)
    survivors = Counter(m.name.split("@")[0] for m in outcomes if m.verdict is Verdict.PASS)
    by_operator: dict[str, Counter] = {}
    for m in outcomes:
        by_operator.setdefault(m.name.split("@")[0], Counter())[m.verdict.value] += 1
    return {
        "oracles": {"total": sum(len(s.oracles) for s in scores),
                    "passed": sum(v is Verdict.PASS for s in scores for v in s.oracles.values()),
                    "failed": [f"{s.task}/{name}" for s in scores for name, v in s.oracles.items()
                               if v is not Verdict.PASS]},
        "mutants": {"total": len(outcomes), "killed": len(killed), "by_verdict": dict(sorted(by_verdict.items())),
                    "survived_by_operator": dict(sorted(survivors.items())),
                    "verdicts_by_operator": {op: dict(sorted(c.items())) for op, c in sorted(by_operator.items())}},
        "mutation_score": round(len(killed) / len(outcomes), 4) if outcomes else None,
        "tasks": {s.task: {"category": s.category, "oracle": s.oracle.value,
                           "oracles": {name: v.value for name, v in s.oracles.items()}, "mutants": len(s.mutants),
                           "killed": s.killed,
                           "survivors": [f"{m.name}: {m.description}" for m in s.mutants if m.verdict is Verdict.PASS]}
                  for s in scores},
    }
