"""Generate an MPI program for a task, and let nothing through that the tests have not passed.

    result = generate(task, backend, lang="c", samples=4, max_repairs=2)
    result.passed, result.best.source, result.attempts

The model writes ``samples`` candidates at once. Each one is taken out of the answer
(:mod:`.extract`), checked statically (:mod:`.static`), compiled and run by the Tester at every
rank count (:mod:`.tester`); a failing candidate goes back to the model with its diagnostics, up
to ``max_repairs`` times. The first candidate that passes wins; if none does, the result says so
and keeps the one that came closest (most rank counts passed).
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .backends.base import Backend, Completion
from .extract import extract_code
from .prompts import SUFFIX, repair_prompt, task_prompt
from .results import Verdict, VerifyReport
from .sandbox import Limits
from .static import static_problems
from .tasks import Task
from .tester import DEFAULT_RANKS, RUN_LIMITS, verify

__all__ = ["Attempt", "GenerationResult", "generate"]

log = logging.getLogger(__name__)
NO_CODE, STATIC = "no_code", "static_error"  # verdicts of answers that never reach the compiler
#: an answer is done once its code block is closed: what a model adds after it is never used
STOP = ["\n```\n"]


@dataclass
class Attempt:
    """One candidate: which sample and repair round it came from, and how it fared."""

    sample: int
    round: int  # 0: the first answer; r: after r repairs
    verdict: str  # a Verdict value, NO_CODE or STATIC
    detail: str = ""
    source: str = ""
    ranks_passed: int = 0
    truncated: bool = False  # the model ran out of tokens in this answer
    seconds: float = 0.0  # model + verification


@dataclass
class GenerationResult:
    """Every attempt for one task; ``best`` is the passing one, or the one closest to passing."""

    task: str
    lang: str
    backend: str
    model: str
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return any(a.verdict == Verdict.PASS.value for a in self.attempts)

    @property
    def best(self) -> Attempt | None:
        return max(self.attempts, key=lambda a: (a.verdict == Verdict.PASS.value, a.ranks_passed, -a.round),
                   default=None)

    @property
    def built(self) -> bool:
        """Some candidate compiled (whatever its tests said)."""
        return any(a.verdict not in (NO_CODE, STATIC, Verdict.COMPILE_ERROR.value) for a in self.attempts)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "built": self.built,
                "best": asdict(self.best) if self.best else None}


Progress = Callable[[str], None]


def generate(task: Task, backend: Backend, lang: str = "c", samples: int = 1, max_repairs: int = 2,
             ranks: Sequence[int] = DEFAULT_RANKS, inputs: int = 3, temperature: float = 0.2,
             max_tokens: int = 1536, seed: int = 0, limits: Limits = RUN_LIMITS, stop: list[str] | None = STOP,
             progress: Progress | None = None, stop_at_pass: bool = True,
             conversation: list[dict[str, str]] | None = None,
             first_answers: list[Completion] | None = None) -> GenerationResult:
    """Up to ``samples`` x (1 + ``max_repairs``) candidates for ``task``, each verified
    (``conversation``: the first prompt, if not the task's own; ``first_answers``: the model's
    answers to it, when they were generated already, e.g. in a batch with other tasks)."""
    if samples < 1 or max_repairs < 0:
        raise ValueError(f"samples must be >= 1 and max_repairs >= 0, got {samples} and {max_repairs}")
    start = time.monotonic()
    result = GenerationResult(task.name, lang, backend.name, backend.model)
    conversation = conversation or task_prompt(task, lang)
    answers = first_answers
    if answers is None:
        answers = backend.generate(conversation, n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed,
                                   stop=stop)
    share = max((a.seconds for a in answers), default=0.0) / max(len(answers), 1)  # the model's time per answer
    with tempfile.TemporaryDirectory(prefix="mpiforge-gen-") as tmp:
        for sample, answer in enumerate(answers):
            messages, text, spent = conversation, answer.text, share
            for round_ in range(max_repairs + 1):
                attempt, report = _attempt(task, lang, text, sample, round_, Path(tmp), ranks, inputs, seed, limits)
                attempt.truncated = answer.truncated
                attempt.seconds += spent
                result.attempts.append(attempt)
                if progress:
                    progress(f"sample {sample + 1}, round {round_}: {attempt.verdict}")
                log.info("%s sample %d round %d: %s %s", task.name, sample, round_, attempt.verdict, attempt.detail)
                if attempt.verdict == Verdict.PASS.value or round_ == max_repairs:
                    break
                messages = _repair_messages(task, lang, messages, attempt, report, text)
                tick = time.monotonic()
                answer = backend.generate(messages, n=1, temperature=temperature, max_tokens=max_tokens,
                                          seed=seed + 1000 * (round_ + 1) + sample, stop=stop)[0]
                text, spent = answer.text, time.monotonic() - tick
            if stop_at_pass and result.passed:
                break
    result.seconds = time.monotonic() - start
    return result


def _attempt(task: Task, lang: str, text: str, sample: int, round_: int, workdir: Path, ranks: Sequence[int],
             inputs: int, seed: int, limits: Limits) -> tuple[Attempt, VerifyReport | None]:
    """Extract, check and verify one answer (the Tester's report when it got that far)."""
    code = extract_code(text, lang)
    if code is None:
        return Attempt(sample, round_, NO_CODE, "the answer holds no program", text), None
    problems = static_problems(code, lang)
    if problems:
        return Attempt(sample, round_, STATIC, "; ".join(problems), code), None
    path = workdir / f"sample{sample}_round{round_}{SUFFIX[lang]}"
    path.write_text(code)
    report = verify(path, task, ranks=ranks, inputs=inputs, seed=seed, limits=limits)
    passed = sum(r.verdict is Verdict.PASS for r in report.per_ranks)
    return Attempt(sample, round_, report.verdict.value, _summary(report), code, passed,
                   seconds=report.seconds), report


def _summary(report: VerifyReport) -> str:
    if report.verdict is Verdict.COMPILE_ERROR:
        lines = report.compile_log.strip().splitlines() or ["compile error"]
        return next((line for line in lines if "error" in line), lines[0])[:200]
    failing = [r for r in report.per_ranks if r.verdict is not Verdict.PASS]
    return "; ".join(f"{r.ranks} ranks: {r.verdict} {r.detail}"[:200] for r in failing[:2])


def _repair_messages(task: Task, lang: str, messages: list[dict], attempt: Attempt, report: VerifyReport | None,
                     text: str) -> list[dict]:
    """The conversation extended by the failed candidate and what went wrong with it."""
    if attempt.verdict == NO_CODE:
        return [*messages, {"role": "assistant", "content": text},
                {"role": "user", "content": "That answer holds no complete program. Answer with the whole "
                                            "program in one fenced code block."}]
    if attempt.verdict == STATIC:
        return repair_prompt(task, lang, messages, attempt.source, problems=attempt.detail.split("; "))
    return repair_prompt(task, lang, messages, attempt.source, report=report)
