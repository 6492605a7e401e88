"""Run a master and peer processes on this machine, kill them, and collect what they report.

For tests, benchmarks and soak runs of the fault-tolerant all-reduce. Each process gets its own
process group (so a kill takes its threads and children along); every peer is a
``python -m mpiforge.comms.ft.worker`` whose JSON-line events are collected with the time they
arrived. ``close()`` (or leaving the ``with`` block) kills everything that is still running.

    with Cluster() as cluster:
        cluster.start_master()
        a, b = cluster.spawn("a", "loop"), cluster.spawn("b", "loop")
        cluster.wait_for(lambda: len(a.events_of("round")) >= 3, 30)
        t_kill = cluster.kill(b)
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["Cluster", "Process"]


class Process:
    """One child process and the JSON events (dicts with ``"event"``) it printed, in order."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - open as long as the process runs
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
                                      start_new_session=True, text=True, bufsize=1)
        self.events: list[dict] = []
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, name=f"harness-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.strip()
            event = None
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    pass
            with self._cv:
                if isinstance(event, dict):
                    event.setdefault("arrived", time.monotonic())
                    self.events.append(event)
                else:
                    self.lines.append(line)
                self._cv.notify_all()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def events_of(self, kind: str) -> list[dict]:
        with self._cv:
            return [e for e in self.events if e.get("event") == kind]

    def wait_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """The first non-JSON output line satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive and not self._reader.is_alive()):
                    raise TimeoutError(f"{self.name} printed no such line; stderr:\n{self.stderr()}")
                self._cv.wait(min(left, 0.2))

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """The first event satisfying ``predicate`` (TimeoutError with the stderr tail otherwise)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive and not self._reader.is_alive()):
                    raise TimeoutError(f"{self.name}: no such event within {timeout} s (alive: {self.alive}); "
                                       f"stderr:\n{self.stderr()}")
                self._cv.wait(min(left, 0.2))

    def stderr(self, tail: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` to the process group; the monotonic time it was sent."""
        when = time.monotonic()
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        return when

    def close(self) -> None:
        if self.alive:
            self.kill()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(2)
        self._stderr.close()


class Cluster:
    """A master and workers on this machine (see the module docstring)."""

    def __init__(self, heartbeat_timeout: float = 2.0, io_timeout: float = 5.0,
                 env: dict[str, str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mpiforge-ft-")
        self.dir = Path(self._tmp.name)
        self.secret = secrets.token_hex(16)
        self.secret_file = self.dir / "secret"
        self.secret_file.write_text(self.secret)
        self.heartbeat_timeout, self.io_timeout = heartbeat_timeout, io_timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.master: Process | None = None
        self.address: tuple[str, int] | None = None
        self.processes: list[Process] = []

    def __enter__(self) -> Cluster:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_master(self, timeout: float = 20.0) -> tuple[str, int]:
        argv = [sys.executable, "-m", "mpiforge", "ft-master", "--host", "127.0.0.1", "--port", "0",
                "--secret-file", str(self.secret_file), "--heartbeat-timeout", str(self.heartbeat_timeout),
                "--io-timeout", str(self.io_timeout)]
        self.master = self.start("master", argv)
        line = self.master.wait_line(lambda s: s.startswith("ft-master listening on "), timeout)
        host, _, port = line.rsplit(" ", 1)[1].rpartition(":")
        self.address = (host, int(port))
        return self.address

    def spawn(self, name: str, mode: str, *args: str, options: Sequence[str] = ()) -> Process:
        """A worker (``mpiforge.comms.ft.worker``) in ``mode`` joined to this cluster's master;
        ``options`` go before the mode (``--lanes``, ``--segment-bytes``, ...)."""
        if self.address is None:
            raise RuntimeError("start_master() first")
        argv = [sys.executable, "-m", "mpiforge.comms.ft.worker", "--master", f"{self.address[0]}:{self.address[1]}",
                "--secret-file", str(self.secret_file), "--name", name, *options, mode, *args]
        return self.start(name, argv)

    def start(self, name: str, argv: list[str]) -> Process:
        """Any command as a managed process (its JSON lines collected, killed on close)."""
        process = Process(name, argv, self.env, self.dir)
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process: Process, sig: int = signal.SIGKILL) -> float:
        return process.kill(sig)

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        for process in self.processes:
            process.close()
        self._tmp.cleanup()
