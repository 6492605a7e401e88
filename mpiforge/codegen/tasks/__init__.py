"""The task suite: one directory per task, loaded into :class:`Task` objects by name.

A task directory holds

* ``task.toml``: ``category``, ``description`` (what a user would type), ``signature`` (the C
  function the program implements), ``input`` and ``output`` (the file layouts, see
  :mod:`mpiforge.codegen.contract`), ``sizes`` (problem sizes the tests cycle through; odd on
  purpose) and optional ``rtol``/``atol`` (0 means exact);
* ``reference.py``: ``generate(rng, size) -> list`` (the input fields) and
  ``reference(fields) -> array`` (the serial answer);
* ``oracle.c`` (or ``oracle.cpp``, ``oracle.py``): our own correct MPI solution.
"""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

__all__ = ["INCLUDE_DIR", "TASKS_DIR", "Task", "UnknownTaskError", "find_task", "get_task", "load_tasks", "task_names"]

TASKS_DIR = Path(__file__).parent
INCLUDE_DIR = TASKS_DIR / "_include"
_ORACLE_NAMES = ("oracle.c", "oracle.cpp", "oracle.py")


class UnknownTaskError(KeyError):
    """No task of that name in the suite."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class Task:
    """One problem of the suite, with its serial reference and our MPI oracle."""

    name: str
    category: str
    description: str
    signature: str
    input: str
    output: str
    sizes: list[int]
    rtol: float
    atol: float
    directory: Path
    oracles: list[Path] = field(default_factory=list)
    _module: ModuleType | None = field(default=None, repr=False)

    @property
    def oracle(self) -> Path:
        """The main oracle (C or C++ when there is one)."""
        if not self.oracles:
            raise ValueError(f"task {self.name} has no oracle (a task of one's own needs none to generate)")
        return self.oracles[0]

    def _reference_module(self) -> ModuleType:
        if self._module is None:
            path = self.directory / "reference.py"
            spec = importlib.util.spec_from_file_location(f"mpiforge_task_{self.name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._module = module
        return self._module

    @property
    def generate(self) -> Callable[[np.random.Generator, int], list]:
        """``generate(rng, size)``: the input fields of one test."""
        return self._reference_module().generate

    @property
    def reference(self) -> Callable[[list], np.ndarray]:
        """``reference(fields)``: the serial answer of one test."""
        return self._reference_module().reference

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0


def _load(directory: Path, need_oracle: bool = True) -> Task:
    if tomllib is None:
        raise RuntimeError("reading the task suite needs Python 3.11 or the `tomli` package")
    meta = tomllib.loads((directory / "task.toml").read_text())
    unknown = set(meta) - {"category", "description", "signature", "input", "output", "sizes", "rtol", "atol"}
    if unknown:
        raise ValueError(f"{directory / 'task.toml'}: unknown keys {sorted(unknown)}")
    oracles = [directory / n for n in _ORACLE_NAMES if (directory / n).exists()]
    if not oracles and need_oracle:
        raise ValueError(f"task {directory.name} has no oracle ({', '.join(_ORACLE_NAMES)})")
    return Task(name=directory.name, category=meta["category"], description=meta["description"].strip(),
                signature=meta["signature"].strip(), input=meta["input"].strip(), output=meta["output"].strip(),
                sizes=list(meta["sizes"]), rtol=float(meta.get("rtol", 0.0)), atol=float(meta.get("atol", 0.0)),
                directory=directory, oracles=oracles)


@functools.lru_cache(maxsize=1)
def load_tasks() -> dict[str, Task]:
    """Every task of the suite, by name, sorted by category then name."""
    tasks = [_load(d) for d in TASKS_DIR.iterdir() if (d / "task.toml").exists()]
    return {t.name: t for t in sorted(tasks, key=lambda t: (t.category, t.name))}


def task_names() -> list[str]:
    return list(load_tasks())


def find_task(name_or_dir: str | Path) -> Task:
    """A suite task by name, or a task directory of one's own (task.toml and reference.py, no
    oracle needed): what ``mpiforge gen`` and ``verify`` accept."""
    path = Path(name_or_dir)
    if (path / "task.toml").is_file():
        if not (path / "reference.py").is_file():
            raise ValueError(f"{path}: a task directory needs reference.py (generate and reference) beside task.toml")
        return _load(path, need_oracle=False)
    return get_task(str(name_or_dir))


def get_task(name: str) -> Task:
    """The task called ``name``; UnknownTaskError lists the known names otherwise."""
    tasks = load_tasks()
    if name not in tasks:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(tasks)}")
    return tasks[name]
