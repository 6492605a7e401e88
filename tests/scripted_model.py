"""A scripted model for the code generator's tests, and how models wrap code in prose."""
from __future__ import annotations

from mpiforge.codegen.backends.base import Backend, Completion


class Scripted(Backend):
    """Answers from a list, in order; remembers every prompt."""

    name = "scripted"

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.prompts = list(answers), []

    @property
    def model(self) -> str:
        return "script"

    def _answer(self, prompt, request):
        self.prompts.append(prompt)
        return [Completion(self.answers.pop(0), "stop", False, self.name, self.model, 0.0) for _ in range(request.n)]


def fenced(code: str, lang: str = "c") -> str:
    return f"Sure! Here is the program.\n\n```{lang}\n{code}```\n\nIt scatters the array and reduces."
