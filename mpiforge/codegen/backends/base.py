"""The backend interface: ``Backend.generate`` returns ``Completion`` records or raises ``BackendError``."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Backend", "BackendError", "Completion", "Prompt", "Request", "check_request"]

Prompt = str | list[dict[str, str]]
"""A plain prompt, or chat messages ``[{"role": "system"|"user"|"assistant", "content": ...}]``."""


class BackendError(RuntimeError):
    """A backend could not produce completions; the message says what to do about it."""


@dataclass(frozen=True)
class Completion:
    """One generated sample and how it ended."""

    text: str
    finish_reason: str | None  # "stop" (end of sequence or a stop string), "length", or the server's word
    truncated: bool  # True when generation hit max_tokens: the text is probably cut off
    backend: str
    model: str
    seconds: float  # wall time of the request (or batch) that produced this sample
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Request:
    """How to sample: what every backend receives with its prompts (checked already)."""

    n: int = 1
    temperature: float = 0.2
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] | None = None


class Backend(abc.ABC):
    """Something that turns a prompt into ``n`` completions. Subclasses implement ``_answer``
    (one prompt), and ``_complete`` too when they can do several prompts at once."""

    name: ClassVar[str] = "backend"

    @property
    @abc.abstractmethod
    def model(self) -> str:
        """The model's name as reported in completions."""

    def generate(self, prompt: Prompt, *, n: int = 1, temperature: float = 0.2, max_tokens: int = 1024,
                 seed: int | None = None, stop: list[str] | None = None) -> list[Completion]:
        """Return exactly ``n`` completions of ``prompt``; raise ``BackendError`` on failure."""
        return self.generate_batch([prompt], n=n, temperature=temperature, max_tokens=max_tokens, seed=seed,
                                   stop=stop)[0]

    def generate_batch(self, prompts: list[Prompt], *, n: int = 1, temperature: float = 0.2, max_tokens: int = 1024,
                       seed: int | None = None, stop: list[str] | None = None) -> list[list[Completion]]:
        """``n`` completions of each prompt (a local model writes them in one batch)."""
        for prompt in prompts:
            check_request(prompt, n, temperature, max_tokens, stop)
        return self._complete(list(prompts), Request(n, temperature, max_tokens, seed, stop)) if prompts else []

    def _complete(self, prompts: list[Prompt], request: Request) -> list[list[Completion]]:
        return [self._answer(prompt, request) for prompt in prompts]

    @abc.abstractmethod
    def _answer(self, prompt: Prompt, request: Request) -> list[Completion]:
        """``request.n`` completions of one checked ``prompt``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.model}>"


def check_request(prompt: Prompt, n: int, temperature: float, max_tokens: int, stop: list[str] | None) -> None:
    """Reject arguments no backend can honour, before any work is done."""
    if isinstance(prompt, str):
        pass
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        if not prompt:
            raise BackendError("empty chat prompt: give at least one message {'role': 'user', 'content': ...}")
    else:
        raise BackendError("prompt must be a string or a list of messages {'role': ..., 'content': ...}")
    if not isinstance(n, int) or n < 1:
        raise BackendError(f"n must be a positive integer, got {n!r}")
    if temperature < 0:
        raise BackendError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BackendError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if stop is not None and (isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop)):
        raise BackendError(f"stop must be a list of non-empty strings, got {stop!r}")
