"""``mpiforge gen``: ask a model for an MPI program and hand out only one the tests passed."""
from __future__ import annotations

import json
import tempfile
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
              help="Times a failing candidate (or drafted reference) goes back to the model with its diagnostics.")
@click.option("--inputs", default=3, show_default=True, type=click.IntRange(1, 50),
              help="Generated tests per rank count.")
@sampling_options(max_tokens=1536, timeout=20.0)
@backend_options
@click.option("--reference-samples", default=2, show_default=True, type=click.IntRange(1, 16),
              help="For a task described in words: serial references (and serial C programs to check each) "
                   "the model drafts.")
@click.option("--rtol", default=1e-9, show_default=True, type=click.FloatRange(0),
              help="For a task described in words: relative tolerance of the comparison.")
@click.option("--atol", default=1e-9, show_default=True, type=click.FloatRange(0),
              help="For a task described in words: absolute tolerance of the comparison.")
@click.option("--save-task", type=click.Path(file_okay=False, path_type=Path),
              help="For a task described in words: write its checked reference (or the closest draft) here "
                   "as task.toml + reference.py, to review and reuse with `mpiforge gen DIR`.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the passing program here (default: print it).")
@click.option("--keep-failing", is_flag=True, help="Write (or print) the closest candidate even if none passed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every attempt (code, verdicts, timings) as JSON.")
def gen_command(task_name: str, lang: str, signature: str | None, ranks: tuple[int, ...], samples: int,
                max_repairs: int, inputs: int, temperature: float, max_tokens: int, seed: int, timeout: float,
                backend: str, model: str | None, base_url: str | None, api_key: str | None,
                backend_extra: dict[str, str], reference_samples: int, rtol: float, atol: float,
                save_task: Path | None, output: Path | None, keep_failing: bool, json_path: Path | None) -> None:
    """Generate an MPI program for TASK, verified at every rank count before you see it.

    \b
      mpiforge gen array_sum                               # embedded SmolLM2, offline
      mpiforge gen prefix_sum --lang cpp -k 4 -o scan.cpp
      mpiforge gen matvec --backend openai --base-url http://127.0.0.1:8000/v1 --model qwen2.5-coder
      mpiforge gen ./my_task/                              # task.toml + reference.py of your own
      mpiforge gen "the sum of the squares of an array of doubles" --save-task sumsq/

    TASK is a task of the suite (`mpiforge verify --list`), a directory with task.toml and
    reference.py (see mpiforge/codegen/tasks/__init__.py), or a task in words. In words, the
    model first drafts the serial reference and its input generator; a draft is used only once
    it runs deterministically in the sandbox and an independently written serial C program gives
    its answers (--save-task keeps it for review). Every candidate is compiled and run under
    mpiexec on generated inputs, compared with the serial reference; failures go back to the
    model with the compiler's log or the failing runs. Exit code 1 when no candidate passed.
    """
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import Progress

    from .backends.base import BackendError
    from .generate import generate
    from .sandbox import Limits
    from .tasks import UnknownTaskError, find_task

    described = _is_description(task_name)
    task = None
    if not described:
        try:
            task = find_task(task_name)
        except (UnknownTaskError, ValueError) as exc:
            raise click.ClickException(f"{exc}\n(or describe the task in words, in quotes)") from None
        if signature:
            task = replace(task, signature=signature)
    model_backend = make_backend(backend, model, base_url, api_key, backend_extra)
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="mpiforge-draft-") as tmp, \
            Progress(console=console, transient=True) as progress:
        try:
            if described:
                bar = progress.add_task(f"drafting the serial reference with {model_backend.name}",
                                        total=reference_samples * (1 + max_repairs + reference_samples))
                task = _drafted(task_name, signature or "", model_backend, Path(tmp), reference_samples, max_repairs,
                                temperature, max_tokens, seed, rtol, atol, save_task, console,
                                lambda label: progress.update(bar, advance=1, description=label))
            bar = progress.add_task(f"{task.name}: asking {model_backend.name}:{model_backend.model}",
                                    total=samples * (1 + max_repairs))
            result = generate(task, model_backend, lang, samples, max_repairs, ranks, inputs, temperature, max_tokens,
                              seed, limits, progress=lambda label: progress.update(bar, advance=1, description=label))
        except BackendError as exc:  # a backend failing mid-way: say what happened, no traceback
            raise click.ClickException(str(exc)) from None
    report_attempts(console, result, output, json_path, keep_failing)


def _is_description(task_name: str) -> bool:
    """A task in words (not a suite name or a directory): it has spaces and names no directory."""
    return " " in task_name.strip() and not Path(task_name).exists()


def _drafted(description: str, signature: str, backend, workdir: Path, samples: int, repairs: int,
             temperature: float, max_tokens: int, seed: int, rtol: float, atol: float, save_to: Path | None, console,
             progress):
    """The task with its checked drafted reference (saved to ``save_to`` if given); a click error
    listing what every draft failed otherwise (the closest draft saved for review)."""
    from .drafted_task import ReferenceDraftError, draft_task, save_draft

    try:
        drafted = draft_task(description, backend, workdir, signature=signature, samples=samples, repairs=repairs,
                             temperature=temperature, max_tokens=max_tokens, seed=seed, rtol=rtol, atol=atol,
                             progress=progress)
    except ReferenceDraftError as exc:
        if save_to and save_draft(save_to, exc.drafts, description, signature, rtol, atol):
            console.print(f"the closest draft is in {save_to}: fix reference.py, then `mpiforge gen {save_to}`")
        raise click.ClickException(str(exc)) from None
    draft = drafted.draft
    console.print(f"serial reference: draft {draft.index + 1} of {len(drafted.drafts)} ({draft.cases} test inputs), "
                  f"confirmed by {draft.confirmed_by}\n  input: {draft.input}\n  output: {draft.output}")
    if save_to:
        drafted.save(save_to)
        console.print(f"wrote the task to {save_to} (task.toml, reference.py)")
    return drafted.task


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
