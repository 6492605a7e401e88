"""The verifier's parts without MPI jobs: task suite, I/O contract, sandbox limits, mutation operators."""
from __future__ import annotations

import numpy as np
import pytest

from mpiforge.codegen.contract import read_output, write_input
from mpiforge.codegen.mutants import OPERATORS, find_calls, mutate
from mpiforge.codegen.sandbox import (
    Limits,
    find_compiler,
    network_isolation,
    run_sandboxed,
)
from mpiforge.codegen.tasks import UnknownTaskError, get_task, load_tasks
from mpiforge.codegen.tester import generate_cases

CATEGORIES = {"reduce", "scan", "stencil", "dense_la", "sparse_la", "histogram", "sort", "search", "graph",
              "transform", "geometry", "fft"}


def test_suite_covers_every_category():
    tasks = load_tasks()
    assert len(tasks) >= 30
    assert {t.category for t in tasks.values()} == CATEGORIES
    for t in tasks.values():
        assert t.description and t.signature and t.input and t.output
        assert t.oracle.exists() and any(s % 2 for s in t.sizes), t.name


@pytest.mark.parametrize("name", list(load_tasks()))
def test_references_give_finite_answers(name, tmp_path):
    task = get_task(name)
    cases, discarded = generate_cases(task, len(task.sizes) + 1)
    assert len(cases) == len(task.sizes) + 1
    for case in cases:
        write_input(case.fields, tmp_path / "in.txt")  # the file must parse back to the same numbers
        flat = np.concatenate([np.ravel(np.asarray(f, dtype=float)) for f in case.fields])
        assert np.array_equal(read_output(tmp_path / "in.txt"), flat)


def test_reference_failures_are_discarded():
    cases, discarded = generate_cases(get_task("normalize"), 4)
    assert len(cases) == 4 and discarded >= 1  # a single value has no standard deviation
    assert all(c.size != 1 for c in cases)


def test_unknown_task():
    with pytest.raises(UnknownTaskError, match="known tasks: .*array_sum"):
        get_task("nope")


def _compile(tmp_path, body: str):
    src = tmp_path / "prog.c"
    src.write_text("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\nint main(void) {\n" + body + "\n}\n")
    res = run_sandboxed([find_compiler("c"), "-O1", "-o", "prog", "prog.c"], tmp_path, Limits(network=True))
    assert res.ok, res.stderr
    return str(tmp_path / "prog")


def test_sandbox_stops_memory_hog(tmp_path):
    prog = _compile(tmp_path, 'char *p = malloc(1L << 30); if (!p) { fputs("Cannot allocate memory\\n", stderr); '
                              'return 12; } memset(p, 1, 1L << 30); return 0;')
    res = run_sandboxed([prog], tmp_path, Limits(memory_bytes=256 << 20))
    assert not res.ok and "memory limit" in res.describe()


def test_sandbox_stops_huge_file(tmp_path):
    prog = _compile(tmp_path, 'FILE *f = fopen("big", "w"); char b[65536] = {0}; '
                              'for (int i = 0; i < 1000; i++) fwrite(b, 1, sizeof b, f); fclose(f); return 0;')
    res = run_sandboxed([prog], tmp_path, Limits(file_bytes=1 << 20))
    assert not res.ok and res.signal == "SIGXFSZ" and "file-size limit" in res.describe()
    assert (tmp_path / "big").stat().st_size <= 1 << 20


def test_sandbox_stops_cpu_burner_and_sleeper(tmp_path):
    prog = _compile(tmp_path, "volatile unsigned long i = 0; for (;;) i++;")
    res = run_sandboxed([prog], tmp_path, Limits(cpu_seconds=1, wall_seconds=20))
    assert res.signal in ("SIGXCPU", "SIGKILL") and "CPU-time" in res.describe()
    res = run_sandboxed(["sh", "-c", "sleep 30 & sleep 30"], tmp_path, Limits(wall_seconds=1))
    assert res.timed_out and res.seconds < 5 and "deadlock" in res.describe()


def test_sandbox_has_no_network(tmp_path):
    prefix, reason = network_isolation()
    if not prefix:
        pytest.skip(reason)
    res = run_sandboxed(["ip", "-o", "link"], tmp_path)
    assert res.ok and res.stdout.split(":")[1].strip() == "lo" and res.stdout.count("\n") == 1


SOURCE = """int main(int argc, char **argv) {
    int n = 10, rank, size, x = 1, y, lo, hi;
    int base = n / size + (rank < n % size ? 1 : 0);
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    for (int i = lo; i < hi; i++) x += i;
    MPI_Allreduce(&x, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Send(&x, 1, MPI_INT, 1, 0, MPI_COMM_WORLD);
    MPI_Recv(&y, 1, MPI_INT, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    MPI_Sendrecv(&x, 1, MPI_INT, (rank + 1) % size, 0,
                 &y, 1, MPI_INT, (rank + size - 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}
"""


def _only(operator: str) -> list[str]:
    return [m.source for m in mutate(SOURCE, [operator])]


def test_find_calls_splits_nested_arguments():
    sendrecv = next(find_calls(SOURCE, ("Sendrecv",)))
    assert len(sendrecv.args) == 12 and sendrecv.args[3] == "(rank + 1) % size"


def test_mutation_operators():
    assert len(_only("drop_collective")) == 2 and "MPI_Bcast" not in _only("drop_collective")[0]
    twice = _only("duplicate_collective")  # only the sum is reduced again; a repeated Bcast is equivalent
    assert len(twice) == 1 and "MPI_Allreduce(MPI_IN_PLACE, &y, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);" in twice[0]
    assert twice[0].count("MPI_Bcast") == 1
    root = _only("wrong_root")
    assert len(root) == 1 and "MPI_Comm_size(MPI_COMM_WORLD, &mutant_np_)" in root[0]
    assert "MPI_MAX" in _only("wrong_op")[0]
    assert "rank <= n % size" in _only("split_off_by_one")[0]
    assert "i < (hi - 1)" in _only("range_end_off_by_one")[0]
    swapped = _only("swap_send_recv")
    assert len(swapped) == 2
    assert swapped[0].index("MPI_Recv(&y") < swapped[0].index("MPI_Send(&x")
    assert "MPI_Sendrecv" not in swapped[1] and "MPI_Recv(&y, 1, MPI_INT, (rank + size - 1) % size" in swapped[1]
    assert "MPI_Reduce(&x, &y, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD)" in _only("rank0_only_result")[0]
    remainder = _only("missing_remainder")
    assert len(remainder) == 1 and "rank < 0 ?" in remainder[0]  # '(rank + 1) % size' is left alone


def test_mutate_rejects_unknown_operator_and_dedupes():
    with pytest.raises(ValueError, match="unknown mutation operator"):
        mutate(SOURCE, ["nope"])
    everything = mutate(SOURCE)
    assert len({m.source for m in everything}) == len(everything)
    assert {m.operator for m in everything} == set(OPERATORS)
