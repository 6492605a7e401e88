"""The generate-verify-repair loop with a scripted model: extraction, static checks, the Tester's
verdicts and what the repair prompt tells the model."""
from __future__ import annotations

import pytest
from scripted_model import Scripted, fenced

from mpiforge.codegen.extract import extract_code
from mpiforge.codegen.generate import NO_CODE, STATIC, generate
from mpiforge.codegen.prompts import repair_prompt, task_prompt
from mpiforge.codegen.sandbox import Limits
from mpiforge.codegen.static import static_problems
from mpiforge.codegen.tasks import get_task

FAST = {"ranks": (1, 3), "inputs": 1, "limits": Limits(wall_seconds=8, cpu_seconds=20)}


def oracle() -> str:
    return get_task("array_sum").oracle.read_text()


def test_extract_code_copes_with_prose_tags_and_cut_off_answers() -> None:
    code = oracle()
    assert extract_code(fenced(code), "c") == code
    assert extract_code(fenced(code, ""), "c") == code  # no language tag
    two = f"```text\nmpiexec -n 4 ./a.out\n```\nthen\n```c\n{code}```"
    assert extract_code(two, "c") == code
    cut = f"```c\n{code[:200]}"  # the model ran out of tokens inside the block
    assert extract_code(cut, "c") == code[:200].rstrip("\n") + "\n"
    assert extract_code(f"Explanation first.\n{code}", "c").startswith("#include")
    assert extract_code("I cannot help with that.", "c") is None
    assert extract_code("```python\nfrom mpi4py import MPI\nimport sys\nprint(1)\n```", "python").startswith("from mpi4py")
    with pytest.raises(ValueError, match="language"):
        extract_code("x", "fortran")


def test_static_problems_name_what_is_missing_and_forbidden() -> None:
    assert static_problems(oracle(), "c") == []
    bare = "#include <mpi.h>\nint main(int c, char **v) { system(\"ls\"); return 0; } /* MPI_Init( */"
    problems = static_problems(bare, "c")
    assert "MPI_Init is never called" in problems and "MPI_Finalize is never called" in problems
    assert any("system()" in p for p in problems) and any("argv[1]" in p for p in problems)
    assert static_problems("import subprocess\nfrom mpi4py import MPI\nimport sys\nsys.argv[1]", "python") == \
        ["uses subprocess, which a test program must not do"]
    assert static_problems("  ", "c") == ["the program is empty"]


def test_prompts_state_the_task_and_the_contract() -> None:
    task = get_task("array_sum")
    system, user = task_prompt(task, "c")
    assert system["role"] == "system" and task.description in user["content"]
    assert "argv[1]" in user["content"] and "```c" in user["content"] and "mpf_io.h" in user["content"]
    again = repair_prompt(task, "c", [system, user], "int main(){}", problems=["MPI_Init is never called"])
    assert [m["role"] for m in again] == ["system", "user", "assistant", "user"]
    assert "MPI_Init is never called" in again[-1]["content"] and "int main(){}" in again[2]["content"]
    with pytest.raises(ValueError, match="language"):
        task_prompt(task, "fortran")


def test_a_correct_first_answer_passes_without_repairs() -> None:
    backend = Scripted([fenced(oracle())])
    result = generate(get_task("array_sum"), backend, **FAST)
    assert result.passed and result.built and len(result.attempts) == 1
    assert result.best.round == 0 and result.best.ranks_passed == 2 and len(backend.prompts) == 1


def test_compile_error_is_repaired_from_the_compiler_log() -> None:
    broken = oracle().replace("MPI_Reduce(&local", "MPI_Reduce(&missing", 1)
    backend = Scripted([fenced(broken), fenced(oracle())])
    result = generate(get_task("array_sum"), backend, max_repairs=2, **FAST)
    assert [a.verdict for a in result.attempts] == ["compile_error", "pass"]
    repair = backend.prompts[1][-1]["content"]
    assert "does not compile" in repair and "missing" in repair
    assert result.to_dict()["best"]["round"] == 1


def test_wrong_answers_and_deadlocks_go_back_with_their_verdicts() -> None:
    wrong = oracle().replace("local += x[i]", "local += 2 * x[i]")
    deadlock = oracle().replace("MPI_Reduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);",
                                "if (rank > 0) MPI_Recv(&total, 1, MPI_DOUBLE, 0, 9, MPI_COMM_WORLD, "
                                "MPI_STATUS_IGNORE); MPI_Reduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, 0, "
                                "MPI_COMM_WORLD);")
    backend = Scripted([fenced(wrong), fenced(deadlock), "No code, sorry."])
    fast = {**FAST, "limits": Limits(wall_seconds=3, cpu_seconds=10)}
    result = generate(get_task("array_sum"), backend, max_repairs=2, **fast)
    assert [a.verdict for a in result.attempts] == ["wrong_answer", "timeout", NO_CODE]
    assert not result.passed and result.built
    assert "wrong_answer" in backend.prompts[1][-1]["content"]
    assert "deadlock" in backend.prompts[2][-1]["content"]
    assert result.best.verdict in ("wrong_answer", "timeout") and result.best.ranks_passed <= 1


def test_best_of_k_stops_at_the_first_passing_sample() -> None:
    answers = ["no code here", fenced(oracle()), fenced(oracle())]
    backend = Scripted(answers)
    result = generate(get_task("array_sum"), backend, samples=3, max_repairs=0, **FAST)
    assert [a.verdict for a in result.attempts] == [NO_CODE, "pass"] and result.best.sample == 1
    static = Scripted([fenced("#include <mpi.h>\nint main(void) { return 0; }\n")])
    assert generate(get_task("array_sum"), static, max_repairs=0, **FAST).attempts[0].verdict == STATIC


def _gen(tmp_path, answers: list[str], *args: str):
    import json

    from click.testing import CliRunner

    from mpiforge.cli import main

    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))
    return CliRunner().invoke(main, ["gen", "array_sum", "--backend", "replay", "--backend-option",
                                     f"path={path}", "--backend-option", "cycle=0", "--ranks", "1,3",
                                     "--inputs", "1", "--timeout", "8", *args])


def test_gen_command_writes_only_a_passing_program(tmp_path) -> None:
    out, record = tmp_path / "sum.c", tmp_path / "gen.json"
    result = _gen(tmp_path, [fenced(oracle())], "-o", str(out), "--json", str(record))
    assert result.exit_code == 0, result.output
    assert out.read_text() == oracle() and "passed" in result.output
    import json

    data = json.loads(record.read_text())
    assert data["passed"] and data["attempts"][0]["verdict"] == "pass" and data["backend"] == "replay"

    failing = _gen(tmp_path, ["nothing useful"] * 2, "--max-repairs", "1", "-o", str(tmp_path / "no.c"))
    assert failing.exit_code == 1 and not (tmp_path / "no.c").exists()
    assert "no candidate passed" in failing.output


def test_gen_command_explains_bad_input(tmp_path) -> None:
    from click.testing import CliRunner

    from mpiforge.cli import main

    unknown = CliRunner().invoke(main, ["gen", "no_such_task", "--backend", "replay"])
    assert unknown.exit_code != 0 and "known tasks" in unknown.output
    backend = CliRunner().invoke(main, ["gen", "array_sum", "--backend", "nope"])
    assert backend.exit_code != 0 and "nope" in backend.output
    option = CliRunner().invoke(main, ["gen", "array_sum", "--backend-option", "novalue"])
    assert option.exit_code == 2 and "KEY=VALUE" in option.output


def test_pass_at_k_is_the_unbiased_estimate() -> None:
    from math import comb

    from mpiforge.codegen.evaluate import pass_at_k

    assert pass_at_k(5, 0, 1) == 0 and pass_at_k(5, 5, 3) == 1 and pass_at_k(1, 1, 1) == 1
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - comb(7, 4) / comb(10, 4))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_eval_command_scores_the_suite(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from mpiforge.cli import main

    wrong = oracle().replace("local += x[i]", "local -= x[i]")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([fenced(oracle()), "no program", fenced(wrong), fenced(oracle())]))
    record = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--tasks", "array_sum", "-n", "4", "--ranks", "1,2", "--inputs", "1",
                                       "--backend", "replay", "--backend-option", f"path={answers}",
                                       "--json", str(record)])
    assert result.exit_code == 0, result.output
    data = json.loads(record.read_text())
    score = data["scores"][0]
    assert (score["n"], score["built"], score["passed"]) == (4, 3, 2)
    assert score["verdicts"] == ["pass", "no_code", "wrong_answer", "pass"]
    assert data["summary"]["pass@1"] == pytest.approx(0.5) and data["summary"]["build@1"] == pytest.approx(0.75)
    assert data["summary"]["pass@4"] == 1.0 and data["summary"]["repaired"] == 1.0
    assert "pass@1" in result.output
    bad = CliRunner().invoke(main, ["eval", "--suite", "astrology", "--backend", "replay"])
    assert bad.exit_code != 0 and "category" in bad.output


SERIAL_SUM = """#include <stdio.h>
int main(int argc, char **argv)
{
    FILE *in = fopen(argv[1], "r"), *out = fopen(argv[2], "w");
    int n; double x, s = 0;
    if (fscanf(in, "%d", &n) != 1) return 1;
    for (int i = 0; i < n && fscanf(in, "%lf", &x) == 1; i++) s += x;
    fprintf(out, "%.17g\\n", s);
    return 0;
}
"""


def test_parallelize_checks_candidates_against_the_serial_program(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from mpiforge.cli import main

    serial = tmp_path / "sum.c"
    serial.write_text(SERIAL_SUM)
    inputs = []
    for i, n in enumerate((7, 1, 12)):
        path = tmp_path / f"{i}.in"
        path.write_text(f"{n}\n" + " ".join(str(0.5 * k + i) for k in range(n)) + "\n")
        inputs += ["--input", str(path)]
    wrong = oracle().replace("local += x[i]", "local += x[i] * x[i]")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([fenced(wrong), fenced(oracle())]))
    out = tmp_path / "sum_mpi.c"
    result = CliRunner().invoke(main, ["parallelize", str(serial), *inputs, "--ranks", "1,3", "--max-repairs", "1",
                                       "--backend", "replay", "--backend-option", f"path={answers}", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == oracle() and "wrong_answer" in result.output

    broken = tmp_path / "broken.c"
    broken.write_text("int main( {")
    failed = CliRunner().invoke(main, ["parallelize", str(broken), *inputs, "--backend", "replay",
                                       "--backend-option", f"path={answers}"])
    assert failed.exit_code == 1 and "does not build" in failed.output


def test_blanking_and_scoring_completions() -> None:
    from mpiforge.codegen.complete import blank_mpi_calls, score_completion

    source = oracle()
    blanked = blank_mpi_calls(source)
    assert [c.name for c in blanked.removed] == ["Bcast", "Scatterv", "Reduce"]
    assert "MPI_Init" in blanked.source and "MPI_Bcast" not in blanked.source
    assert blanked.source.count("\n") == source.count("\n")  # the calls' lines stay, empty
    perfect = score_completion(blanked, source)
    assert (perfect.location, perfect.function, perfect.arguments_share) == (1.0, 1.0, 1.0)
    allreduce = source.replace("MPI_Reduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM, 0,",
                               "MPI_Allreduce(&local, &total, 1, MPI_DOUBLE, MPI_SUM,")
    other = score_completion(blanked, allreduce)
    assert (other.located, other.functions, other.arguments) == (3, 2, 2)
    args = score_completion(blanked, source.replace("MPI_Bcast(&n, 1,", "MPI_Bcast(&n, 2,"))
    assert (args.functions, args.arguments) == (3, 2)
    moved = source.replace("    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);\n", "")
    moved = moved.replace("    return 0;", "    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);\n    return 0;")
    assert score_completion(blanked, moved).located == 2
    assert score_completion(blanked, blanked.source).located == 0


def test_complete_command_and_eval_complete_mode(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from mpiforge.cli import main

    skeleton = tmp_path / "sum.c"
    skeleton.write_text(oracle())
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([fenced(oracle())]))
    replay = ["--backend", "replay", "--backend-option", f"path={answers}"]
    out = tmp_path / "done.c"
    done = CliRunner().invoke(main, ["complete", str(skeleton), "--blank", "--task", "array_sum", "--ranks", "1,2",
                                     *replay, "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert out.read_text() == oracle()
    unverified = CliRunner().invoke(main, ["complete", str(skeleton), "--blank", *replay])
    assert unverified.exit_code == 0 and "not verified" in unverified.output

    record = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--mode", "complete", "--tasks", "array_sum", "--ranks", "1,2",
                                       "--inputs", "1", *replay, "--json", str(record)])
    assert result.exit_code == 0, result.output
    summary = json.loads(record.read_text())["summary"]
    assert summary["pass@1"] == 1.0 and summary["location"] == summary["function"] == summary["arguments"] == 1.0
