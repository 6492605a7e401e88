"""``mpiforge verify``: compile a program and check it against a task at several rank counts."""
from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["parse_ranks", "verify_command"]


def parse_ranks(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        ranks = tuple(int(r) for r in value.split(",") if r.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated rank counts like 1,2,3,4, got {value!r}") from None
    if not ranks or min(ranks) < 1:
        raise click.BadParameter("rank counts must be positive integers")
    return ranks


def _list_tasks() -> None:
    from rich.console import Console
    from rich.table import Table

    from .tasks import load_tasks

    table = Table(title="mpiforge tasks")
    for col in ("task", "category", "description"):
        table.add_column(col, overflow="fold")
    for t in load_tasks().values():
        table.add_row(t.name, t.category, t.description)
    Console().print(table)


def _print_report(report, task) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"pass": "green", "wrong_answer": "red", "crash": "red", "timeout": "magenta", "compile_error": "yellow"}
    console = Console()
    if report.compile_log:
        console.print(f"[yellow]compile error[/yellow]\n{report.compile_log[-3000:]}")
    table = Table(title=f"{Path(report.source).name} vs task {task.name}")
    for col in ("ranks", "verdict", "tests", "seconds", "detail"):
        table.add_column(col, overflow="fold")
    for r in report.per_ranks:
        colour = colours[r.verdict.value]
        table.add_row(str(r.ranks), f"[{colour}]{r.verdict}[/{colour}]", str(len(r.cases)),
                      f"{sum(c.seconds for c in r.cases):.1f}", r.detail)
    if report.per_ranks:
        console.print(table)
    colour = colours[report.verdict.value]
    console.print(f"verdict: [bold {colour}]{report.verdict}[/bold {colour}] ({report.seconds:.1f} s"
                  + (f", {report.discarded_tests} generated tests discarded" if report.discarded_tests else "") + ")")


@click.command("verify")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_name", envvar="MPIFORGE_TASK", help="Task the program solves (see --list).")
@click.option("--ranks", default="1,2,3,4", show_default=True, callback=parse_ranks,
              help="Comma-separated rank counts to run at.")
@click.option("--inputs", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Generated tests per rank count.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the first generated test.")
@click.option("--timeout", default=20.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Wall-clock seconds per run; beyond it the run is killed and judged a timeout (deadlock).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON.")
@click.option("--list", "list_tasks", is_flag=True, help="List the tasks and exit.")
def verify_command(file: Path | None, task_name: str | None, ranks: tuple[int, ...], inputs: int, seed: int,
                   timeout: float, json_path: Path | None, list_tasks: bool) -> None:
    """Compile FILE (C, C++ or mpi4py) and test it against a task at several rank counts.

    \b
      mpiforge verify --list
      mpiforge verify my_sum.c --task array_sum
      mpiforge verify scan.cpp --task prefix_sum --ranks 1,3,5 --json result.json

    The program reads its input from the file named by argv[1] and writes its result from
    rank 0 to the file named by argv[2] (whitespace-separated numbers); see `--list` for the
    tasks and mpiforge/codegen/contract.py for the details. Exit code 1 unless every run passes.
    """
    if list_tasks:
        _list_tasks()
        return
    from rich.progress import Progress

    from .sandbox import Limits
    from .tasks import UnknownTaskError, find_task
    from .tester import verify

    if file is None:
        raise click.UsageError("give the program FILE to verify (or --list)")
    if not file.is_file():
        raise click.ClickException(f"{file}: no such file")
    if not task_name:
        raise click.UsageError("--task NAME is required (see `mpiforge verify --list`)")
    try:
        task = find_task(task_name)
    except (UnknownTaskError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"verifying {file.name}", total=1 + len(ranks) * inputs)
        try:
            report = verify(file, task, ranks=ranks, inputs=inputs, seed=seed, limits=limits,
                            progress=lambda label: progress.update(bar, advance=1, description=label))
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None
    _print_report(report, task)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    if not report.passed:
        raise SystemExit(1)
