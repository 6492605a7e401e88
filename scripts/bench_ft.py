#!/usr/bin/env python
"""The fault-tolerant all-reduce on loopback: throughput against gloo and MPI over TCP, recovery
time after a SIGKILL, and a churn run.

1. all-reduce of float32 at 1, 16 and 128 MiB with 2 and 4 peers: mpiforge's peers (a master
   and ``mpiforge.comms.ft.worker bench`` processes), torch.distributed's gloo backend, and
   MPI_Allreduce forced onto TCP (``--mca pml ob1 --mca btl self,tcp``); medians of repeated
   runs; busbw = bytes / time x 2(p-1)/p (as nccl-tests define it).
2. recovery: 3 peers in the churn loop; one is SIGKILLed; ``detect_s`` is the time until every
   survivor has seen its collective fail, ``retry_ok_s`` until every survivor has completed an
   all-reduce again.
3. churn: 6 peers; every ~1.5 s a random peer is killed (at least 2 stay) or a new one joins;
   ``ops`` completed rounds, ``wrong`` results that differ from the exact sum over the round's
   participants (or inputs changed by an abort), ``aborted`` failed attempts.

    python scripts/bench_ft.py --quick                     # 16 MiB only, short churn
    python scripts/bench_ft.py --json out.json --plot --markdown out.md
"""
from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time

import click

MARK = "BENCH_FT "
MIB = 1 << 20


def busbw(size: int, seconds: float, peers: int) -> float:
    """GB/s of bus bandwidth."""
    return size / seconds * 2 * (peers - 1) / peers / 1e9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- workers (hidden modes of this script) ------------------------------------------------------

def gloo_worker(rank: int, world: int, port: int, sizes: list[int], reps: int) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    for size in sizes:
        x = torch.ones(size // 4, dtype=torch.float32)
        times = []
        for rep in range(reps + 1):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        if rank == 0:
            print(MARK + json.dumps({"size": size, "seconds": statistics.median(times[1:])}), flush=True)
    dist.destroy_process_group()


def mpi_worker(sizes: list[int], reps: int) -> None:
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for size in sizes:
        x, y = np.ones(size // 4, np.float32), np.empty(size // 4, np.float32)
        times = []
        for _ in range(reps + 1):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(x, y)
            times.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        if comm.rank == 0:
            print(MARK + json.dumps({"size": size, "seconds": statistics.median(times[1:])}), flush=True)


# -- the three measurements -----------------------------------------------------------------------

def _marked(text: str) -> dict[int, float]:
    rows = [json.loads(line[len(MARK):]) for line in text.splitlines() if line.startswith(MARK)]
    return {r["size"]: r["seconds"] for r in rows}


def run_gloo(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, float]:
    port = _free_port()
    argv = [sys.executable, __file__, "--worker", "gloo", "--world", str(peers), "--port", str(port),
            "--sizes", ",".join(map(str, sizes)), "--reps", str(reps)]
    procs = [subprocess.Popen(argv + ["--rank", str(r)], stdout=subprocess.PIPE, text=True) for r in range(peers)]
    try:
        out = procs[0].communicate(timeout=timeout)[0]
        for p in procs[1:]:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            p.kill()
    return _marked(out)


def run_mpi_tcp(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, float]:
    from mpiforge.launch import mpiexec_command

    argv = [sys.executable, __file__, "--worker", "mpi", "--sizes", ",".join(map(str, sizes)), "--reps", str(reps)]
    command = mpiexec_command(peers, argv)
    command[1:1] = ["--mca", "pml", "ob1", "--mca", "btl", "self,tcp"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise click.ClickException(f"MPI over TCP failed:\n{proc.stderr[-2000:]}")
    return _marked(proc.stdout)


def run_ft(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, float]:
    from mpiforge.comms.ft.harness import Cluster

    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"p{i}", "bench", "--world", str(peers), "--sizes", *map(str, sizes),
                                 "--reps", str(reps)) for i in range(peers)]
        cluster.wait_for(lambda: all(w.events_of("done") or w.events_of("fatal") for w in workers), timeout,
                         "the benchmark peers")
        results = {}
        for event in workers[0].events_of("bench"):
            if not event["correct"]:
                raise click.ClickException(f"wrong all-reduce result at {event['size']} bytes")
            results[event["size"]] = statistics.median(event["seconds"])
        fatal = [w.events_of("fatal") for w in workers if w.events_of("fatal")]
        if fatal:
            raise click.ClickException(f"a benchmark peer failed: {fatal[0]}")
    return results


def run_recovery(timeout: float) -> dict:
    from mpiforge.comms.ft.harness import Cluster

    with Cluster() as cluster:
        cluster.start_master()
        peers = [cluster.spawn(f"r{i}", "loop", "--world", "3", "--count", str(MIB // 4)) for i in range(3)]
        cluster.wait_for(lambda: all(len(p.events_of("round")) >= 5 for p in peers), timeout, "5 rounds on 3 peers")
        killed_at = cluster.kill(peers[2])
        survivors = peers[:2]

        def first_after(p, kind: str, ok: bool = False) -> float | None:
            times = [e["t"] for e in p.events_of(kind) if e["t"] > killed_at and (not ok or e.get("ok"))]
            return min(times) if times else None

        cluster.wait_for(lambda: all(first_after(p, "round", True) for p in survivors), timeout, "a retry after the kill")
        detect = [first_after(p, "abort") for p in survivors]
        retry = [first_after(p, "round", True) for p in survivors]
    return {"detect_s": max(t - killed_at for t in detect if t is not None) if all(detect) else None,
            "retry_ok_s": max(t - killed_at for t in retry)}


def run_churn(seconds: float, peers: int = 6) -> dict:
    from mpiforge.comms.ft.harness import Cluster

    rng = random.Random(7)
    with Cluster() as cluster:
        cluster.start_master()
        alive = [cluster.spawn(f"c{i}", "loop", "--count", "4099", "--dtype", "int64") for i in range(peers)]
        everyone, serial, end = list(alive), peers, time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(1.0, 2.0))
            alive = [p for p in alive if p.popen.poll() is None]
            if len(alive) > 2 and rng.random() < 0.5:
                victim = rng.choice(alive)
                cluster.kill(victim)
                alive.remove(victim)
            else:
                alive.append(cluster.spawn(f"c{serial}", "loop", "--count", "4099", "--dtype", "int64"))
                everyone.append(alive[-1])
                serial += 1
        rounds = [e for p in everyone for e in p.events_of("round")]
        aborts = [e for p in everyone for e in p.events_of("abort")]
    wrong = sum(not (e["correct"] and e["intact"]) for e in rounds) + sum(not e["intact"] for e in aborts)
    return {"ops": len(rounds), "wrong": wrong, "aborted": len(aborts), "seconds": seconds, "peers": peers}


# -- report ---------------------------------------------------------------------------------------

def markdown(rows: list[dict], recovery: dict, churn: dict) -> str:
    lines = ["| peers | size | mpiforge ms | busbw GB/s | gloo busbw | MPI/TCP busbw | x gloo | x MPI/TCP |",
             "|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['peers']} | {r['size'] >> 20} MiB | {r['ft_ms']:.1f} | {r['ft_busbw']:.2f} | "
                     f"{r['gloo_busbw']:.2f} | {r['mpi_tcp_busbw']:.2f} | {r['ratio_vs_gloo']:.2f} | "
                     f"{r['ratio_vs_mpi_tcp']:.2f} |")
    lines.append("")
    lines.append(f"Recovery after a SIGKILL: failure seen by every survivor in {recovery['detect_s']:.2f} s, "
                 f"first successful retry after {recovery['retry_ok_s']:.2f} s.")
    lines.append(f"Churn ({churn['peers']} peers, {churn['seconds']:.0f} s): {churn['ops']} rounds completed, "
                 f"{churn['wrong']} wrong, {churn['aborted']} aborted attempts.")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, peers in zip(axes, (2, 4)):
        mine = [r for r in rows if r["peers"] == peers]
        sizes = [r["size"] for r in mine]
        for key, label in (("ft_busbw", "mpiforge FT"), ("gloo_busbw", "gloo"), ("mpi_tcp_busbw", "MPI over TCP")):
            ax.semilogx(sizes, [r[key] for r in mine], "o-", label=label)
        ax.set_title(f"{peers} peers, loopback")
        ax.set_xlabel("bytes (float32)")
    axes[0].set_ylabel("busbw GB/s")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="16 MiB only, 3 repetitions, 10 s of churn.")
@click.option("--reps", type=click.IntRange(min=1), default=None, help="Repetitions per size (default 7).")
@click.option("--churn-seconds", type=float, default=None, help="Length of the churn run (default 30 s).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", "plot_path", is_flag=False, flag_value="bench_ft.png", default=None,
              help="Write a PNG plot (default name bench_ft.png).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the tables as markdown here.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds per job.")
@click.option("--worker", type=click.Choice(["gloo", "mpi"]), hidden=True)
@click.option("--rank", type=int, default=0, hidden=True)
@click.option("--world", type=int, default=1, hidden=True)
@click.option("--port", type=int, default=0, hidden=True)
@click.option("--sizes", default="", hidden=True)
def main(quick: bool, reps: int | None, churn_seconds: float | None, json_path: str | None, plot_path: str | None,
         md_path: str | None, timeout: float, worker: str | None, rank: int, world: int, port: int, sizes: str) -> None:
    """Time the fault-tolerant all-reduce against gloo and MPI over TCP, its recovery and churn."""
    reps = reps or (3 if quick else 7)
    if worker:
        size_list = [int(v) for v in sizes.split(",") if v]
        return gloo_worker(rank, world, port, size_list, reps) if worker == "gloo" else mpi_worker(size_list, reps)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    size_list = [16 * MIB] if quick else [MIB, 16 * MIB, 128 * MIB]
    rows = []
    for peers in (2, 4):
        click.echo(f"{peers} peers: mpiforge, gloo, MPI over TCP ...", err=True)
        ft, gloo, mpi = (run(peers, size_list, reps, timeout) for run in (run_ft, run_gloo, run_mpi_tcp))
        for size in size_list:
            row = {"peers": peers, "size": size, "ft_ms": ft[size] * 1e3, "ft_busbw": busbw(size, ft[size], peers),
                   "gloo_busbw": busbw(size, gloo[size], peers), "mpi_tcp_busbw": busbw(size, mpi[size], peers)}
            row["ratio_vs_gloo"] = row["ft_busbw"] / row["gloo_busbw"]
            row["ratio_vs_mpi_tcp"] = row["ft_busbw"] / row["mpi_tcp_busbw"]
            rows.append(row)
    click.echo("recovery after a SIGKILL ...", err=True)
    recovery = run_recovery(timeout)
    seconds = churn_seconds if churn_seconds is not None else (10.0 if quick else 30.0)
    click.echo(f"churn for {seconds:.0f} s ...", err=True)
    churn = run_churn(seconds)
    table = markdown(rows, recovery, churn)
    click.echo(table)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(table + "\n")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"allreduce": rows, "recovery": recovery, "churn": churn}, fh, indent=1)
    if plot_path:
        plot(rows, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)


if __name__ == "__main__":
    main()
