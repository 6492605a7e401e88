"""Memory operations the host kernels need and numba does not expose, as LLVM intrinsics.

- ``memcpy(dst, src, n)``: llvm.memcpy; with a constant n it becomes plain loads and stores.
- ``prefetch(addr)`` / ``prefetch_write(addr)``: llvm.prefetch for reading / for writing (the
  line arrives owned, ready for a store); harmless on any address.
- ``stream64(dst, src)``: copy 64 bytes with a non-temporal store (dst 64-byte aligned), which
  writes a whole cache line without first reading it from memory.
- ``store_fence()``: orders the non-temporal stores before anything that follows (sfence on x86).
"""
from __future__ import annotations

import platform

import llvmlite.ir as ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["memcpy", "prefetch", "prefetch_write", "stream64", "store_fence"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
_I32 = ir.IntType(32)


@intrinsic
def memcpy(typingctx, dst, src, nbytes):
    sig = types.void(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        d, s, n = args
        cgutils.raw_memcpy(builder, builder.inttoptr(d, cgutils.voidptr_t), builder.inttoptr(s, cgutils.voidptr_t), n, 1)
        return context.get_dummy_value()

    return sig, codegen


def _prefetcher(write: int):
    @intrinsic
    def prefetch_op(typingctx, addr):
        sig = types.void(types.intp)

        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, _I32, _I32, _I32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            builder.call(fn, [builder.inttoptr(args[0], cgutils.voidptr_t), _I32(write), _I32(3), _I32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch_op


prefetch = _prefetcher(0)
prefetch_write = _prefetcher(1)


@intrinsic
def stream64(typingctx, dst, src):
    sig = types.void(types.intp, types.intp)

    def codegen(context, builder, signature, args):
        d, s = args
        line = ir.VectorType(ir.IntType(64), 8)
        value = builder.load(builder.inttoptr(s, line.as_pointer()), align=1)
        store = builder.store(value, builder.inttoptr(d, line.as_pointer()), align=64)
        store.set_metadata("nontemporal", builder.module.add_metadata([_I32(1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_fence(typingctx):
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
