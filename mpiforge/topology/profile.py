"""The measured figures of a machine's levels, kept between runs, and the ``Machine`` they make.

``mpiforge calibrate --levels`` measures them on a running job and writes
``~/.cache/mpiforge/topology.json`` (or ``MPIFORGE_TOPO_PROFILE``):

    {"intra": {"alpha": 3e-6, "beta": 3.3e-10}, "inter": {"alpha": 6e-5, "beta": 8.5e-9},
     "gamma": 5e-10, "overhead": 2e-5, "codec_gamma": 1.5e-9, "call": 3e-4, "codec_call": 2e-4,
     "mpi_times": {"3x2:roundrobin": {"allreduce": [[4096, 0.0004], ...]}},
     "own_times": {"3x2:roundrobin": {"allreduce/hierarchical/ring/x4/quantized": [[262144, 0.003], ...]}}}

Measured times (MPI's collectives, our hierarchical plans) apply only to jobs of the same shape
and placement. Missing figures keep
the defaults of ``cost.Machine.cluster`` (shared memory inside a node, 1 Gbit/s between).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .cost import FIGURES, Link, Machine
from .discovery import Topology

__all__ = ["job_key", "load", "machine_for", "profile_path", "save"]

log = logging.getLogger(__name__)


def profile_path() -> Path:
    return Path(os.environ.get("MPIFORGE_TOPO_PROFILE") or Path.home() / ".cache" / "mpiforge" / "topology.json")


def load(path: Path | None = None) -> dict:
    """The stored figures ({} when there are none or the file is unreadable, which is logged)."""
    path = path or profile_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the topology profile %s (%s); run `mpiforge calibrate --levels` again", path, exc)
        return {}


def save(figures: dict, path: Path | None = None) -> Path:
    """Merge ``figures`` into the stored profile (MPI times per job shape are kept side by side)."""
    path = path or profile_path()
    old = load(path)
    merged = {**old, **figures}
    for per_job in ("mpi_times", "own_times"):
        merged[per_job] = {**old.get(per_job, {}), **figures.get(per_job, {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1))
    return path


def job_key(topology: Topology) -> str:
    nodes = topology.nodes
    return f"{len(nodes)}x{max(len(n) for n in nodes)}:{topology.placement}"


def machine_for(topology: Topology, figures: dict | None = None) -> Machine:
    """The cost model of the job ``topology`` describes, with stored (or given) figures."""
    figures = load() if figures is None else figures
    default = Machine.cluster(1, 1)
    inter, intra = default.links
    links = {name: Link(**{**vars(base), **figures.get(name, {})}) for name, base in (("inter", inter), ("intra", intra))}
    extra = {k: float(figures[k]) for k in FIGURES if k in figures}
    times, own = ({c: tuple(map(tuple, v)) for c, v in figures.get(name, {}).get(job_key(topology), {}).items()}
                  for name in ("mpi_times", "own_times"))
    return Machine.from_coordinates(topology.coordinates(), links["intra"], links["inter"],
                                    mpi_times=times, own_times=own, **extra)
