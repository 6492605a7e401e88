"""Pack and unpack with a datatype's canonical layout, exactly like MPI_Pack/MPI_Unpack.

A ``Packer`` is built once per datatype (``packer_for`` caches it and forgets it when the
datatype is freed); a call then checks bounds against a plan cached per count and runs one
kernel. Layouts the engine cannot express are handed to MPI's own Pack.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
from mpi4py import MPI

from ..bindings.ompi_datatype import is_committed
from . import host_kernels
from .host_kernels import PACK, STREAM
from .buffers import HOST_TYPES, host_buffer, is_device
from .canonical import _normalize, canonicalize
from .errors import PackError
from .ir import BlockList, Layout, StridedBlock
from .translate import UnsupportedDatatype, translate
from .tuning import BLOCK_DIRECT, block_prefetch, run_prefetch, stream_policy

__all__ = ["Packer", "packer_for", "pack", "unpack", "pack_size"]

log = logging.getLogger(__name__)
_buffer = MPI.buffer  # reads any buffer-protocol or DLPack object, fast


class Plan(NamedTuple):
    """Everything one call needs for a given count; cached per (datatype, count)."""

    kind: type | None  # StridedBlock, BlockList, or None for MPI's own Pack
    nbytes: int  # packed bytes
    lo: int  # lowest user byte touched
    hi: int  # one past the highest
    start: int  # offset of the first byte moved (strided; 0 otherwise)
    run: int  # strided: bytes per run
    dims: np.ndarray | None  # [counts, strides] of the outer dims, innermost first
    pack: tuple = ()  # (kernel, args): kernel(user + start, packed + position, *args) packs
    unpack: tuple = ()  # the same for unpack
    streams: tuple = (False, False)  # (pack, unpack) use non-temporal stores, see stream_policy


class Packer:
    """The engine's view of one committed datatype: its canonical layout and the kernels for it."""

    def __init__(self, datatype: MPI.Datatype) -> None:
        _check_usable(datatype)
        self.datatype = datatype
        self.size = datatype.size
        self.lb, self.extent = datatype.Get_extent()
        self.fallback_reason = ""
        try:
            self.layout: Layout | None = canonicalize(translate(datatype), self.extent)
        except UnsupportedDatatype as exc:
            self.layout, self.fallback_reason = None, str(exc)
            log.info("%s: MPI_Pack fallback (%s)", datatype.Get_name() or "datatype", exc)
        self._plans: dict[int, Plan] = {}
        self.device_cache: dict = {}  # metadata already copied to the GPU, see device.py

    def pack_size(self, count: int = 1) -> int:
        """Bytes ``count`` elements occupy once packed (what MPI_Pack_size reports)."""
        if count < 0:
            raise PackError(MPI.ERR_COUNT, f"count must be >= 0, got {count}")
        return self.size * count

    def pack(self, inbuf: Any, outbuf: Any, position: int = 0, count: int = 1) -> int:
        """Pack ``count`` elements of ``inbuf`` into ``outbuf`` at ``position``; return the new position."""
        return self._move(inbuf, outbuf, position, count, True)

    def unpack(self, inbuf: Any, position: int, outbuf: Any, count: int = 1) -> int:
        """Unpack ``count`` elements from ``inbuf`` at ``position`` into ``outbuf``; return the new position."""
        return self._move(outbuf, inbuf, position, count, False)

    def plan(self, count: int) -> Plan:
        """Kernel arguments and byte span of ``count`` elements (cached)."""
        plan = self._plans.get(count)
        if plan is None:
            plan = self._make_plan(count)
            if len(self._plans) < 64:
                self._plans[count] = plan
        return plan

    def _move(self, user_obj: Any, packed_obj: Any, position: int, count: int, to_packed: bool) -> int:
        plan = self._plans.get(count) or self.plan(count)  # a tuple: unpacked once below, for speed
        if type(user_obj) not in HOST_TYPES or type(packed_obj) not in HOST_TYPES:
            if is_device(user_obj) or is_device(packed_obj):
                from .device import device_move

                return device_move(self, plan, user_obj, packed_obj, position, to_packed)
        try:
            ub = _buffer(user_obj)
            pb = _buffer(packed_obj)
            if (pb if to_packed else ub).readonly:
                raise BufferError("read-only")
        except (TypeError, ValueError, BufferError):  # let host_buffer name the problem
            host_buffer(user_obj, not to_packed, "input buffer" if to_packed else "output buffer")
            host_buffer(packed_obj, to_packed, "output buffer" if to_packed else "input buffer")
            raise
        _, nbytes, lo, hi, start, _, _, pack_call, unpack_call, _ = plan
        end = position + nbytes
        if position < 0 or end > pb.nbytes or lo < 0 or hi > ub.nbytes:
            self.check_bounds(plan, ub.nbytes, pb.nbytes, position, to_packed)
        if nbytes:
            kernel, args = pack_call if to_packed else unpack_call
            kernel(ub.address + start, pb.address + position, *args)
        return end

    def _make_plan(self, count: int) -> Plan:
        if count < 0:
            raise PackError(MPI.ERR_COUNT, f"count must be >= 0, got {count}")
        lay, nbytes = self.layout, self.size * count
        lo, hi = self.bounds(count)
        if type(lay) is StridedBlock:
            outer = tuple(zip(lay.counts[1:], lay.strides[1:])) + ((count, self.extent),)
            st = _normalize(lay.start, lay.run, outer)
            dims = np.array([[c for c, _ in st.dims], [s for _, s in st.dims]], dtype=np.int64).reshape(2, -1)
            streams = stream_policy(nbytes, st.run, True)
            return Plan(StridedBlock, nbytes, lo, hi, st.start, st.run, dims,
                        *(_strided_call(st.run, dims, stream, to_packed) for to_packed, stream in zip((1, 0), streams)),
                        streams)
        if type(lay) is BlockList:
            dims = np.array([lay.counts + (count,), lay.strides + (self.extent,)], dtype=np.int64)
            mean_block = lay.size / max(lay.nblocks, 1)
            streams = stream_policy(nbytes, mean_block, False)
            calls = ((host_kernels.move_blocks, (lay.offsets, lay.lengths, dims, int(to_packed), int(stream),
                                                  *block_prefetch(mean_block, to_packed), BLOCK_DIRECT))
                     for to_packed, stream in zip((True, False), streams))
            return Plan(BlockList, nbytes, lo, hi, 0, 0, dims, *calls, streams)
        return Plan(None, nbytes, lo, hi, 0, 0, None, (self._mpi_move, (nbytes, True)),
                    (self._mpi_move, (nbytes, False)))

    def check_bounds(self, plan: Plan, user_len: int, packed_len: int, position: int, to_packed: bool) -> None:
        """Raise PackError naming the problem unless every byte touched lies inside both buffers."""
        if position < 0:
            raise PackError(MPI.ERR_ARG, f"position must be >= 0, got {position}")
        end = position + plan.nbytes
        if end > packed_len:
            verb, side = ("packing", "output") if to_packed else ("unpacking", "input")
            raise PackError(MPI.ERR_TRUNCATE, f"{verb} {plan.nbytes} bytes at position {position} needs "
                            f"{end} bytes, {side} buffer has {packed_len}")
        if plan.lo < 0:
            raise PackError(MPI.ERR_BUFFER, f"datatype reaches {-plan.lo} bytes before the start of the buffer "
                            "(negative displacement or lower bound); pass a buffer that starts earlier")
        if plan.hi > user_len:
            side = "input" if to_packed else "output"
            raise PackError(MPI.ERR_BUFFER, f"these elements span {plan.hi} bytes, {side} buffer has {user_len}")

    def bounds(self, count: int) -> tuple[int, int]:
        """Lowest user byte ``count`` elements touch and one past the highest ((0, 0) if none)."""
        if count <= 0 or self.size == 0:
            return 0, 0
        lo, hi = self.span()
        reach = (count - 1) * self.extent
        return (lo, hi + reach) if reach >= 0 else (lo + reach, hi)

    def span(self) -> tuple[int, int]:
        """Lowest byte touched and one past the highest, for one element."""
        if self.layout is not None:
            return self.layout.span()
        return self.datatype.true_lb, self.datatype.true_lb + self.datatype.true_extent

    def _mpi_move(self, user: int, packed: int, nbytes: int, to_packed: bool) -> None:
        if self.extent <= 0:
            raise PackError(MPI.ERR_TYPE, "MPI fallback needs a datatype with a positive extent")
        window = MPI.buffer.fromaddress(user, nbytes // self.size * self.extent, readonly=to_packed)
        packed_mem = MPI.buffer.fromaddress(packed, nbytes, readonly=not to_packed)
        if to_packed:
            self.datatype.Pack(window, packed_mem, 0, MPI.COMM_SELF)
        else:
            self.datatype.Unpack(packed_mem, 0, window, MPI.COMM_SELF)

    def __repr__(self) -> str:
        what = self.layout if self.layout is not None else f"MPI fallback: {self.fallback_reason}"
        return f"Packer({self.datatype.Get_name() or 'datatype'}, {what})"


def _strided_call(run: int, dims: np.ndarray, stream: bool, to_packed: int) -> tuple:
    """(kernel, args) moving a strided block: ``move_row`` for one row that does not stream (an
    integer-only call, the cheapest), else ``move_strided`` with its layout array and flags."""
    counts, strides = dims
    ahead, pf_bytes = run_prefetch(run, strides[0] if len(strides) else 0)
    if len(counts) <= 1 and not stream:
        count, stride = (int(counts[0]), int(strides[0])) if len(counts) else (1, 0)
        return host_kernels.move_row_direct(), (run, count, stride, ahead * stride if count > ahead else 0,
                                                pf_bytes, to_packed)
    meta = host_kernels.strided_meta(run, counts, strides, ahead, pf_bytes)
    return host_kernels.move_strided, (meta, (PACK if to_packed else 0) | (STREAM if stream else 0))


def _check_usable(datatype: MPI.Datatype) -> None:
    if not isinstance(datatype, MPI.Datatype):
        raise PackError(MPI.ERR_TYPE, f"expected an mpi4py Datatype, got {type(datatype).__name__}")
    if datatype == MPI.DATATYPE_NULL:
        raise PackError(MPI.ERR_TYPE, "datatype is MPI.DATATYPE_NULL (freed, or never created)")
    if is_committed(datatype) is False:
        raise PackError(MPI.ERR_TYPE, "datatype is not committed: call .Commit() before packing with it")


# -- the per-datatype cache: keyed by handle, evicted by an attribute's delete callback on Free --
_packers: dict[int, Packer] = {}
_keyval: int | None = None


def _forget(datatype: MPI.Datatype, keyval: int, handle: int) -> None:
    _packers.pop(handle, None)


def packer_for(datatype: MPI.Datatype) -> Packer:
    """The cached Packer of ``datatype``, built on first use and dropped when the type is freed."""
    try:
        packer = _packers.get(datatype.handle)
    except AttributeError:
        raise PackError(MPI.ERR_TYPE, f"expected an mpi4py Datatype, got {type(datatype).__name__}") from None
    if packer is not None:
        return packer
    global _keyval
    packer = Packer(datatype)
    if not datatype.is_predefined:
        if _keyval is None:
            _keyval = MPI.Datatype.Create_keyval(delete_fn=_forget)
        datatype.Set_attr(_keyval, datatype.handle)
    _packers[datatype.handle] = packer
    return packer


def pack(inbuf: Any, count: int, datatype: MPI.Datatype, outbuf: Any, position: int = 0) -> int:
    """MPI_Pack: ``count`` elements of ``datatype`` from ``inbuf`` into ``outbuf``; the new position."""
    try:
        packer = _packers[datatype.handle]
    except (KeyError, AttributeError):
        packer = packer_for(datatype)
    return packer._move(inbuf, outbuf, position, count, True)


def unpack(inbuf: Any, position: int, outbuf: Any, count: int, datatype: MPI.Datatype) -> int:
    """MPI_Unpack: ``count`` elements of ``datatype`` from ``inbuf`` at ``position``; the new position."""
    try:
        packer = _packers[datatype.handle]
    except (KeyError, AttributeError):
        packer = packer_for(datatype)
    return packer._move(outbuf, inbuf, position, count, False)


def pack_size(count: int, datatype: MPI.Datatype) -> int:
    """MPI_Pack_size for this engine: packed bytes of ``count`` elements."""
    return packer_for(datatype).pack_size(count)
