"""Mutation scoring checks every oracle file of a task (C/C++ and mpi4py); the suite's mpi4py oracles pass."""
from __future__ import annotations

import shutil

import pytest

from mpiforge.codegen import mutation
from mpiforge.codegen.mutation import MutantOutcome, TaskScore, score_task, summarize
from mpiforge.codegen.results import Verdict
from mpiforge.codegen.tasks import find_task, get_task, load_tasks
from mpiforge.codegen.tester import verify

# rank 0 writes 0 whatever the input: a wrong answer on every generated test
WRONG_PY = """from mpi4py import MPI
import sys
if MPI.COMM_WORLD.Get_rank() == 0:
    open(sys.argv[2], "w").write("0\\n")
"""
PYTHON_ORACLES = [(t.name, p) for t in load_tasks().values() for p in t.oracles if p.suffix == ".py"]


def mpi_job(test):
    """Mark a test that launches mpiexec jobs (with a time limit)."""
    return pytest.mark.mpi(pytest.mark.timeout(180)(test))


def _array_sum_with(tmp_path, python_oracle: str):
    """A task of one's own: array_sum's files, with ``python_oracle`` as its second oracle."""
    source, directory = get_task("array_sum").directory, tmp_path / "my_sum"
    directory.mkdir()
    for name in ("task.toml", "reference.py", "oracle.c"):
        shutil.copy(source / name, directory / name)
    (directory / "oracle.py").write_text(python_oracle)
    return find_task(directory)


@mpi_job
def test_failing_second_oracle_fails_the_task(tmp_path, monkeypatch):
    task = _array_sum_with(tmp_path, WRONG_PY)
    assert [p.name for p in task.oracles] == ["oracle.c", "oracle.py"]
    mutated = []
    monkeypatch.setattr(mutation, "mutate", lambda source: mutated.append(source) or [])
    score = score_task(task, ranks=(2,), oracle_inputs=1)
    assert score.oracles == {"oracle.c": Verdict.PASS, "oracle.py": Verdict.WRONG_ANSWER}
    assert score.oracle is Verdict.WRONG_ANSWER
    assert score.oracle_detail.startswith("oracle.py: wrong_answer"), score.oracle_detail
    assert mutated == [task.oracle.read_text()]  # mutants come from the C oracle only
    summary = summarize([score])
    assert summary["oracles"] == {"total": 2, "passed": 1, "failed": ["my_sum/oracle.py"]}
    assert summary["tasks"]["my_sum"]["oracle"] == "wrong_answer"


@mpi_job
def test_every_oracle_of_a_suite_task_passes():
    task = get_task("array_sum")
    score = score_task(task, ranks=(1, 3), oracle_inputs=1, with_mutants=False)
    assert score.oracles == {"oracle.c": Verdict.PASS, "oracle.py": Verdict.PASS}, score.oracle_detail
    assert score.oracle is Verdict.PASS and score.oracle_detail == ""


def test_summarize_counts_oracle_files():
    scores = [TaskScore("a", "x", Verdict.PASS, oracles={"oracle.c": Verdict.PASS, "oracle.py": Verdict.PASS},
                        mutants=[MutantOutcome("drop@1", "d", Verdict.TIMEOUT)]),
              TaskScore("b", "x", Verdict.CRASH, oracles={"oracle.cpp": Verdict.CRASH})]
    summary = summarize(scores)
    assert summary["oracles"] == {"total": 3, "passed": 2, "failed": ["b/oracle.cpp"]}
    assert summary["tasks"]["a"]["oracles"] == {"oracle.c": "pass", "oracle.py": "pass"}
    assert summary["mutation_score"] == 1.0


def test_the_suite_has_python_oracles():
    assert len(PYTHON_ORACLES) >= 9
    assert all(t.oracle.suffix in (".c", ".cpp") for t in load_tasks().values())  # the main oracle stays C/C++


@mpi_job
@pytest.mark.parametrize("name, path", PYTHON_ORACLES, ids=[n for n, _ in PYTHON_ORACLES])
def test_python_oracle_passes_at_1_and_3_ranks(name, path):
    report = verify(path, get_task(name), ranks=(1, 3), inputs=2)
    assert report.passed, report.to_dict()
