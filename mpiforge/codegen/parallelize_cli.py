"""``mpiforge parallelize``: turn a serial program into an MPI one that gives the same answers."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .backend_cli import backend_options, make_backend, sampling_options
from .cli import parse_ranks

__all__ = ["parallelize_command"]


@click.command("parallelize")
@click.argument("serial", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "inputs", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An example input file for the serial program (repeatable; vary the sizes).")
@click.option("--lang", type=click.Choice(["c", "cpp", "python"]), help="Language of the MPI program "
                                                                         "(default: the serial program's).")
@click.option("--ranks", default="1,2,3,4", show_default=True, callback=parse_ranks)
@click.option("--samples", "-k", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--max-repairs", default=2, show_default=True, type=click.IntRange(0, 10))
@click.option("--rtol", default=1e-9, show_default=True, type=click.FloatRange(0), help="Relative tolerance (0: exact).")
@click.option("--atol", default=1e-12, show_default=True, type=click.FloatRange(0), help="Absolute tolerance.")
@sampling_options(max_tokens=2048, timeout=20.0)
@backend_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the MPI program here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write every attempt as JSON.")
def parallelize_command(serial: Path, inputs: tuple[Path, ...], lang: str | None, ranks: tuple[int, ...],
                        samples: int, max_repairs: int, rtol: float, atol: float, temperature: float,
                        max_tokens: int, seed: int, timeout: float, backend: str, model: str | None,
                        base_url: str | None, api_key: str | None, backend_extra: dict[str, str],
                        output: Path | None, json_path: Path | None) -> None:
    """Parallelize SERIAL (C, C++ or Python) with MPI, checked against SERIAL itself.

    \b
      mpiforge parallelize heat.c --input small.in --input odd_size.in -o heat_mpi.c
      mpiforge parallelize stats.py --input data.txt --lang c --backend openai --model qwen2.5-coder

    SERIAL reads numbers from the file argv[1] and writes numbers to the file argv[2]. It is run
    on every --input; each MPI candidate must give the same numbers at every rank count.
    Exit code 1 when no candidate passed.
    """
    from rich.console import Console
    from rich.progress import Progress

    from .backends.base import BackendError
    from .build import language_of
    from .gen_cli import report_attempts
    from .generate import generate
    from .prompts import parallelize_prompt
    from .sandbox import Limits
    from .serial_task import SerialProgramError, serial_task

    try:
        serial_lang = {"cxx": "cpp"}.get(language_of(serial), language_of(serial))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    lang = lang or serial_lang
    model_backend = make_backend(backend, model, base_url, api_key, backend_extra)
    console = Console(stderr=True)
    limits = Limits(wall_seconds=timeout, cpu_seconds=int(max(timeout * 3, 10)))
    with tempfile.TemporaryDirectory(prefix="mpiforge-parallelize-") as tmp:
        try:
            task = serial_task(serial, list(inputs), Path(tmp), rtol, atol)
        except SerialProgramError as exc:
            raise click.ClickException(str(exc)) from None
        conversation = parallelize_prompt(serial.read_text(), serial_lang, lang)
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task(f"parallelizing {serial.name}", total=samples * (1 + max_repairs))
            try:
                result = generate(task, model_backend, lang, samples, max_repairs, ranks, len(inputs), temperature,
                                  max_tokens, seed, limits, conversation=conversation,
                                  progress=lambda label: progress.update(bar, advance=1, description=label))
            except BackendError as exc:
                raise click.ClickException(str(exc)) from None
    report_attempts(console, result, output, json_path, keep_failing=False)
