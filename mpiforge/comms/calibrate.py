"""``mpiforge calibrate``: measure the figures of the method model on this system.

Between rank 0 and a rank on its node (and one on another node, when the job spans nodes)
it measures, as one-way times of ping-pongs (medians): contiguous latency and bandwidth;
MPI's own transfer of vector datatypes whose runs are
8 B ... 32 KiB; and on rank 0 mpiforge's host pack and unpack of the same layouts. Device
figures are measured only on a real GPU; otherwise the defaults stay (and say so).
"""
from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..launch import in_mpi_job, mpiexec_command
from .model import RUNS, Profile, profile_path

__all__ = ["measure", "main"]

log = logging.getLogger(__name__)


def _pingpong(comm, partner: int, send, recv, reps: int) -> float:
    """Median one-way seconds of ``reps`` ping-pongs between rank 0 and ``partner`` (others idle)."""
    times = []
    rank = comm.rank
    for _ in range(reps + 1):
        comm.Barrier()
        t = time.perf_counter()
        if rank == 0:
            comm.Send(send, partner, 11)
            comm.Recv(recv, partner, 12)
        elif rank == partner:
            comm.Recv(recv, 0, 11)
            comm.Send(send, 0, 12)
        times.append((time.perf_counter() - t) / 2)
    return statistics.median(times[1:])


def _partners(comm) -> tuple[int | None, int | None]:
    """The first rank on rank 0's node and the first on another node (None if there is none)."""
    from mpi4py import MPI

    names = comm.allgather(MPI.Get_processor_name())
    local = next((r for r in range(1, comm.size) if names[r] == names[0]), None)
    remote = next((r for r in range(1, comm.size) if names[r] != names[0]), None)
    return local, remote


def _local(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _staging_cost(comm, partner: int, reps: int) -> float:
    """Seconds one side of a tiny staged message costs beyond a native one (Python's share)."""
    from mpi4py import MPI

    from .comm import Comm

    tiny = MPI.BYTE.Create_vector(2, 1, 2).Commit()
    src, dst = np.ones(4, np.uint8), np.empty(4, np.uint8)
    one_way = {m: _pingpong(Comm(comm, m), partner, [src, 1, tiny], [dst, 1, tiny], reps * 20)
               for m in ("native", "host")}
    tiny.Free()
    return max(0.0, (one_way["host"] - one_way["native"]) / 2)


def measure(comm, quick: bool = False) -> Profile | None:
    """Measure a Profile between ranks 0 and 1 of ``comm`` (collective); rank 0 gets it."""
    from mpi4py import MPI

    from ..datatypes import pack, unpack

    if comm.size < 2:
        raise ValueError("calibration needs at least 2 ranks (mpiexec -n 2 ...)")
    reps = 5 if quick else 15
    packed = (1 << 20) if quick else (4 << 20)
    local, remote = _partners(comm)
    profile = Profile()
    tiny = np.zeros(1, np.uint8)
    big, big_in = np.ones(packed, np.uint8), np.empty(packed, np.uint8)
    for partner, is_remote in ((local, False), (remote, True)):
        if partner is None:
            continue
        latency = _pingpong(comm, partner, tiny, tiny.copy(), reps * 4)
        contig = packed / _pingpong(comm, partner, big, big_in, reps) / 1e9
        if is_remote:
            profile.remote_latency_s, profile.remote_contig_gbps = latency, contig
        else:
            profile.latency_s, profile.contig_gbps = latency, contig
    native_partner = local if local is not None else remote
    profile.stage_s = _staging_cost(comm, native_partner, reps)
    for run in RUNS:
        count = packed // run
        vec = MPI.BYTE.Create_vector(count, run, 2 * run).Commit()
        user, back = np.ones(2 * packed, np.uint8), np.empty(2 * packed, np.uint8)
        one_way = _pingpong(comm, native_partner, [user, 1, vec], [back, 1, vec], reps)
        profile.native_gbps[str(run)] = packed / one_way / 1e9
        if comm.rank == 0:
            out = np.empty(packed, np.uint8)
            profile.pack_gbps[str(run)] = packed / _local(lambda: pack(user, 1, vec, out), reps) / 1e9
            profile.unpack_gbps[str(run)] = packed / _local(lambda: unpack(out, 0, back, 1, vec), reps) / 1e9
        vec.Free()
    if comm.rank != 0:
        return None
    where = ", ".join(f"{what} peer: rank {r}" for what, r in (("local", local), ("remote", remote)) if r is not None)
    profile.source = f"calibrated ({'quick' if quick else 'full'}; {where})"
    return profile


def _report(profile: Profile, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"host transfers (GB/s); contiguous {profile.contig_gbps:.2f} GB/s, "
                        f"latency {profile.latency_s * 1e6:.1f} us on this node; to another node "
                        f"{profile.remote_contig_gbps:.2f} GB/s, {profile.remote_latency_s * 1e6:.1f} us; "
                        f"staging {profile.stage_s * 1e6:.1f} us per side")
    for col in ("run B", "MPI datatype", "mpiforge pack", "mpiforge unpack"):
        table.add_column(col, justify="right")
    for run in RUNS:
        key = str(run)
        table.add_row(key, f"{profile.native_gbps[key]:.2f}", f"{profile.pack_gbps[key]:.2f}",
                      f"{profile.unpack_gbps[key]:.2f}")
    console = Console()
    console.print(table)
    console.print(f"{profile.source}; device figures: defaults (no GPU measured here); profile written to {path}")


def main(quick: bool, output: str | None, ranks: int) -> None:
    """The command body: measure under mpiexec, or launch ``ranks`` ranks that do."""
    path = Path(output) if output else profile_path()
    if not in_mpi_job():
        argv = [sys.executable, "-m", "mpiforge", "calibrate", "--output", str(path)] + (["--quick"] if quick else [])
        code = subprocess.call(mpiexec_command(ranks, argv))
        if code:
            raise SystemExit(code)
        return
    from mpi4py import MPI

    profile = measure(MPI.COMM_WORLD, quick)
    if profile is not None:
        profile.save(path)
        _report(profile, path)
