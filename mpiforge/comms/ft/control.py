"""A peer's control connection to the master: authenticated, heartbeated, read by one thread.

``MasterLink.open()`` connects, authenticates (HMAC, context "master"), says hello (name, data
port) and returns the id the master assigned (given to ``on_welcome`` before any message). Then a reader thread hands every message to
``on_message`` and a heartbeat thread pings every ``heartbeat_interval``; when the master closes
the connection, breaks the protocol or stays silent past ``master_timeout``, ``on_lost(reason)``
is called once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .auth import authenticate_client
from .errors import FtError, MasterLost, ProtocolError
from .wire import MAX_CONTROL, Connection, field, open_connection

__all__ = ["MasterLink"]

log = logging.getLogger(__name__)


class MasterLink:
    """The control connection (see the module docstring)."""

    def __init__(self, address: tuple[str, int], secret: bytes, hello: dict, on_message: Callable[[dict], None],
                 on_lost: Callable[[str], None], on_welcome: Callable[[str], None] = lambda peer_id: None,
                 timeout: float = 5.0, heartbeat_interval: float = 0.2, master_timeout: float = 5.0) -> None:
        self.address, self.secret, self.hello = address, secret, hello
        self.on_message, self.on_lost, self.on_welcome = on_message, on_lost, on_welcome
        self.timeout, self.heartbeat_interval, self.master_timeout = timeout, heartbeat_interval, master_timeout
        self.peer_id = ""
        self.lost: str | None = None
        self._conn: Connection | None = None
        self._last_heard = time.monotonic()
        self._stop = threading.Event()
        self._lost_once = threading.Lock()

    def open(self) -> str:
        """Connect, authenticate and say hello; the peer id the master assigned."""
        try:
            conn = open_connection(self.address, self.timeout, label=f"master {self.address[0]}:{self.address[1]}")
        except OSError as exc:
            raise MasterLost(f"cannot reach the master at {self.address[0]}:{self.address[1]}: {exc}") from None
        try:
            authenticate_client(conn, self.secret, "master")
            conn.max_control = MAX_CONTROL
            conn.send_control({"t": "hello", **self.hello})
            welcome = conn.recv_control(idle=self.timeout)
            if welcome is None or welcome["t"] != "welcome":
                raise ProtocolError(f"expected welcome from the master, got {welcome and welcome['t'][:40]!r}")
            self.peer_id = field(welcome, "id", str)
            self.on_welcome(self.peer_id)
        except (FtError, OSError):
            conn.close()
            raise
        self._conn = conn
        self._last_heard = time.monotonic()
        for target, name in ((self._read, "ft-control-read"), (self._heartbeat, "ft-heartbeat")):
            threading.Thread(target=target, name=name, daemon=True).start()
        return self.peer_id

    def send(self, msg: dict) -> None:
        """Send one message; MasterLost if the connection is gone."""
        if self.lost is not None or self._conn is None:
            raise MasterLost(f"no connection to the master: {self.lost or 'not connected'}")
        try:
            self._conn.send_control(msg)
        except OSError as exc:
            self._lose(f"sending to the master failed: {exc}")
            raise MasterLost(f"no connection to the master: {self.lost}") from None

    def close(self) -> None:
        """Say goodbye (best effort) and stop both threads."""
        if self._conn is not None and self.lost is None:
            try:
                self._conn.send_control({"t": "leave"})
            except OSError:
                pass
        self._stop.set()
        self._lose("closed by this peer", notify=False)

    def _read(self) -> None:
        assert self._conn is not None
        conn = self._conn
        try:
            while not self._stop.is_set():
                msg = conn.recv_control(idle=0.25)
                if msg is None:
                    continue
                self._last_heard = time.monotonic()
                if msg["t"] != "pong":
                    self.on_message(msg)
            reason = "closed"
        except ProtocolError as exc:
            reason = f"protocol error from the master: {exc}"
        except OSError as exc:
            reason = f"connection to the master lost: {exc}"
        except FtError as exc:  # a handler found the message invalid
            reason = f"invalid message from the master: {exc}"
        except Exception as exc:  # a bug must not leave the peer waiting forever
            log.exception("control message handler failed")
            reason = f"internal error handling a master message: {exc!r}"
        self._lose(reason)
        conn.close()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            silent = time.monotonic() - self._last_heard
            if silent > self.master_timeout:
                self._lose(f"the master was silent for {silent:.1f} s")
                return
            try:
                assert self._conn is not None
                self._conn.send_control({"t": "ping"})
            except OSError as exc:
                self._lose(f"heartbeat to the master failed: {exc}")
                return

    def _lose(self, reason: str, notify: bool = True) -> None:
        with self._lost_once:
            if self.lost is not None:
                return
            self.lost = reason
        self._stop.set()
        if self._conn is not None:
            self._conn.shutdown()
        if notify:
            log.warning("%s", reason)
            self.on_lost(reason)
