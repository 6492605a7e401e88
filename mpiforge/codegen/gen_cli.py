"""``mpiforge gen``: ask a model for an MPI program and hand out only one the tests passed."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .backend_cli import backend_options, make_backend, sampling_options
from .cli import parse_ranks

__all__ = ["gen_command", "report_attempts"]


@click.command("gen")
@click.argument("task_name", metavar="TASK")
@click.option("--lang", type=click.Choice(["c", "cpp", "python"]), default="c", show_default=True,
              help="Language of the program.")
@click.option("--signature", help="The function signature to show the model (default: the task's).")
@click.option("--ranks", default="1,2,3,4", show_default=True, callback=parse_ranks,
              help="Rank counts the program must pass at.")
@click.option("--samples", "-k", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Candidates the model writes at once; the first that passes wins.")
@click.option("--max-repairs", default=2, show_default=True, type=click.IntRange(0, 10),
              help="Times a failing candidate goes back to the model with its diagnostics.")
@click.option("--inputs", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Generated tests per rank count.")
@sampling_options(max_tokens=1536, timeout=20.0)
@backend_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the passing program here (default: print it).")
@click.option("--keep-failing", is_flag=True, help="Write (or print) the closest candidate even if none passed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every attempt (code, verdicts, timings) as JSON.")
def gen_command(task_name: str, lang: str, signature: str | None, ranks: tuple[int, ...], samples: int,
                max_repairs: int, inputs: int, temperature: float, max_tokens: int, seed: int, timeout: float,
                backend: str, model: str | None, base_url: str | None, api_key: str | None,
                backend_extra: dict[str, str], output: Path | None, keep_failing: bool, json_path: Path | None) -> None:
    """Generate an MPI program for TASK, verified at every rank count before you see it.

    \b
      mpiforge gen array_sum                               # embedded SmolLM2, offline
      mpiforge gen prefix_sum --lang cpp -k 4 -o scan.cpp
      mpiforge gen matvec --backend openai --base-url http://127.0.0.1:8000/v1 --model qwen2.5-coder
      mpiforge gen ./my_task/                              # task.toml + reference.py of your own

    TASK is a task of the suite (`mpiforge verify --list`) or a directory with task.toml and
    reference.py (see mpiforge/codegen/tasks/__init__.py). Every candidate is compiled and run
    under mpiexec on generated inputs, compared with the serial reference; failures go back to
    the model with the compiler's log or the failing runs. Exit code 1 when no candidate passed.
    """
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import Progress

    from .backends.base import BackendError
    from .generate import generate
    from .sandbox import Limits
    from .tasks import UnknownTaskError, find_task

    try:
        task = find_task(task_name)
    except (UnknownTaskError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if signature:
        task = replace(task, signature=signature)
    model_backend = make_backend(backend, model, base_url, api_key, backend_extra)
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"{task.name}: asking {model_backend.name}:{model_backend.model}",
                                total=samples * (1 + max_repairs))
        try:
            result = generate(task, model_backend, lang, samples, max_repairs, ranks, inputs, temperature, max_tokens,
                              seed, limits, progress=lambda label: progress.update(bar, advance=1, description=label))
        except BackendError as exc:  # a backend failing mid-way: say what happened, no traceback
            raise click.ClickException(str(exc)) from None
    report_attempts(console, result, output, json_path, keep_failing)


def report_attempts(console, result, output: Path | None, json_path: Path | None, keep_failing: bool) -> None:
    """The attempts table, the JSON record, and the program (written or printed) when it passed;
    exit code 1 when nothing passed."""
    _report(console, result)
    if json_path:
        json_path.write_text(json.dumps(result.to_dict(), indent=2))
    best = result.best
    if best and best.source and (result.passed or keep_failing):
        if output:
            output.write_text(best.source)
            console.print(f"wrote {output}")
        else:
            click.echo(best.source, nl=False)
    if not result.passed:
        raise SystemExit(1)


def _report(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"{result.task}: {result.backend}:{result.model}, {result.lang}")
    for column in ("sample", "round", "verdict", "ranks passed", "seconds", "detail"):
        table.add_column(column, overflow="fold")
    for a in result.attempts:
        colour = "green" if a.verdict == "pass" else "red"
        table.add_row(str(a.sample + 1), str(a.round), f"[{colour}]{a.verdict}[/{colour}]", str(a.ranks_passed),
                      f"{a.seconds:.1f}", a.detail + (" (answer cut off: raise --max-tokens)" if a.truncated else ""))
    console.print(table)
    verdict = "[bold green]passed[/]" if result.passed else "[bold red]no candidate passed[/]"
    console.print(f"{verdict} after {len(result.attempts)} candidate(s) in {result.seconds:.1f} s")
