"""``mpiforge complete``: put back the MPI calls missing from a program (MPIrigen's task)."""
from __future__ import annotations

from pathlib import Path

import click

from .backend_cli import backend_options, make_backend, sampling_options
from .cli import parse_ranks

__all__ = ["complete_command"]


@click.command("complete")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", "task_name", help="The task FILE solves: the completed program is then verified "
                                          "(and repaired) against it.")
@click.option("--blank", is_flag=True, help="Take the MPI communication calls out of FILE first "
                                             "(to try a model on a working program).")
@click.option("--ranks", default="1,2,3,4", show_default=True, callback=parse_ranks)
@click.option("--samples", "-k", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-repairs", default=2, show_default=True, type=click.IntRange(0, 10))
@sampling_options(max_tokens=2048, timeout=20.0)
@backend_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the program here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write every attempt as JSON.")
def complete_command(file: Path, task_name: str | None, blank: bool, ranks: tuple[int, ...], samples: int,
                     max_repairs: int, temperature: float, max_tokens: int, seed: int, timeout: float, backend: str,
                     model: str | None, base_url: str | None, api_key: str | None, backend_extra: dict[str, str],
                     output: Path | None, json_path: Path | None) -> None:
    """Fill in the MPI calls missing from FILE (C, C++ or mpi4py).

    \b
      mpiforge complete skeleton.c --task array_sum -o done.c      # verified at 1-4 ranks
      mpiforge complete solver.c --blank --task heat_2d            # blank a working program, then ask
      mpiforge complete skeleton.c                                 # no task: unverified, says so

    With --task the completed program is compiled and tested like `mpiforge gen` output (exit
    code 1 unless it passes); without one it only gets the static checks.
    """
    from rich.console import Console

    from .backends.base import BackendError
    from .build import language_of
    from .complete import blank_mpi_calls
    from .extract import extract_code
    from .gen_cli import report_attempts
    from .generate import generate
    from .prompts import complete_prompt
    from .sandbox import Limits
    from .static import static_problems
    from .tasks import UnknownTaskError, find_task

    try:
        lang = {"cxx": "cpp"}.get(language_of(file), language_of(file))
        task = find_task(task_name) if task_name else None
    except (UnknownTaskError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    source = file.read_text()
    if blank:
        source = blank_mpi_calls(source).source
    conversation = complete_prompt(source, lang, task.description if task else None)
    model_backend = make_backend(backend, model, base_url, api_key, backend_extra)
    console = Console(stderr=True)
    try:
        if task is not None:
            limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
            with console.status(f"completing {file.name} with {model_backend.name}:{model_backend.model}"):
                result = generate(task, model_backend, lang, samples, max_repairs, ranks, 3, temperature, max_tokens,
                                  seed, limits, conversation=conversation)
            report_attempts(console, result, output, json_path, keep_failing=False)
            return
        with console.status(f"completing {file.name} with {model_backend.name}:{model_backend.model}"):
            answer = model_backend.generate(conversation, n=1, temperature=temperature, max_tokens=max_tokens,
                                            seed=seed)[0]
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    code = extract_code(answer.text, lang)
    if code is None:
        raise click.ClickException("the model's answer holds no program; try again with --seed or another --model")
    for problem in static_problems(code, lang):
        console.print(f"[yellow]warning:[/] {problem}")
    console.print("[yellow]not verified[/]: give --task to compile and test it")
    if output:
        output.write_text(code)
    else:
        click.echo(code, nl=False)
