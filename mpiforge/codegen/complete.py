"""MPIrigen's task: a program with its MPI calls taken out; the model puts them back.

    blanked = blank_mpi_calls(source)          # the program without its communication calls
    score = score_completion(blanked, completed_source)
    score.location, score.function, score.arguments   # shares of the removed calls got right

A removed call leaves its line empty, so the program keeps its shape. The model answers with the
whole program; the calls it inserted are matched to the removed ones by where they sit among the
lines that were kept (a diff), then compared by function name and by arguments (whitespace
ignored), as MPIrigen scores location, function and argument accuracy.
"""
from __future__ import annotations

import bisect
import difflib
import itertools
import re
from dataclasses import dataclass, field

from .mutants import find_calls

__all__ = ["Blanked", "CompletionScore", "blank_mpi_calls", "score_completion"]

# calls that set up the program rather than communicate: they stay
KEPT = ("Init", "Init_thread", "Finalize", "Comm_rank", "Comm_size", "Abort", "Wtime")


@dataclass(frozen=True)
class RemovedCall:
    """One call taken out: after how many kept lines it stood, its name and its arguments."""

    slot: int  # the number of kept lines before it
    name: str
    args: tuple[str, ...]


@dataclass
class Blanked:
    source: str  # the program with the calls removed
    removed: list[RemovedCall] = field(default_factory=list)


def blank_mpi_calls(source: str) -> Blanked:
    """``source`` with every communication call statement (``MPI_X(...);``) removed."""
    calls = [c for c in find_calls(source) if c.name not in KEPT and c.stmt_end > 0]
    out, removed, pos, kept_lines = [], [], 0, 0
    for c in calls:
        before = source[pos:c.start]
        out.append(before)
        kept_lines += before.count("\n")
        removed.append(RemovedCall(kept_lines, c.name, tuple(_norm(a) for a in c.args)))
        pos = c.stmt_end
    out.append(source[pos:])
    return Blanked(re.sub(r"[ \t]+\n", "\n", "".join(out)), removed)  # a call's line stays, empty


def _norm(arg: str) -> str:
    return re.sub(r"\s+", "", arg)


@dataclass
class CompletionScore:
    """How many of the removed calls came back at the right place, as the right function, with the
    right arguments (each share of the removed calls; 1.0 when nothing was removed)."""

    removed: int
    located: int
    functions: int
    arguments: int
    inserted: int  # calls the model added in all (extra ones lower nothing but show here)

    @property
    def location(self) -> float:
        return self.located / self.removed if self.removed else 1.0

    @property
    def function(self) -> float:
        return self.functions / self.removed if self.removed else 1.0

    @property
    def arguments_share(self) -> float:
        return self.arguments / self.removed if self.removed else 1.0


def _inserted_calls(blanked: str, completed: str) -> list[RemovedCall]:
    """The MPI calls of ``completed`` that are not on a kept line, with the slot they sit in."""
    done = completed.splitlines()
    ops = difflib.SequenceMatcher(a=[line.strip() for line in blanked.splitlines()],
                                  b=[line.strip() for line in done], autojunk=False).get_opcodes()
    slot_of, unchanged = {}, set()
    for tag, a0, _a1, b0, b1 in ops:
        for j in range(b0, b1):
            slot_of[j] = a0 + (j - b0 if tag == "equal" else 0)
            if tag == "equal":
                unchanged.add(j)
    starts = list(itertools.accumulate((len(line) + 1 for line in done), initial=0))
    inserted = []
    for c in find_calls(completed):
        j = bisect.bisect_right(starts, c.start) - 1
        if c.name not in KEPT and j not in unchanged:
            inserted.append(RemovedCall(slot_of.get(j, len(starts)), c.name, tuple(_norm(a) for a in c.args)))
    return inserted


def score_completion(blanked: Blanked, completed: str) -> CompletionScore:
    """Match the calls the model inserted to the removed ones (the same place, give or take the
    emptied line), preferring one of the same function."""
    inserted = _inserted_calls(blanked.source, completed)
    free = list(inserted)
    located = functions = arguments = 0
    for want in blanked.removed:
        near = [c for c in free if abs(c.slot - want.slot) <= 1]  # on the emptied line, or just beside it
        if not near:
            continue
        got = min(near, key=lambda c: (c.name != want.name, abs(c.slot - want.slot)))
        free.remove(got)
        located += 1
        if got.name == want.name:
            functions += 1
            arguments += got.args == want.args
    return CompletionScore(len(blanked.removed), located, functions, arguments, len(inserted))
