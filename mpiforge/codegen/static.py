"""Checks of a candidate program before it is compiled or run: cheap, and they name the fix.

    problems = static_problems(code, "c")    # [] when nothing is wrong

They catch what a model gets wrong most often without running anything (no main, no
MPI_Init/MPI_Finalize, ignoring the input file) and refuse calls a test program has no business
making (shells, processes, sockets); the sandbox would stop those too, but a repair prompt that
says why is more useful than a crash.
"""
from __future__ import annotations

import re

__all__ = ["static_problems"]

_C_REQUIRED = ((r"\bmain\s*\(", "there is no main() function"),
               (r"\bMPI_Init(_thread)?\s*\(", "MPI_Init is never called"),
               (r"\bMPI_Finalize\s*\(", "MPI_Finalize is never called"),
               (r"#\s*include\s*[<\"]mpi\.h[>\"]|#\s*include\s*\"mpf_io\.h\"", "mpi.h is not included"),
               (r"\bargv\s*\[\s*1\s*\]|\bmpf_read\s*\(", "the input file argv[1] is never read"))
_C_FORBIDDEN = (r"\b(system|popen|fork|vfork|execv|execvp|execl|execlp|socket|connect|dlopen)\s*\(",
                "calls {0}(), which a test program must not do")
_PY_REQUIRED = ((r"\bmpi4py\b", "mpi4py is never imported"),
                (r"\bsys\.argv\s*\[\s*1\s*\]", "the input file sys.argv[1] is never read"))
_PY_FORBIDDEN = (r"\b(subprocess|os\.system|os\.popen|os\.fork|socket|ctypes|shutil\.rmtree)\b",
                 "uses {0}, which a test program must not do")


def static_problems(code: str, lang: str) -> list[str]:
    """What is wrong with ``code`` (c, cpp or python) before running it, each with the fix implied."""
    if lang not in ("c", "cpp", "python"):
        raise ValueError(f"language {lang!r}: use c, cpp or python")
    if not code.strip():
        return ["the program is empty"]
    required, (forbidden, why) = (_PY_REQUIRED, _PY_FORBIDDEN) if lang == "python" else (_C_REQUIRED, _C_FORBIDDEN)
    bare = _without_comments(code, lang)
    problems = [message for pattern, message in required if not re.search(pattern, bare)]
    problems += sorted({why.format(m.group(1)) for m in re.finditer(forbidden, bare)})
    return problems


def _without_comments(code: str, lang: str) -> str:
    if lang == "python":
        return re.sub(r"#[^\n]*", "", code)
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", code, flags=re.DOTALL)
