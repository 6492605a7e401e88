"""The wire protocol: versioned, length-checked frames over TCP, every socket operation bounded in time.

Every frame starts with a 12-byte header, network byte order::

    magic b"MFFT" | version u8 | type u8 | flags u16 (must be 0) | length u32 (bytes that follow)

``CONTROL`` frames carry one JSON object with a string field ``"t"`` (its message type).
``DATA`` frames carry a 24-byte data header ``epoch u64 | op_id u64 | step u32 | segment u32`` and
then raw bytes, received straight into their destination (``recv_into``, no copy) and sent from
numpy memory with ``sendmsg``. A frame whose magic, version, type, flags or length is wrong, or
that is larger than the connection allows, raises ``ProtocolError``; the owner of the connection
then closes that connection and nothing else.

    conn = Connection(sock, timeout=10)
    conn.send_control({"t": "ping"})
    msg = conn.recv_control()                # ProtocolError / OSError: close this connection
"""
from __future__ import annotations

import json
import select
import socket
import struct
import threading
from typing import Any

from .errors import ProtocolError

__all__ = ["CONTROL", "DATA", "DATA_HEADER", "HEADER", "MAGIC", "VERSION", "Connection", "field", "open_connection"]

MAGIC = b"MFFT"
VERSION = 1
CONTROL, DATA = 1, 2
HEADER = struct.Struct("!4sBBHI")
DATA_HEADER = struct.Struct("!QQII")
MAX_CONTROL = 1 << 20  # a control frame of an authenticated connection
MAX_PREAUTH = 4096  # any frame before authentication
MAX_DATA = 64 << 20  # a data frame: one segment
_MISSING = object()


def field(msg: dict, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """``msg[key]`` checked to be a ``kind`` (bool is not an int here); ProtocolError otherwise."""
    if key not in msg:
        if default is _MISSING:
            raise ProtocolError(f"{msg.get('t', '?')!r} message lacks field {key!r}")
        return default
    value = msg[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise ProtocolError(f"field {key!r} of {msg.get('t', '?')!r} must be {'/'.join(k.__name__ for k in kinds)}, "
                            f"got {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value < 1 << 63:
        raise ProtocolError(f"field {key!r} of {msg.get('t', '?')!r} is out of range: {value}")
    return value


def encode_control(msg: dict) -> bytes:
    """The bytes of a control frame carrying ``msg``."""
    body = json.dumps(msg, separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, VERSION, CONTROL, 0, len(body)) + body


def decode_control(body: bytes | bytearray | memoryview) -> dict:
    """The JSON object of a control frame body; ProtocolError unless it is an object with a string "t"."""
    try:
        msg = json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(f"control frame is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("control frame must be a JSON object with a string field 't'")
    return msg


class Connection:
    """One framed TCP connection. Sends are serialised by a lock; one thread at a time receives.

    ``timeout`` bounds every blocking socket call (a peer that stalls mid-frame is an error);
    ``read_header(idle=...)`` waits for the next frame without that bound and returns None when
    nothing arrived, so idle connections are not errors. The socket stays in blocking mode with
    the kernel's SO_RCVTIMEO / SO_SNDTIMEO as the bound: a whole segment then moves in one
    ``recv_into(MSG_WAITALL)`` or ``sendmsg`` call instead of many (each of which takes the GIL).
    """

    def __init__(self, sock: socket.socket, timeout: float = 10.0, max_control: int = MAX_PREAUTH,
                 max_data: int = 0, label: str = "") -> None:
        self.sock = sock
        self.timeout = timeout
        self.max_control, self.max_data = max_control, max_data
        self.label = label or _describe(sock)
        self.closed = False
        self._send_lock = threading.Lock()
        sock.settimeout(None)
        bound = struct.pack("ll", int(timeout), int(timeout % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bound)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, bound)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __repr__(self) -> str:
        return f"Connection({self.label})"

    # -- sending ------------------------------------------------------------------------------

    def send_control(self, msg: dict) -> None:
        """Send one control frame (whole, or OSError)."""
        frame = encode_control(msg)
        with self._send_lock:
            self._sendmsg_all([memoryview(frame)])

    def send_frame(self, frame: bytes | bytearray | memoryview) -> None:
        """Send bytes that are (the rest of) an encoded frame, whole or OSError."""
        with self._send_lock:
            self._sendmsg_all([memoryview(frame)])

    def send_data(self, epoch: int, op_id: int, step: int, segment: int, payload: memoryview) -> int:
        """Send one data frame whose body is ``payload`` (any contiguous buffer, sent without a copy)."""
        payload = memoryview(payload).cast("B")
        head = HEADER.pack(MAGIC, VERSION, DATA, 0, DATA_HEADER.size + payload.nbytes) + \
            DATA_HEADER.pack(epoch, op_id, step, segment)
        with self._send_lock:
            self._sendmsg_all([memoryview(head), payload])
        return len(head) + payload.nbytes

    def _sendmsg_all(self, views: list[memoryview]) -> None:
        while views:
            try:
                sent = self.sock.sendmsg(views)
            except BlockingIOError:  # SO_SNDTIMEO expired
                raise TimeoutError(f"{self.label}: could not send for {self.timeout:.0f} s") from None
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    # -- receiving ----------------------------------------------------------------------------

    def wait_readable(self, idle: float) -> bool:
        """Whether bytes (or EOF) arrived within ``idle`` seconds; does not touch the socket timeout."""
        if self.closed:
            raise ConnectionResetError(f"{self.label}: connection closed")
        poller = select.poll()  # not select.select: file descriptors above 1023 are fine
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(max(0, int(idle * 1000))))

    def read_header(self, idle: float | None = None) -> tuple[int, int] | None:
        """(type, length) of the next frame; None if ``idle`` seconds passed without a byte."""
        if idle is not None and not self.wait_readable(idle):
            return None
        return self._check_header(self.recv_exact(HEADER.size))

    def read_data_header(self) -> tuple[int, int, int, int, int] | None:
        """(epoch, op_id, step, segment, payload bytes) of the next frame, which must be a data
        frame, read with a single receive; None if nothing arrived within the timeout."""
        raw = bytearray(HEADER.size + DATA_HEADER.size)
        if not self._fill(memoryview(raw), idle_ok=True):
            return None
        kind, length = self._check_header(raw)
        if kind != DATA:
            raise ProtocolError(f"{self.label}: control frame where data frames travel")
        epoch, op_id, step, segment = DATA_HEADER.unpack_from(raw, HEADER.size)
        return epoch, op_id, step, segment, length - DATA_HEADER.size

    def _check_header(self, raw: bytes | bytearray) -> tuple[int, int]:
        magic, version, kind, flags, length = HEADER.unpack_from(raw)
        if magic != MAGIC:
            raise ProtocolError(f"{self.label}: bad magic {magic!r}, not an mpiforge ft connection")
        if version != VERSION:
            raise ProtocolError(f"{self.label}: protocol version {version}, this side speaks {VERSION}: "
                                "run the same mpiforge version everywhere")
        if flags:
            raise ProtocolError(f"{self.label}: unknown frame flags {flags:#x}")
        if kind == CONTROL:
            if length > self.max_control:
                raise ProtocolError(f"{self.label}: control frame of {length} bytes exceeds {self.max_control}")
        elif kind == DATA:
            if not self.max_data:
                raise ProtocolError(f"{self.label}: data frame on a control-only connection")
            if not DATA_HEADER.size <= length <= self.max_data + DATA_HEADER.size:
                raise ProtocolError(f"{self.label}: data frame of {length} bytes outside "
                                    f"[{DATA_HEADER.size}, {self.max_data + DATA_HEADER.size}]")
        else:
            raise ProtocolError(f"{self.label}: unknown frame type {kind}")
        return kind, length

    def recv_control(self, idle: float | None = None) -> dict | None:
        """The next frame, which must be a control frame; None if ``idle`` elapsed first."""
        header = self.read_header(idle)
        if header is None:
            return None
        kind, length = header
        if kind != CONTROL:
            raise ProtocolError(f"{self.label}: expected a control frame, got a data frame")
        return decode_control(self.recv_exact(length))

    def recv_data_header(self, length: int) -> tuple[int, int, int, int, int]:
        """(epoch, op_id, step, segment, payload bytes) of a data frame whose header said ``length``."""
        epoch, op_id, step, segment = DATA_HEADER.unpack(self.recv_exact(DATA_HEADER.size))
        return epoch, op_id, step, segment, length - DATA_HEADER.size

    def recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        self.recv_into(memoryview(buf))
        return buf

    def recv_into(self, view: memoryview) -> None:
        """Fill ``view`` (a writable contiguous buffer) from the socket, no copy."""
        self._fill(memoryview(view).cast("B"), idle_ok=False)

    def _fill(self, view: memoryview, idle_ok: bool) -> bool:
        """Fill ``view``; False if ``idle_ok`` and the timeout passed before its first byte."""
        got, n = 0, view.nbytes
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got, socket.MSG_WAITALL)
            except BlockingIOError:  # SO_RCVTIMEO expired
                if idle_ok and not got:
                    return False
                raise TimeoutError(f"{self.label}: stalled for {self.timeout:.0f} s mid-frame") from None
            if k == 0:
                raise ConnectionResetError(f"{self.label}: closed by the other side")
            got += k
        return True

    def discard(self, n: int) -> None:
        """Read and drop ``n`` bytes."""
        scratch = memoryview(bytearray(min(n, 1 << 16)))
        while n:
            k = min(n, scratch.nbytes)
            self.recv_into(scratch[:k])
            n -= k

    def shutdown(self) -> None:
        """Wake every thread blocked on this connection (they see EOF); safe from any thread.

        Only the thread that owns the connection calls ``close()``: closing a socket another
        thread is blocked on could hand its file descriptor number to a new connection.
        """
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def shutdown_after(self, seconds: float) -> threading.Timer:
        """Shut the connection down unless the returned timer is cancelled within ``seconds``
        (bounds a whole exchange, e.g. authentication, not just each socket call)."""
        timer = threading.Timer(seconds, self.shutdown)
        timer.daemon = True
        timer.start()
        return timer

    def close(self) -> None:
        """Shut the socket down and close it; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.shutdown()
        self.sock.close()


def open_connection(address: tuple[str, int], timeout: float, **kwargs: Any) -> Connection:
    """A Connection to ``address`` (connect bounded by ``timeout``)."""
    sock = socket.create_connection(address, timeout=timeout)
    return Connection(sock, timeout=timeout, **kwargs)


def _describe(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "unconnected"
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) and len(name) >= 2 else str(name or "local socket")
