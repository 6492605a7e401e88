"""The performance model that picks a method per message, and the profile it reads.

A profile holds throughputs measured on this system by ``mpiforge calibrate`` (or defaults):
contiguous transfers, MPI's own datatype transfers and mpiforge's pack/unpack by run length,
and the device figures. A transfer costs its sender's side plus its receiver's side; for one
side of a message of ``n`` packed bytes whose runs average ``b`` bytes (``wire`` = latency +
n / contig, the contiguous transfer both sides share):

    native   (latency + n / native(b)) / 2        (MPI packs and unpacks as it transfers;
                                                   to another node at most at link speed)
    host     stage + n / pack(b) + wire / 2       (receive: unpack)
    device   stage + launch + n / device_pack + wire / 2
    staged   stage + launch + n / device_pack + copy + n / d2h + wire / 2     (receive: h2d)
    oneshot  stage + launch + n / mapped + wire / 2       (the kernel writes host memory over the bus)

Peers on another node use the remote latency and bandwidth. Throughputs are interpolated
in log2(b).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .methods import DEVICE_METHODS, HOST_METHODS, Method

__all__ = ["Profile", "profile_path", "load_profile", "predict", "choose", "forced_method"]

log = logging.getLogger(__name__)

RUNS = (8, 64, 512, 4096, 32768)  # run lengths (bytes) at which throughputs are measured


def _by_run(*gbps: float) -> dict[str, float]:
    return {str(r): g for r, g in zip(RUNS, gbps)}


@dataclass
class Profile:
    """Throughputs in GB/s (1e9 bytes per second) and fixed costs in seconds."""

    contig_gbps: float = 8.0  # a peer on this node (shared memory)
    latency_s: float = 2e-6
    remote_contig_gbps: float = 1.2  # a peer on another node (default: 10 Gb/s Ethernet)
    remote_latency_s: float = 30e-6
    native_gbps: dict[str, float] = field(default_factory=lambda: _by_run(2.5, 3.0, 4.0, 6.0, 7.0))
    pack_gbps: dict[str, float] = field(default_factory=lambda: _by_run(2.7, 3.2, 4.5, 6.0, 7.0))
    unpack_gbps: dict[str, float] = field(default_factory=lambda: _by_run(2.6, 5.0, 6.5, 6.5, 7.0))
    # device figures: defaults of a PCIe 3 V100-class node with a CUDA-aware MPI that packs
    # device datatypes one block at a time (what TEMPI measured); calibrated on a real GPU
    device_pack_gbps: float = 300.0
    native_device_gbps: dict[str, float] = field(default_factory=lambda: _by_run(0.002, 0.02, 0.15, 1.2, 6.0))
    d2h_gbps: float = 11.0
    h2d_gbps: float = 11.0
    mapped_gbps: float = 9.0
    launch_s: float = 8e-6
    copy_s: float = 10e-6
    stage_s: float = 8e-6  # Python work of one side of a staged message (choose, allocate, wrap)
    source: str = "defaults"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Profile:
        data = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown profile fields {sorted(unknown)}; re-run `mpiforge calibrate`")
        profile = cls(**data)
        profile.source = str(path)
        return profile


def profile_path() -> Path:
    """``$MPIFORGE_PROFILE``, else ``$XDG_CACHE_HOME/mpiforge/profile.json`` (``~/.cache``)."""
    explicit = os.environ.get("MPIFORGE_PROFILE")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mpiforge" / "profile.json"


def load_profile() -> Profile:
    """The calibrated profile if there is a readable one, else the defaults (logged)."""
    path = profile_path()
    if path.exists():
        try:
            return Profile.load(path)
        except (ValueError, TypeError, OSError) as exc:
            log.warning("ignoring profile %s (%s); using defaults", path, exc)
    else:
        log.info("no calibrated profile at %s (run `mpiforge calibrate`); using defaults", path)
    return Profile()


def _at(table: dict[str, float], run: float) -> float:
    """Throughput at run length ``run``, interpolated linearly in log2(run), clamped at the ends."""
    points = sorted((int(k), v) for k, v in table.items())
    x = math.log2(max(run, 1.0))
    for (r0, g0), (r1, g1) in zip(points, points[1:]):
        x0, x1 = math.log2(r0), math.log2(r1)
        if x <= x1:
            t = min(max((x - x0) / (x1 - x0), 0.0), 1.0)
            return g0 + t * (g1 - g0)
    return points[-1][1]


def predict(p: Profile, method: Method, nbytes: int, run: float, sending: bool, device: bool,
            remote: bool = False) -> float:
    """Seconds this side spends moving ``nbytes`` packed bytes of runs of ``run`` bytes to or
    from a peer on this node, or (``remote``) on another one."""
    n = nbytes / 1e9  # seconds = n / GB/s
    latency, contig = (p.remote_latency_s, p.remote_contig_gbps) if remote else (p.latency_s, p.contig_gbps)
    half_wire = (latency + n / contig) / 2
    if method is Method.NATIVE:
        native = _at(p.native_device_gbps if device else p.native_gbps, run)
        if remote:  # MPI pipelines its packing with the network: the slower of the two
            native = min(native, contig)
        return (latency + n / native) / 2
    half_wire += p.stage_s  # every method but native stages in Python
    if method is Method.HOST:
        return n / _at(p.pack_gbps if sending else p.unpack_gbps, run) + half_wire
    if method is Method.DEVICE:
        return p.launch_s + n / p.device_pack_gbps + half_wire
    if method is Method.STAGED:
        copy = p.copy_s + n / (p.d2h_gbps if sending else p.h2d_gbps)
        return p.launch_s + n / p.device_pack_gbps + copy + half_wire
    return p.launch_s + n / p.mapped_gbps + half_wire  # ONESHOT


def forced_method() -> Method | None:
    """``MPIFORGE_METHOD`` (native, host, device, staged, oneshot), or None to let the model pick."""
    value = os.environ.get("MPIFORGE_METHOD", "").strip().lower()
    if not value or value == "auto":
        return None
    try:
        return Method(value)
    except ValueError:
        raise ValueError(f"MPIFORGE_METHOD={value!r}: expected one of auto, "
                         + ", ".join(m.value for m in Method)) from None


def choose(p: Profile, nbytes: int, run: float, sending: bool, device: bool, cuda_aware: bool,
           forced: Method | None = None, remote: bool = False) -> Method:
    """The method for one side of a message: ``forced`` where it applies, else the cheapest.

    Device memory never goes to MPI (native or device) unless MPI is CUDA-aware. A forced
    method applies to the memory kind it is made for: ``host`` to host buffers, ``device``,
    ``staged`` and ``oneshot`` to device buffers, ``native`` to both.
    """
    allowed = [m for m in (DEVICE_METHODS if device else HOST_METHODS)
               if cuda_aware or not device or m not in (Method.NATIVE, Method.DEVICE)]
    if forced in allowed:
        return forced
    return min(allowed, key=lambda m: predict(p, m, nbytes, run, sending, device, remote))
