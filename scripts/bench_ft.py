#!/usr/bin/env python
"""The fault-tolerant all-reduce on loopback: throughput against gloo and MPI over TCP, recovery
time after a SIGKILL, and a churn run.

1. all-reduce of float32 at 1, 16 and 128 MiB with 2 and 4 peers: mpiforge's peers (a master
   and ``mpiforge.comms.ft.worker bench`` processes), torch.distributed's gloo backend, and
   MPI_Allreduce forced onto TCP (``mpiexec --mca pml ob1 --mca btl self,tcp``). Each repetition
   follows a barrier and counts the slowest rank's time; the three run in turn, ``--passes``
   times, and the table shows the median over every repetition of every pass; busbw = bytes /
   time x 2(p-1)/p (as nccl-tests define it).
2. recovery: 3 peers in the churn loop; one is SIGKILLed; ``detect_s`` is the time until every
   survivor's collective has failed, ``retry_ok_s`` until every survivor has completed an
   all-reduce among the survivors only (the worker's ``done`` time); the median over 3 kills.
3. churn: 6 peers; every 1-2 s a random peer is killed (at least 2 stay) or a new one joins;
   ``ops`` completed peer-rounds, ``wrong`` rounds whose result differs from the exact sum over
   the round's participants or between those participants, whose shared state or revision went
   wrong, or aborts that changed the input; ``aborted`` failed attempts.

    python scripts/bench_ft.py --quick                     # 16 MiB only, one pass, short churn
    python scripts/bench_ft.py --json docs/bench_ft.json --plot docs/bench_ft.png --markdown docs/bench_ft.md
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
        cpu = time.process_time()
        for _ in range(reps + 1):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        cpu = torch.tensor([(time.process_time() - cpu) / (reps + 1)], dtype=torch.float64)
        slowest = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # per repetition, the slowest rank (as for MPI)
        dist.all_reduce(cpu)  # CPU seconds per repetition (barrier included), all ranks together
        if rank == 0:
            print(MARK + json.dumps({"size": size, "seconds": slowest.tolist()[1:], "cpu": cpu.item()}), flush=True)
    dist.destroy_process_group()


def mpi_worker(sizes: list[int], reps: int) -> None:
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for size in sizes:
        x, y = np.ones(size // 4, np.float32), np.empty(size // 4, np.float32)
        times = []
        cpu = time.process_time()
        for _ in range(reps + 1):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(x, y)
            times.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        cpu = comm.allreduce((time.process_time() - cpu) / (reps + 1))  # Open MPI polls: busy while waiting
        if comm.rank == 0:
            print(MARK + json.dumps({"size": size, "seconds": times[1:], "cpu": cpu}), flush=True)


# -- the three measurements -----------------------------------------------------------------------

def _marked(text: str) -> dict[int, dict]:
    rows = [json.loads(line[len(MARK):]) for line in text.splitlines() if line.startswith(MARK)]
    return {r["size"]: r for r in rows}


def _expect_sizes(found: dict[int, dict], sizes: list[int], what: str, detail: str) -> dict[int, dict]:
    missing = [size for size in sizes if size not in found]
    if missing:
        raise click.ClickException(f"{what} reported no time for {missing} bytes:\n{detail[-2000:]}")
    return found


def run_gloo(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, dict]:
    port = _free_port()
    argv = [sys.executable, __file__, "--worker", "gloo", "--world", str(peers), "--port", str(port),
            "--sizes", ",".join(map(str, sizes)), "--reps", str(reps)]
    procs = [subprocess.Popen(argv + ["--rank", str(r)], stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for r in range(peers)]
    try:
        out, err = procs[0].communicate(timeout=timeout)
        codes = [procs[0].returncode] + [p.wait(timeout=timeout) for p in procs[1:]]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for p in procs[1:]:
            p.stderr.close()
    if any(codes):
        raise click.ClickException(f"gloo ranks exited with {codes}:\n{err[-2000:]}")
    return _expect_sizes(_marked(out), sizes, "gloo", err)


def mpi_tcp_command(peers: int, argv: list[str]) -> list[str]:
    """mpiexec (the one beside this Python) with MPI forced onto TCP: the ob1 PML over the tcp BTL
    (and self), no shared memory."""
    from mpiforge.launch import find_mpiexec

    command = [find_mpiexec(), "--allow-run-as-root", "--oversubscribe", "-n", str(peers),
               "--mca", "pml", "ob1", "--mca", "btl", "self,tcp"]
    if peers > (os.cpu_count() or 1):
        command += ["--mca", "mpi_yield_when_idle", "1"]  # more ranks than cores: idle ranks yield
    return command + argv


def run_mpi_tcp(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, dict]:
    argv = [sys.executable, __file__, "--worker", "mpi", "--sizes", ",".join(map(str, sizes)), "--reps", str(reps)]
    proc = subprocess.run(mpi_tcp_command(peers, argv), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode:
        raise click.ClickException(f"MPI over TCP failed:\n{proc.stderr[-2000:]}")
    return _expect_sizes(_marked(proc.stdout), sizes, "MPI over TCP", proc.stderr)


def run_ft(peers: int, sizes: list[int], reps: int, timeout: float) -> dict[int, dict]:
    """Per size: ``seconds``, each repetition's slowest peer (as for gloo and MPI), and ``cpu``, the
    CPU seconds of all peers per repetition (barrier included)."""
    from mpiforge.comms.ft.harness import Cluster

    with Cluster() as cluster:
        cluster.start_master()
        workers = [cluster.spawn(f"p{i}", "bench", "--world", str(peers), "--sizes", *map(str, sizes),
                                 "--reps", str(reps), "--warmup", "1") for i in range(peers)]
        cluster.wait_for(lambda: all(w.events_of("done") or w.events_of("fatal") or not w.alive for w in workers),
                         timeout, "the benchmark peers")
        fatal = [(w.name, w.events_of("fatal") or w.stderr()) for w in workers if not w.events_of("done")]
        if fatal:
            raise click.ClickException(f"a benchmark peer failed: {fatal[0]}")
        results = {}
        for size in sizes:
            events = [e for w in workers for e in w.events_of("bench") if e["size"] == size]
            if len(events) != peers or not all(e["correct"] and e["world"] == peers for e in events):
                raise click.ClickException(f"wrong or missing all-reduce results at {size} bytes: {events}")
            if len({e["digest"] for e in events}) != 1:
                raise click.ClickException(f"peers disagree on the all-reduce result at {size} bytes")
            results[size] = {"seconds": [max(rep) for rep in zip(*(e["seconds"] for e in events))],
                             "cpu": sum(e["cpu"] for e in events) / reps}
    return results


def run_recovery(timeout: float, trials: int = 3) -> dict:
    """Median over ``trials`` kills of: SIGKILL -> every survivor's collective failed (detect_s), and
    SIGKILL -> every survivor completed an all-reduce among the survivors only (retry_ok_s)."""
    detects, retries = [], []
    for trial in range(trials):
        detect, retry = _recovery_once(timeout, random.Random(trial).uniform(0.0, 0.05))
        detects.append(detect)
        retries.append(retry)
    return {"detect_s": statistics.median(detects), "retry_ok_s": statistics.median(retries),
            "detect_max_s": max(detects), "retry_ok_max_s": max(retries), "trials": trials}


def _recovery_once(timeout: float, delay: float) -> tuple[float, float]:
    from mpiforge.comms.ft.harness import Cluster

    with Cluster() as cluster:
        cluster.start_master()
        peers = [cluster.spawn(f"r{i}", "loop", "--world", "3", "--count", str(MIB // 4)) for i in range(3)]
        cluster.wait_for(lambda: all(len(p.events_of("round")) >= 5 for p in peers), timeout, "5 rounds on 3 peers")
        time.sleep(delay)  # land the kill at some point of a round
        victim, survivors = peers[2], peers[:2]
        victim_id = victim.events_of("joined")[0]["id"]
        killed_at = cluster.kill(victim)

        def failed(p) -> float | None:  # when the survivor's operation raised
            times = [e["t"] for e in p.events_of("abort") if e["t"] > killed_at]
            return min(times) if times else None

        def retried(p) -> float | None:  # when an all-reduce without the victim returned
            times = [e["done"] for e in p.events_of("round") if e["ok"] and victim_id not in e["peers"]]
            return min(times) if times else None

        cluster.wait_for(lambda: all(retried(p) for p in survivors), timeout, "a retry after the kill")
        detect = [failed(p) for p in survivors]
        retry = [retried(p) for p in survivors]
        if not all(detect):
            raise click.ClickException("a survivor never saw its collective fail after the kill: "
                                       f"{[p.events[-5:] for p in survivors]}")
    return max(detect) - killed_at, max(retry) - killed_at


def run_churn(seconds: float, peers: int = 6) -> dict:
    """``wrong``: rounds whose result is not the exact sum over that round's participants, whose
    result or shared state differs between the peers of that round (same op id), whose shared
    revision did not grow by one, or whose input an abort changed."""
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
        revision_errors = [e for p in everyone for e in p.events_of("error")]
        fatal = [e for p in everyone for e in p.events_of("fatal")]
    digests: dict[int, set[tuple[str, str]]] = {}
    for e in rounds:
        digests.setdefault(e["op_id"], set()).add((e["digest"], e["state"]))
    split = {op for op, found in digests.items() if len(found) > 1}
    wrong = (sum(not (e["correct"] and e["intact"]) or e["op_id"] in split for e in rounds)
             + sum(not e["intact"] for e in aborts) + len(revision_errors))
    return {"ops": len(rounds), "wrong": wrong, "aborted": len(aborts), "seconds": seconds, "peers": peers,
            "collectives": len(digests), "fatal": len(fatal)}


# -- report ---------------------------------------------------------------------------------------

def markdown(rows: list[dict], recovery: dict, churn: dict) -> str:
    header = ("| peers | size | mpiforge ms | gloo ms | MPI/TCP ms | mpiforge busbw GB/s | gloo busbw | "
              "MPI/TCP busbw | x gloo | x MPI/TCP | CPU ms/op mpiforge / gloo / MPI |")
    lines = [header, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['peers']} | {r['size'] >> 20} MiB | {r['ft_ms']:.1f} | {r['gloo_ms']:.1f} | "
                     f"{r['mpi_tcp_ms']:.1f} | {r['ft_busbw']:.2f} | {r['gloo_busbw']:.2f} | "
                     f"{r['mpi_tcp_busbw']:.2f} | {r['ratio_vs_gloo']:.2f} | {r['ratio_vs_mpi_tcp']:.2f} | "
                     f"{r['ft_cpu_ms']:.0f} / {r['gloo_cpu_ms']:.0f} / {r['mpi_tcp_cpu_ms']:.0f} |")
    big = [r for r in rows if r["size"] >= 16 * MIB]

    def verdict(key: str, target: float) -> str:
        missed = [f"{r['peers']} peers {r['size'] >> 20} MiB ({r[key]:.2f}x)" for r in big if r[key] < target]
        return f"missed at {', '.join(missed)}" if missed else "met"

    notes = [
        (f"CPU ms/op: CPU time of all ranks per repetition (its barrier included), on {os.cpu_count()} cores; "
         "Open MPI polls while it waits, so its figure includes spinning."),
        (f"Throughput targets from 16 MiB: >= 1.3x gloo's busbw {verdict('ratio_vs_gloo', 1.3)}; "
         f">= 1.0x MPI/TCP's {verdict('ratio_vs_mpi_tcp', 1.0)}."),
        (f"Recovery after a SIGKILL (3 peers, 1 MiB rounds, median of {recovery['trials']} kills): every "
         f"survivor's collective failed after {recovery['detect_s']:.3f} s (max {recovery['detect_max_s']:.3f}), "
         f"every survivor's first all-reduce without the victim returned after {recovery['retry_ok_s']:.3f} s "
         f"(max {recovery['retry_ok_max_s']:.3f})."),
        (f"Churn ({churn['peers']} peers at the start, {churn['seconds']:.0f} s of random SIGKILLs and joins): "
         f"{churn['ops']} peer-rounds completed ({churn['collectives']} collectives), {churn['wrong']} wrong, "
         f"{churn['aborted']} aborted attempts, {churn['fatal']} peers gave up."),
    ]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines)


def as_json(rows: list[dict], recovery: dict, churn: dict) -> dict:
    """The results in the issue's schema (and nothing else)."""
    keys = ("peers", "size", "ft_busbw", "gloo_busbw", "mpi_tcp_busbw", "ratio_vs_gloo", "ratio_vs_mpi_tcp")
    return {"allreduce": [{k: r[k] for k in keys} for r in rows],
            "recovery": {k: recovery[k] for k in ("detect_s", "retry_ok_s")},
            "churn": {k: churn[k] for k in ("ops", "wrong", "aborted")}}


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
@click.option("--quick", is_flag=True, help="16 MiB only, 3 repetitions, 1 pass, 1 kill, 10 s of churn.")
@click.option("--reps", type=click.IntRange(min=1), default=None, help="Timed repetitions per size and pass (default 7).")
@click.option("--passes", type=click.IntRange(min=1), default=None,
              help="Runs of all three, one after the other; medians over every repetition of every pass (default 3).")
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
def main(quick: bool, reps: int | None, passes: int | None, churn_seconds: float | None, json_path: str | None, plot_path: str | None,
         md_path: str | None, timeout: float, worker: str | None, rank: int, world: int, port: int, sizes: str) -> None:
    """Time the fault-tolerant all-reduce against gloo and MPI over TCP, its recovery and churn."""
    reps = reps or (3 if quick else 7)
    if worker:
        size_list = [int(v) for v in sizes.split(",") if v]
        return gloo_worker(rank, world, port, size_list, reps) if worker == "gloo" else mpi_worker(size_list, reps)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    size_list = [16 * MIB] if quick else [MIB, 16 * MIB, 128 * MIB]
    passes = passes or (1 if quick else 3)
    runners = {"ft": run_ft, "gloo": run_gloo, "mpi_tcp": run_mpi_tcp}
    times: dict[tuple[str, int, int], list[float]] = {}
    cpu: dict[tuple[str, int, int], list[float]] = {}
    for number in range(passes):  # the three in turn, so that a change of background load hits all alike
        for peers in (2, 4):
            click.echo(f"pass {number + 1}/{passes}, {peers} peers: mpiforge, gloo, MPI over TCP ...", err=True)
            for name, run in runners.items():
                for size, found in run(peers, size_list, reps, timeout).items():
                    times.setdefault((name, peers, size), []).extend(found["seconds"])
                    cpu.setdefault((name, peers, size), []).append(found["cpu"])
    rows = []
    for peers in (2, 4):
        for size in size_list:
            ft, gloo, mpi = (statistics.median(times[(name, peers, size)]) for name in runners)
            row = {"peers": peers, "size": size, "ft_busbw": busbw(size, ft, peers),
                   "gloo_busbw": busbw(size, gloo, peers), "mpi_tcp_busbw": busbw(size, mpi, peers),
                   "ft_ms": ft * 1e3, "gloo_ms": gloo * 1e3, "mpi_tcp_ms": mpi * 1e3}
            for name in runners:
                row[f"{name}_cpu_ms"] = statistics.median(cpu[(name, peers, size)]) * 1e3
            row["ratio_vs_gloo"] = row["ft_busbw"] / row["gloo_busbw"]
            row["ratio_vs_mpi_tcp"] = row["ft_busbw"] / row["mpi_tcp_busbw"]
            rows.append(row)
    click.echo("recovery after a SIGKILL ...", err=True)
    recovery = run_recovery(timeout, trials=1 if quick else 3)
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
            json.dump(as_json(rows, recovery, churn), fh, indent=1)
    if plot_path:
        plot(rows, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)


if __name__ == "__main__":
    main()
