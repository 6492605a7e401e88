"""The I/O contract every candidate program follows, so that one Tester can check any of them.

    mpiexec -n P ./prog INPUT OUTPUT

* INPUT is a text file of whitespace-separated numbers, laid out as the task describes
  (typically sizes first, then the data row by row). Integers are written as integers,
  floating-point values with 17 significant digits, so a C ``strtod``/``fscanf("%lf")``
  reads back exactly the values the serial reference used. Rank 0 may read it and
  distribute the data, or every rank may read it.
* OUTPUT is written by rank 0 only: whitespace-separated numbers in the order the task
  describes (``%.17g`` is fine for doubles, ``%ld`` for integers).
* The program must give the same answer for every rank count 1..N, including counts that do
  not divide the problem size and counts larger than it, and exit with code 0.

``tasks/_include/mpf_io.h`` has two small helpers (read every number, write an array) that
candidates may include; the oracles use them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["CONTRACT_SUMMARY", "format_numbers", "input_text", "read_fields", "read_output", "write_input"]

CONTRACT_SUMMARY = (
    "argv[1]: input file (whitespace-separated numbers); argv[2]: output file written by rank 0 "
    "(whitespace-separated numbers); correct for any rank count; exit code 0"
)


def format_numbers(values: Iterable) -> str:
    """Numbers as text: integers exactly, floats with 17 significant digits."""
    parts = []
    for v in values:
        if isinstance(v, (bool, np.bool_, int, np.integer)):
            parts.append(str(int(v)))
        else:
            parts.append(f"{float(v):.17g}")
    return " ".join(parts)


def input_text(fields: Sequence) -> str:
    """A task input as text: each field (a number or an array, flattened row-major) on its own line."""
    lines = []
    for f in fields:
        arr = np.asarray(f)
        lines.append(format_numbers(arr.ravel().tolist() if arr.ndim else [arr.item()]))
    return "\n".join(lines) + "\n"


def write_input(fields: Sequence, path: Path) -> None:
    """Write a task input file (:func:`input_text`)."""
    Path(path).write_text(input_text(fields))


def read_fields(text: str) -> list[np.ndarray]:
    """The fields of an input written by :func:`input_text`, one array per line (int64 when every
    number of the line is an integer): written out again, they give the same text."""
    fields = []
    for line in text[:-1].split("\n") if text.endswith("\n") else text.split("\n"):
        tokens = line.split()
        integral = all(t.lstrip("+-").isdigit() for t in tokens)
        fields.append(np.array([int(t) for t in tokens] if integral else [float(t) for t in tokens],
                               dtype=np.int64 if integral else np.float64))
    return fields


def read_output(path: Path) -> np.ndarray:
    """The numbers of an output file as float64; ValueError when a token is not a number."""
    text = Path(path).read_text(errors="replace")
    try:
        return np.array([float(tok) for tok in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"output is not whitespace-separated numbers: {exc}") from None
