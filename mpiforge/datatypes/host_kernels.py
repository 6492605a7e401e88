"""Host pack/unpack kernels compiled with numba.

Kernels work on raw addresses: the caller has already checked that every byte they touch
lies inside the buffers. Copies always go from ``src`` to ``dst``; pack and unpack differ only
in which side carries the stride. Small runs are copied with fixed-size moves (single loads and
stores), long runs with memcpy. Large transfers may *stream*: whole cache lines are written with
non-temporal stores, so memory sees each byte written once and never read for ownership (pack
gathers runs into a tile that stays in L1, then streams it out; unpack streams the runs that
cover whole lines). The caller decides when streaming pays, see ``tuning.stream_policy``.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, types

from .llvm_ops import memcpy, prefetch, prefetch_write, store_fence, stream64

_JIT = dict(cache=True, nogil=True, boundscheck=False)
TILE = 16384  # bytes gathered in L1 before being streamed out
DIRECT = 1024  # strided pack streams runs this long straight out, without the tile (block lists: tuning)
# Streaming a partly written line costs more than it saves, except in long runs where the
# partial lines at both ends are a small share.
STREAM_ANY = 1024
LINE = 64


@njit(**_JIT)
def _copy(dst, src, n):
    """Copy n bytes: at most two overlapping fixed-size moves up to 32 bytes, memcpy beyond 256."""
    if n <= 16:
        if n >= 8:
            memcpy(dst, src, 8)
            memcpy(dst + n - 8, src + n - 8, 8)
        elif n >= 4:
            memcpy(dst, src, 4)
            memcpy(dst + n - 4, src + n - 4, 4)
        else:
            for j in range(n):
                memcpy(dst + j, src + j, 1)
    elif n <= 32:
        memcpy(dst, src, 16)
        memcpy(dst + n - 16, src + n - 16, 16)
    elif n <= 256:
        j = 0
        while j < n - 32:
            memcpy(dst + j, src + j, 32)
            j += 32
        memcpy(dst + n - 32, src + n - 32, 32)
    else:
        memcpy(dst, src, n)


@njit(**_JIT)
def _stream(dst, src, n):
    """Copy n bytes, writing the 64-byte-aligned lines of dst with non-temporal stores."""
    head = min((-dst) & (LINE - 1), n)
    _copy(dst, src, head)
    dst += head
    src += head
    n -= head
    while n >= LINE:
        stream64(dst, src)
        dst += LINE
        src += LINE
        n -= LINE
    _copy(dst, src, n)


@njit(inline="always", **_JIT)
def _gather_n(dst, src, sstep, n, count, ahead):
    """_gather for one run length ``n``, inlined where ``n`` is a literal so moves and steps are constants."""
    for i in range(count):
        if ahead:
            prefetch(src + i * sstep + ahead)
        memcpy(dst + i * n, src + i * sstep, n)


@njit(inline="always", **_JIT)
def _scatter_n(dst, dstep, src, n, count, ahead):
    """_scatter for one run length ``n`` (see _gather_n)."""
    for i in range(count):
        if ahead:
            prefetch_write(dst + i * dstep + ahead)
        memcpy(dst + i * dstep, src + i * n, n)


@njit(**_JIT)
def _gather(dst, src, sstep, run, count, ahead, pf_bytes):
    """Pack ``count`` runs of ``run`` bytes, ``sstep`` apart at ``src``, back to back at ``dst``.

    Common small runs get loops of constant-size moves with constant packed steps (the
    compiler schedules those best); ``ahead`` > 0 prefetches the source that many bytes ahead
    (``pf_bytes`` of it for long runs, one line for short ones).
    """
    if run == 8:
        _gather_n(dst, src, sstep, 8, count, ahead)
    elif run == 16:
        _gather_n(dst, src, sstep, 16, count, ahead)
    elif run == 32:
        _gather_n(dst, src, sstep, 32, count, ahead)
    elif run == 64:
        _gather_n(dst, src, sstep, 64, count, ahead)
    else:
        for i in range(count):
            if ahead:
                for line in range(0, pf_bytes, LINE):
                    prefetch(src + i * sstep + ahead + line)
            _copy(dst + i * run, src + i * sstep, run)


@njit(**_JIT)
def _scatter(dst, dstep, src, run, count, ahead, pf_bytes):
    """Unpack: the mirror of _gather; ``ahead`` > 0 fetches destination lines owned, ahead."""
    if run == 8:
        _scatter_n(dst, dstep, src, 8, count, ahead)
    elif run == 16:
        _scatter_n(dst, dstep, src, 16, count, ahead)
    elif run == 32:
        _scatter_n(dst, dstep, src, 32, count, ahead)
    elif run == 64:
        _scatter_n(dst, dstep, src, 64, count, ahead)
    else:
        for i in range(count):
            if ahead:
                for line in range(0, pf_bytes, LINE):
                    prefetch_write(dst + i * dstep + ahead + line)
            _copy(dst + i * dstep, src + i * run, run)


@njit(**_JIT)
def _pack_row(packed, src, stride, run, count, ahead, pf_bytes, tile, stream):
    """Gather one row of ``count`` runs into the packed stream; return the new packed address."""
    if not stream:
        _gather(packed, src, stride, run, count, ahead, pf_bytes)
    elif run >= DIRECT or ((packed | run) & (LINE - 1)) == 0:
        for i in range(count):  # long runs, or runs that keep the packed side line-aligned
            _stream(packed + i * run, src + i * stride, run)
    else:
        per_tile = TILE // run
        i = 0
        while i < count:
            m = min(per_tile, count - i)
            _gather(tile, src + i * stride, stride, run, m, ahead, pf_bytes)
            _stream(packed + i * run, tile, m * run)
            i += m
    return packed + count * run


@njit(**_JIT)
def _put(dst, src, n):
    """Unpack one run while streaming: whole aligned lines, or long runs, go non-temporal."""
    if n >= STREAM_ANY or (n >= LINE and ((dst | n) & (LINE - 1)) == 0):
        _stream(dst, src, n)
    else:
        _copy(dst, src, n)


@njit(**_JIT)
def _unpack_row(dst, stride, packed, run, count, ahead, pf_bytes, stream):
    """Scatter one row of ``count`` runs from the packed stream; return the new packed address."""
    if stream and ((dst | stride | run) & (LINE - 1)) == 0:
        for i in range(count):  # every run covers whole lines: stream them all
            d = dst + i * stride
            s = packed + i * run
            for j in range(0, run, LINE):
                stream64(d + j, s + j)
    elif stream and run >= LINE:
        for i in range(count):
            _put(dst + i * stride, packed + i * run, run)
    else:
        _scatter(dst, stride, packed, run, count, ahead, pf_bytes)
    return packed + count * run


PACK, STREAM = 1, 2  # flags of move_strided


def strided_meta(run: int, counts, strides, ahead_rows: int, pf_bytes: int) -> np.ndarray:
    """The one int64 array move_strided reads its layout from (fewer arguments, faster calls)."""
    return np.array([run, ahead_rows, pf_bytes, len(counts), *counts, *strides], dtype=np.int64)


@njit(**_JIT)
def move_row(user, packed, run, count, stride, ahead, pf_bytes, to_packed):
    """One row of ``count`` runs ``stride`` apart, without streaming: the common small case, with
    only integer arguments so that a call costs as little as numba allows (~0.4 us)."""
    if to_packed:
        _gather(packed, user, stride, run, count, ahead, pf_bytes)
    else:
        _scatter(user, stride, packed, run, count, ahead, pf_bytes)


@functools.cache
def move_row_direct():
    """``move_row`` compiled for integer arguments (``to_packed`` 1 or 0): calling this entry point
    directly skips numba's dispatcher, which costs about a third of a tiny pack."""
    return move_row.compile((types.int64,) * 8)


@njit(**_JIT)
def move_strided(user, packed, meta, flags):
    """Strided block at address ``user``: runs of ``run`` bytes over outer dims (innermost first).

    ``meta`` is ``strided_meta(...)``; ``flags`` holds PACK (else unpack) and STREAM (may use
    non-temporal stores). With ``ahead_rows`` > 0 the first ``pf_bytes`` of the run that many
    runs ahead are prefetched.
    """
    run, ahead_rows, pf_bytes, ndim = meta[0], meta[1], meta[2], meta[3]
    counts = meta[4:4 + ndim]
    strides = meta[4 + ndim:4 + 2 * ndim]
    to_packed = (flags & PACK) != 0
    stream = (flags & STREAM) != 0
    if ndim == 0:
        if to_packed:
            _copy(packed, user, run)
        else:
            _copy(user, packed, run)
        return
    c0 = counts[0]
    s0 = strides[0]
    rows = 1
    for d in range(1, ndim):
        rows *= counts[d]
    ahead = ahead_rows * s0 if c0 > ahead_rows else 0
    tile = np.empty(TILE if stream else 0, np.uint8)
    idx = np.zeros(ndim, np.int64)
    base = user
    for _ in range(rows):
        if to_packed:
            packed = _pack_row(packed, base, s0, run, c0, ahead, pf_bytes, tile.ctypes.data, stream)
        else:
            packed = _unpack_row(base, s0, packed, run, c0, ahead, pf_bytes, stream)
        d = 1
        while d < ndim:
            idx[d] += 1
            base += strides[d]
            if idx[d] < counts[d]:
                break
            base -= counts[d] * strides[d]
            idx[d] = 0
            d += 1
    if stream:
        store_fence()


@njit(**_JIT)
def move_blocks(user, packed, offsets, lengths, dims, to_packed, stream, ahead, pf_bytes, direct):
    """Block list (typemap order) at address ``user``, repeated over outer ``dims`` = [counts, strides].

    Irregular block starts defeat the hardware prefetcher: while moving block b, the first
    ``pf_bytes`` of block b + ``ahead`` are prefetched (``ahead`` 0: no prefetch). A streaming
    pack sends blocks of ``direct`` bytes or more straight out, and gathers the others in the tile.
    """
    counts = dims[0]
    strides = dims[1]
    ndim = counts.shape[0]
    c0 = counts[0]
    s0 = strides[0]
    rows = 1
    for d in range(1, ndim):
        rows *= counts[d]
    tile_buf = np.empty(TILE if stream else 0, np.uint8)
    tile = tile_buf.ctypes.data
    used = 0
    nblocks = offsets.shape[0]
    idx = np.zeros(ndim, np.int64)
    base = user
    for _ in range(rows):
        for r in range(c0):
            row = base + r * s0
            for b in range(nblocks):
                if ahead > 0 and b + ahead < nblocks:
                    a = row + offsets[b + ahead]
                    e = a + min(lengths[b + ahead], pf_bytes)
                    while a < e:
                        prefetch(a)
                        a += LINE
                n = lengths[b]
                where = row + offsets[b]
                if not stream:
                    if to_packed:
                        _copy(packed, where, n)
                    else:
                        _copy(where, packed, n)
                elif not to_packed:
                    _put(where, packed, n)
                elif used + n > TILE or n >= direct:
                    _stream(packed - used, tile, used)  # flush the tile, then this block
                    used = 0
                    if n >= direct:
                        _stream(packed, where, n)
                    else:
                        _copy(tile, where, n)
                        used = n
                else:
                    _copy(tile + used, where, n)
                    used += n
                packed += n
        d = 1  # odometer over the outer dims (inline: a call passing arrays costs refcounting)
        while d < ndim:
            idx[d] += 1
            base += strides[d]
            if idx[d] < counts[d]:
                break
            base -= counts[d] * strides[d]
            idx[d] = 0
            d += 1
    if stream:
        _stream(packed - used, tile, used)
        store_fence()
