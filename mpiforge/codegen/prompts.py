"""The prompts of the code generator: write a program for a task, and repair one from its diagnostics.

    messages = task_prompt(task, "c")
    messages = repair_prompt(task, "c", messages, source, report)   # the conversation so far, then the failure

Every prompt states the task contract (:mod:`mpiforge.codegen.contract`): the input file is
argv[1], rank 0 writes the output file argv[2], any rank count must work. Answers are asked for
as one complete program in one fenced code block, which :mod:`.extract` then takes out.
"""
from __future__ import annotations

from .results import Verdict, VerifyReport
from .tasks import Task

__all__ = ["FENCE", "LANGUAGES", "SUFFIX", "complete_prompt", "diagnostics", "parallelize_prompt", "reference_prompt",
           "repair_prompt", "serial_prompt", "task_prompt"]

LANGUAGES = {"c": "C", "cpp": "C++", "python": "Python with mpi4py"}
FENCE = {"c": "c", "cpp": "cpp", "python": "python"}
SUFFIX = {"c": ".c", "cpp": ".cpp", "python": ".py"}

SYSTEM = ("You are an expert in MPI parallel programming. You write complete, correct, portable MPI "
          "programs that give exactly the serial answer for every number of ranks. You answer with "
          "one complete program in one fenced code block and nothing else.")

_IO = {
    "c": ('You may `#include "mpf_io.h"`: `double *mpf_read(const char *path, long *count)` returns every '
          "number of a file as doubles (call it on rank 0 only), `void mpf_write(const char *path, const double "
          "*v, long n)` writes n doubles, one per line (rank 0 only)."),
    "python": ("On rank 0, read every number with `open(sys.argv[1]).read().split()`; write the output "
               "one number per line (floats with '%.17g'), from rank 0 only."),
}
_IO["cpp"] = _IO["c"]

_RULES = """Rules:
- The program is run as `mpiexec -n P ./program INPUT OUTPUT` for P = 1, 2, 3, 4 and more.
- Rank 0 reads INPUT (argv[1]), distributes the work with MPI, and only rank 0 writes OUTPUT (argv[2]).
- It must give the serial answer for every P, including P that does not divide the problem size and P larger than it.
- Every rank must take part in every collective call; never let ranks wait for each other in a cycle.
- Use only MPI and the standard library{numpy}. Exit with code 0."""


def _asking(lang: str, body: str) -> list[dict[str, str]]:
    """The system message and ``body`` followed by the contract's rules and the answer format."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: use one of {', '.join(LANGUAGES)}")
    rules = _RULES.format(numpy=" (and numpy)" if lang == "python" else "")
    user = f"{body}\n\n{rules}\n{_IO[lang]}\n\nAnswer with the whole program in one ```{FENCE[lang]} block."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def task_prompt(task: Task, lang: str) -> list[dict[str, str]]:
    """Chat messages asking for an MPI program in ``lang`` (c, cpp, python) that solves ``task``."""
    compared = (f"Floating-point results are compared with rtol={task.rtol:g}, atol={task.atol:g}."
                if not task.exact else "Results are compared exactly.")
    function = f"Function it implements: {task.signature}\n" if task.signature else ""
    return _asking(lang, f"Write an MPI program in {LANGUAGES.get(lang, lang)}.\n\nTask: {task.description}\n"
                         f"{function}Input file (argv[1]): {task.input}\n"
                         f"Output file (argv[2]): {task.output}\n{compared}")


def parallelize_prompt(serial: str, serial_lang: str, lang: str) -> list[dict[str, str]]:
    """Chat messages asking for an MPI version in ``lang`` of the ``serial`` program."""
    return _asking(lang, f"Parallelize this serial {LANGUAGES.get(serial_lang, serial_lang)} program with MPI, in "
                         f"{LANGUAGES.get(lang, lang)}. It reads its input from the file argv[1] and writes its "
                         f"result to the file argv[2]; the MPI program must read the same input and write the same "
                         f"output (same numbers, same order), from rank 0.\n\n"
                         f"```{FENCE.get(serial_lang, '')}\n{serial.rstrip()}\n```")


def complete_prompt(blanked: str, lang: str, description: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking to put back the MPI calls taken out of ``blanked`` (MPIrigen's task)."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: use one of {', '.join(LANGUAGES)}")
    user = ("The MPI communication calls of this program were removed; the lines where they stood are "
            "empty. Put the missing MPI calls back (function and arguments) and change nothing else."
            + (f"\nWhat the program does: {description}" if description else "")
            + f"\n\n```{FENCE[lang]}\n{blanked.rstrip()}\n```\n\n"
            f"Answer with the whole completed program in one ```{FENCE[lang]} block.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_REFERENCE_EXAMPLE = '''```python
import numpy as np

INPUT = "n, then x[0..n-1]"
OUTPUT = "one number: the largest x[i]"
SIZES = [1, 7, 50, 200]


def generate(rng, size):
    return [size, rng.uniform(-100, 100, size)]


def reference(fields):
    n, x = fields
    return np.array([x.max()])
```'''


def reference_prompt(description: str, signature: str = "") -> list[dict[str, str]]:
    """Chat messages asking for a serial reference of a task described in words: a Python module
    with INPUT, OUTPUT, SIZES, ``generate(rng, size)`` and ``reference(fields)``."""
    user = (f"Task: {description}\n" + (f"Function the MPI program will implement: {signature}\n" if signature else "")
            + "\nWrite the serial reference for this task as a Python module that uses only numpy and the standard "
            "library. It defines:\n"
            "- INPUT: the numbers of a test's input file, in order (sizes first, then the data, row by row);\n"
            "- OUTPUT: the numbers of the answer, in order;\n"
            "- SIZES: four problem sizes to test, one of them 1;\n"
            "- generate(rng, size): a random input of that size from the numpy Generator rng, as a list of fields "
            "(ints, floats or numpy arrays) in the order of INPUT;\n"
            "- reference(fields): the correct answer for those fields as a numpy array, computed the simplest "
            "serial way.\n"
            "No file access, no printing. For example, for \"the largest element of an array\":\n\n"
            f"{_REFERENCE_EXAMPLE}\n\nAnswer with the whole module in one ```python block.")
    return [{"role": "system", "content": "You write small, obviously correct serial reference code and "
                                          "test-input generators."}, {"role": "user", "content": user}]


def serial_prompt(description: str, input_layout: str, output_layout: str) -> list[dict[str, str]]:
    """Chat messages asking for a plain serial C program for a task, written against the file
    layouts of a drafted reference: the independent implementation that reference is checked by."""
    user = (f"Write a serial C program (no MPI) for this task.\n\nTask: {description}\n"
            f"Input file (argv[1]): whitespace-separated numbers: {input_layout}\n"
            f"Output file (argv[2]): {output_layout}, one number per line, doubles printed with %.17g.\n\n"
            "Read every number of argv[1] as a double, compute the answer, write it to argv[2], exit with code 0. "
            "Use only the C standard library.\n\nAnswer with the whole program in one ```c block.")
    return [{"role": "system", "content": "You write small, obviously correct C programs."},
            {"role": "user", "content": user}]


def diagnostics(report: VerifyReport, limit: int = 2500) -> str:
    """What went wrong, as a model can act on it: the compiler's log or the failing runs."""
    if report.verdict is Verdict.COMPILE_ERROR:
        return "It does not compile:\n" + report.compile_log[-limit:]
    lines = []
    for result in report.per_ranks:
        if result.verdict is Verdict.PASS:
            lines.append(f"- {result.ranks} ranks: pass")
            continue
        hint = {Verdict.TIMEOUT: " (a deadlock or an endless loop: killed after the time limit)",
                Verdict.CRASH: " (it crashed or exited with an error)"}.get(result.verdict, "")
        lines.append(f"- {result.ranks} ranks: {result.verdict}{hint}: {result.detail}")
    return "It was run on generated inputs and compared with the serial answer:\n" + "\n".join(lines)[-limit:]


def repair_prompt(task: Task, lang: str, conversation: list[dict[str, str]], source: str,
                  report: VerifyReport | None = None, problems: list[str] | None = None) -> list[dict[str, str]]:
    """``conversation`` followed by the program it produced and what is wrong with it (a verify
    ``report``, or static ``problems`` found before running it), asking for a corrected program."""
    found = diagnostics(report) if report is not None else "Problems found before running it:\n" + \
        "\n".join(f"- {p}" for p in problems or ())
    user = (f"{found}\n\nFix the program. Keep to the rules above. "
            f"Answer with the whole corrected program in one ```{FENCE[lang]} block.")
    return [*conversation, {"role": "assistant", "content": f"```{FENCE[lang]}\n{source}\n```"},
            {"role": "user", "content": user}]
