"""Prompt shapes and stop strings, shared by every backend."""
from __future__ import annotations

from .base import Prompt

__all__ = ["as_messages", "as_text", "cut_at_stop"]


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Chat messages for ``prompt``: a plain string becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def as_text(prompt: Prompt) -> str:
    """Plain text for ``prompt``, for models or endpoints without a chat format."""
    if isinstance(prompt, str):
        return prompt
    lines = [f"{m.get('role', 'user')}: {m['content']}" for m in prompt]
    return "\n\n".join(lines) + "\n\nassistant:"


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop or ()) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
