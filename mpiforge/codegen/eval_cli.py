"""``mpiforge eval``: a model's pass@k and build@k on the task suite, every answer verified."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .backend_cli import backend_options, make_backend, sampling_options
from .cli import parse_ranks

__all__ = ["eval_command"]


def _selected(suite: str, tasks: str | None) -> list:
    from .tasks import find_task, load_tasks

    if tasks:
        return [find_task(name.strip()) for name in tasks.split(",") if name.strip()]
    everything = list(load_tasks().values())
    if suite == "all":
        return everything
    chosen = [t for t in everything if t.category == suite]
    if not chosen:
        categories = sorted({t.category for t in everything})
        raise click.BadParameter(f"no task in category {suite!r}; use all or one of {', '.join(categories)}",
                                 param_hint="--suite")
    return chosen


@click.command("eval")
@click.option("--suite", default="all", show_default=True, help="all, or one category (reduce, stencil, sort, ...).")
@click.option("--tasks", help="Comma-separated task names (or task directories) instead of --suite.")
@click.option("--lang", type=click.Choice(["c", "cpp", "python"]), default="c", show_default=True)
@click.option("--mode", type=click.Choice(["generate", "complete"]), default="generate", show_default=True,
              help="generate: write each task's program; complete: put back the MPI calls taken out of "
                   "our solution (MPIrigen's location/function/argument accuracy).")
@click.option("--samples", "-n", default=1, show_default=True, type=click.IntRange(1, 64),
              help="First answers per task (pass@k needs n >= k).")
@click.option("--max-repairs", default=0, show_default=True, type=click.IntRange(0, 10),
              help="Repair rounds per failing answer (reported as 'repaired').")
@click.option("--ranks", default="1,2,3,4", show_default=True, callback=parse_ranks)
@click.option("--inputs", default=2, show_default=True, type=click.IntRange(1, 50), help="Generated tests per rank count.")
@sampling_options(max_tokens=512, timeout=10.0)
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Tasks whose first answers a local model writes in one batch (faster on CPU).")
@backend_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
def eval_command(suite: str, tasks: str | None, lang: str, mode: str, samples: int, max_repairs: int, ranks: tuple[int, ...],
                 inputs: int, temperature: float, max_tokens: int, seed: int, batch: int, timeout: float, backend: str,
                 model: str | None, base_url: str | None, api_key: str | None, backend_extra: dict[str, str],
                 json_path: Path | None) -> None:
    """Score a model on the task suite: pass@k, build@k, and what repairs add.

    \b
      mpiforge eval                                  # embedded SmolLM2-135M, every task, pass@1
      mpiforge eval --suite sort -n 5                # pass@1 and pass@5 on the sort tasks
      mpiforge eval --mode complete                  # fill in removed MPI calls (MPIrigen)
      mpiforge eval --backend openai --base-url http://127.0.0.1:8000/v1 --model qwen2.5-coder --max-repairs 2

    Every answer is compiled and run under mpiexec at each rank count on generated inputs and
    compared with the task's serial reference: a pass means correct at every rank count.
    """
    from rich.console import Console
    from rich.progress import Progress

    from .backends.base import BackendError
    from .evaluate import evaluate
    from .sandbox import Limits
    from .tasks import UnknownTaskError

    try:
        chosen = _selected(suite, tasks)
    except (UnknownTaskError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    model_backend = make_backend(backend, model, base_url, api_key, backend_extra)
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"{len(chosen)} tasks with {model_backend.name}:{model_backend.model}", total=len(chosen))
        try:
            report = evaluate(chosen, model_backend, lang, samples, max_repairs, mode=mode, batch=batch, ranks=ranks,
                              inputs=inputs, temperature=temperature, max_tokens=max_tokens, seed=seed, limits=limits,
                              progress=lambda label: progress.update(bar, advance=1, description=label))
        except BackendError as exc:
            raise click.ClickException(str(exc)) from None
    _render(console, report)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))


def _render(console, report) -> None:
    from rich.table import Table

    table = Table(title=f"{report.backend}:{report.model}, {report.mode}, {len(report.scores)} tasks ({report.lang}, "
                        f"n={report.samples}, repairs={report.max_repairs})")
    for column in ("task", "category", "built", "passed", "solved", "first verdicts", "seconds"):
        table.add_column(column, overflow="fold")
    for s in report.scores:
        table.add_row(s.task, s.category, f"{s.built}/{s.n}", f"{s.passed}/{s.n}", "yes" if s.solved else "no",
                      ", ".join(s.verdicts), f"{s.seconds:.0f}")
    console.print(table)
    summary = report.summary()
    console.print("  ".join(f"[bold]{k}[/] {v:.3f}" for k, v in summary.items()) + f"   ({report.seconds / 60:.1f} min)")
