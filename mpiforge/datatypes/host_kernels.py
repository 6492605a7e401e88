"""Host pack/unpack kernels compiled with numba.

Kernels work on raw addresses: the caller has already checked that every byte they touch
lies inside the buffers. One kernel serves pack and unpack: a copy always goes from ``src`` to
``dst``, and the strided side is whichever of the two the caller puts there with its step.
Small runs are copied with fixed-size moves that LLVM turns into single loads and stores;
long runs go to ``memcpy``.
"""
from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_JIT = dict(cache=True, nogil=True, boundscheck=False)
# Hardware prefetchers lose track of long strides: prefetch this many runs ahead past this stride.
PREFETCH_ROWS = 12
PREFETCH_MIN_STRIDE = 256


@intrinsic
def _memcpy(typingctx, dst, src, nbytes):
    """llvm.memcpy between two integer addresses; a constant size becomes plain moves."""
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        d, s, n = args
        dp = builder.inttoptr(d, cgutils.voidptr_t)
        sp = builder.inttoptr(s, cgutils.voidptr_t)
        cgutils.raw_memcpy(builder, dp, sp, n, 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _prefetch(typingctx, addr):
    """llvm.prefetch (read, keep in all levels) of an address that may be out of range."""
    sig = types.void(types.intp)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t] + [ir.IntType(32)] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        i32 = ir.IntType(32)
        ptr = builder.inttoptr(args[0], cgutils.voidptr_t)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(**_JIT)
def _copy(dst, src, n):
    """Copy n bytes with at most two overlapping fixed-size moves for n <= 32."""
    if n <= 16:
        if n >= 8:
            _memcpy(dst, src, 8)
            _memcpy(dst + n - 8, src + n - 8, 8)
        elif n >= 4:
            _memcpy(dst, src, 4)
            _memcpy(dst + n - 4, src + n - 4, 4)
        else:
            for j in range(n):
                _memcpy(dst + j, src + j, 1)
    elif n <= 32:
        _memcpy(dst, src, 16)
        _memcpy(dst + n - 16, src + n - 16, 16)
    elif n <= 256:
        j = 0
        while j < n - 32:
            _memcpy(dst + j, src + j, 32)
            j += 32
        _memcpy(dst + n - 32, src + n - 32, 32)
    else:
        _memcpy(dst, src, n)


@njit(**_JIT)
def _run_loop(dst, dstep, src, sstep, run, count, ahead, fixed):
    """The inner loop; ``fixed`` runs use constant-size moves, ``ahead`` prefetches the strided side."""
    if ahead == 0:
        for i in range(count):
            if fixed:
                _memcpy(dst + i * dstep, src + i * sstep, run)
            else:
                _copy(dst + i * dstep, src + i * sstep, run)
    else:
        far = src + ahead if sstep != run else dst + ahead
        step = sstep if sstep != run else dstep
        for i in range(count):
            _prefetch(far + i * step)
            if fixed:
                _memcpy(dst + i * dstep, src + i * sstep, run)
            else:
                _copy(dst + i * dstep, src + i * sstep, run)


@njit(**_JIT)
def _rows(dst, dstep, src, sstep, run, count, ahead):
    """``count`` runs of ``run`` bytes; constant-size moves for the common small runs."""
    if run == 8:
        _run_loop(dst, dstep, src, sstep, 8, count, ahead, True)
    elif run == 16:
        _run_loop(dst, dstep, src, sstep, 16, count, ahead, True)
    elif run == 32:
        _run_loop(dst, dstep, src, sstep, 32, count, ahead, True)
    elif run == 4:
        _run_loop(dst, dstep, src, sstep, 4, count, ahead, True)
    else:
        _run_loop(dst, dstep, src, sstep, run, count, ahead, False)


@njit(**_JIT)
def move_strided(user, run, dims, packed, to_packed):
    """Strided block at address ``user``: runs of ``run`` bytes over ``dims`` = [counts, strides]."""
    counts = dims[0]
    strides = dims[1]
    ndim = counts.shape[0]
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
    ahead = PREFETCH_ROWS * s0 if abs(s0) >= PREFETCH_MIN_STRIDE and c0 > PREFETCH_ROWS else 0
    idx = np.zeros(ndim, np.int64)
    base = user
    for _ in range(rows):
        if to_packed:
            _rows(packed, run, base, s0, run, c0, ahead)
        else:
            _rows(base, s0, packed, run, run, c0, ahead)
        packed += c0 * run
        d = 1
        while d < ndim:
            idx[d] += 1
            base += strides[d]
            if idx[d] < counts[d]:
                break
            base -= counts[d] * strides[d]
            idx[d] = 0
            d += 1


@njit(**_JIT)
def move_blocks(user, offsets, lengths, dims, packed, to_packed):
    """Block list (typemap order) at address ``user``, repeated over outer ``dims`` = [counts, strides]."""
    counts = dims[0]
    strides = dims[1]
    ndim = counts.shape[0]
    rows = 1
    for d in range(ndim):
        rows *= counts[d]
    idx = np.zeros(max(ndim, 1), np.int64)
    base = user
    nblocks = offsets.shape[0]
    for _ in range(rows):
        if to_packed:
            for b in range(nblocks):
                n = lengths[b]
                _copy(packed, base + offsets[b], n)
                packed += n
        else:
            for b in range(nblocks):
                n = lengths[b]
                _copy(base + offsets[b], packed, n)
                packed += n
        d = 0
        while d < ndim:
            idx[d] += 1
            base += strides[d]
            if idx[d] < counts[d]:
                break
            base -= counts[d] * strides[d]
            idx[d] = 0
            d += 1
