"""Tasks described in words: the drafted serial reference is checked (statically, by its own
runs in the sandbox, and against an independently written serial C program) before it judges
any candidate; then `mpiforge gen "..."` generates and verifies against it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scripted_model import Scripted, fenced

from mpiforge.codegen import drafted_task
from mpiforge.codegen.contract import input_text, read_fields
from mpiforge.codegen.drafted_task import (
    ReferenceDraftError,
    draft_task,
    reference_problems,
)
from mpiforge.codegen.sandbox import Limits
from mpiforge.codegen.tasks import find_task
from mpiforge.codegen.tester import generate_cases

SUM_SQUARES = "the sum of the squares of an array of doubles"
REFERENCE = '''import numpy as np

INPUT = "n, then x[0..n-1]"
OUTPUT = "one number: the sum of the squares of x"
SIZES = [1, 6, 41]


def generate(rng, size):
    return [size, rng.standard_normal(size)]


def reference(fields):
    n, x = fields
    return np.array([np.sum(np.asarray(x) ** 2)])
'''
SERIAL = r'''#include <stdio.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "r");
    double n, v, s = 0;
    if (fscanf(f, "%lf", &n) != 1) return 1;
    for (long i = 0; i < (long)n; i++) { if (fscanf(f, "%lf", &v) != 1) return 1; s += POWER; }
    fclose(f);
    FILE *o = fopen(argv[2], "w");
    fprintf(o, "%.17g\n", s);
    fclose(o);
    return 0;
}
'''
MPI_SUM_SQUARES = r'''#include "mpf_io.h"
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long count = 0;
    double *in = rank == 0 ? mpf_read(argv[1], &count) : NULL;
    int n = rank == 0 ? (int)in[0] : 0;
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    double *x = malloc((n + 1) * sizeof *x);
    if (rank == 0) for (int i = 0; i < n; i++) x[i] = in[1 + i];
    MPI_Bcast(x, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double mine = 0, total = 0;
    for (int i = rank; i < n; i += size) mine += x[i] * x[i];
    MPI_Reduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) mpf_write(argv[2], &total, 1);
    MPI_Finalize();
    return 0;
}
'''


def serial(power: str = "v * v") -> str:
    return fenced(SERIAL.replace("POWER", power))


def reference(body: str) -> str:
    """The reference module answering ``body`` instead of the sum of squares."""
    return fenced(REFERENCE.replace("np.sum(np.asarray(x) ** 2)", body), "python")


def test_input_text_and_read_fields_round_trip() -> None:
    fields = [3, 2.5, np.array([[1, -2], [3, 4]]), np.array([0.1, 1e300, -7.0]), np.array([])]
    text = input_text(fields)
    back = read_fields(text)
    assert input_text(back) == text
    assert back[0].dtype == np.int64 and back[3].dtype == np.float64 and back[3][0] == 0.1 and back[4].size == 0


def test_reference_problems_are_found_without_running_anything() -> None:
    assert reference_problems(REFERENCE) == []
    assert reference_problems("def generate(:") == ["it does not parse: invalid syntax (line 1)"]
    missing = reference_problems("import numpy as np\ndef generate(rng, size):\n    return [size]\n")
    assert missing == ["it does not define INPUT", "it does not define OUTPUT", "it does not define reference"]
    hostile = reference_problems(REFERENCE + "import os\nfrom subprocess import run\nopen('/etc/passwd')\n")
    assert any("imports os" in p for p in hostile) and any("imports subprocess" in p for p in hostile)
    assert any("calls open()" in p for p in hostile)


def test_a_draft_confirmed_by_a_serial_program_becomes_the_task(tmp_path) -> None:
    backend = Scripted([fenced(REFERENCE, "python"), serial()])
    drafted = draft_task(SUM_SQUARES, backend, tmp_path / "work", samples=1)
    assert drafted.draft.ok and drafted.draft.confirmed_by == "serial C program 1"
    task = drafted.task
    assert task.input == "n, then x[0..n-1]" and task.sizes == [1, 6, 41] and drafted.draft.cases == 9
    cases, dropped = generate_cases(task, 4, seed=5)
    assert dropped == 0 and [c.size for c in cases] == [41, 6, 1, 41]
    for case in cases:  # the bank's answers are the reference's, for the inputs the Tester writes
        assert np.isclose(case.expected[0], float(np.sum(case.fields[1] ** 2)), rtol=1e-12)
    assert "serial reference" in backend.prompts[0][1]["content"] and SUM_SQUARES in backend.prompts[0][1]["content"]
    assert task.input in backend.prompts[1][1]["content"]  # the serial program follows the draft's layout

    drafted.save(tmp_path / "saved")
    again = find_task(tmp_path / "saved")  # a reviewed task directory: `mpiforge gen DIR`
    assert again.description == SUM_SQUARES and again.sizes == [1, 6, 41] and again.rtol == 1e-9
    fields = [5, np.arange(5.0)]
    assert again.reference(fields)[0] == 30.0


def test_a_draft_the_serial_program_contradicts_is_rejected(tmp_path) -> None:
    # the reference sums, both serial programs sum squares: nobody can tell which is right, so no reference
    backend = Scripted([reference("np.sum(x)"), serial(), serial()])
    with pytest.raises(ReferenceDraftError) as err:
        draft_task(SUM_SQUARES, backend, tmp_path, samples=1)
    assert "no independently written serial program agreed" in str(err.value)
    assert "values differ" in str(err.value) and "stronger model" in str(err.value)


def test_drafts_that_are_nondeterministic_constant_or_broken_are_rejected(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(drafted_task, "RUNNER_LIMITS", Limits(wall_seconds=4, cpu_seconds=30))  # the wall clock ends it
    drafts = [
        reference("np.sum(x) + np.random.rand()"),  # ignores the seed
        reference("0.0"),  # the same answer whatever the input
        reference("x[size]"),  # NameError on every input
        reference("[v for v in iter(int, 1)]"),  # never returns: killed by the sandbox
        "I cannot help with that.",
    ]
    with pytest.raises(ReferenceDraftError) as err:
        draft_task(SUM_SQUARES, Scripted(drafts), tmp_path, samples=len(drafts))
    problems = [" ".join(d.problems) for d in err.value.drafts]
    assert "two different answers for the same input" in problems[0]
    assert "the same answer for every input" in problems[1]
    assert "failed on every generated input" in problems[2] and "NameError" in problems[2]
    assert "killed" in problems[3]
    assert "no Python module" in problems[4]


def test_a_spoilt_runner_report_is_a_problem_not_a_crash(tmp_path) -> None:
    bank = tmp_path / "bank"
    bank.mkdir()
    assert drafted_task._read_report(bank) is None  # none at all
    (bank / "report.json").write_text("[1, 2")
    assert drafted_task._read_report(bank) is None
    case = {"size": 3, "copy": 0, "ok": True, "error": "", "nondeterministic": False}
    (bank / "report.json").write_text(json.dumps({"input": "n", "output": "s", "sizes": [3], "cases": [case]}))
    assert drafted_task._read_report(bank) is None  # a good case without its files
    (bank / "case-3-0.in").write_text("3\n")
    (bank / "case-3-0.out").write_text("1\n")
    assert drafted_task._read_report(bank)["sizes"] == [3]


def test_a_rejected_draft_is_repaired_from_its_problems(tmp_path) -> None:
    no_layout = fenced(REFERENCE.replace('INPUT = "n, then x[0..n-1]"\n', ""), "python")
    backend = Scripted([no_layout, fenced(REFERENCE, "python"), serial()])
    drafted = draft_task(SUM_SQUARES, backend, tmp_path, samples=1, repairs=1)
    assert drafted.draft.ok and drafted.task.input == "n, then x[0..n-1]"
    assert "it does not define INPUT" in backend.prompts[1][-1]["content"]  # the repair names the problem
    with pytest.raises(ReferenceDraftError, match="does not define INPUT"):
        draft_task(SUM_SQUARES, Scripted([no_layout]), tmp_path / "again", samples=1, repairs=0)


def test_failing_inputs_are_dropped_from_the_bank(tmp_path) -> None:
    picky = reference("np.sum(np.asarray(x) ** 2) if n > 1 else x[5]")  # fails at size 1
    drafted = draft_task(SUM_SQUARES, Scripted([picky, serial()]), tmp_path, samples=1)
    assert drafted.task.sizes == [6, 41] and drafted.draft.cases == 6


def _gen(tmp_path, answers: list[str], *args: str):
    from click.testing import CliRunner

    from mpiforge.cli import main

    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    return CliRunner().invoke(main, ["gen", SUM_SQUARES, "--backend", "replay", "--backend-option", f"path={path}",
                                     "--backend-option", "cycle=0", "--reference-samples", "1", "--ranks", "1,3",
                                     "--inputs", "2", "--timeout", "8", "--max-repairs", "0", *args])


def test_gen_command_drafts_checks_and_uses_a_reference(tmp_path) -> None:
    out, saved = tmp_path / "sumsq.c", tmp_path / "sumsq"
    result = _gen(tmp_path, [fenced(REFERENCE, "python"), serial(), fenced(MPI_SUM_SQUARES)],
                  "-o", str(out), "--save-task", str(saved))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "(9 test inputs), confirmed by serial C program 1" in said and "passed" in said
    assert out.read_text() == MPI_SUM_SQUARES and (saved / "reference.py").read_text() == REFERENCE

    wrong = _gen(tmp_path, [reference("np.sum(x)"), serial()], "--save-task", str(tmp_path / "draft"))
    said = " ".join(wrong.output.split())
    assert wrong.exit_code == 1 and "no independently written serial program agreed" in said
    assert "fix reference.py" in said and (tmp_path / "draft" / "task.toml").exists()
