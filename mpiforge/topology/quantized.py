"""Ring allreduce (sum) that sends quantized chunks: the inter-node step of a compressed allreduce.

Reduce-scatter: every hop quantizes its partial sum, the receiver decodes it and adds it to its
own float32 data (fused into its next encode: one pass). Allgather: each chunk's owner quantizes
the finished chunk once and passes the bytes on; every rank, the owner too (in the same pass as
its encode), takes the values those same bytes decode to, so results are bit-identical everywhere. Bytes on the wire shrink by the codec's ratio (about 4x for int8 and fp8).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from .algorithms import TAG, chunk_bounds, scratch
from .schedule import Steps

__all__ = ["PIECE", "exchange", "quantized_ring_allreduce_steps"]

#: payloads travel in messages of at most this many bytes: under Open MPI's TCP eager limit
#: (64 KiB with its header), so none waits for a rendezvous reply queued behind data on a busy link
PIECE = 60 << 10


def exchange(comm: MPI.Comm, got: np.ndarray, left: int, payload: np.ndarray, right: int, tag: int,
              piece: int) -> list:
    """Receive ``got`` from ``left`` while sending ``payload`` to ``right``, in messages of at most
    ``piece`` bytes (same tag: MPI keeps their order)."""
    requests = [comm.Irecv(got[a:a + piece], left, tag) for a in range(0, got.size, piece)]
    return requests + [comm.Isend(payload[a:a + piece], right, tag) for a in range(0, payload.size, piece)]


def quantized_ring_allreduce_steps(comm: MPI.Comm, flat: np.ndarray, codec, order: Sequence[int] | None = None,
                                   tag: int = TAG, piece: int = PIECE) -> Steps:
    """Sum the float32 ``flat`` over ``comm`` in place, quantizing what travels with ``codec``
    (in messages of at most ``piece`` bytes)."""
    p = comm.size
    if p == 1:
        return
    order = list(order) if order is not None else list(range(p))
    pos = order.index(comm.rank)
    right, left = order[(pos + 1) % p], order[(pos - 1) % p]
    chunks = chunk_bounds(flat.size, p)
    sizes = [codec.payload_nbytes(b - a) for a, b in chunks]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    # every chunk's payload at its offset, and the outgoing payload of the reduce-scatter
    with scratch(int(offsets[-1]), np.uint8) as wire, scratch(max(sizes), np.uint8) as out:
        got = None  # the payload received last, added into the chunk it belongs to when that is encoded
        for step in range(p - 1):
            send, recv = (pos - step) % p, (pos - step - 1) % p
            payload = codec.encode(flat[slice(*chunks[send])], out=out, add=got)
            got = wire[offsets[recv]:offsets[recv + 1]]
            yield exchange(comm, got, left, payload, right, tag, piece)
        owned = (pos + 1) % p  # the chunk received last: its sum is complete here
        codec.encode(flat[slice(*chunks[owned])], out=got, add=got, roundtrip=True)  # the bits others decode
        for step in range(p - 1):
            send, recv = (pos + 1 - step) % p, (pos - step) % p
            yield exchange(comm, wire[offsets[recv]:offsets[recv + 1]], left,
                           wire[offsets[send]:offsets[send + 1]], right, tag + 1, piece)
        for index, (a, b) in enumerate(chunks):
            if index != owned:
                codec.decode(wire[offsets[index]:offsets[index + 1]], flat[a:b])
