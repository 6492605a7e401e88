"""Run a model-written serial reference module on a bank of generated cases (inside the sandbox).

    python -m mpiforge.codegen.reference_runner reference.py OUTDIR --sizes 1,5,43 --copies 3

For every size (``--sizes``, else the module's ``SIZES``) and copy k (seed = 1000 x size + k)
it calls ``generate(rng, size)`` twice and ``reference(fields)`` on each result, and writes
``case-SIZE-K.in`` (the task contract's input file) and ``case-SIZE-K.out`` (the answer, one
number per line). ``OUTDIR/report.json`` tells
the module's INPUT and OUTPUT layouts and, per case, whether it worked and was deterministic;
a case that raised keeps its error instead of files. The module is untrusted code: this script
only ever runs under :func:`mpiforge.codegen.sandbox.run_sandboxed`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import traceback
from pathlib import Path

import numpy as np

from .contract import format_numbers, input_text

__all__ = ["DEFAULT_SIZES", "case_seed", "main"]

DEFAULT_SIZES = (1, 5, 43, 100)
MAX_SIZE = 1_000_000


class Nondeterministic(ValueError):
    """The same seed gave two different inputs, or the same input two different answers."""


def case_seed(size: int, copy: int) -> int:
    return 1000 * size + copy


def _answer(module, fields: list) -> np.ndarray:
    answer = np.atleast_1d(np.asarray(module.reference(fields), dtype=np.float64)).ravel()
    if answer.size == 0:
        raise ValueError("reference() returned no numbers")
    if not np.all(np.isfinite(answer)):
        raise ValueError("reference() returned NaN or infinite values")
    return answer


def _run_case(module, out: Path, size: int, copy: int) -> dict:
    seed = case_seed(size, copy)
    stem = out / f"case-{size}-{copy}"
    case = {"size": size, "copy": copy, "seed": seed, "ok": False, "error": "", "nondeterministic": False}
    try:
        first = module.generate(np.random.default_rng(seed), size)
        again = module.generate(np.random.default_rng(seed), size)
        if not isinstance(first, (list, tuple)):
            raise TypeError(f"generate() must return a list of fields, got {type(first).__name__}")
        text = input_text(list(first))
        if text != input_text(list(again)):
            raise Nondeterministic("generate() gave two different inputs for the same seed")
        answer = _answer(module, list(first))
        if not np.array_equal(answer, _answer(module, list(again))):
            raise Nondeterministic("reference() gave two different answers for the same input")
    except Exception as exc:  # noqa: BLE001 - the module's failure is the finding, reported per case
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        case["error"] = f"{type(exc).__name__}: {exc} (line {frame.lineno})"[:300]
        case["nondeterministic"] = isinstance(exc, Nondeterministic)
        return case
    stem.with_suffix(".in").write_text(text)
    stem.with_suffix(".out").write_text(format_numbers(answer.tolist()).replace(" ", "\n") + "\n")
    case["ok"] = True
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", help="comma-separated problem sizes (default: the module's SIZES, else 1,5,43,100)")
    parser.add_argument("--copies", type=int, default=3)
    args = parser.parse_args(argv)
    spec = importlib.util.spec_from_file_location("drafted_reference", args.module)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001
        print(f"importing the module failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    missing = [name for name in ("INPUT", "OUTPUT", "generate", "reference") if not hasattr(module, name)]
    if missing:
        print(f"the module does not define {', '.join(missing)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        sizes = [int(s) for s in (args.sizes.split(",") if args.sizes else getattr(module, "SIZES", DEFAULT_SIZES))]
    except (TypeError, ValueError) as exc:
        print(f"SIZES must be a list of integers: {exc}", file=sys.stderr)
        return 2
    if not sizes or not all(0 <= s <= MAX_SIZE for s in sizes):
        print(f"SIZES must hold 1 to 10 sizes from 0 to {MAX_SIZE}, got {sizes}", file=sys.stderr)
        return 2
    cases = [_run_case(module, args.out, size, copy) for size in sizes for copy in range(args.copies)]
    report = {"input": str(module.INPUT), "output": str(module.OUTPUT), "sizes": sizes, "cases": cases}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
