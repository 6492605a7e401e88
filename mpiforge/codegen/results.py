"""Verdicts and the structured results of verifying one candidate against one task."""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

__all__ = ["CaseResult", "RankResult", "Verdict", "VerifyReport"]


class Verdict(str, enum.Enum):
    """The outcome of one run, one rank count, or a whole candidate (the worst seen)."""

    PASS = "pass"
    WRONG_ANSWER = "wrong_answer"
    COMPILE_ERROR = "compile_error"
    CRASH = "crash"
    TIMEOUT = "timeout"

    def __str__(self) -> str:
        return self.value


# how bad a verdict is when several runs of a rank count disagree
_SEVERITY = {Verdict.PASS: 0, Verdict.WRONG_ANSWER: 1, Verdict.CRASH: 2, Verdict.TIMEOUT: 3, Verdict.COMPILE_ERROR: 4}


def worst(verdicts: list[Verdict]) -> Verdict:
    """The most severe of ``verdicts`` (PASS for none)."""
    return max(verdicts, key=_SEVERITY.__getitem__, default=Verdict.PASS)


@dataclass
class CaseResult:
    """One run: a generated input on a rank count."""

    ranks: int
    seed: int
    size: int
    verdict: Verdict
    detail: str = ""
    seconds: float = 0.0


@dataclass
class RankResult:
    """Every run at one rank count, and their verdict."""

    ranks: int
    verdict: Verdict
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def detail(self) -> str:
        """Why the first failing run failed ("" when every run passed)."""
        return next((c.detail for c in self.cases if c.verdict is not Verdict.PASS), "")


@dataclass
class VerifyReport:
    """The result of verifying one candidate file against one task."""

    task: str
    source: str
    verdict: Verdict
    compile_log: str = ""
    per_ranks: list[RankResult] = field(default_factory=list)
    discarded_tests: int = 0  # generated tests the serial reference itself failed
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def to_dict(self) -> dict:
        """Plain data for JSON (verdicts as their string values)."""
        return asdict(self, dict_factory=lambda items: {k: (v.value if isinstance(v, Verdict) else v)
                                                        for k, v in items})
