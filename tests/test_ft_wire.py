"""Fault-tolerant all-reduce, in process: frames, authentication, the master's state machine, ring order."""
from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpiforge.comms.ft.auth import authenticate_client, authenticate_server, load_secret
from mpiforge.comms.ft.coordinator import Coordinator, describe_op
from mpiforge.comms.ft.errors import AuthError, ProtocolError
from mpiforge.comms.ft.topology import best_ring, ring_score
from mpiforge.comms.ft.wire import (
    CONTROL,
    DATA,
    HEADER,
    MAGIC,
    VERSION,
    Connection,
    encode_control,
    field,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    ca, cb = Connection(a, timeout=2, max_control=1 << 16, max_data=1 << 20), \
        Connection(b, timeout=2, max_control=1 << 16, max_data=1 << 20)
    yield ca, cb
    ca.close(), cb.close()


def _frame(kind: int = CONTROL, body: bytes = b'{"t":"x"}', magic: bytes = MAGIC, version: int = VERSION,
           flags: int = 0, length: int | None = None) -> bytes:
    return HEADER.pack(magic, version, kind, flags, len(body) if length is None else length) + body


# -- frames ---------------------------------------------------------------------------------------

def test_control_and_data_roundtrip(pair) -> None:
    a, b = pair
    a.send_control({"t": "hello", "n": 3, "s": "é"})
    assert b.recv_control() == {"t": "hello", "n": 3, "s": "é"}
    payload = np.arange(1000, dtype=np.float32)
    sent = a.send_data(7, 9, 2, 5, memoryview(payload))
    kind, length = b.read_header()
    assert kind == DATA and sent == HEADER.size + length
    epoch, op_id, step, seg, nbytes = b.recv_data_header(length)
    assert (epoch, op_id, step, seg, nbytes) == (7, 9, 2, 5, payload.nbytes)
    out = np.empty_like(payload)
    b.recv_into(memoryview(out))
    assert np.array_equal(out, payload)
    assert b.read_header(idle=0.05) is None  # nothing more: idle, not an error


@pytest.mark.parametrize("raw, match", [
    (_frame(magic=b"HTTP"), "bad magic"),
    (_frame(version=VERSION + 1), "protocol version"),
    (_frame(flags=1), "flags"),
    (_frame(kind=9), "unknown frame type"),
    (_frame(length=(1 << 16) + 1), "exceeds"),
    (_frame(kind=DATA, body=b"", length=3), "outside"),
    (_frame(kind=DATA, length=(1 << 20) + 100), "outside"),
    (_frame(body=b"[1, 2]"), "JSON object"),
    (_frame(body=b'{"t": 5}'), "JSON object"),
    (_frame(body=b"\xff\xfe{"), "not valid JSON"),
    (_frame(body=b"[" * 3000 + b"]" * 3000), "not valid JSON"),
])
def test_malformed_frames_raise_protocol_error(pair, raw: bytes, match: str) -> None:
    a, b = pair
    a.sock.sendall(raw)
    with pytest.raises(ProtocolError, match=match):
        b.recv_control()


class _CloggingSocket:
    """Takes ``room`` bytes from non-blocking sends (then would block), everything from the
    writer's blocking ``sendmsg``; keeps the byte stream a peer would read."""

    def __init__(self, room: int) -> None:
        self.room, self.stream, self.lock = room, bytearray(), threading.Lock()

    def send(self, data: bytes, flags: int = 0) -> int:
        assert flags & socket.MSG_DONTWAIT
        with self.lock:
            if not self.room:
                raise BlockingIOError
            taken = min(self.room, len(data), 97)  # odd sizes: frames split mid-header and mid-body
            self.room -= taken
            self.stream += data[:taken]
            return taken

    def sendmsg(self, views: list) -> int:
        with self.lock:
            for view in views:
                self.stream += bytes(view)
            self.room += 500  # the peer read a little
            return sum(memoryview(v).nbytes for v in views)


def test_master_sends_whole_frames_in_order_when_a_peer_reads_late(pair) -> None:
    """The master sends directly while a peer keeps up and queues what does not fit (whole frames
    or their tails) for the peer's writer thread: the peer still reads every message, whole and
    in order."""
    from mpiforge.comms.ft.master import _Client

    a, _ = pair
    real, clogged = a.sock, _CloggingSocket(room=1000)
    a.sock = clogged
    client = _Client(a, "id", "late-reader")
    client.writer.start()
    count = 2000
    try:
        for i in range(count):
            client.send({"t": "n", "i": i, "pad": "x" * (i % 300)})
        client.queue.put(None)
        client.writer.join(5)
        assert not client.writer.is_alive()
    finally:
        a.sock = real
    reader_end, writer_end = socket.socketpair()
    reader = Connection(reader_end, timeout=2, max_control=1 << 16)
    feeder = threading.Thread(target=writer_end.sendall, args=(bytes(clogged.stream),))
    feeder.start()
    got = [reader.recv_control(idle=2) for _ in range(count)]
    feeder.join(5)
    writer_end.close()
    reader.close()
    assert [m["i"] for m in got] == list(range(count))
    assert all(m["pad"] == "x" * (m["i"] % 300) for m in got)


def test_data_frame_on_control_only_connection() -> None:
    a, b = socket.socketpair()
    conn = Connection(b, timeout=1)
    a.sendall(_frame(kind=DATA, body=b"\0" * 30))
    with pytest.raises(ProtocolError, match="control-only"):
        conn.recv_control()
    conn.close(), a.close()


def test_truncated_frame_and_stall(pair) -> None:
    a, b = pair
    a.sock.sendall(_frame(body=b'{"t":"x"}', length=50))
    with pytest.raises(TimeoutError, match="stalled"):
        Connection(b.sock, timeout=0.3).recv_control()
    a.sock.close()
    with pytest.raises(ConnectionResetError):
        b.recv_control()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_reader(raw: bytes) -> None:
    a, b = socket.socketpair()
    conn = Connection(b, timeout=0.2, max_control=256, max_data=256)
    a.sendall(raw)
    a.shutdown(socket.SHUT_WR)
    try:
        while True:
            header = conn.read_header(idle=0.2)
            if header is None:
                break
            kind, length = header
            conn.discard(length) if kind == DATA else conn.recv_exact(length)
    except (ProtocolError, OSError):
        pass
    finally:
        conn.close(), a.close()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 11 + 9))
def test_mutated_valid_frames_never_crash_the_reader(noise: bytes, at: int) -> None:
    raw = bytearray(encode_control({"t": "op", "tag": 1, "count": 5}))
    for i, byte in enumerate(noise):
        raw[(at + i) % len(raw)] ^= byte
    a, b = socket.socketpair()
    conn = Connection(b, timeout=0.2, max_control=1024)
    a.sendall(raw)
    a.shutdown(socket.SHUT_WR)
    try:
        msg = conn.recv_control(idle=0.2)
        assert msg is None or isinstance(msg["t"], str)
    except (ProtocolError, OSError):
        pass
    finally:
        conn.close(), a.close()


def test_field_checks_types_and_ranges() -> None:
    msg = {"t": "x", "n": 3, "b": True, "neg": -1, "s": "a"}
    assert field(msg, "n", int) == 3 and field(msg, "s", str) == "a" and field(msg, "missing", int, 0) == 0
    for key, kind in (("b", int), ("neg", int), ("s", int), ("missing", str)):
        with pytest.raises(ProtocolError):
            field(msg, key, kind)


# -- authentication -------------------------------------------------------------------------------

def _auth(client_secret: bytes, server_secret: bytes, client_ctx: str = "master", server_ctx: str = "master"):
    a, b = socket.socketpair()
    ca, cb = Connection(a, timeout=2), Connection(b, timeout=2)
    errors: dict[str, BaseException | None] = {"server": None}

    def serve() -> None:
        try:
            authenticate_server(cb, server_secret, server_ctx)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        authenticate_client(ca, client_secret, client_ctx)
        errors["client"] = None
    except BaseException as exc:  # noqa: BLE001
        errors["client"] = exc
    ca.close()
    thread.join(5)
    cb.close()
    return errors


def test_auth_succeeds_with_the_same_secret() -> None:
    assert _auth(b"s" * 32, b"s" * 32) == {"server": None, "client": None}


def test_auth_refuses_a_wrong_secret_on_both_sides() -> None:
    errors = _auth(b"wrong-secret-123456", b"right-secret-123456")
    assert isinstance(errors["client"], AuthError) and "secret" in str(errors["client"])
    assert errors["server"] is None or isinstance(errors["server"], (AuthError, OSError))
    errors = _auth(b"right-secret-123456", b"wrong-secret-123456")  # an impostor server is caught too
    assert isinstance(errors["client"], AuthError)


def test_auth_binds_the_context() -> None:
    errors = _auth(b"s" * 32, b"s" * 32, client_ctx="peer", server_ctx="master")
    assert isinstance(errors["client"], AuthError) and isinstance(errors["server"], AuthError)


def test_secret_never_on_the_wire() -> None:
    secret = b"0123456789abcdef-very-secret"
    a, b = socket.socketpair()
    tap_a, tap_b = socket.socketpair()  # a recording relay between client and server
    wire = bytearray()

    def relay(src: socket.socket, dst: socket.socket) -> None:
        while data := src.recv(65536):
            wire.extend(data)
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)

    threads = [threading.Thread(target=relay, args=(b, tap_a)), threading.Thread(target=relay, args=(tap_a, b))]
    for t in threads:
        t.start()
    server = threading.Thread(target=authenticate_server, args=(Connection(tap_b, timeout=2), secret, "peer"))
    server.start()
    client = Connection(a, timeout=2)
    authenticate_client(client, secret, "peer")
    server.join(5)
    client.close()
    assert secret not in wire and secret.hex().encode() not in wire and b"auth_ok" in wire


def test_load_secret(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s"
    path.write_text("abcdefghijklmnopqrstuvwxyz\n")
    assert load_secret(secret_file=path) == b"abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("MPIFORGE_FT_SECRET", "from-the-environment!")
    assert load_secret() == b"from-the-environment!"
    monkeypatch.delenv("MPIFORGE_FT_SECRET")
    with pytest.raises(ValueError, match="no shared secret"):
        load_secret()
    with pytest.raises(ValueError, match="empty"):
        load_secret(b"")


# -- the master's state machine -------------------------------------------------------------------

def _to(out, peer: str) -> list[dict]:
    return [m for p, m in out if p == peer]


def _group(*names: str) -> Coordinator:
    """A coordinator whose members are ``names``, connected."""
    coord = Coordinator()
    for name in names:
        coord.join(name, name, "127.0.0.1", 1000)
    if len(names) > 1:
        coord.handle(names[0], {"t": "ready", "epoch": 1})
        coord.handle(names[0], {"t": "update"})
    for name in coord.ring:
        coord.handle(name, {"t": "ready", "epoch": coord.epoch})
    assert coord.ring == list(names) and not coord.connecting
    return coord


def _op(tag: int = 0, count: int = 10) -> dict:
    return {"t": "op", "tag": tag, **describe_op("allreduce", "sum", "<f4", count, None, None, 1 << 20)}


def test_first_peer_admitted_and_joiners_wait_for_an_update() -> None:
    coord = Coordinator()
    out = coord.join("a", "a", "h", 1)
    assert [m["t"] for m in _to(out, "a")] == ["pending", "topology"]
    assert _to(coord.handle("a", {"t": "ready", "epoch": 1}), "a")[0]["t"] == "topology_ok"
    out = coord.join("b", "b", "h", 2)
    assert [m["t"] for m in _to(out, "b")] == ["pending"] and coord.ring == ["a"]
    out = coord.handle("a", _op())  # a collective of the members: b does not take part
    assert _to(out, "a")[0]["t"] == "go" and _to(out, "a")[0]["pending"] is True
    out = coord.handle("a", {"t": "update"})
    assert {p for p, m in out if m["t"] == "topology"} == {"a", "b"} and coord.ring == ["a", "b"]
    coord.handle("a", {"t": "ready", "epoch": 2})
    out = coord.handle("b", {"t": "ready", "epoch": 2})
    assert {p for p, m in out if m["t"] == "topology_ok"} == {"a", "b"}


def test_go_commit_and_disagreement() -> None:
    coord = _group("a", "b")
    assert coord.handle("a", _op(1)) == []
    go = _to(coord.handle("b", _op(1)), "a")[0]
    assert go["t"] == "go" and go["epoch"] == coord.epoch
    assert coord.handle("a", {"t": "op_done", "op_id": go["op_id"]}) == []
    out = coord.handle("b", {"t": "op_done", "op_id": go["op_id"]})
    assert {p for p, m in out if m["t"] == "commit"} == {"a", "b"}
    coord.handle("a", _op(2, count=10))
    out = coord.handle("b", _op(2, count=11))
    assert {m["t"] for _, m in out} == {"op_error"} and "disagree" in out[0][1]["reason"]


def test_lost_member_aborts_everything_and_survivors_update() -> None:
    coord = _group("a", "b", "c")
    for p in "abc":
        out = coord.handle(p, _op(1))
    op_id = _to(out, "a")[0]["op_id"]
    coord.handle("a", _op(2))  # requested but not started
    out = coord.lost("b", "closed")
    assert {(p, m["t"]) for p, m in out} == {("a", "abort"), ("c", "abort")} and out[0][1]["lost"] == ["b"]
    assert coord.handle("a", {"t": "op_done", "op_id": op_id}) == []  # stale
    assert _to(coord.handle("c", _op(3)), "c")[0]["t"] == "op_error"  # broken until the update
    coord.handle("a", {"t": "update"})
    out = coord.handle("c", {"t": "update"})
    assert coord.ring == ["a", "c"] and {m["t"] for _, m in out} == {"topology"}


def test_member_lost_while_connecting_gives_a_new_proposal() -> None:
    coord = _group("a", "b", "c")
    for p in "abc":
        coord.handle(p, {"t": "update"})
    epoch = coord.epoch
    coord.handle("a", {"t": "ready", "epoch": epoch})
    out = coord.lost("c", "killed")
    assert {(p, m["t"], m["epoch"]) for p, m in out} == {("a", "topology", epoch + 1), ("b", "topology", epoch + 1)}
    assert coord.handle("a", {"t": "ready", "epoch": epoch}) == []  # stale epoch
    coord.handle("a", {"t": "ready", "epoch": epoch + 1})
    assert _to(coord.handle("b", {"t": "ready", "epoch": epoch + 1}), "b")[0]["t"] == "topology_ok"


def test_op_failed_aborts_and_update_vote_refuses_blocked_requests() -> None:
    coord = _group("a", "b")
    coord.handle("a", _op(1))
    go = _to(coord.handle("b", _op(1)), "a")[0]
    out = coord.handle("a", {"t": "op_failed", "op_id": go["op_id"], "reason": "link broke"})
    assert {m["t"] for _, m in out} == {"abort"} and out[0][1]["lost"] == []
    coord.handle("a", {"t": "update"})
    coord.handle("b", {"t": "update"})
    for p in "ab":
        coord.handle(p, {"t": "ready", "epoch": coord.epoch})
    coord.handle("a", _op(5))
    out = coord.handle("b", {"t": "update"})  # a waits for tag 5, b wants an update: a must not hang
    assert _to(out, "a")[0]["t"] == "op_error" and "update_topology" in _to(out, "a")[0]["reason"]


def test_a_member_giving_up_fails_the_tag_for_everyone() -> None:
    coord = _group("a", "b", "c")
    coord.handle("a", _op(4))
    coord.handle("b", _op(4))
    out = coord.handle("b", {"t": "op_cancel", "tag": 4, "reason": "timed out"})
    assert [(p, m["t"]) for p, m in out] == [("a", "op_error")] and "gave up" in out[0][1]["reason"]
    assert coord.handle("c", _op(4)) == []  # a fresh request: nothing left of the cancelled one
    for p in "ab":
        out = coord.handle(p, _op(5))
    out = coord.handle("c", _op(5))
    out = coord.handle("c", {"t": "op_cancel", "tag": 5, "reason": "late"})  # too late: it started
    assert {m["t"] for _, m in out} == {"abort"} and coord.broken


def test_orphaned_joiners_are_admitted_when_the_last_member_dies() -> None:
    coord = _group("a")
    coord.join("b", "b", "h", 2)
    out = coord.lost("a", "killed")
    assert _to(out, "b")[0]["t"] == "topology" and coord.ring == ["b"]


def _sync(revision: int, hashes: dict[str, str], strategy: str = "enforce_popular") -> dict:
    keys = {k: {"hash": h, "dtype": "<f4", "shape": [4], "nbytes": 16} for k, h in hashes.items()}
    return {"t": "sync", "revision": revision, "strategy": strategy, "keys": keys}


def test_shared_state_election() -> None:
    coord = _group("a", "b", "c", "d")
    coord.handle("a", _sync(1, {"w": "h1"}))
    coord.handle("b", _sync(1, {"w": "h1"}))
    coord.handle("c", _sync(1, {"w": "h2"}))
    out = coord.handle("d", _sync(9, {"w": "h3"}, "receive_only"))
    plans = {p: m for p, m in out if m["t"] == "sync_plan"}
    assert plans["a"]["fetch"] == [] and plans["c"]["fetch"] == ["w"] and plans["d"]["fetch"] == ["w"]
    assert plans["c"]["source"]["id"] in ("a", "b") and plans["d"]["revision"] == 1
    coord.handle("c", {"t": "sync_done", "sync_id": plans["c"]["sync_id"], "ok": True, "reason": ""})
    out = coord.handle("d", {"t": "sync_done", "sync_id": plans["d"]["sync_id"], "ok": True, "reason": ""})
    assert {(p, m["t"], m["revision"]) for p, m in out} == {(p, "sync_complete", 1) for p in "abcd"}
    coord.handle("a", _sync(2, {"w": "h4"}))
    coord.handle("b", _sync(3, {"w": "h4"}))  # revision must grow by exactly 1
    coord.handle("c", _sync(2, {"w": "h4"}, "send_only"))
    out = coord.handle("d", _sync(2, {"w": "h5"}, "send_only"))
    errors = {p: m for p, m in out if m["t"] == "sync_error"}
    assert errors["b"].get("revision_error") and "send_only" in errors["d"]["reason"] and "a" not in errors
    assert {p for p, m in out if m["t"] == "sync_complete"} == {"a", "b", "c", "d"} and coord.revision == 2


def test_unknown_and_malformed_messages_are_protocol_errors() -> None:
    coord = _group("a")
    for msg in ({"t": "nonsense"}, {"t": "_propose"}, {"t": "op", "tag": "x"}, {"t": "sync", "strategy": "all"},
                {"t": "ready"}, {"t": "op", "tag": True}):
        with pytest.raises(ProtocolError):
            coord.handle("a", msg)
    with pytest.raises(ProtocolError):
        coord.join("a", "a", "h", 1)


def test_optimize_measures_then_reorders() -> None:
    coord = _group("a", "b", "c", "d")
    out = []
    for p in "abcd":
        out += coord.handle(p, {"t": "optimize"})
    tasks = {p: m for p, m in out if m["t"] == "bench_task"}
    assert set(tasks) == set("abcd") and all(len(m["targets"]) == 3 for m in tasks.values())
    fast = {("a", "c"), ("c", "b"), ("b", "d"), ("d", "a")}
    out = []
    for p in "abcd":
        results = {q: (10e9 if (p, q) in fast else 1e9) for q in "abcd" if q != p}
        out += coord.handle(p, {"t": "bench_result", "results": results})
    assert coord.ring == ["a", "c", "b", "d"] and {m["t"] for _, m in out} == {"topology"}


# -- ring order -----------------------------------------------------------------------------------

def test_best_ring_follows_fast_links_and_keeps_an_unchanged_order() -> None:
    ids = list("abcdef")
    assert best_ring(ids, {}) == ids
    fast = {("a", "d"), ("d", "b"), ("b", "f"), ("f", "c"), ("c", "e"), ("e", "a")}
    bw = {(p, q): 8.0 if (p, q) in fast else 1.0 for p in ids for q in ids if p != q}
    assert best_ring(ids, bw) == ["a", "d", "b", "f", "c", "e"]
    many = [f"p{i:02d}" for i in range(12)]  # heuristic path: at least as good as the given order
    bw = {(p, q): float((hash((p, q)) % 7) + 1) for p in many for q in many if p != q}
    assert ring_score(best_ring(many, bw), bw) >= ring_score(many, bw)


def test_header_layout_is_stable() -> None:
    assert HEADER.size == 12 and struct.calcsize("!4sBBHI") == 12
    assert encode_control({"t": "x"})[:6] == MAGIC + bytes([VERSION, CONTROL])
