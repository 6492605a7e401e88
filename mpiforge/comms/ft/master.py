"""The master: accepts peers, authenticates them, and runs the ``Coordinator`` over their connections.

One thread per connection reads (so a slow or hostile client stalls only itself); a message to
a peer goes out at once with a non-blocking send when nothing is queued for that peer, else (or
for what did not fit in its socket buffer) through that peer's writer thread, so no thread ever
blocks on a send while holding the state lock and most messages skip a thread hand-off; a
monitor thread drops peers silent for longer than ``heartbeat_timeout``. Every decision happens
in ``Coordinator`` under one lock. A frame that breaks the protocol, a failed authentication or
a closed socket ends that connection only; a member lost that way is reported to the others.

    master = Master(secret=b"...", port=0).start()     # binds 127.0.0.1 unless told otherwise
    print(master.address); ...; master.stop()
"""
from __future__ import annotations

import logging
import queue
import secrets
import socket
import threading
import time

from .auth import authenticate_server
from .coordinator import Coordinator, Outbox
from .errors import AuthError, ProtocolError
from .wire import MAX_CONTROL, Connection, encode_control, field

__all__ = ["Master"]

log = logging.getLogger(__name__)
_IDLE = 0.25  # how often a reader thread looks up from an idle connection
_MAX_QUEUE = 10_000  # outbound messages a peer may leave unread before it is dropped


class _Client:
    """One authenticated peer: its connection, outbound queue and last sign of life."""

    def __init__(self, conn: Connection, peer_id: str, name: str) -> None:
        self.conn, self.id, self.name = conn, peer_id, name
        self.last_seen = time.monotonic()
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.writer = threading.Thread(target=self._write, name=f"ft-master-send-{name}", daemon=True)
        self._lock = threading.Lock()
        self._queued = 0  # frames (or their tails) handed to the writer and not yet sent

    def send(self, msg: dict) -> None:
        """Send now if nothing is queued and the socket takes it without blocking; queue the rest."""
        frame = encode_control(msg)
        with self._lock:
            if not self._queued:
                try:
                    sent = self.conn.sock.send(frame, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    log.info("sending to %s failed: %s", self.name, exc)
                    self.conn.shutdown()  # the reader thread sees EOF and drops the peer
                    return
                if sent == len(frame):
                    return
                frame = frame[sent:]
            if self._queued > _MAX_QUEUE:
                log.warning("peer %s does not read its messages; dropping it", self.name)
                self.conn.shutdown()
                return
            self._queued += 1
            self.queue.put(frame)

    def _write(self) -> None:
        while (frame := self.queue.get()) is not None:
            try:
                self.conn.send_frame(frame)
            except OSError as exc:
                log.info("sending to %s failed: %s", self.name, exc)
                self.conn.shutdown()  # the reader thread sees EOF and drops the peer
                return
            with self._lock:
                self._queued -= 1


class Master:
    """The fault-tolerant all-reduce master (see the module docstring)."""

    def __init__(self, secret: bytes, host: str = "127.0.0.1", port: int = 0, heartbeat_timeout: float = 1.5,
                 io_timeout: float = 5.0, max_handshakes: int = 64) -> None:
        if heartbeat_timeout <= 0 or io_timeout <= 0:
            raise ValueError("heartbeat_timeout and io_timeout must be positive seconds")
        self.secret, self.host, self.port = secret, host, port
        self.heartbeat_timeout, self.io_timeout = heartbeat_timeout, io_timeout
        self.coordinator = Coordinator()
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._handshakes = threading.BoundedSemaphore(max_handshakes)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the master is not started: call start()")
        return self._listener.getsockname()[:2]

    def start(self) -> Master:
        """Bind, listen and start serving in background threads; returns self."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                                     "pick another --port (0 for any free one)") from None
        listener.listen(128)
        listener.settimeout(_IDLE)
        self._listener = listener
        for target, name in ((self._accept_loop, "ft-master-accept"), (self._monitor, "ft-master-monitor")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("ft master listening on %s:%d", *self.address)
        return self

    def serve_forever(self) -> None:
        """Block until ``stop()`` (or KeyboardInterrupt)."""
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, close every connection; idempotent."""
        self._stop.set()
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            client.conn.shutdown()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()

    def status(self) -> dict:
        """The coordinator's summary (epoch, ring, pending joiners, revision)."""
        with self._lock:
            return self.coordinator.status()

    # -- threads ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                continue
            if not self._handshakes.acquire(blocking=False):
                log.warning("too many connections authenticating; refusing %s", addr[0])
                sock.close()
                continue
            threading.Thread(target=self._serve, args=(sock,), name="ft-master-conn", daemon=True).start()

    def _monitor(self) -> None:
        period = min(0.1, self.heartbeat_timeout / 4)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                silent = [c for c in self._clients.values() if now - c.last_seen > self.heartbeat_timeout]
            for client in silent:
                self._drop(client, f"silent for {now - client.last_seen:.1f} s")

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock, timeout=self.io_timeout)
        client: _Client | None = None
        reason = "closed"
        try:
            try:
                client = self._admit(conn)
            finally:
                self._handshakes.release()
            while not self._stop.is_set():
                msg = conn.recv_control(idle=_IDLE)
                if client.id not in self._clients:
                    reason = "dropped"
                    break
                if msg is None:
                    continue
                client.last_seen = time.monotonic()
                if msg["t"] == "ping":
                    client.send({"t": "pong"})
                    continue
                with self._lock:
                    if client.id in self._clients:
                        self._dispatch(self.coordinator.handle(client.id, msg))
        except AuthError as exc:
            reason = f"authentication failed: {exc}"
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            if client is not None:
                self._drop(client, reason)
            else:
                log.info("connection from %s refused: %s", conn.label, reason)
            conn.close()

    def _admit(self, conn: Connection) -> _Client:
        timer = conn.shutdown_after(self.io_timeout)  # authentication and hello, all within io_timeout
        try:
            authenticate_server(conn, self.secret, "master")
            hello = conn.recv_control(idle=self.io_timeout)
        finally:
            timer.cancel()
        if hello is None:
            raise ProtocolError("no hello after authentication")
        if hello["t"] != "hello":
            raise ProtocolError(f"expected hello, got {hello['t'][:40]!r}")
        name = field(hello, "name", str)[:64]
        port = field(hello, "port", int)
        if not 0 < port < 65536:
            raise ProtocolError(f"bad data port {port}")
        host = field(hello, "host", str, "") or conn.sock.getpeername()[0]
        conn.max_control = MAX_CONTROL
        client = _Client(conn, secrets.token_hex(6), name or "peer")
        client.writer.start()
        client.send({"t": "welcome", "id": client.id, "heartbeat_timeout": self.heartbeat_timeout})
        with self._lock:
            self._clients[client.id] = client
            self._dispatch(self.coordinator.join(client.id, client.name, host[:255], port))
        return client

    def _drop(self, client: _Client, reason: str) -> None:
        with self._lock:
            if self._clients.pop(client.id, None) is None:
                return
            self._dispatch(self.coordinator.lost(client.id, reason))
        client.queue.put(None)
        client.conn.shutdown()

    def _dispatch(self, out: Outbox) -> None:
        for peer_id, msg in out:
            client = self._clients.get(peer_id)
            if client is not None:
                client.send(msg)
