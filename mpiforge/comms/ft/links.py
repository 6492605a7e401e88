"""The data plane: a peer's listening socket, and per epoch its lanes to its ring neighbours.

``DataPlane`` listens for authenticated connections from other peers (HMAC, context "peer"); a
connection then says what it is: a ``lane`` of the ring (epoch, sender, lane index), or a
request for a registered service (shared-state ``fetch``, bandwidth ``bench``). A connection that
fails authentication or breaks the protocol is closed; the listener keeps serving.

``DataPlane.establish`` builds the ``Links`` of one epoch: ``lanes`` TCP connections to the next
peer of the ring (one sender thread each) and as many from the previous one (one reader thread
each). Collectives register with the links under their op id; a reader thread takes each data
frame's header (epoch, op id, step, segment), asks the op where those bytes go, checks the size,
receives them straight into that memory (in pieces of ``PIECE_BYTES`` when the op wants to work
on each piece as it comes in) and lets the op handle them (combine, pass on) in the same thread.
Any failure (a closed socket, a frame for another epoch or op, a wrong size) fails every
registered op and closes the links: an epoch's links are used until the first failure and never
again, so no byte of an aborted op reaches a later one.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .auth import authenticate_client, authenticate_server
from .errors import AuthError, FtError, ProtocolError, TopologyError
from .wire import (
    DATA_HEADER,
    HEADER,
    MAX_CONTROL,
    MAX_DATA,
    Connection,
    field,
    open_connection,
)

__all__ = ["DataPlane", "Links", "Superseded"]

log = logging.getLogger(__name__)
_IDLE = 0.25
_MAX_PARKED = 256
PIECE_BYTES = 256 << 10  # received and handed to the op at a time (within a core's L2 cache; a multiple of 16)


class Superseded(Exception):
    """A newer topology arrived while links for an older one were being built."""


class LinkOp(Protocol):
    """What a collective offers the links (implemented by ``ring.RingOp``)."""

    op_id: int

    def target(self, step: int, segment: int) -> tuple[memoryview, Callable[[int, int], None] | None] | None: ...
    def arrived(self, step: int, segment: int, nbytes: int) -> None: ...
    def sent(self, nbytes: int) -> None: ...
    def fail(self, reason: str) -> None: ...


class Links:
    """The lanes of one epoch (see the module docstring)."""

    def __init__(self, epoch: int, outgoing: list[Connection], incoming: list[Connection], stall_timeout: float,
                 neighbours: tuple[str, str] = ("", "")) -> None:
        self.epoch = epoch
        self.lanes = len(outgoing)
        self.stall_timeout = stall_timeout
        self.next_name, self.prev_name = neighbours
        self.error: str | None = None
        self._ops: dict[int, LinkOp] = {}
        self._cv = threading.Condition()
        self._out, self._in = outgoing, incoming
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in outgoing]
        self._threads = [threading.Thread(target=self._send_loop, args=(i,), name=f"ft-send-{epoch}.{i}", daemon=True)
                         for i in range(len(outgoing))]
        self._threads += [threading.Thread(target=self._recv_loop, args=(i,), name=f"ft-recv-{epoch}.{i}", daemon=True)
                          for i in range(len(incoming))]
        for thread in self._threads:
            thread.start()

    # -- used by collectives ------------------------------------------------------------------

    def register(self, op: LinkOp) -> None:
        with self._cv:
            if self.error is not None:
                raise ConnectionError(self.error)
            self._ops[op.op_id] = op
            self._cv.notify_all()

    def unregister(self, op: LinkOp) -> None:
        with self._cv:
            self._ops.pop(op.op_id, None)

    def send(self, op: LinkOp, lane: int, step: int, segment: int, view: memoryview) -> None:
        """Queue one segment on ``lane`` (mod the lane count); ``op.sent`` is called once it is out."""
        if self.error is not None:
            raise ConnectionError(self.error)
        self._queues[lane % self.lanes].put((op, step, segment, view))

    def fail(self, reason: str) -> None:
        """Fail every registered op and shut every lane down (safe from any thread)."""
        with self._cv:
            if self.error is not None:
                return
            self.error = reason
            ops = list(self._ops.values())
            self._cv.notify_all()
        for op in ops:
            op.fail(reason)
        for conn in self._out + self._in:
            conn.shutdown()
        for q in self._queues:
            q.put(None)

    def close(self, reason: str = "links closed", join: float = 2.0) -> None:
        """``fail`` and wait (up to ``join`` seconds) until no lane thread touches any buffer."""
        self.fail(reason)
        me = threading.current_thread()
        deadline = time.monotonic() + join
        for thread in self._threads:
            if thread is not me:
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- lane threads -------------------------------------------------------------------------

    def _send_loop(self, lane: int) -> None:
        conn, q = self._out[lane], self._queues[lane]
        try:
            while (item := q.get()) is not None:
                op, step, segment, view = item
                if self.error is not None:
                    break
                op.sent(conn.send_data(self.epoch, op.op_id, step, segment, view))
        except OSError as exc:
            self.fail(f"sending to {self.next_name} failed: {exc}")
        finally:
            conn.close()

    def _recv_loop(self, lane: int) -> None:
        conn = self._in[lane]
        try:
            while self.error is None:
                header = conn.read_data_header()
                if header is None:
                    continue  # idle between collectives
                epoch, op_id, step, segment, nbytes = header
                if epoch != self.epoch:
                    raise ProtocolError(f"data of epoch {epoch} on a lane of epoch {self.epoch}")
                op = self._wait_op(op_id)
                found = op.target(step, segment)
                if found is None or found[0].nbytes != nbytes:
                    raise ProtocolError(f"collective {op_id} expects no {nbytes}-byte segment {segment} at step {step}")
                view, piece = found
                if piece is None:
                    conn.recv_into(view)
                else:  # let the op work on each piece while it is still in the cache
                    for lo in range(0, nbytes, PIECE_BYTES):
                        hi = min(lo + PIECE_BYTES, nbytes)
                        conn.recv_into(view[lo:hi])
                        piece(lo, hi)
                op.arrived(step, segment, HEADER.size + DATA_HEADER.size + nbytes)
        except (OSError, ProtocolError) as exc:
            self.fail(f"link from {self.prev_name} failed: {exc}")
        finally:
            conn.close()

    def _wait_op(self, op_id: int) -> LinkOp:
        """The op registered as ``op_id``; its ``go`` may reach this peer a moment after its data."""
        deadline = time.monotonic() + self.stall_timeout
        with self._cv:
            while op_id not in self._ops:
                if self.error is not None:
                    raise ConnectionResetError(self.error)
                if not self._cv.wait(deadline - time.monotonic()):
                    raise ProtocolError(f"data for collective {op_id}, which this peer never started")
            return self._ops[op_id]


class DataPlane:
    """This peer's listener, its services and its current ``Links`` (see the module docstring)."""

    def __init__(self, secret: bytes, host: str = "127.0.0.1", lanes: int = 2, timeout: float = 10.0,
                 stall_timeout: float = 30.0, max_segment: int = MAX_DATA, max_handshakes: int = 32) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, got {lanes}")
        self.secret, self.lanes, self.timeout = secret, lanes, timeout
        self.stall_timeout, self.max_segment = stall_timeout, max_segment
        self.me = ""  # this peer's id, once the master assigned it
        self.services: dict[str, Callable[[Connection, dict], None]] = {}
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.settimeout(_IDLE)
        self.host, self.port = self._listener.getsockname()[:2]
        self._handshakes = threading.BoundedSemaphore(max_handshakes)
        self._parked: dict[tuple[int, str, int], Connection] = {}
        self._min_epoch = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        threading.Thread(target=self._accept_loop, name="ft-data-accept", daemon=True).start()

    def connect(self, entry: dict, hello: dict) -> Connection:
        """An authenticated connection to another peer's listener, after ``hello`` was sent."""
        conn = open_connection((entry["host"], entry["port"]), self.timeout, max_data=self.max_segment,
                               label=f"peer {entry.get('name', '?')}")
        try:
            authenticate_client(conn, self.secret, "peer")
            conn.max_control = MAX_CONTROL
            conn.send_control(hello)
            return conn
        except BaseException:
            conn.close()
            raise

    def establish(self, epoch: int, ring: list[dict], rank: int, deadline: float,
                  superseded: Callable[[], bool]) -> Links:
        """The links of ``epoch`` (``ring[rank]`` is this peer); Superseded, TopologyError or MasterLost."""
        with self._cv:
            self._min_epoch = epoch
            for key in [k for k in self._parked if k[0] < epoch]:
                self._parked.pop(key).close()
        n = len(ring)
        if n == 1:
            return Links(epoch, [], [], self.stall_timeout)
        nxt, prev = ring[(rank + 1) % n], ring[(rank - 1) % n]
        outgoing: list[Connection] = []
        try:
            for lane in range(self.lanes):
                outgoing.append(self._connect_lane(epoch, nxt, lane, deadline, superseded))
            incoming = self._await_lanes(epoch, prev, deadline, superseded)
        except BaseException:
            for conn in outgoing:
                conn.close()
            raise
        return Links(epoch, outgoing, incoming, self.stall_timeout, (nxt["name"], prev["name"]))

    def _connect_lane(self, epoch: int, nxt: dict, lane: int, deadline: float, superseded: Callable[[], bool]) -> Connection:
        hello = {"t": "lane", "epoch": epoch, "from": self.me, "to": nxt["id"], "lane": lane}
        while True:
            try:
                conn = self.connect(nxt, hello)
                try:
                    reply = conn.recv_control(idle=self.timeout)
                    if reply is None or reply["t"] != "lane_ok":
                        raise ProtocolError(f"{nxt['name']} refused lane {lane}: {reply}")
                except BaseException:
                    conn.close()
                    raise
                return conn
            except AuthError as exc:
                raise TopologyError(f"ring neighbour {nxt['name']} does not share our secret: {exc}") from None
            except (OSError, ProtocolError) as exc:
                self._retry_or_raise(f"cannot open lane {lane} to {nxt['name']} at {nxt['host']}:{nxt['port']}: {exc}",
                                     deadline, superseded)

    def _await_lanes(self, epoch: int, prev: dict, deadline: float, superseded: Callable[[], bool]) -> list[Connection]:
        keys = [(epoch, prev["id"], lane) for lane in range(self.lanes)]
        with self._cv:
            while not all(k in self._parked for k in keys):
                self._cv.wait(0.05)
                if superseded():
                    raise Superseded()
                if time.monotonic() > deadline:
                    raise TopologyError(f"ring neighbour {prev['name']} did not connect its lanes in time")
            return [self._parked.pop(k) for k in keys]

    @staticmethod
    def _retry_or_raise(reason: str, deadline: float, superseded: Callable[[], bool]) -> None:
        if superseded():
            raise Superseded()
        if time.monotonic() > deadline:
            raise TopologyError(reason)
        log.debug("%s; retrying", reason)
        time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._cv:
            for conn in self._parked.values():
                conn.close()
            self._parked.clear()

    # -- accepting ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            if not self._handshakes.acquire(blocking=False):
                sock.close()
                continue
            threading.Thread(target=self._handshake, args=(sock,), name="ft-data-handshake", daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        conn = Connection(sock, timeout=self.timeout)
        keep = False
        try:
            timer = conn.shutdown_after(self.timeout)  # authentication and request, all within the timeout
            try:
                authenticate_server(conn, self.secret, "peer")
                conn.max_control = MAX_CONTROL
                hello = conn.recv_control(idle=self.timeout)
            finally:
                timer.cancel()
            if hello is None:
                raise ProtocolError("no hello after authentication")
            if hello["t"] == "lane":
                keep = self._park(conn, hello)
            elif hello["t"] in self.services:
                conn.max_data = self.max_segment
                self.services[hello["t"]](conn, hello)
            else:
                raise ProtocolError(f"unknown request {hello['t'][:40]!r}")
        except (FtError, OSError) as exc:
            log.info("peer connection from %s closed: %s", conn.label, exc)
        finally:
            self._handshakes.release()
            if not keep:
                conn.close()

    def _park(self, conn: Connection, hello: dict) -> bool:
        epoch, sender, lane = field(hello, "epoch", int), field(hello, "from", str), field(hello, "lane", int)
        if field(hello, "to", str) != self.me or lane >= self.lanes:
            raise ProtocolError(f"lane {lane} addressed to {hello['to'][:20]!r}, this peer is {self.me!r} "
                                f"with {self.lanes} lanes")
        with self._cv:
            if epoch < self._min_epoch or len(self._parked) >= _MAX_PARKED:
                raise ProtocolError(f"lane for stale epoch {epoch} (now {self._min_epoch}) or too many lanes")
        conn.max_data = self.max_segment
        conn.send_control({"t": "lane_ok"})
        with self._cv:
            old = self._parked.pop((epoch, sender, lane), None)
            self._parked[(epoch, sender, lane)] = conn
            self._cv.notify_all()
        if old is not None:
            old.close()
        return True
