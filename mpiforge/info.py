"""``mpiforge info``: what MPI, GPU and array libraries this job sees, and where its ranks run.

``collect_info(comm)`` is collective over ``comm`` (one ``gather`` of host names, done
first so that a rank failing later cannot leave the others waiting); every rank
returns its local facts, and rank 0 also the node/rank layout. Only rank 0 prints.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
from typing import TYPE_CHECKING, Any

import click

from .bindings import mpi_ext

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["collect_info", "info"]

log = logging.getLogger(__name__)

# module -> distributions that may provide it, most likely first
LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "numba": ("numba",),
    "numba.cuda": ("numba-cuda",),
    "cupy": ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy-rocm-6-0", "cupy-rocm-5-0"),
    "torch": ("torch",),
    "jax": ("jax",),
}


def _dist_version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _module_found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as exc:  # a broken parent package
        log.debug("find_spec(%s) failed: %s", module, exc)
        return False


def library_versions() -> dict[str, str | None]:
    """Version of each array/GPU library found (without importing it), None if absent."""
    found: dict[str, str | None] = {}
    for module, dists in LIBRARIES.items():
        version = _dist_version(dists)
        if version is None and module == "numba.cuda" and _module_found(module):
            version = "built-in"  # older numba ships its own CUDA target
        elif version is not None and not _module_found(module):
            log.debug("%s: distribution installed but module not importable", module)
            version = None
        found[module] = version
    return found


def cuda_device() -> dict[str, bool | None]:
    """Is a CUDA device visible to numba.cuda? ``visible`` is None when numba.cuda is absent."""
    if not _module_found("numba.cuda"):
        return {"visible": None, "simulator": False}
    try:
        from numba import cuda
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install must not break `info`
        log.debug("import numba.cuda failed: %s", exc)
        return {"visible": None, "simulator": False}
    simulator = bool(getattr(cuda.config, "ENABLE_CUDASIM", False))
    try:
        visible = bool(cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        log.debug("numba.cuda.is_available() failed: %s", exc)
        visible = None
    return {"visible": visible, "simulator": simulator}


def thread_level_name(level: int) -> str:
    """``MPI.THREAD_*`` constant -> single/funneled/serialized/multiple."""
    from mpi4py import MPI

    names = {
        MPI.THREAD_SINGLE: "single",
        MPI.THREAD_FUNNELED: "funneled",
        MPI.THREAD_SERIALIZED: "serialized",
        MPI.THREAD_MULTIPLE: "multiple",
    }
    return names.get(level, f"unknown ({level})")


def node_layout(hostnames: list[str]) -> list[dict[str, Any]]:
    """Group ranks by host, in order of each host's first rank."""
    nodes: dict[str, list[int]] = {}
    for rank, host in enumerate(hostnames):
        nodes.setdefault(host, []).append(rank)
    return [{"node": host, "ranks": ranks} for host, ranks in nodes.items()]


def _mpiforge_version() -> str:
    try:
        return importlib.metadata.version("mpiforge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def collect_info(comm: MPI.Comm | None = None) -> dict[str, Any]:
    """Facts about this process's MPI, GPU and array libraries; collective over ``comm``.

    ``layout`` (a list of ``{"node", "ranks"}``) is set on rank 0 when ``comm.size > 1``,
    None otherwise.
    """
    import mpi4py
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    hostnames = comm.gather(MPI.Get_processor_name(), root=0)
    layout = node_layout(hostnames) if comm.rank == 0 and comm.size > 1 else None

    library = (mpi_ext.library_version() or MPI.Get_library_version()).rstrip("\x00").strip()
    major, minor = MPI.Get_version()
    return {
        "mpiforge": _mpiforge_version(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mpi4py": mpi4py.__version__,
        "mpi_standard": f"{major}.{minor}",
        "mpi_library": library.splitlines()[0] if library else "",
        "libmpi": mpi_ext.libmpi_path(),
        "thread_level": thread_level_name(MPI.Query_thread()),
        "ulfm": {"supported": mpi_ext.ulfm_available(), "enabled": mpi_ext.ulfm_enabled()},
        "cuda_aware": mpi_ext.cuda_aware(),
        "rocm_aware": mpi_ext.rocm_aware(),
        "libraries": library_versions(),
        "cuda_device": cuda_device(),
        "rank": comm.rank,
        "size": comm.size,
        "layout": layout,
    }


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's (item, value) rows, in reading order."""
    ulfm = data["ulfm"]
    if not ulfm["supported"]:
        ulfm_text = "no"
    elif ulfm["enabled"]:
        ulfm_text = "yes, enabled in this job"
    else:
        state = "off" if ulfm["enabled"] is False else "unknown"
        ulfm_text = f"supported; {state} in this job (mpiexec --with-ft ulfm)"

    def aware(key: str, env: str) -> str:
        text = _yes_no(data[key])
        return text + f" (set by {env})" if os.environ.get(env, "").strip() else text

    device = data["cuda_device"]
    device_text = _yes_no(device["visible"]) + (" (numba CUDA simulator)" if device["simulator"] else "")
    rows = [
        ("mpiforge", data["mpiforge"]),
        ("Python", data["python"]),
        ("mpi4py", data["mpi4py"]),
        ("MPI standard", data["mpi_standard"]),
        ("MPI library", data["mpi_library"]),
        ("libmpi", data["libmpi"] or "not found"),
        ("thread level", data["thread_level"]),
        ("ULFM fault tolerance", ulfm_text),
        ("CUDA-aware MPI", aware("cuda_aware", "MPIFORGE_CUDA_AWARE")),
        ("ROCm-aware MPI", aware("rocm_aware", "MPIFORGE_ROCM_AWARE")),
        ("CUDA device visible", device_text),
    ]
    rows += [(name, version or "-") for name, version in data["libraries"].items()]
    rows.append(("ranks", str(data["size"])))
    for entry in data["layout"] or []:
        rows.append((f"node {entry['node']}", "ranks " + ",".join(map(str, entry["ranks"]))))
    return rows


def _print_table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mpiforge info", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value", overflow="fold")
    for item, value in _rows(data):
        table.add_row(item, value)
    Console().print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def info(as_json: bool) -> None:
    """What MPI, GPU and array libraries this job sees, and where its ranks run.

    Under `mpiexec -n N` every rank takes part; rank 0 prints.
    """
    try:
        data = collect_info()
    except ValueError as exc:  # e.g. a malformed MPIFORGE_CUDA_AWARE
        raise click.ClickException(str(exc)) from exc
    if data["rank"] != 0:
        return
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_table(data)
