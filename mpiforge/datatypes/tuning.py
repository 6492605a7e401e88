"""When the host kernels stream (non-temporal stores) and how far ahead they prefetch.

The numbers were measured on a 2-core Sapphire Rapids VM with scripts/bench_pack.py; each rule
says what it trades. Only ``MPIFORGE_STREAM_BYTES`` is read from the environment.
"""
from __future__ import annotations

import os

__all__ = ["LINE", "BLOCK_DIRECT", "stream_policy", "run_prefetch", "block_prefetch"]

LINE = 64  # cache line bytes
# Transfers at least this large bypass the caches with non-temporal stores (the data would not
# fit in L2 anyway, and streaming avoids reading every destination line before writing it).
def _env_bytes(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a byte count such as 4194304") from None


STREAM_MIN_BYTES = _env_bytes("MPIFORGE_STREAM_BYTES", 4 << 20)
STREAM_MIN_BLOCK = 256  # run (mean block) length from which pack streams
STREAM_MIN_UNPACK_BLOCK = 2048  # mean block length from which unpack of a block list streams
BLOCK_DIRECT = 2048  # a streaming pack of a block list gathers shorter blocks in the L1 tile
PREFETCH_ROWS = 12  # runs ahead to prefetch along a long stride
PREFETCH_MAX_RUN = 256  # longer runs are prefetched whole, just ahead


def stream_policy(nbytes: int, block: float, strided: bool) -> tuple[bool, bool]:
    """(pack, unpack) may stream? Only transfers beyond L2 size, and only with long enough blocks.

    Measured on Sapphire Rapids: streaming speeds pack up for runs of a few hundred bytes and
    more, and slows it down for short runs, where gathering through the tile costs more than
    the saved reads for ownership. A strided unpack may always stream: the kernel streams only
    the runs that cover whole lines. Unpacking a block list of irregular kilobyte blocks is
    faster with ordinary stores (1.5x MPI against 1.25x streamed); from 2 KiB blocks, streamed.
    """
    if nbytes < STREAM_MIN_BYTES:
        return False, False
    return block >= STREAM_MIN_BLOCK, strided or block >= STREAM_MIN_UNPACK_BLOCK


def run_prefetch(run: int, stride: int) -> tuple[int, int]:
    """(runs ahead, bytes of each) to prefetch along a strided layout. Hardware prefetchers lose
    track of strides of 256 bytes and more: short runs are fetched a line each, far ahead; long
    runs are followed inside by the hardware, but each starts cold, so the next-but-one run is
    fetched whole (measured: 2 KiB runs 512 KiB apart pack 15% faster)."""
    if abs(stride) < 256:
        return 0, 0
    if run <= PREFETCH_MAX_RUN:
        return PREFETCH_ROWS, LINE
    return 2, min(run, 4096)


def block_prefetch(mean_block: float, to_packed: bool) -> tuple[int, int]:
    """(blocks ahead, bytes) to prefetch in block lists: the first line far ahead for small
    blocks, the first kilobyte of medium ones 4 blocks ahead; long blocks differ by direction
    (pack: the first kilobyte 2 blocks ahead; unpack, streamed: the first line 8 blocks ahead)."""
    if mean_block < 256:
        return 16, LINE
    if mean_block < 2048:
        return 4, 1024
    return (2, 1024) if to_packed else (8, LINE)
