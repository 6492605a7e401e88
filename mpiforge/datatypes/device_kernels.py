"""Device pack/unpack kernels written with numba.cuda (importing this module imports numba.cuda).

Arrays are 1-D word views (uint8/16/32/64, chosen by alignment) of the device buffers;
offsets and strides are in words. The strided kernel gives each thread packed words, so a
warp reads and writes neighbouring addresses; the block-list kernel gives each thread a block.
"""
from __future__ import annotations

from numba import cuda


@cuda.jit
def strided_kernel(user, packed, start, run, counts, strides, pos, total, to_packed):
    """Packed word t comes from run t // run at the offset its outer indices select."""
    first = cuda.grid(1)
    step = cuda.gridsize(1)
    ndim = counts.shape[0]
    for t in range(first, total, step):
        rest = t // run
        off = start + t - rest * run
        for d in range(ndim):
            c = counts[d]
            off += (rest % c) * strides[d]
            rest //= c
        if to_packed:
            packed[pos + t] = user[off]
        else:
            user[off] = packed[pos + t]


@cuda.jit
def blocks_kernel(user, packed, offsets, lengths, starts, counts, strides, pos, nrows, to_packed):
    """Thread per block: block b of outer position r sits at packed ``starts[b]`` within row r."""
    first = cuda.grid(1)
    step = cuda.gridsize(1)
    nblocks = offsets.shape[0]
    row_words = starts[nblocks]
    ndim = counts.shape[0]
    for t in range(first, nblocks * nrows, step):
        r = t // nblocks
        b = t - r * nblocks
        base = 0
        rest = r
        for d in range(ndim):
            c = counts[d]
            base += (rest % c) * strides[d]
            rest //= c
        src = base + offsets[b]
        dst = pos + r * row_words + starts[b]
        for j in range(lengths[b]):
            if to_packed:
                packed[dst + j] = user[src + j]
            else:
                user[src + j] = packed[dst + j]
