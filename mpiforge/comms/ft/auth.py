"""Mutual HMAC-SHA256 challenge-response over a fresh ``Connection``; the secret never crosses the wire.

    client -> server  auth_hello  {nonce Nc, ctx}
    server -> client  auth_chal   {nonce Ns, proof HMAC(secret, "server" | ctx | Nc | Ns)}
    client -> server  auth_proof  {proof HMAC(secret, "client" | ctx | Ns | Nc)}
    server -> client  auth_ok

Each side proves it knows the secret for the other side's fresh 32-byte nonce, so a recorded
exchange cannot be replayed; the role label in the MAC stops a server's proof from being
reflected as a client's; ``ctx`` ("master", "peer") binds the proof to the kind of connection.
Proofs are compared in constant time. Both ends use ``auth_timeout``-bounded sockets, so a silent
client is dropped, not waited for.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

from .errors import AuthError, ProtocolError
from .wire import Connection, field

__all__ = ["authenticate_client", "authenticate_server", "load_secret"]

log = logging.getLogger(__name__)
_NONCE = 32
_ENV = "MPIFORGE_FT_SECRET"


def load_secret(secret: bytes | str | None = None, secret_file: str | os.PathLike | None = None) -> bytes:
    """The shared secret: ``secret``, else the file ``secret_file``, else $MPIFORGE_FT_SECRET."""
    if secret is None and secret_file is not None:
        secret = Path(secret_file).read_bytes().strip()
    if secret is None:
        secret = os.environ.get(_ENV)
    if secret is None:
        raise ValueError(f"no shared secret: pass secret= or secret_file=, or set ${_ENV}")
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the shared secret is empty: use at least 16 random bytes (e.g. `openssl rand -hex 32`)")
    if len(key) < 16:
        log.warning("the shared secret has only %d bytes; use at least 16 random bytes", len(key))
    return key


def _proof(secret: bytes, role: bytes, ctx: str, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, b"mpiforge-ft/1 " + role + b" " + ctx.encode() + b"\0" + first + second,
                    hashlib.sha256).digest()


def _hex(msg: dict, key: str, size: int) -> bytes:
    text = field(msg, key, str)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ProtocolError(f"{key!r} is not hex") from None
    if len(raw) != size:
        raise ProtocolError(f"{key!r} must be {size} bytes, got {len(raw)}")
    return raw


def _expect(conn: Connection, kind: str) -> dict:
    msg = conn.recv_control()
    if msg["t"] == "auth_fail":
        raise AuthError(f"{conn.label} refused authentication: {str(msg.get('reason', ''))[:200]}")
    if msg["t"] != kind:
        raise ProtocolError(f"{conn.label}: expected {kind!r} during authentication, got {msg['t'][:40]!r}")
    return msg


def authenticate_client(conn: Connection, secret: bytes, ctx: str) -> None:
    """Prove to the server that we know ``secret`` and check that it does too; AuthError otherwise."""
    mine = os.urandom(_NONCE)
    conn.send_control({"t": "auth_hello", "nonce": mine.hex(), "ctx": ctx})
    chal = _expect(conn, "auth_chal")
    theirs = _hex(chal, "nonce", _NONCE)
    if not hmac.compare_digest(_hex(chal, "proof", 32), _proof(secret, b"server", ctx, mine, theirs)):
        raise AuthError(f"{conn.label} does not know the shared secret (its proof is wrong); "
                        "check that both sides use the same secret")
    conn.send_control({"t": "auth_proof", "proof": _proof(secret, b"client", ctx, theirs, mine).hex()})
    _expect(conn, "auth_ok")


def authenticate_server(conn: Connection, secret: bytes, ctx: str) -> None:
    """Check that the client knows ``secret`` and prove that we do; AuthError (after telling it) otherwise."""
    hello = _expect(conn, "auth_hello")
    theirs = _hex(hello, "nonce", _NONCE)
    if field(hello, "ctx", str) != ctx:
        conn.send_control({"t": "auth_fail", "reason": f"this endpoint serves {ctx!r} connections"})
        raise AuthError(f"{conn.label} asked for a {hello['ctx'][:40]!r} connection, this endpoint serves {ctx!r}")
    mine = os.urandom(_NONCE)
    conn.send_control({"t": "auth_chal", "nonce": mine.hex(), "proof": _proof(secret, b"server", ctx, theirs, mine).hex()})
    proof = _hex(_expect(conn, "auth_proof"), "proof", 32)
    if not hmac.compare_digest(proof, _proof(secret, b"client", ctx, mine, theirs)):
        conn.send_control({"t": "auth_fail", "reason": "wrong shared secret"})
        raise AuthError(f"{conn.label} does not know the shared secret")
    conn.send_control({"t": "auth_ok"})
