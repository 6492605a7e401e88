"""Measure the cost model's figures on a running job (``mpiforge calibrate --levels``).

All ranks measure at once, so the figures include what the job's ranks do to each other
(shared cores, one network link per node):

- intra: every rank exchanges with a rank of its own node (8 B for alpha, 4 MiB for beta; 16 MiB across nodes);
- inter: every rank streams to the rank of the same local index on the next node (a ring per
  rail, as the hierarchical algorithms send); the node's link carries all of its ranks'
  messages, so beta per link = time per byte / ranks; single steps after idling measure a
  token bucket's depth and speed (burst, line);
- gamma: numpy reduction of 4 MiB, all ranks at once; codec_gamma: int8 encode + decode;
- overhead: the software time of one step of our algorithms (a tiny ring on the node);
- call, codec_call: the fixed software time of a hierarchical allreduce call, exact and int8;
- MPI's own collectives at sizes 4 KiB .. ``max_size`` (x4), for the "mpi" candidate;
- our best-rated allreduce plans at 256 KiB .. ``max_size`` (``own_times``).

    figures = measure_levels(MPI.COMM_WORLD)        # collective; the same dict on every rank
    machine = machine_for(discover(comm), figures)
"""
from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from ..comms.quantize import get_codec
from .algorithms import ring_allreduce_steps
from .cost import ALGORITHMS, plan_key
from .discovery import Topology, discover
from .hierarchical import Hierarchy
from .profile import job_key, profile_path, save
from .quantized import PIECE, exchange
from .schedule import run

__all__ = ["idle_before", "main", "measure_levels", "quiet"]

log = logging.getLogger(__name__)
SMALL, LARGE, LINK = 8, 4 << 20, 16 << 20
BUCKET_PROBES = (128 << 10, 1 << 20)  # bytes per node link of the steps that measure a token bucket
IDLE_S = 0.006  # links idle this long before timing (refills a token bucket of 4 ms of the rate)


def idle_before(nbytes: int) -> float:
    """Idle time before timing a collective of ``nbytes``: from 256 KiB up, every timing starts
    from quiet links (as between a training step's collectives), not behind the previous one's
    traffic; smaller ones drain less than a barrier's pause refills."""
    return IDLE_S if nbytes >= (256 << 10) else 0.0


def quiet(comm: MPI.Comm, idle: float) -> None:
    """A barrier, then (``idle`` > 0) ``idle`` seconds without traffic and another barrier."""
    comm.Barrier()
    if idle:
        time.sleep(idle)
        comm.Barrier()


def _timed(comm: MPI.Comm, fn, reps: int, idle: float = 0.0) -> float:
    """Median over ``reps`` of the slowest rank's time of ``fn()`` (after one warm-up), each
    after ``idle`` seconds without traffic."""
    fn()
    times = []
    for _ in range(reps):
        quiet(comm, idle)
        start = time.perf_counter()
        fn()
        times.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    return statistics.median(times)


def _exchange(comm: MPI.Comm, partner: int | None, nbytes: int, reps: int) -> float:
    send, recv = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)

    def step() -> None:
        if partner is not None and partner != comm.rank:
            comm.Sendrecv(send, partner, 91, recv, partner, 91)

    return _timed(comm, step, reps)


def _link(comm: MPI.Comm, partner: int | None, reps: int, nbytes: int, sharers: int = 1) -> dict:
    small = _exchange(comm, partner, SMALL, reps * 4)
    large = _exchange(comm, partner, nbytes, reps)
    return {"alpha": small, "beta": max(large - small, 1e-9) / nbytes / sharers}


def _rails(comm: MPI.Comm, topology: Topology, reps: int, steps: int = 4) -> dict:
    """The inter-node link as the hierarchical algorithms use it: every rank sends to the rank
    of the same local index on the next node and receives from the previous one, ``steps``
    times in a row (a warm TCP stream), all rails at once, so each node link carries one
    message per rank of the node. Messages go in eager-sized pieces: one large message waits
    for a rendezvous reply queued behind the data on the link, which measures that queue
    (on two nodes the link looked a third slower), not the link.

    Single steps after idle links measure a token bucket (tc tbf; a plain link has none): the
    speed of a small step (``line``, 128 KiB per link) and how many bytes of a 1 MiB step
    pass at that speed before the rate holds them back (``burst``)."""
    nodes, me = topology.nodes, topology.places[comm.rank]
    k, local = len(nodes), me.local_rank
    ring = [n[local] if local < len(n) else None for n in nodes]
    right, left = ring[(me.node + 1) % k], ring[(me.node - 1) % k]

    def timed(nbytes: int, count: int, idle: float = 0.0) -> float:
        send, recv = np.ones(nbytes, np.uint8), np.empty(nbytes, np.uint8)

        def go() -> None:
            for _ in range(count):
                if right is not None and left is not None:  # in pieces, as the quantized ring sends
                    MPI.Request.Waitall(exchange(comm, recv, left, send, right, 92, PIECE))
        return _timed(comm, go, reps, idle) / count

    alpha = timed(SMALL, 16)
    sharers = min(len(n) for n in nodes)
    beta = max(timed(LINK // steps, steps) - alpha, 1e-12) / (LINK // steps) / sharers
    line = max(timed(BUCKET_PROBES[0] // sharers, 1, IDLE_S) - alpha, 1e-12) / BUCKET_PROBES[0]
    big = BUCKET_PROBES[1]
    saved = alpha + big * beta - timed(big // sharers, 1, IDLE_S)
    burst = min(max(saved / (beta - line), 0.0), big) if beta > line else 0.0
    return {"alpha": alpha, "beta": beta, "line": min(line, beta), "burst": burst}


def _mpi_times(comm: MPI.Comm, max_size: int, reps: int) -> dict:
    """Seconds of MPI's collectives per size (allreduce-style sizes: the whole array)."""
    p = comm.size
    out: dict[str, list] = {c: [] for c in ("allreduce", "reduce_scatter", "allgather", "bcast", "reduce")}
    size = 4096
    while size <= max_size:
        x = np.ones(size // 4, np.float32)
        y = np.empty_like(x)
        block = np.ones(max(1, size // 4 // p), np.float32)
        gathered = np.empty(block.size * p, np.float32)
        calls = {
            "allreduce": lambda: comm.Allreduce(x, y),
            "reduce_scatter": lambda: comm.Reduce_scatter_block(x[:block.size * p], block),
            "allgather": lambda: comm.Allgather(block, gathered),
            "bcast": lambda: comm.Bcast(x, root=0),
            "reduce": lambda: comm.Reduce(x, y, root=0),
        }
        count = 3 * reps if size >= (1 << 20) else reps * 10  # they decide when ours replaces MPI: many reps
        for name, call in calls.items():
            out[name].append([size, _timed(comm, call, count, idle=idle_before(size))])
        size *= 4
    return out


def _own_times(comm: MPI.Comm, topology: Topology, figures: dict, max_size: int, reps: int,
               keep: int = 4) -> dict:
    """Seconds of our allreduce plans at 256 KiB .. ``max_size`` (x4): the ``keep`` exact ones
    the model rates best (flat or hierarchical) and the quantized (int8) one of every segment
    count. Where the model misjudges a plan on this machine (pipelining, large messages on a
    throttled link), the measurement corrects it."""
    from .collective import TopologyCollective
    from .profile import machine_for

    machine = machine_for(topology, figures)
    ours = [a for a in ALGORITHMS["allreduce"] if a != "mpi"]
    coll = TopologyCollective(comm, algo="auto", machine=machine)
    codec = get_codec("int8")
    out: dict[str, list] = {}
    size = 256 << 10
    while size <= max_size:
        x = np.ones(size // 4, np.float32)
        result = np.empty_like(x)
        for quantized in (False, True):
            candidates = sorted(machine.plans("allreduce", size, quantized, ours), key=lambda p: p.seconds)
            for plan in candidates if quantized else candidates[:keep]:  # quantized: one per segment count
                key = plan_key("allreduce", plan.algorithm, plan.inter, plan.segments, plan.quantized)
                seconds = _timed(comm, lambda plan=plan: coll.run_plan(plan, x, out=result, codec=codec),
                                 2 * reps, idle=idle_before(size))
                out.setdefault(key, []).append([size, seconds])
        size *= 4
    coll.free()
    return out


def _call_costs(comm: MPI.Comm, topology: Topology, figures: dict, reps: int) -> dict:
    """The fixed software cost of a hierarchical allreduce call (``call``), and what quantizing
    adds (``codec_call``): a tiny allreduce timed, less what the model predicts for its steps."""
    from .profile import machine_for

    machine = machine_for(topology, {k: v for k, v in figures.items() if not k.endswith("_times")})
    hierarchy = Hierarchy(comm, topology)
    tiny = np.ones(8 * comm.size, np.float32)
    result = np.empty_like(tiny)
    codec = get_codec("int8")
    spent = {}
    for quantized in (False, True):
        measured = _timed(comm, lambda q=quantized: hierarchy.allreduce(tiny, "sum", "ring", 1, out=result,
                                                                        codec=codec if q else None), reps * 4)
        spent[quantized] = measured - machine.predict("allreduce", "hierarchical", tiny.nbytes, "ring", 1, quantized)
    hierarchy.free()
    return {"call": max(spent[False], 0.0), "codec_call": max(spent[True] - max(spent[False], 0.0), 0.0)}


def measure_levels(comm: MPI.Comm, topology: Topology | None = None, max_size: int = 4 << 20,
                   reps: int = 5) -> dict:
    """The figures of ``topology.profile`` measured on ``comm`` (collective)."""
    topology = topology or discover(comm)
    nodes = topology.nodes
    me = topology.places[comm.rank]
    mates = nodes[me.node]
    figures: dict = {}
    if max(len(n) for n in nodes) > 1:
        partner = mates[me.local_rank ^ 1] if (me.local_rank ^ 1) < len(mates) else None
        figures["intra"] = _link(comm, partner, reps, LARGE)
    if len(nodes) > 1:
        figures["inter"] = _rails(comm, topology, reps)
    data, more = np.ones(LARGE // 4, np.float32), np.ones(LARGE // 4, np.float32)
    figures["gamma"] = _timed(comm, lambda: np.add(data, more, out=data), reps) / LARGE
    codec = get_codec("int8")
    payload = np.empty(codec.payload_nbytes(data.size), np.uint8)
    figures["codec_gamma"] = _timed(comm, lambda: codec.decode_add(codec.encode(more, payload), data), reps) / LARGE
    node = comm.Split(me.node, comm.rank)
    tiny = np.ones(2 * node.size, np.float32)
    steps = 2 * (node.size - 1)
    if steps:
        ring = _timed(comm, lambda: run(ring_allreduce_steps(node, tiny.copy(), "sum")), reps * 4)
        figures["overhead"] = max(ring / steps - figures.get("intra", {}).get("alpha", 0.0), 1e-6)
    node.Free()
    figures["mpi_times"] = {job_key(topology): _mpi_times(comm, max_size, reps)}
    if len(nodes) > 1:
        figures.update(_call_costs(comm, topology, figures, reps))
        figures["own_times"] = {job_key(topology): _own_times(comm, topology, figures, max_size, reps)}
    log.info("calibrated levels: %s", {k: v for k, v in figures.items() if not k.endswith("_times")})
    return figures


def main(quick: bool, output: str | None, ranks: int) -> None:
    """``mpiforge calibrate --levels``: measure under mpiexec (or launch ``ranks`` ranks that do),
    merge into the topology profile and print the figures."""
    from ..launch import in_mpi_job, mpiexec_command

    path = Path(output) if output else profile_path()
    if not in_mpi_job():
        argv = [sys.executable, "-m", "mpiforge", "calibrate", "--levels", "--output", str(path)]
        code = subprocess.call(mpiexec_command(ranks, argv + (["--quick"] if quick else [])))
        if code:
            raise SystemExit(code)
        return
    comm = MPI.COMM_WORLD
    topology = discover(comm)
    figures = measure_levels(comm, topology, max_size=(1 << 20) if quick else (16 << 20), reps=3 if quick else 5)
    if comm.rank == 0:
        save(figures, path)
        _report(figures, topology, path)


def _report(figures: dict, topology: Topology, path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cost model figures, {job_key(topology)}")
    for column in ("figure", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for name in ("intra", "inter"):
        if name in figures:
            link = figures[name]
            table.add_row(f"{name} latency", f"{link['alpha'] * 1e6:.1f} us")
            table.add_row(f"{name} bandwidth", f"{1 / link['beta'] / 1e9:.3f} GB/s")
            if link.get("burst"):
                table.add_row(f"{name} token bucket", f"{link['burst'] / 1e3:.0f} KB at {1 / link['line'] / 1e9:.3f} GB/s")
    table.add_row("reduction", f"{1 / figures['gamma'] / 1e9:.2f} GB/s")
    table.add_row("int8 encode + decode", f"{1 / figures['codec_gamma'] / 1e9:.2f} GB/s")
    if "overhead" in figures:
        table.add_row("software per step", f"{figures['overhead'] * 1e6:.1f} us")
    if "call" in figures:
        table.add_row("software per call", f"{figures['call'] * 1e6:.0f} us (+{figures['codec_call'] * 1e6:.0f} us int8)")
    for collective, points in next(iter(figures["mpi_times"].values())).items():
        table.add_row(f"MPI {collective}", ", ".join(f"{size >> 10} KiB {t * 1e3:.2f} ms" for size, t in points[::2]))
    for key, points in next(iter(figures.get("own_times", {}).values()), {}).items():
        table.add_row(f"ours {key}", ", ".join(f"{size >> 10} KiB {t * 1e3:.2f} ms" for size, t in points))
    console = Console()
    console.print(table)
    console.print(f"written to {path}; TopologyCollective and `mpiforge simulate --profile` read it")
