"""A task described in words: the model drafts its serial reference, which is checked before it judges anything.

    drafted = draft_task("Sum of the squares of an array of doubles", backend, workdir)
    drafted.task                      # a Task: generated tests and their answers from the checked reference
    drafted.save(Path("sumsq"))       # task.toml + reference.py: `mpiforge gen sumsq/` reuses it

The model writes ``samples`` reference modules (:func:`.prompts.reference_prompt`). One becomes
the task's reference only once it has passed, in order:

1. static checks: it parses, defines INPUT, OUTPUT, generate and reference, imports only numpy
   and pure standard-library modules, and opens no files and runs no code of its own making;
2. its own runs (:mod:`.reference_runner`, in the sandbox): on a bank of inputs per size it
   answers with finite numbers, gives the same input and answer for the same seed twice, and
   neither its inputs nor its answers are all alike;
3. an independent implementation: the model writes serial C programs for the same file layouts
   (:func:`.prompts.serial_prompt`), and one of them gives the reference's answer on every case.

Cases the reference failed on are dropped from the bank, as the Tester drops a generated test
that the reference fails.
"""
from __future__ import annotations

import ast
import json
import logging
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends.base import Backend
from .build import build
from .contract import input_text, read_fields, read_output
from .extract import extract_code
from .generate import STOP
from .prompts import reference_prompt, serial_prompt
from .reference_runner import DEFAULT_SIZES
from .sandbox import Limits, run_sandboxed
from .tasks import Task
from .tester import compare

__all__ = ["Draft", "DraftedTask", "ReferenceDraftError", "draft_task", "reference_problems", "save_draft", "save_task"]

log = logging.getLogger(__name__)

ALLOWED_IMPORTS = frozenset({"numpy", "math", "cmath", "itertools", "functools", "collections", "heapq", "bisect",
                             "fractions", "statistics", "operator", "typing", "__future__"})
FORBIDDEN_CALLS = frozenset({"open", "exec", "eval", "compile", "__import__", "input", "breakpoint", "globals"})
REQUIRED = ("INPUT", "OUTPUT", "generate", "reference")
RUNNER_LIMITS = Limits(wall_seconds=60, cpu_seconds=60)
SERIAL_LIMITS = Limits(wall_seconds=10, cpu_seconds=10)


class ReferenceDraftError(ValueError):
    """No drafted reference passed its checks; ``drafts`` says what each one failed."""

    def __init__(self, message: str, drafts: list[Draft]) -> None:
        super().__init__(message)
        self.drafts = drafts


@dataclass
class Draft:
    """One reference module the model wrote, and what its checks found."""

    index: int
    source: str = ""
    problems: list[str] = field(default_factory=list)
    input: str = ""
    output: str = ""
    sizes: list[int] = field(default_factory=list)
    cases: int = 0  # bank cases it answered
    confirmed_by: str = ""  # which independent serial program agreed with it

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.confirmed_by)


@dataclass
class DraftedTask:
    """The checked reference made into a :class:`Task`, and every draft with its findings."""

    task: Task
    draft: Draft
    drafts: list[Draft]
    serial_source: str

    def save(self, directory: Path) -> None:
        save_task(directory, self.task, self.draft.source)


def reference_problems(code: str) -> list[str]:
    """What keeps ``code`` from being run as a reference module (static, nothing executed)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"it does not parse: {exc.msg} (line {exc.lineno})"]
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    defined |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    problems = [f"it does not define {name}" for name in REQUIRED if name not in defined]
    for node in ast.walk(tree):
        roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        problems += [f"it imports {r}: use numpy and the standard library's math only" for r in roots
                     if r.split(".")[0] not in ALLOWED_IMPORTS]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"it calls {node.func.id}(), which a reference must not do")
    return list(dict.fromkeys(problems))


def _slug(description: str) -> str:
    words = re.findall(r"[a-z0-9]+", description.lower())[:4]
    return "_".join(words) or "described_task"


def _bank_task(name: str, description: str, signature: str, report: dict, bank: Path, rtol: float,
               atol: float) -> tuple[Task, list[str]]:
    """A Task whose tests are the bank's good cases (drawn by the Tester's seed) and whose
    reference looks their answers up; also the cases' input texts."""
    answers: dict[str, np.ndarray] = {}
    by_size: dict[int, list[str]] = {}
    for case in report["cases"]:
        if case["ok"]:
            stem = bank / f"case-{case['size']}-{case['copy']}"
            text = stem.with_suffix(".in").read_text()
            answers[text] = read_output(stem.with_suffix(".out"))
            by_size.setdefault(case["size"], []).append(text)

    def generate(rng: np.random.Generator, size: int) -> list:
        texts = by_size.get(size)
        return read_fields(texts[int(rng.integers(len(texts)))]) if texts else []

    def reference(fields: list) -> np.ndarray:
        key = input_text(fields)
        if key not in answers:
            raise ValueError("the drafted reference failed on this input")
        return answers[key]

    task = Task(name=name, category="custom", description=description, signature=signature,
                input=report["input"], output=report["output"], sizes=sorted(by_size) or list(report["sizes"]),
                rtol=rtol, atol=atol, directory=bank,
                _module=types.SimpleNamespace(generate=generate, reference=reference))
    return task, list(answers)


def _check_answer(draft: Draft, text: str, workdir: Path, copies: int) -> dict | None:
    """Steps 1 and 2 on the module in a model's answer: its report, or None with ``draft.problems``
    saying why not (what an earlier round of this draft found is replaced)."""
    draft.input, draft.output, draft.sizes = "", "", []
    code = extract_code(text, "python")
    if code is None:
        draft.problems = ["the answer holds no Python module"]
        return None
    draft.source = code
    draft.problems = reference_problems(code)
    if draft.problems:
        return None
    workdir.mkdir(parents=True)
    (workdir / "reference.py").write_text(code)
    res = run_sandboxed([sys.executable, "-m", "mpiforge.codegen.reference_runner", "reference.py", "bank",
                         "--copies", str(copies)], workdir, RUNNER_LIMITS)
    if not res.ok:
        tail = res.stderr.strip().splitlines()[-1:] or [res.describe()]
        draft.problems.append(f"running it failed: {res.describe()}: {tail[0][-300:]}")
        return None
    report = _read_report(workdir / "bank")
    if report is None:  # the module's own code runs in that process and may have spoilt it
        draft.problems.append("its runs left no readable report (does it write files?)")
        return None
    draft.input, draft.output, draft.sizes = report["input"], report["output"], report["sizes"]
    good = [c for c in report["cases"] if c["ok"]]
    failed = [c for c in report["cases"] if not c["ok"]]
    if not good:
        draft.problems.append(f"it failed on every generated input, e.g. size {failed[0]['size']}: {failed[0]['error']}")
        return None
    draft.problems += list(dict.fromkeys(c["error"] for c in failed if c["nondeterministic"]))[:1]
    stems = [workdir / "bank" / f"case-{c['size']}-{c['copy']}" for c in good]
    if len(good) > 1 and len({s.with_suffix(".in").read_text() for s in stems}) == 1:
        draft.problems.append("generate() gives the same input for every seed and size")
    elif len(good) > 1 and len({s.with_suffix(".out").read_text() for s in stems}) == 1:
        draft.problems.append("reference() gives the same answer for every input")
    for c in failed:
        log.info("drafted reference %d failed on size %d (test dropped): %s", draft.index, c["size"], c["error"])
    return None if draft.problems else report


def _read_report(bank: Path) -> dict | None:
    """The runner's report with every good case's files present, or None if it is not that."""
    try:
        report = json.loads((bank / "report.json").read_text())
        cases = report["cases"]
        report["input"], report["output"] = str(report["input"]), str(report["output"])
        report["sizes"] = [int(size) for size in report["sizes"]]
        for case in cases:
            case["size"], case["copy"], case["error"] = int(case["size"]), int(case["copy"]), str(case["error"])
            case["ok"], case["nondeterministic"] = bool(case["ok"]), bool(case["nondeterministic"])
            stem = bank / f"case-{case['size']}-{case['copy']}"
            if case["ok"] and not (stem.with_suffix(".in").is_file() and stem.with_suffix(".out").is_file()):
                return None
        return report
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _serial_verdict(code: str | None, task: Task, cases: list[str], workdir: Path) -> str:
    """"" when the serial program gives the reference's answer on every case of the bank, else why not."""
    if code is None:
        return "the answer holds no C program"
    workdir.mkdir(parents=True)
    (workdir / "serial.c").write_text(code)
    built = build(workdir / "serial.c", workdir, strict_send=False)
    if not built.ok:
        return "it does not compile: " + (built.log.strip().splitlines() or ["?"])[0][:200]
    for i, text in enumerate(cases):
        given, answer = workdir / f"{i}.in", workdir / f"{i}.out"
        given.write_text(text)
        res = run_sandboxed([*built.argv, str(given), str(answer)], workdir, SERIAL_LIMITS)
        if not res.ok:
            return f"input {i + 1}: {res.describe()}"
        try:
            differs = compare(task, task.reference(read_fields(text)), read_output(answer))
        except (OSError, ValueError) as exc:
            differs = str(exc)
        if differs:
            return f"input {i + 1} ({text[:40].strip()}...): {differs}"
    return ""


def draft_task(description: str, backend: Backend, workdir: Path, *, signature: str = "", samples: int = 2,
               repairs: int = 0, temperature: float = 0.2, max_tokens: int = 1024, seed: int = 0,
               rtol: float = 1e-9, atol: float = 1e-9, copies: int = 3,
               progress: Callable[[str], None] | None = None) -> DraftedTask:
    """The first of ``samples`` drafted references that passes every check, as a task; raises
    :class:`ReferenceDraftError` when none does. A draft that fails steps 1 or 2 goes back to
    the model with its problems up to ``repairs`` times."""
    if not description.strip():
        raise ValueError("describe the task in words, e.g. \"the sum of the squares of an array of doubles\"")
    prompt = reference_prompt(description, signature)
    answers = backend.generate(prompt, n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed,
                               stop=STOP)
    drafts: list[Draft] = []
    for index, answer in enumerate(answers):
        draft = Draft(index)
        drafts.append(draft)
        messages, text = prompt, answer.text
        for round_ in range(repairs + 1):
            home = workdir / f"draft{index}.{round_}"
            report = _check_answer(draft, text, home, copies)
            if progress:
                progress(f"reference draft {index + 1}, round {round_}: " + ("runs" if report else "rejected"))
            if report is not None or round_ == repairs:
                break
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": "Problems with that module:\n" + "\n".join(
                            f"- {p}" for p in draft.problems) + "\n\nFix them. Answer with the whole module in one "
                            "```python block."}]
            text = backend.generate(messages, n=1, temperature=temperature, max_tokens=max_tokens,
                                    seed=seed + 100 * (round_ + 1) + index, stop=STOP)[0].text
        if report is None:
            continue
        task, cases = _bank_task(_slug(description), description.strip(), signature, report, home / "bank", rtol,
                                 atol)
        draft.cases = len(cases)
        serials = backend.generate(serial_prompt(description, draft.input, draft.output), n=samples,
                                   temperature=temperature, max_tokens=max_tokens, seed=seed + 1 + index, stop=STOP)
        disagreements = []
        for j, serial in enumerate(serials):
            code_c = extract_code(serial.text, "c")
            why = _serial_verdict(code_c, task, cases, home / f"serial{j}")
            if progress:
                progress(f"reference draft {index + 1}, serial check {j + 1}: " + ("agrees" if not why else "differs"))
            if not why:
                draft.confirmed_by = f"serial C program {j + 1}"
                return DraftedTask(task, draft, drafts, code_c)
            disagreements.append(f"serial program {j + 1}: {why}")
        draft.problems.append("no independently written serial program agreed with it (" + "; ".join(disagreements) + ")")
    raise ReferenceDraftError(f"none of the {len(drafts)} drafted serial references passed its checks:\n" + "\n".join(
        f"- draft {d.index + 1}: {'; '.join(d.problems)}" for d in drafts) + "\nWrite the reference yourself "
        "(a directory with task.toml and reference.py, see `mpiforge gen --help`), or try a stronger model.", drafts)


def save_task(directory: Path, task: Task, reference_source: str) -> None:
    """Write ``task`` as a task directory (task.toml + reference.py) that ``mpiforge gen DIR`` reads."""
    _write_task(directory, task.description, task.signature, task.input, task.output, task.sizes, task.rtol, task.atol,
                reference_source)


def save_draft(directory: Path, drafts: list[Draft], description: str, signature: str, rtol: float,
               atol: float) -> bool:
    """Write the draft that got furthest (it ran, on the most inputs) for review; False when no
    draft holds code."""
    best = max((d for d in drafts if d.source), key=lambda d: (bool(d.input), d.cases), default=None)
    if best is None:
        return False
    unknown = "(unknown: the draft never ran)"
    _write_task(directory, description, signature, best.input or unknown, best.output or unknown,
                best.sizes or list(DEFAULT_SIZES), rtol, atol, best.source)
    return True


def _write_task(directory: Path, description: str, signature: str, input_layout: str, output_layout: str,
                sizes: list[int], rtol: float, atol: float, source: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"category": "custom", "description": description, "signature": signature, "input": input_layout,
            "output": output_layout}
    lines = [f"{key} = {json.dumps(value)}" for key, value in meta.items()]  # JSON strings are TOML basic strings
    lines += [f"sizes = {json.dumps(list(sizes))}", f"rtol = {rtol!r}", f"atol = {atol!r}"]
    (directory / "task.toml").write_text("\n".join(lines) + "\n")
    (directory / "reference.py").write_text(source)
