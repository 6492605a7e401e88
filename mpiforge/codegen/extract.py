"""Take the program out of a model's answer: fenced blocks, prose around them, cut-off answers.

    code = extract_code(answer, "c")      # None when the answer holds no program

Models wrap code in markdown fences (with or without a language tag), add explanations before
and after, split a program over several blocks, or stop mid-block when they run out of tokens.
The block chosen is the one that looks most like a whole program in the wanted language.
"""
from __future__ import annotations

import re

__all__ = ["extract_code"]

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_TAGS = {"c": {"c", "h"}, "cpp": {"cpp", "c++", "cxx", "cc", "hpp"}, "python": {"python", "py", "python3"}}
_PROGRAM = {  # what a whole program in the language contains
    "c": (r"\bint\s+main\s*\(", r"\bMPI_Init\b", r"#\s*include"),
    "python": (r"\bmpi4py\b", r"^\s*(import|from)\s", r"\bdef\s|\bCOMM_WORLD\b"),
}
_PROGRAM["cpp"] = _PROGRAM["c"]
_CODE_START = {"c": r"^\s*(#\s*include|int\s+main|/\*|//)", "python": r"^\s*(import|from|#!|def\s)"}
_CODE_START["cpp"] = _CODE_START["c"]


def _looks_like(code: str, lang: str) -> int:
    """How many marks of a whole ``lang`` program ``code`` has."""
    return sum(bool(re.search(p, code, re.MULTILINE)) for p in _PROGRAM[lang])


def extract_code(answer: str, lang: str) -> str | None:
    """The program in ``answer`` for ``lang`` (c, cpp, python), or None when there is none."""
    if lang not in _PROGRAM:
        raise ValueError(f"language {lang!r}: use one of {', '.join(_PROGRAM)}")
    blocks = [(tag.lower(), body.strip("\n")) for tag, body in _FENCE.findall(answer)]
    if blocks:
        def rank(block: tuple[str, str]) -> tuple:
            tag, body = block
            return (tag in _TAGS[lang], _looks_like(body, lang), len(body))
        tag, body = max(blocks, key=rank)
        return body + "\n" if body.strip() and (tag in _TAGS[lang] or _looks_like(body, lang)) else None
    lines = answer.splitlines()  # no fences: from the first line that starts code to the end
    start = next((i for i, line in enumerate(lines) if re.match(_CODE_START[lang], line)), None)
    if start is None:
        return None
    code = "\n".join(lines[start:]).strip("\n")
    return code + "\n" if _looks_like(code, lang) >= 2 else None
