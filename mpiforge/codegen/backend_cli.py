"""The model options every generating command shares (``gen``, ``eval``, ...), and the backend they make."""
from __future__ import annotations

import functools
from collections.abc import Callable

import click

from .backends.base import Backend

__all__ = ["backend_options", "make_backend", "sampling_options"]


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: write KEY=VALUE, e.g. timeout=300")
        out[key.strip().replace("-", "_")] = value
    return out


def backend_options(command: Callable) -> Callable:
    """Add --backend, --model, --base-url, --api-key and --backend-option to a click command."""
    decorators = [
        click.option("--backend", default="embedded", show_default=True, envvar="MPIFORGE_BACKEND",
                     help="Model backend: embedded (SmolLM2-135M, offline), openai (any OpenAI-compatible "
                          "server: vLLM, llama.cpp, Ollama /v1), transformers (a local model folder), replay, "
                          "or one a package registers."),
        click.option("--model", help="Model name (openai) or model folder (transformers)."),
        click.option("--base-url", envvar="MPIFORGE_BASE_URL", help="Server URL for --backend openai, "
                                                                     "e.g. http://127.0.0.1:8000/v1."),
        click.option("--api-key", envvar="MPIFORGE_API_KEY", help="API key for --backend openai (if the server wants one)."),
        click.option("--backend-option", "backend_extra", multiple=True, callback=_pairs, metavar="KEY=VALUE",
                     help="Any other backend option, e.g. timeout=300 or mode=completion (repeatable)."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), command)


def sampling_options(max_tokens: int = 1536, timeout: float = 20.0) -> Callable[[Callable], Callable]:
    """Add --temperature, --max-tokens, --seed and --timeout (seconds per test run) to a click command."""
    decorators = [
        click.option("--temperature", default=0.2, show_default=True, type=click.FloatRange(0, 2),
                     help="Sampling temperature (0: greedy)."),
        click.option("--max-tokens", default=max_tokens, show_default=True, type=click.IntRange(16, 32768),
                     help="Longest answer, in tokens."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampling and the tests."),
        click.option("--timeout", default=timeout, show_default=True, type=click.FloatRange(1, 3600),
                     help="Wall-clock seconds per test run; a deadlock is killed and reported."),
    ]
    return lambda command: functools.reduce(lambda f, d: d(f), reversed(decorators), command)


def make_backend(backend: str, model: str | None, base_url: str | None, api_key: str | None,
                 backend_extra: dict[str, str]) -> Backend:
    """The backend the options name; a clear ClickException when it cannot be built."""
    from .backends.base import BackendError
    from .backends.registry import get_backend

    options: dict = {key: _number(value) for key, value in backend_extra.items()}
    if model:
        options["path" if backend == "transformers" else "model"] = model
    if base_url:
        options["base_url"] = base_url
    if api_key:
        options["api_key"] = api_key
    try:
        return get_backend(backend, **options)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
