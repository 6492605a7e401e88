"""Read Open MPI's datatype flags through ctypes, to refuse uncommitted types before MPI crashes.

Open MPI 5 segfaults in MPI_Pack_size on an uncommitted datatype and has no query for the
committed state. Its ``opal_datatype_t`` starts with a 16-byte object header, then a uint16
``flags`` word, then the size at byte 24. The layout is verified at first use against a type
whose size and state we know; if it does not match (another MPI, a debug build) the check
answers None, meaning "unknown".
"""
from __future__ import annotations

import ctypes
import logging

from mpi4py import MPI

__all__ = ["is_committed"]

log = logging.getLogger(__name__)
_FLAGS_OFFSET, _SIZE_OFFSET, _COMMITTED = 16, 24, 0x0004
_verified: bool | None = None


def _read(dt: MPI.Datatype) -> tuple[int, int]:
    h = dt.handle
    return ctypes.c_uint16.from_address(h + _FLAGS_OFFSET).value, ctypes.c_size_t.from_address(h + _SIZE_OFFSET).value


def _verify() -> bool:
    if not MPI.Get_library_version().startswith("Open MPI v5"):
        return False
    probe = MPI.BYTE.Create_contiguous(977)
    try:
        flags, size = _read(probe)
        before = size == 977 and not flags & _COMMITTED
        probe.Commit()
        flags, size = _read(probe)
        return before and size == 977 and bool(flags & _COMMITTED)
    finally:
        probe.Free()


def is_committed(dt: MPI.Datatype) -> bool | None:
    """True/False when this Open MPI's layout is understood, else None."""
    global _verified
    if _verified is None:
        _verified = _verify()
        log.debug("Open MPI datatype flag layout %s", "verified" if _verified else "unknown: no commit check")
    if not _verified:
        return None
    flags, size = _read(dt)
    if size != dt.size:
        return None
    return bool(flags & _COMMITTED)
