"""Protocol fuzzing against a running master and a running peer: random bytes, mutated frames,
oversized and stalled frames, hostile messages after a valid authentication. Each bad connection
must be closed on its own while the group keeps all-reducing and new peers can still join."""
from __future__ import annotations

import json
import os
import random
import socket
import time

import pytest

from mpiforge.comms.ft.auth import authenticate_client
from mpiforge.comms.ft.errors import FtError
from mpiforge.comms.ft.harness import Cluster
from mpiforge.comms.ft.wire import CONTROL, DATA, DATA_HEADER, HEADER, MAGIC, VERSION, encode_control, open_connection

CASES = int(os.environ.get("MPIFORGE_FT_FUZZ_CASES", "400"))
_MASTER_TYPES = ["hello", "update", "ready", "op", "op_done", "op_failed", "sync", "sync_done", "optimize",
                 "bench_result", "status", "leave", "ping", "auth_hello", "nonsense"]
_PEER_TYPES = ["lane", "fetch", "bench", "auth_proof", "x"]
_VALUES = [None, True, -1, 0, 1, 2 ** 64, 1.5, "", "x" * 300, [], [1, "a"], {}, {"a": {"b": [None]}}]


def _header(kind: int, length: int, flags: int = 0, version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    return HEADER.pack(magic, version, kind, flags, length)


def _hostile_message(rng: random.Random, types: list[str]) -> dict:
    msg: dict = {"t": rng.choice(types)}
    for key in rng.sample(["tag", "epoch", "op_id", "count", "kind", "op", "dtype", "keys", "strategy", "revision",
                           "results", "sync_id", "ok", "reason", "from", "to", "lane", "nbytes", "hashes", "port",
                           "name"], rng.randint(0, 8)):
        msg[key] = rng.choice(_VALUES)
    return msg


def _raw_case(rng: random.Random) -> bytes:
    """Bytes from someone who does not know the secret."""
    choice = rng.randrange(7)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 3000))
    if choice == 1:
        return _header(rng.choice([CONTROL, DATA, 0, 7]), rng.randint(0, 5000), rng.choice([0, 0, 1, 0x8000])) + \
            rng.randbytes(rng.randint(0, 200))
    if choice == 2:
        return _header(CONTROL, 0xFFFFFFFF) + b"{"
    if choice == 3:
        hello = encode_control({"t": "auth_hello", "nonce": os.urandom(32).hex(), "ctx": "master"})
        raw = bytearray(hello)
        for _ in range(rng.randint(1, 6)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw)
    if choice == 4:
        body = json.dumps({"t": "auth_hello", "nonce": rng.choice(_VALUES), "ctx": rng.choice(_VALUES)}).encode()
        return _header(CONTROL, len(body)) + body
    if choice == 5:
        body = b"[" * 2000 + b"]" * 2000
        return _header(CONTROL, len(body)) + body
    return _header(DATA, DATA_HEADER.size + 10) + DATA_HEADER.pack(1, 1, 0, 0) + b"0123456789"


def _send_and_close(address: tuple[str, int], data: bytes) -> None:
    try:
        with socket.create_connection(address, timeout=2) as sock:
            sock.sendall(data)
            sock.settimeout(0.05)
            try:
                sock.recv(4096)
            except OSError:
                pass
    except OSError:
        pass  # refused or reset: fine, that is the server defending itself


def _authenticated_case(address: tuple[str, int], secret: bytes, ctx: str, rng: random.Random) -> None:
    """A client that knows the secret and then misbehaves."""
    try:
        conn = open_connection(address, 2, max_data=1 << 20)
    except OSError:
        return
    try:
        authenticate_client(conn, secret, ctx)
        conn.max_control = 1 << 20
        if ctx == "master":
            conn.send_control({"t": "hello", "name": "fuzz", "port": rng.choice([1, 65535, 40000])})
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.2:
                conn.sock.sendall(_raw_case(rng))
            else:
                conn.send_control(_hostile_message(rng, _MASTER_TYPES if ctx == "master" else _PEER_TYPES))
        conn.sock.settimeout(0.05)
        try:
            conn.sock.recv(4096)
        except OSError:
            pass
    except (FtError, OSError):
        pass
    finally:
        conn.close()


def _stalled(address: tuple[str, int]) -> socket.socket:
    """A connection that announces a frame and never finishes it."""
    sock = socket.create_connection(address, timeout=2)
    sock.sendall(_header(CONTROL, 1000) + b'{"t":')
    return sock


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:
        return False
    finally:
        sock.close()


@pytest.mark.timeout(120)
def test_fuzz_master_and_peer_while_the_group_runs() -> None:
    rng = random.Random(int(os.environ.get("MPIFORGE_FT_FUZZ_SEED", "11")))
    with Cluster(io_timeout=2.0) as cluster:
        master = cluster.start_master()
        secret = cluster.secret.encode()
        workers = [cluster.spawn(f"f{i}", "loop", "--count", "10000", "--world", "2", options=("--io-timeout", "2"))
                   for i in range(2)]
        cluster.wait_for(lambda: all(len(w.events_of("round")) >= 2 for w in workers), 60, "rounds")
        peer = ("127.0.0.1", workers[0].events_of("hello")[0]["port"])
        stalled = [_stalled(master), _stalled(peer)]
        start = time.monotonic()
        for i in range(CASES):
            target = master if i % 2 == 0 else peer
            if rng.random() < 0.6:
                _send_and_close(target, _raw_case(rng))
            else:
                _authenticated_case(target, secret, "master" if target == master else "peer", rng)
        fuzz_end = time.monotonic()
        assert cluster.master is not None and cluster.master.alive and all(w.alive for w in workers)
        during = [e for e in workers[0].events_of("round") if start < e["done"] < fuzz_end]
        n = len(workers[0].events_of("round"))
        cluster.wait_for(lambda: len(workers[0].events_of("round")) > n + 3, 30, "rounds after the fuzzing")
        newcomer = cluster.spawn("f2", "loop", "--count", "10000")
        first = newcomer.wait_event(lambda e: e["event"] == "round", 30)
        assert first["world"] == 3 and first["correct"]
        assert _closed_by_server(stalled[0], 5) and _closed_by_server(stalled[1], 5), "a stalled frame was kept"
        rounds = [e for w in workers for e in w.events_of("round")]
        assert all(e["correct"] and e["intact"] for e in rounds)
        print(f"\n{CASES} fuzz connections in {fuzz_end - start:.1f} s; {len(during)} rounds completed meanwhile")
