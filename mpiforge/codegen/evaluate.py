"""Evaluate a model on the task suite: pass@k and build@k as ParEval defines them, and what repair adds.

    report = evaluate(tasks, backend, samples=5, max_repairs=0)
    report.summary()        # {"pass@1": ..., "pass@5": ..., "build@1": ..., "repaired": ...}

Every task gets ``samples`` first answers; each is verified (compiled, run at every rank count
on generated inputs, compared with the serial reference). pass@k is the unbiased estimate
1 - C(n-c, k) / C(n, k) over the n first answers of which c passed, averaged over tasks;
build@k likewise with "compiled". With ``max_repairs`` > 0, failing answers are repaired from
their diagnostics and ``repaired`` is the share of tasks solved by any round.

``mode="complete"`` asks instead for the MPI calls taken out of each task's oracle (MPIrigen's
task, :mod:`.complete`) and adds location, function and argument accuracy over all removed
calls of all first answers; pass@k then says whether the completed programs work.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from .backends.base import Backend
from .build import language_of
from .complete import Blanked, blank_mpi_calls, score_completion
from .generate import NO_CODE, STATIC, STOP, GenerationResult, generate
from .prompts import complete_prompt, task_prompt
from .results import Verdict
from .tasks import Task

__all__ = ["EvalReport", "TaskScore", "evaluate", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k answers drawn from n (c of them correct) is correct."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class TaskScore:
    """One task's first answers (n, how many compiled and passed) and whether any round solved it."""

    task: str
    category: str
    n: int
    built: int
    passed: int
    solved: bool  # passed in any round, repairs included
    verdicts: list[str] = field(default_factory=list)  # of the first answers
    details: list[str] = field(default_factory=list)  # why each first answer failed ("" when it passed)
    seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)  # complete mode: removed, located, functions, arguments


@dataclass
class EvalReport:
    backend: str
    model: str
    lang: str
    samples: int
    max_repairs: int
    mode: str = "generate"
    scores: list[TaskScore] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        """pass@k and build@k for k = 1 and ``samples``, and the share solved with repairs."""
        out: dict[str, float] = {}
        if not self.scores:
            return out
        for k in sorted({1, self.samples}):
            out[f"pass@{k}"] = _mean(pass_at_k(s.n, s.passed, k) for s in self.scores)
            out[f"build@{k}"] = _mean(pass_at_k(s.n, s.built, k) for s in self.scores)
        out["repaired"] = _mean(float(s.solved) for s in self.scores)
        removed = sum(s.calls.get("removed", 0) for s in self.scores)
        if removed:
            for name, key in (("location", "located"), ("function", "functions"), ("arguments", "arguments")):
                out[name] = sum(s.calls.get(key, 0) for s in self.scores) / removed
        return out

    def by_category(self) -> dict[str, dict[str, float]]:
        groups: dict[str, list[TaskScore]] = {}
        for s in self.scores:
            groups.setdefault(s.category, []).append(s)
        return {c: {"tasks": len(g), "pass@1": _mean(pass_at_k(s.n, s.passed, 1) for s in g)}
                for c, g in sorted(groups.items())}

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary(), "by_category": self.by_category()}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _score(task: Task, result: GenerationResult) -> TaskScore:
    first = [a for a in result.attempts if a.round == 0]
    built = [a for a in first if a.verdict not in (NO_CODE, STATIC, Verdict.COMPILE_ERROR.value)]
    passed = [a for a in first if a.verdict == Verdict.PASS.value]
    return TaskScore(task.name, task.category, len(first), len(built), len(passed), result.passed,
                     [a.verdict for a in first], [a.detail for a in first],
                     sum(a.seconds for a in result.attempts))  # the model's share of a batch + verification


def evaluate(tasks: Iterable[Task], backend: Backend, lang: str = "c", samples: int = 1, max_repairs: int = 0,
             progress: Callable[[str], None] | None = None, mode: str = "generate", batch: int = 8,
             **options) -> EvalReport:
    """Score ``backend`` on ``tasks`` (``options`` go to :func:`.generate.generate`: ranks, inputs,
    temperature, max_tokens, seed, limits). First answers are asked for ``batch`` tasks at a time."""
    if mode not in ("generate", "complete"):
        raise ValueError(f"mode {mode!r}: use generate or complete")
    start = time.monotonic()
    report = EvalReport(backend.name, backend.model, lang, samples, max_repairs, mode=mode)
    tasks = list(tasks)
    asking = {"stop": STOP, **{k: options[k] for k in ("temperature", "max_tokens", "seed", "stop") if k in options}}
    for first in range(0, len(tasks), max(batch, 1)):
        chunk = [_question(task, lang, mode) for task in tasks[first:first + max(batch, 1)]]
        answers = backend.generate_batch([q.conversation for q in chunk], n=samples, **asking)
        for q, first_answers in zip(chunk, answers):
            result = generate(q.task, backend, q.lang, samples, max_repairs, stop_at_pass=False,
                              conversation=q.conversation, first_answers=first_answers, **options)
            score = _score(q.task, result)
            if q.blanked is not None:
                for attempt in (a for a in result.attempts if a.round == 0):
                    got = score_completion(q.blanked, attempt.source)
                    for key, value in (("removed", got.removed), ("located", got.located),
                                       ("functions", got.functions), ("arguments", got.arguments)):
                        score.calls[key] = score.calls.get(key, 0) + value
            report.scores.append(score)
            if progress:
                progress(f"{q.task.name}: {score.passed}/{samples} passed")
    report.seconds = time.monotonic() - start
    return report


@dataclass
class _Question:
    task: Task
    lang: str
    conversation: list[dict[str, str]]
    blanked: Blanked | None = None  # complete mode: the oracle without its MPI calls


def _question(task: Task, lang: str, mode: str) -> _Question:
    """What the model is asked about ``task``: write it, or complete its oracle."""
    if mode == "generate":
        return _Question(task, lang, task_prompt(task, lang))
    oracle = task.oracle
    oracle_lang = {"cxx": "cpp"}.get(language_of(oracle), language_of(oracle))
    blanked = blank_mpi_calls(oracle.read_text())
    return _Question(task, oracle_lang, complete_prompt(blanked.source, oracle_lang, task.description), blanked)
