"""Run untrusted commands (compilers, candidate MPI programs) with limits and a hard timeout.

Every command runs in its own session with CPU-time, address-space and file-size limits set
in the child before ``exec``; on the wall-clock timeout the whole process group (mpiexec and
every rank) is killed, so a deadlocked candidate never hangs the tool. As root, the command
also runs in an empty network namespace (``unshare --net`` with only loopback up); where that
is impossible the reason is logged once and the command runs with the host network.
"""
from __future__ import annotations

import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Limits", "RunResult", "find_compiler", "network_isolation", "run_sandboxed"]

log = logging.getLogger(__name__)

_TAIL = 4000  # characters of stdout/stderr kept in a result


@dataclass(frozen=True)
class Limits:
    """Per-process resource limits and the wall-clock timeout of one sandboxed command."""

    wall_seconds: float = 20.0
    cpu_seconds: int = 60
    memory_bytes: int = 4 << 30  # address space per process; Open MPI maps a lot of it
    file_bytes: int = 64 << 20  # largest file a process may write
    network: bool = False  # allow the host network (no empty namespace)


@dataclass
class RunResult:
    """What happened to one sandboxed command."""

    argv: list[str]
    returncode: int | None
    seconds: float
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""
    signal: str = ""  # name of the signal that ended the command, if any
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0

    def describe(self) -> str:
        """One line: why the command failed (or ``ok``)."""
        if self.timed_out:
            return f"no result after {self.seconds:.1f} s: killed (deadlock or endless loop)"
        if self.returncode == 0:
            return "ok"
        why = f"exit code {self.returncode}" + (f" ({self.signal})" if self.signal else "")
        limit = _limit_hint(self.signal, self.stderr)
        return why + (f": {limit}" if limit else "")


def _limit_hint(sig: str, stderr: str) -> str:
    if sig == "SIGXCPU" or "SIGXCPU" in stderr or "CPU time limit" in stderr:
        return "CPU-time limit exceeded"
    if sig == "SIGXFSZ" or "SIGXFSZ" in stderr or "File size limit" in stderr:
        return "file-size limit exceeded"
    if "ENOMEM" in stderr or "Cannot allocate memory" in stderr or "out of memory" in stderr.lower():
        return "memory limit exceeded"
    return ""


def _preexec(limits: Limits):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


@functools.lru_cache(maxsize=1)
def network_isolation() -> tuple[list[str], str]:
    """The command prefix that runs a command without network, and why it is empty if it is."""
    if os.geteuid() != 0:
        reason = "not root: candidates run with the host network"
    elif not (shutil.which("unshare") and shutil.which("ip")):
        reason = "`unshare` or `ip` not found: candidates run with the host network"
    else:
        prefix = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        try:
            probe = subprocess.run(prefix + ["true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"`unshare --net` failed ({exc}): candidates run with the host network"
        else:
            if probe.returncode == 0:
                return prefix, ""
            reason = (f"`unshare --net` refused ({probe.stderr.decode(errors='replace').strip()}): "
                      "candidates run with the host network")
    log.warning("no network isolation: %s", reason)
    return [], reason


def find_compiler(language: str) -> str:
    """mpicc (``c``) or mpicxx (``cxx``) of the MPI that mpiexec belongs to."""
    from ..launch import find_mpiexec

    name = {"c": "mpicc", "cxx": "mpicxx"}[language]
    beside = Path(find_mpiexec()).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to mpiexec or on PATH: install the Open MPI wheel")
    return found


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - _TAIL))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def run_sandboxed(argv: list[str], cwd: Path, limits: Limits = Limits(),
                  env: dict[str, str] | None = None) -> RunResult:
    """Run ``argv`` in ``cwd`` under ``limits``; never raises on the command's failure or hang."""
    prefix, _ = ([], "") if limits.network else network_isolation()
    cmd = prefix + list(argv)
    out_path, err_path = Path(cwd, ".sandbox.stdout"), Path(cwd, ".sandbox.stderr")
    # Open MPI's session files go under TMPDIR: inside the sandbox they leave with it, even when
    # a killed mpiexec cannot clean up (a stale one in /tmp breaks a later mpiexec given its PID)
    tmp = Path(cwd, ".tmp")
    tmp.mkdir(exist_ok=True)
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_preexec(limits),
                                env={**os.environ, "TMPDIR": str(tmp), **(env or {})})
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            log.info("timeout after %.1f s: killing process group %d", limits.wall_seconds, proc.pid)
        _kill_group(proc.pid)  # also reaps ranks left behind by a launcher that exited
        proc.wait()
    seconds = time.monotonic() - start
    code = proc.returncode
    sig = signal.Signals(-code).name if code is not None and code < 0 else ""
    if code is not None and code > 128 and code - 128 in signal.valid_signals():
        sig = signal.Signals(code - 128).name
    result = RunResult(list(argv), None if timed_out else code, seconds, timed_out,
                       _read_tail(out_path), _read_tail(err_path), sig)
    log.debug("%s -> %s in %.2f s", argv[0], result.describe(), seconds)
    return result


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
