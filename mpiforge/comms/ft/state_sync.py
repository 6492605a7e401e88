"""Shared state on the wire: content hashes, and fetching arrays from a peer that has the popular ones.

A shared state is a ``dict[str, np.ndarray]`` of C-contiguous arrays. Its description (``describe``)
is, per key, the SHA-256 of dtype, shape and bytes, with dtype, shape and size: what the master's
election compares. A peer whose hashes differ from the winner's connects to a peer that has them
(``fetch``: an authenticated ``fetch`` request on that peer's data listener), receives the bytes
of the differing keys into fresh arrays and checks their hashes before anything is applied; the
serving side (``serve``) answers from the state its own ``sync_shared_state`` call offers.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

import numpy as np

from .errors import ProtocolError, SharedStateError
from .wire import DATA, Connection, field

__all__ = ["check_state", "describe", "fetch", "hash_array", "serve"]


def check_state(state: Mapping[str, np.ndarray]) -> None:
    """ValueError unless ``state`` maps strings to C-contiguous numpy arrays."""
    if not isinstance(state, Mapping):
        raise TypeError(f"shared state must be a dict of numpy arrays, got {type(state).__name__}")
    for key, arr in state.items():
        if not isinstance(key, str):
            raise TypeError(f"shared-state keys must be strings, got {key!r}")
        if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous or arr.dtype.hasobject:
            raise ValueError(f"shared state {key!r} must be a C-contiguous numpy array of plain values "
                             "(it is updated in place)")


def hash_array(arr: np.ndarray) -> str:
    """SHA-256 (hex) of the dtype, shape and bytes of a C-contiguous array."""
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    return h.hexdigest()


def describe(state: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Per key: hash, dtype, shape, nbytes (what the master's election compares)."""
    return {key: {"hash": hash_array(arr), "dtype": arr.dtype.str, "shape": list(arr.shape), "nbytes": arr.nbytes}
            for key, arr in state.items()}


def serve(conn: Connection, request: dict, state: Mapping[str, np.ndarray] | None, hashes: Mapping[str, str],
          segment: int) -> None:
    """Answer one ``fetch`` request from ``state`` (whose hashes are ``hashes``), or refuse it."""
    keys = field(request, "keys", list)
    wanted = field(request, "hashes", dict)
    if state is None:
        conn.send_control({"t": "fetch_error", "reason": "this peer is not synchronising its shared state now"})
        return
    for key in keys:
        if not isinstance(key, str) or key not in state or hashes.get(key) != wanted.get(key):
            conn.send_control({"t": "fetch_error", "reason": f"this peer does not hold the wanted {str(key)[:40]!r}"})
            return
    conn.send_control({"t": "fetch_ok"})
    for index, key in enumerate(keys):
        raw = memoryview(state[key]).cast("B") if state[key].size else memoryview(b"")
        for j, lo in enumerate(range(0, raw.nbytes, segment)):
            conn.send_data(0, 0, index, j, raw[lo:lo + segment])


def fetch(open_conn: Callable[[dict], Connection], keys: list[str], hashes: Mapping[str, str],
          like: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The arrays of ``keys`` (shaped like ``like``) from the peer that ``open_conn(request)``
    connects to, hash-checked; and the bytes received."""
    conn = open_conn({"t": "fetch", "keys": keys, "hashes": {k: hashes[k] for k in keys}})
    try:
        return _receive(conn, keys, hashes, like)
    finally:
        conn.close()


def _receive(conn: Connection, keys: list[str], hashes: Mapping[str, str],
             like: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    reply = conn.recv_control(idle=conn.timeout)
    if reply is None or reply["t"] != "fetch_ok":
        reason = reply.get("reason", reply["t"]) if reply else "no answer"
        raise SharedStateError(f"{conn.label} refused to send the shared state: {str(reason)[:200]}")
    got: dict[str, np.ndarray] = {}
    received = 0
    for index, key in enumerate(keys):
        arr = np.empty_like(like[key])
        raw = memoryview(arr).cast("B") if arr.size else memoryview(bytearray())
        filled, segment = 0, 0
        while filled < raw.nbytes:
            header = conn.read_header()
            assert header is not None
            kind, length = header
            if kind != DATA:
                raise ProtocolError(f"{conn.label}: expected shared-state data, got a control frame")
            _, _, step, seg, nbytes = conn.recv_data_header(length)
            if step != index or seg != segment or not 0 < nbytes <= raw.nbytes - filled:
                raise ProtocolError(f"{conn.label}: unexpected shared-state frame (key {step}, segment {seg}, "
                                    f"{nbytes} bytes)")
            conn.recv_into(raw[filled:filled + nbytes])
            filled, segment, received = filled + nbytes, segment + 1, received + length
        if hash_array(arr) != hashes[key]:
            raise SharedStateError(f"shared state {key!r} from {conn.label} does not match its hash")
        got[key] = arr
    return got, received
