#!/usr/bin/env python
"""Ping-pong latency and bandwidth of a strided datatype between 2 ranks, OSU style.

The message is a vector of doubles: blocks of ``--block`` bytes every ``2 x block`` bytes,
from 8 B to 64 MiB packed (a size smaller than one block is a single run of that size).
Five ways to move it, all in the same run:

- ``mpi``: plain mpi4py, ``comm.Send([buf, 1, vector])``: MPI's own datatype engine;
- ``native``: ``mpiforge.comms.Comm(comm, method="native")``: the same, through the interposer;
- ``host``: ``Comm(comm, method="host")``: mpiforge packs to bytes, MPI sends them, mpiforge unpacks;
- ``auto``: ``Comm(comm)``: the method model picks (its choice is reported);
- ``contig``: a contiguous message of the same packed size, the floor.

One-way time = round trip / 2; the median of many round trips (more for small sizes, at least
``--reps`` at the largest). The five take turns, one round trip each, so that a slow phase of a
shared machine hits all of them alike; their order rotates (and reverses) from one repetition
to the next so that each follows every other equally often: a variant leaves caches and the
allocator in a state that speeds up or slows down the next one (a contiguous round trip right
after another contiguous one was ~2x faster at 256 KiB on a 2-core VM), and a fixed order would
always charge that to the same neighbour. Before timing, every variant's received buffer is
checked against the sent strided data (and its gaps left untouched).
Bandwidth is packed bytes / one-way time (GB/s = 1e9 bytes/s). ``auto/best`` is auto's time
over the faster of native and host (how well the model chose; it reads the profile of
``mpiforge calibrate``, or its defaults); ``spread`` the largest interquartile range / median
of a row, flagged when the round trips scattered enough to blur the comparison (a busy machine,
usually).

Run as a plain script it launches itself on 2 ranks with mpiexec; under mpiexec it runs in place.

    python scripts/bench_pingpong.py                       # full run, one table
    python scripts/bench_pingpong.py --quick --json out.json --plot
    python scripts/bench_pingpong.py --block 8 --block 512 --markdown pp.md
"""
from __future__ import annotations

import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from mpiforge.launch import in_mpi_job, mpiexec_command

log = logging.getLogger("bench_pingpong")

KiB, MiB = 1 << 10, 1 << 20
SIZES = (8, 64, 512, 4 * KiB, 32 * KiB, 256 * KiB, 2 * MiB, 16 * MiB, 64 * MiB)
QUICK_SIZES = (8, 512, 32 * KiB, 2 * MiB, 64 * MiB)
VARIANTS = ("mpi", "native", "host", "auto", "contig")
DATATYPE_VARIANTS = VARIANTS[:4]
LABELS = {"mpi": "mpi4py + MPI datatype", "native": "mpiforge native", "host": "mpiforge host",
          "auto": "mpiforge auto", "contig": "contiguous (floor)"}
SENTINEL = -1.0  # receive buffers are filled with it before the check; sent values are >= 0
TAG = 7
NOISY = 0.25  # rows whose spread (interquartile range / median, worst variant) is above this are flagged


class CheckFailed(Exception):
    """A variant delivered wrong bytes (reported by every rank alike)."""


# -- sizes and repetitions --

def fmt_bytes(n: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def shape(size: int, block: int) -> tuple[int, int]:
    """(blocks, run bytes) of the message of ``size`` packed bytes with blocks of ``block`` bytes."""
    run = min(block, size)
    return max(1, size // run), run


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` variants (a Williams design): each is at every position, and follows
    every other one, equally often over the list (n orders for even n, 2n for odd)."""
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:
        first.append(lo)
        lo += 1
        if lo <= hi:
            first.append(hi)
            hi -= 1
    orders = [[(x + i) % n for x in first] for i in range(n)]
    return orders + [o[::-1] for o in orders] if n % 2 else orders


def repetitions(size: int, largest: int, reps: int, max_reps: int) -> int:
    """``reps`` at the largest size, proportionally more for smaller ones, at most ``max_reps``."""
    return max(reps, min(max_reps, reps * largest // max(size, 1)))


# -- the job (under mpiexec) --

def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + align, np.uint8)
    shift = (-raw.ctypes.data) % align
    return raw[shift:shift + nbytes]


def _roundtrip(comm, send, recv, rank: int) -> None:
    if rank == 0:
        comm.Send(send, 1, TAG)
        comm.Recv(recv, 1, TAG)
    else:
        comm.Recv(recv, 0, TAG)
        comm.Send(send, 0, TAG)


class Buffers:
    """Send/receive buffers for the largest message, reused (as prefixes) by every size.

    Rank r sends ``2 x index + r`` (exact integers in doubles): every element distinct, and
    which rank it came from visible, so a shifted or stale block cannot pass the check.
    """

    def __init__(self, largest: int, rank: int) -> None:
        doubles = 2 * largest // 8  # strided span: the packed bytes and as many in the gaps
        self.send = _aligned(8 * doubles).view(np.float64)
        self.send[:] = np.arange(doubles, dtype=np.float64) * 2 + rank
        self.recv = _aligned(8 * doubles).view(np.float64)
        self.recv[:] = SENTINEL
        self.csend = _aligned(largest)
        self.csend[:] = self.send[:largest // 8].view(np.uint8)
        self.crecv = _aligned(largest)
        self.crecv[:] = 0


def _check(variant: str, bufs: Buffers, blocks: int, run: int, peer: int) -> str | None:
    """What is wrong with what ``variant`` received from ``peer`` (None: all correct)."""
    w = run // 8
    if variant == "contig":
        n = blocks * run
        expected = (np.arange(n // 8, dtype=np.float64) * 2 + peer).view(np.uint8)
        if not np.array_equal(bufs.crecv[:n], expected):
            return f"{variant}: contiguous bytes differ from the peer's"
        return None
    got = bufs.recv[:blocks * 2 * w].reshape(blocks, 2 * w)
    expected = (np.arange(blocks * 2 * w, dtype=np.float64) * 2 + peer).reshape(blocks, 2 * w)
    bad = np.flatnonzero((got[:, :w] != expected[:, :w]).any(axis=1))
    if bad.size:
        return f"{variant}: {bad.size} of {blocks} blocks differ from the peer's (first: block {bad[0]})"
    if (got[:, w:] != SENTINEL).any():
        return f"{variant}: the gaps between blocks were written"
    return None


def _summary(row: dict, samples: dict[str, list[float]]) -> dict:
    packed = row["bytes"]
    for v in VARIANTS:
        times = samples[v]
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
        med = statistics.median(times)
        row[f"{v}_us"] = med * 1e6
        row[f"{v}_gbps"] = packed / med / 1e9
        row[f"{v}_iqr_us"] = (q3 - q1) * 1e6
        row[f"{v}_min_us"] = min(times) * 1e6
    row["auto_vs_best"] = row["auto_us"] / min(row["native_us"], row["host_us"])
    row["spread"] = max(row[f"{v}_iqr_us"] / row[f"{v}_us"] for v in VARIANTS)
    return row


def measure_size(world, bufs: Buffers | None, block: int, size: int, n_reps: int) -> dict | None:
    """One row (collective): check every variant, then time them; rank 0 gets the row.

    Ranks 0 and 1 ping-pong; any others (``bufs`` None) only join the collectives.
    """
    from mpi4py import MPI

    from mpiforge.comms.comm import Comm

    rank = world.rank
    blocks, run = shape(size, block)
    packed, w = blocks * run, run // 8
    span = blocks * 2 * w  # doubles the message covers
    row: dict = {"bytes": packed, "blocks": blocks, "run_bytes": run, "reps": n_reps}
    vec = MPI.DOUBLE.Create_vector(blocks, w, 2 * w).Commit()
    try:
        # fresh communicators per size: their route caches are keyed by datatype object ids
        comms = {"mpi": world, "native": Comm(world, method="native"), "host": Comm(world, method="host"),
                 "auto": Comm(world), "contig": world}
        failures: list[str] = []
        if bufs is not None:
            specs = {v: ([bufs.send[:span], 1, vec], [bufs.recv[:span], 1, vec]) for v in DATATYPE_VARIANTS}
            specs["contig"] = ([bufs.csend[:packed], MPI.BYTE], [bufs.crecv[:packed], MPI.BYTE])
            for v in ("native", "host", "auto"):
                row[f"{v}_method"] = comms[v].method_for(specs[v][0], sending=True).value
                row[f"{v}_recv_method"] = comms[v].method_for(specs[v][1], sending=False).value
            for v in VARIANTS:  # correctness first: every variant, fresh sentinels, both directions
                bufs.recv[:span] = SENTINEL
                bufs.crecv[:packed] = 0
                _roundtrip(comms[v], *specs[v], rank)
                problem = _check(v, bufs, blocks, run, 1 - rank)
                if problem:
                    failures.append(f"rank {rank} received, {fmt_bytes(packed)}: {problem}")
        failures = [f for per_rank in world.allgather(failures) for f in per_rank]
        if failures:
            raise CheckFailed(f"block {block} B: " + "; ".join(failures))
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        world.Barrier()
        if bufs is not None:
            for v in VARIANTS:  # warm-up, after the sentinel fills
                _roundtrip(comms[v], *specs[v], rank)
            orders = balanced_orders(len(VARIANTS))
            for rep in range(n_reps):
                for v in (VARIANTS[i] for i in orders[rep % len(orders)]):
                    t = time.perf_counter()
                    _roundtrip(comms[v], *specs[v], rank)
                    samples[v].append((time.perf_counter() - t) / 2)
        world.Barrier()
    finally:
        vec.Free()
    return _summary(row, samples) if rank == 0 else None


def measure_block(world, block: int, sizes: tuple[int, ...], reps: int, max_reps: int, progress: bool) -> dict | None:
    """Every size for one block length (collective); rank 0 gets the result, others None."""
    from mpiforge.comms.comm import profile

    bufs = Buffers(max(sizes), world.rank) if world.rank < 2 else None
    rows = []
    for size in sizes:
        n_reps = repetitions(size, max(sizes), reps, max_reps)
        if progress and world.rank == 0:
            click.echo(f"  block {block} B, {fmt_bytes(size)}: {n_reps} round trips per variant", err=True)
        rows.append(measure_size(world, bufs, block, size, n_reps))
    if world.rank != 0:
        return None
    return {"block_bytes": block, "rows": rows, "profile": profile().source}


def _machine(world, reps: int, max_reps: int) -> dict:
    from mpi4py import MPI

    return {"python": platform.python_version(), "mpi": MPI.Get_library_version().split("\n")[0].strip("\0"),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "ranks": world.size,
            "reps_at_largest": reps, "max_reps": max_reps}


def run_job(blocks: tuple[int, ...], quick: bool, reps: int, max_reps: int, progress: bool) -> list[dict] | None:
    """The whole measurement on MPI.COMM_WORLD; rank 0 gets one result per block."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    sizes = QUICK_SIZES if quick else SIZES
    start = time.perf_counter()
    results = [measure_block(world, b, sizes, reps, max_reps, progress) for b in blocks]
    if world.rank != 0:
        return None
    machine = _machine(world, reps, max_reps)
    machine["elapsed_s"] = time.perf_counter() - start
    for r in results:
        r["machine"] = machine
        r["quick"] = quick
    return results


def job_main(blocks, quick, reps, max_reps, worker_path: str | None, outputs: dict) -> None:
    """Body under mpiexec: measure; rank 0 writes ``worker_path`` or reports in place."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if world.size < 2:
        if world.rank == 0:
            click.echo("Error: the ping-pong needs 2 ranks (mpiexec -n 2 ...), this job has 1", err=True)
        sys.exit(2)
    try:
        results = run_job(blocks, quick, reps, max_reps, progress=True)
    except CheckFailed as exc:  # every rank raised it: no hang, exit cleanly with the reason
        if world.rank == 0:
            if worker_path:
                Path(worker_path).write_text(json.dumps({"error": str(exc)}))
            else:
                click.echo(f"Error: wrong data received: {exc}", err=True)
        sys.exit(3)
    except BaseException:  # one failing rank must take the job down, not hang it
        log.exception("rank %d: ping-pong failed", world.rank)
        logging.shutdown()
        world.Abort(1)
        raise
    if world.rank != 0:
        return
    if worker_path:
        Path(worker_path).write_text(json.dumps(results))
    else:
        report(results, **outputs)


# -- the launching side --

def launch(argv: list[str], timeout: float) -> list[dict]:
    """Run this script on 2 ranks with ``argv`` (plus ``--worker``); rank 0's results."""
    with tempfile.TemporaryDirectory(prefix="bench-pingpong-") as tmp:
        out = Path(tmp, "results.json")
        cmd = mpiexec_command(2, [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", str(out)])
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise click.ClickException(f"ping-pong job timed out after {timeout:g} s and was killed") from None
        except BaseException:  # Ctrl-C: take the whole job down with us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        data = json.loads(out.read_text()) if out.exists() else None
    if isinstance(data, dict) and "error" in data:
        raise click.ClickException(f"wrong data received: {data['error']}")
    if code != 0 or data is None:
        raise click.ClickException(f"ping-pong job failed: mpiexec exited with code {code} (its output is above)")
    return data


# -- reporting --

def fmt_us(t: float) -> str:
    return f"{t:.2f}" if t < 10 else f"{t:.1f}" if t < 1000 else f"{t:,.0f}"


def fmt_gbps(g: float) -> str:
    return f"{g:.2f}" if g >= 0.1 else f"{g:.3g}"


def auto_choice(row: dict) -> str:
    send, recv = row["auto_method"], row["auto_recv_method"]
    return send if send == recv else f"{send}/{recv}"


def render(result: dict, console: Console) -> None:
    block = result["block_bytes"]
    table = Table(title=f"Ping-pong, vector of {block}-byte blocks (stride {2 * block} B): one-way latency (us) and "
                        f"bandwidth (GB/s), medians; bold = fastest datatype variant")
    table.add_column("packed", justify="right")
    table.add_column("blocks x run", justify="right")
    for v in VARIANTS:
        table.add_column(f"{v} us", justify="right")
    for v in VARIANTS:
        table.add_column(f"{v} GB/s", justify="right")
    table.add_column("auto picks", justify="left")
    table.add_column("auto/best", justify="right")
    table.add_column("spread", justify="right")
    for row in result["rows"]:
        best = min(DATATYPE_VARIANTS, key=lambda v: row[f"{v}_us"])
        cells = [fmt_bytes(row["bytes"]), f"{row['blocks']} x {row['run_bytes']}"]
        for v in VARIANTS:
            text = fmt_us(row[f"{v}_us"])
            cells.append(f"[bold]{text}[/]" if v == best else text)
        for v in VARIANTS:
            text = fmt_gbps(row[f"{v}_gbps"])
            cells.append(f"[bold]{text}[/]" if v == best else text)
        ratio, noisy = row["auto_vs_best"], row["spread"] > NOISY
        spread = f"{100 * row['spread']:.0f}%"
        cells += [auto_choice(row), f"[red]{ratio:.2f}[/]" if ratio > 1.1 and not noisy else f"{ratio:.2f}",
                  f"[yellow]{spread}[/]" if noisy else spread]
        table.add_row(*cells)
    console.print(table)
    if any(row["spread"] > NOISY for row in result["rows"]):
        console.print(f"[yellow]spread = the largest interquartile range / median of the row's variants; above "
                      f"{100 * NOISY:.0f}% the round trips were scattered (a busy machine, or times that depend on "
                      f"what ran before): compare those rows with care[/]")


def markdown(results: list[dict]) -> str:
    """The results as GitHub markdown tables, one per block size."""
    out = []
    for result in results:
        block = result["block_bytes"]
        out.append(f"**Vector of {block}-byte blocks, stride {2 * block} B** (one-way, medians; "
                   f"auto model: {result['profile']})\n")
        out.append("| packed | blocks x run | " + " | ".join(f"{v} us" for v in VARIANTS) + " | "
                   + " | ".join(f"{v} GB/s" for v in VARIANTS) + " | auto picks | auto/best | spread |")
        out.append("|--:|--:|" + "--:|" * (2 * len(VARIANTS)) + "---|--:|--:|")
        for row in result["rows"]:
            out.append(f"| {fmt_bytes(row['bytes'])} | {row['blocks']} x {row['run_bytes']} | "
                       + " | ".join(fmt_us(row[f"{v}_us"]) for v in VARIANTS) + " | "
                       + " | ".join(fmt_gbps(row[f"{v}_gbps"]) for v in VARIANTS)
                       + f" | {auto_choice(row)} | {row['auto_vs_best']:.2f} | {100 * row['spread']:.0f}% |")
        out.append("")
    return "\n".join(out)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"mpi": ("C0", "o-"), "native": ("C1", "s--"), "host": ("C2", "^-"), "auto": ("C3", "x:"),
              "contig": ("k", "-")}
    fig, axes = plt.subplots(2, len(results), figsize=(6.5 * len(results), 8), squeeze=False)
    for col, result in enumerate(results):
        x = [row["bytes"] for row in result["rows"]]
        for v in VARIANTS:
            color, style = styles[v]
            axes[0, col].plot(x, [row[f"{v}_us"] for row in result["rows"]], style, color=color, label=LABELS[v])
            axes[1, col].plot(x, [row[f"{v}_gbps"] for row in result["rows"]], style, color=color, label=LABELS[v])
        axes[0, col].set_title(f"vector of {result['block_bytes']} B blocks, stride {2 * result['block_bytes']} B")
        axes[0, col].set_ylabel("one-way latency (us)")
        axes[1, col].set_ylabel("bandwidth (GB/s)")
        axes[1, col].set_xlabel("packed message size (bytes)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [fmt_bytes(n) for n in x], rotation=30)
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
        axes[0, col].legend(loc="upper left", fontsize=8)
    fig.suptitle("Ping-pong between 2 ranks: MPI datatypes vs mpiforge")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: list[dict], json_path: str | None, plot_path: str | None, md_path: str | None) -> None:
    console = Console(width=max(Console().width, 200))
    for result in results:
        render(result, console)
    machine = results[0]["machine"]
    console.print(f"{machine['mpi']}; {machine['ranks']} ranks on {machine['cores']} cores; auto model from "
                  f"{results[0]['profile']}; measured in {machine['elapsed_s']:.1f} s")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results[0] if len(results) == 1 else results, fh, indent=1)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(markdown(results))
    if plot_path:
        plot(results, plot_path)
        console.print(f"plot written to {plot_path}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--block", "blocks", type=click.IntRange(min=8), multiple=True, default=(64,), show_default=True,
              help="Block length in bytes (a multiple of 8; the stride is twice it). Repeat for one table each.")
@click.option("--quick", is_flag=True, help=f"Sizes {', '.join(fmt_bytes(s) for s in QUICK_SIZES)}; "
                                            "5 round trips at the largest, at most 200 (under a minute).")
@click.option("--reps", type=click.IntRange(min=1), default=None,
              help="Round trips per variant at the largest size, more for smaller ones (default 10; 5 with --quick).")
@click.option("--max-reps", type=click.IntRange(min=1), default=None,
              help="Round trips per variant at most, for the smallest sizes (default 1000; 200 with --quick).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON here.")
@click.option("--plot", "plot_path", is_flag=False, flag_value="bench_pingpong.png", default=None,
              help="Write a PNG plot (default name bench_pingpong.png).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the tables as markdown here.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1800.0, show_default=True,
              help="Seconds before the launched job is killed.")
@click.option("--worker", "worker_path", hidden=True, default=None, help="Internal: rank 0 writes JSON here.")
def main(blocks: tuple[int, ...], quick: bool, reps: int | None, max_reps: int | None, json_path: str | None,
         plot_path: str | None, md_path: str | None, timeout: float, worker_path: str | None) -> None:
    """Ping-pong a strided vector datatype between 2 ranks: MPI vs mpiforge native/host/auto vs contiguous."""
    bad = [b for b in blocks if b % 8]
    if bad:
        raise click.BadParameter(f"{bad[0]} is not a multiple of 8 (blocks are whole doubles)", param_hint="--block")
    blocks = tuple(dict.fromkeys(blocks))
    reps = reps or (5 if quick else 10)
    max_reps = max(reps, max_reps or (200 if quick else 1000))
    outputs = {"json_path": json_path, "plot_path": plot_path, "md_path": md_path}
    if worker_path or in_mpi_job():
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        job_main(blocks, quick, reps, max_reps, worker_path, outputs)
        return
    argv = [arg for b in blocks for arg in ("--block", str(b))] + ["--reps", str(reps), "--max-reps", str(max_reps)]
    if quick:
        argv.append("--quick")
    try:
        results = launch(argv, timeout)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    report(results, **outputs)


if __name__ == "__main__":
    sys.exit(main())
