"""What a fault-tolerant collective hands back: ``ReduceInfo``, ``SyncInfo``, and ``ReduceHandle``
(an operation running in its own thread, which also speaks the request protocol that
``mpiforge.comms.collective.Handle`` expects: ``Test()`` and ``Wait()``)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ReduceHandle", "ReduceInfo", "SyncInfo"]


@dataclass(frozen=True)
class ReduceInfo:
    """What a collective did: who took part, how many bytes moved, how long it took."""

    op_id: int
    epoch: int
    world_size: int
    rank: int
    peers: tuple[str, ...]
    bytes_sent: int
    bytes_received: int
    seconds: float
    quantize: str | None = None


@dataclass(frozen=True)
class SyncInfo:
    """Result of ``sync_shared_state``: the agreed revision and what this peer had to fetch."""

    revision: int
    fetched: tuple[str, ...]
    bytes_received: int
    seconds: float


class ReduceHandle:
    """A collective running in its own thread: ``wait()`` returns (result, info) or raises its error."""

    def __init__(self, run: Callable[[], tuple[np.ndarray, ReduceInfo]], name: str) -> None:
        self._value: tuple[np.ndarray, ReduceInfo] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._target, args=(run,), name=name, daemon=True)
        self._thread.start()

    def _target(self, run: Callable[[], tuple[np.ndarray, ReduceInfo]]) -> None:
        try:
            self._value = run()
        except BaseException as exc:  # noqa: BLE001 - handed to wait()
            self._error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> tuple[np.ndarray, ReduceInfo]:
        if not self._done.wait(timeout):
            raise TimeoutError(f"collective still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    # the request protocol of mpiforge.comms.collective.Handle
    def Test(self) -> bool:
        return self.done()

    def Wait(self) -> None:
        self.wait()
