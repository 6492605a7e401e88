"""`mpiforge verify` end to end: the oracle passes; wrong, deadlocking, non-compiling and
crashing programs get their verdicts; the tasks' oracles pass at 1 and 3 ranks."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from mpiforge.cli import main
from mpiforge.codegen.tasks import get_task, load_tasks
from mpiforge.codegen.tester import verify

pytestmark = pytest.mark.mpi

HEAD = """#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
"""
TAIL = """    MPI_Finalize();
    return 0;
}
"""
# every rank reads the whole input; each sums its stride of it
READ_ALL = """    FILE *f = fopen(argv[1], "r");
    int n; fscanf(f, "%d", &n);
    double *x = malloc((n + 1) * sizeof *x), local = 0, total = 0;
    for (int i = 0; i < n; i++) fscanf(f, "%lf", &x[i]);
    fclose(f);
    for (int i = rank; i < n; i += size) local += x[i];
"""
WRITE_TOTAL = """    if (rank == 0) { FILE *o = fopen(argv[2], "w"); fprintf(o, "%.17g\\n", total); fclose(o); }
"""
PROGRAMS = {
    "correct": READ_ALL + "    MPI_Reduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);\n" + WRITE_TOTAL,
    # forgets the other ranks' partial sums: right on one rank only
    "wrong": READ_ALL + "    total = local;\n" + WRITE_TOTAL,
    # every rank receives before anyone sends
    "deadlock": READ_ALL + """    double in;
    MPI_Recv(&in, 1, MPI_DOUBLE, (rank + 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Send(&local, 1, MPI_DOUBLE, (rank + size - 1) % size, 0, MPI_COMM_WORLD);
""" + WRITE_TOTAL,
    "crash": READ_ALL + "    if (rank == size - 1) raise(SIGSEGV);\n"
             "    MPI_Reduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);\n" + WRITE_TOTAL,
    "greedy": "    size_t big = (size_t)64 << 30;\n    char *p = malloc(big);\n"
              "    if (!p) { fprintf(stderr, \"Cannot allocate memory\\n\"); MPI_Abort(MPI_COMM_WORLD, 12); }\n"
              "    for (size_t i = 0; i < big; i += 4096) p[i] = 1;\n",
}


def _program(tmp_path, kind: str):
    path = tmp_path / f"{kind}.c"
    path.write_text(HEAD + PROGRAMS[kind] + TAIL)
    return path


def _verify(args: list[str], tmp_path) -> tuple[int, str, dict]:
    out = tmp_path / "result.json"
    res = CliRunner().invoke(main, ["verify", *args, "--json", str(out)])
    return res.exit_code, res.output, json.loads(out.read_text()) if out.exists() else {}


def test_oracle_passes(tmp_path):
    code, output, result = _verify([str(get_task("array_sum").oracle), "--task", "array_sum", "--ranks", "1,3",
                                    "--inputs", "2"], tmp_path)
    assert code == 0, output
    assert "pass" in output
    assert result["verdict"] == "pass"
    assert [r["ranks"] for r in result["per_ranks"]] == [1, 3]


def test_wrong_program_gets_wrong_answer(tmp_path):
    code, output, result = _verify([str(_program(tmp_path, "wrong")), "--task", "array_sum", "--ranks", "1,2",
                                    "--inputs", "1"], tmp_path)
    assert code == 1
    verdicts = {r["ranks"]: r["verdict"] for r in result["per_ranks"]}
    assert verdicts == {1: "pass", 2: "wrong_answer"}, output


def test_correct_program_of_our_own_passes(tmp_path):
    code, output, _ = _verify([str(_program(tmp_path, "correct")), "--task", "array_sum", "--ranks", "2",
                               "--inputs", "1"], tmp_path)
    assert code == 0, output


def test_deadlock_is_a_timeout_within_the_limit(tmp_path):
    start = time.monotonic()
    code, output, result = _verify([str(_program(tmp_path, "deadlock")), "--task", "array_sum", "--ranks", "2",
                                    "--inputs", "1", "--timeout", "4"], tmp_path)
    assert time.monotonic() - start < 30
    assert code == 1
    assert result["verdict"] == "timeout", output
    assert "deadlock" in result["per_ranks"][0]["cases"][0]["detail"]


def test_compile_error(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared_variable; }\n")
    code, output, result = _verify([str(bad), "--task", "array_sum"], tmp_path)
    assert code == 1
    assert result["verdict"] == "compile_error"
    assert "undeclared_variable" in result["compile_log"]
    assert result["per_ranks"] == []


def test_crash(tmp_path):
    code, output, result = _verify([str(_program(tmp_path, "crash")), "--task", "array_sum", "--ranks", "2",
                                    "--inputs", "1"], tmp_path)
    assert code == 1
    assert result["verdict"] == "crash", output


def test_memory_hog_is_stopped(tmp_path):
    code, output, result = _verify([str(_program(tmp_path, "greedy")), "--task", "array_sum", "--ranks", "1",
                                    "--inputs", "1"], tmp_path)
    assert code == 1
    assert result["verdict"] == "crash", output
    assert "memory" in result["per_ranks"][0]["cases"][0]["detail"].lower()


def test_mpi4py_oracle_passes():
    task = get_task("array_sum")
    python_oracle = next(p for p in task.oracles if p.suffix == ".py")
    report = verify(python_oracle, task, ranks=(1, 2), inputs=1)
    assert report.passed, report.to_dict()


@pytest.mark.parametrize("name", ["prefix_sum", "game_of_life", "spmv_csr", "bfs_levels", "circular_convolution"])
def test_oracles_pass_at_1_and_3_ranks(name):
    task = get_task(name)
    report = verify(task.oracle, task, ranks=(1, 3), inputs=1)
    assert report.passed, report.to_dict()


def test_list_and_errors(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(main, ["verify", "--list"])
    assert listed.exit_code == 0
    assert "array_sum" in listed.output and "game_of_life" in listed.output
    unknown = runner.invoke(main, ["verify", str(get_task("sort").oracle), "--task", "no_such_task"])
    assert unknown.exit_code != 0 and "unknown task 'no_such_task'" in unknown.output
    missing = runner.invoke(main, ["verify", str(tmp_path / "absent.c"), "--task", "sort"])
    assert missing.exit_code != 0 and "no such file" in missing.output
    no_task = runner.invoke(main, ["verify", str(get_task("sort").oracle)])
    assert no_task.exit_code != 0 and "--task" in no_task.output
    assert len(load_tasks()) >= 30
