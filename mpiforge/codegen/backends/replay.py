"""A backend that replays canned answers and records what it was asked: for tests and demos."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, Completion, Prompt, Request
from .prompt import cut_at_stop

__all__ = ["ReplayBackend"]


class ReplayBackend(Backend):
    """Answers from a list or a JSON file, in order (``cycle=False``) or round and round.

    An answer is a string or ``{"text": ..., "finish_reason": "stop"|"length"}``. A JSON file
    holds such a list, or ``{"answers": [...]}``. Every prompt is appended to ``prompts`` and
    every call's arguments to ``calls``.
    """

    name = "replay"

    def __init__(
        self,
        answers: list[Any] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        cycle: bool = True,
        model: str = "replay",
    ) -> None:
        if (answers is None) == (path is None):
            raise BackendError("the replay backend needs exactly one of answers=[...] or path='answers.json'")
        if path is not None:
            answers = _read_answers(Path(path))
        self.answers = [_parsed_answer(a) for a in answers or ()]
        if not self.answers:
            raise BackendError("the replay backend got no answers: give at least one")
        self.cycle = cycle
        self._model = model
        self._next = 0
        self.prompts: list[Prompt] = []
        self.calls: list[dict[str, Any]] = []

    @property
    def model(self) -> str:
        return self._model

    def _answer(self, prompt: Prompt, request: Request) -> list[Completion]:
        """The next ``n`` canned answers, cut at ``stop``; ``BackendError`` when they run out."""
        self.prompts.append(prompt)
        self.calls.append({"prompt": prompt, **asdict(request)})
        n, stop = request.n, request.stop
        out = []
        for _ in range(n):
            if self._next >= len(self.answers):
                if not self.cycle:
                    raise BackendError(f"the replay backend ran out of its {len(self.answers)} answers; "
                                       "add answers or pass cycle=True")
                self._next = 0
            text, finish = self.answers[self._next]
            self._next += 1
            text, stopped = cut_at_stop(text, stop)
            finish = "stop" if stopped else finish
            out.append(Completion(text=text, finish_reason=finish, truncated=finish == "length",
                                  backend=self.name, model=self._model, seconds=0.0))
        return out


def _parsed_answer(item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        return item, "stop"
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"], str(item.get("finish_reason") or "stop")
    raise BackendError(f"a replay answer must be a string or {{'text': ..., 'finish_reason': ...}}, got {item!r}")


def _read_answers(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BackendError(f"cannot read replay answers from {path}: {exc}") from exc
    except ValueError as exc:
        raise BackendError(f"{path} is not valid JSON ({exc}); it must hold a list of answers") from exc
    if isinstance(data, dict):
        data = data.get("answers")
    if not isinstance(data, list):
        raise BackendError(f"{path} must hold a JSON list of answers or {{\"answers\": [...]}}")
    return data
