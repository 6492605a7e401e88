#!/usr/bin/env python
"""Allreduce on emulated clusters: mpiforge's topology-aware choice against MPI_Allreduce.

For each cluster (default 2 nodes x 2 ranks and 3 nodes x 2 ranks, round-robin placement,
1 Gbit/s node links; see ``mpiforge.topology.cluster``) the script builds the cluster, runs
itself inside it under mpiexec (hidden ``--worker`` flag) and tears it down. Inside, the job
first calibrates the cost model (``topology.calibrate``: link figures, reduction speed, MPI's
own collectives up to ``--max-calibrate``), then rank 0 prints one JSON line per size: medians
over repetitions (the slowest rank's time each; every order of the variants equally often; from
256 KiB each call starts from idle links, so none rides on the tbf burst another left) of MPI's Allreduce, of
``TopologyCollective.allreduce`` (the plan the model picks) and of the same with int8 on the
inter-node step; float32 sums checked against MPI's (exact) and the quantized error reported.
Beside them: the model's prediction, algbw = bytes / time, busbw = algbw x 2(p-1)/p (as
nccl-tests define them) and the link lower bound 2(k-1)/k x bytes / link rate.

    python scripts/bench_allreduce.py --quick                 # 4 KiB - 4 MiB, a minute or two
    python scripts/bench_allreduce.py --json out.json --plot --markdown out.md
"""
from __future__ import annotations

import itertools
import json
import statistics
import sys
import time

import click

MARK = "BENCH_ALLREDUCE "
def run_worker(sizes: list[int], reps: int, quantize: str, max_calibrate: int) -> None:
    """Inside the cluster: calibrate the cost model on this job, then time MPI's Allreduce,
    mpiforge's planned allreduce and its quantized variant for every size (rank 0 prints)."""
    import numpy as np
    from mpi4py import MPI

    from mpiforge.topology.calibrate import idle_before, measure_levels, quiet
    from mpiforge.topology.collective import TopologyCollective
    from mpiforge.topology.discovery import discover
    from mpiforge.topology.profile import machine_for

    comm = MPI.COMM_WORLD
    topology = discover(comm)
    figures = measure_levels(comm, topology, max_size=max_calibrate, reps=3)
    coll = TopologyCollective(comm, machine=machine_for(topology, figures))
    if comm.rank == 0:
        print(MARK + json.dumps({"figures": figures}), flush=True)
    for size in sizes:
        x = ((np.arange(size // 4) + comm.rank) % 7).astype(np.float32)
        want = np.empty_like(x)
        comm.Allreduce(x, want)
        if not np.array_equal(coll.allreduce(x), want):  # small integers: exact in float32
            raise AssertionError(f"mpiforge allreduce of {size} bytes differs from MPI's")
        approx = coll.allreduce(x, quantize=quantize)
        error = float(np.abs(approx - want).max() / np.abs(want).max())
        out = np.empty_like(x)  # every variant writes into a buffer allocated once, as MPI's does
        calls = {"mpi": lambda: comm.Allreduce(x, want), "mpiforge": lambda: coll.allreduce(x, out=out),
                 "quantized": lambda: coll.allreduce(x, out=out, quantize=quantize)}
        times = {name: [] for name in calls}
        # every order of the variants equally often: each one runs in every position and after
        # every other one as often, so what one leaves behind (queues, caches) favours nobody
        orders = list(itertools.permutations(calls))
        pause = idle_before(size)
        count = reps if size >= (1 << 20) else reps * 4
        count = -(-count // len(orders)) * len(orders)
        for index in range(count):
            for name in orders[index % len(orders)]:
                quiet(comm, pause)  # from 256 KiB, after idle links (full tbf buckets), whatever ran before
                t = time.perf_counter()
                calls[name]()
                times[name].append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
        if comm.rank == 0:
            nodes, per_node = coll.shape
            plan, qplan = coll.plan("allreduce", size), coll.plan("allreduce", size, quantized=True)
            print(MARK + json.dumps({
                "nodes": nodes, "ranks_per_node": per_node, "size": size,
                "mpi_us": statistics.median(times["mpi"]) * 1e6,
                "mpiforge_us": statistics.median(times["mpiforge"]) * 1e6,
                "algo": plan.algorithm, "inter": plan.inter, "segments": plan.segments,
                "predicted_us": plan.seconds * 1e6,
                "quantized_us": statistics.median(times["quantized"]) * 1e6, "quantize": quantize,
                "quantized_algo": qplan.algorithm, "quantized_segments": qplan.segments,
                "quantized_predicted_us": qplan.seconds * 1e6, "quantized_rel_error": error}), flush=True)


def run_cluster(nodes: int, per_node: int, sizes: list[int], reps: int, rate: str, timeout: float, mtu: int,
                quantize: str, max_calibrate: int) -> tuple[list[dict], dict]:
    """(cases, calibrated figures) of one emulated cluster."""
    from mpiforge.topology.cluster import EmulatedCluster, available, parse_rate

    ok, why = available()
    if not ok:
        raise click.ClickException(f"no emulated cluster here: {why}")
    argv = [sys.executable, __file__, "--worker", "--sizes", ",".join(map(str, sizes)), "--reps", str(reps),
            "--quantize", quantize, "--max-calibrate", str(max_calibrate)]
    with EmulatedCluster(nodes=nodes, rate=rate, prefix=f"mpfar{nodes}", mtu=mtu) as cluster:
        proc = cluster.run(per_node, argv, placement="roundrobin", timeout=timeout)
    if proc.returncode:
        raise click.ClickException(f"{nodes}x{per_node} job failed:\n{proc.stderr[-2000:]}")
    lines = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines() if line.startswith(MARK)]
    figures = next(line["figures"] for line in lines if "figures" in line)
    cases = [line for line in lines if "size" in line]
    link = parse_rate(rate) / 8  # bytes per second
    for c in cases:
        p, k, size = c["nodes"] * c["ranks_per_node"], c["nodes"], c["size"]
        c["speedup"] = c["mpi_us"] / c["mpiforge_us"]
        c["quantized_speedup"] = c["mpi_us"] / c["quantized_us"]
        c["bound_us"] = 2 * (k - 1) / k * size / link * 1e6
        c["algbw_gbps"] = size / c["mpiforge_us"] / 1e3
        c["busbw_gbps"] = c["algbw_gbps"] * 2 * (p - 1) / p
        c["mpi_busbw_gbps"] = size / c["mpi_us"] / 1e3 * 2 * (p - 1) / p
    return cases, figures


def targets(c: dict) -> list[str]:
    """The issue's targets this case misses (the simulator's are checked by `mpiforge simulate --compare`)."""
    missed = []
    if c["speedup"] < 0.95:
        missed.append(f"x MPI {c['speedup']:.2f} < 0.95")
    if c["nodes"] == 3 and c["size"] >= (4 << 20) and c["speedup"] < 1.5:
        missed.append(f"x MPI {c['speedup']:.2f} < 1.5")
    if c["size"] >= (16 << 20) and c["mpiforge_us"] > 1.25 * c["bound_us"]:
        missed.append(f"{c['mpiforge_us'] / c['bound_us']:.2f} x bound > 1.25")
    if c["size"] >= (4 << 20) and c["quantized_speedup"] < 3:
        missed.append(f"{c['quantize']} x MPI {c['quantized_speedup']:.2f} < 3")
    return missed


def _plan(c: dict) -> str:
    if c["algo"] != "hierarchical":
        return c["algo"]
    return f"hier/{c['inter']}" + (f" x{c['segments']}" if c["segments"] > 1 else "")


def markdown(cases: list[dict]) -> str:
    lines = ["| cluster | size | MPI ms | mpiforge ms | x MPI | plan | model ms | int8 ms | int8 x MPI | busbw GB/s "
             "| MPI busbw | bound ms | targets |",
             "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|---|"]
    for c in cases:
        size = f"{c['size'] >> 20} MiB" if c["size"] >= (1 << 20) else f"{c['size'] >> 10} KiB"
        lines.append(f"| {c['nodes']}x{c['ranks_per_node']} | {size} | {c['mpi_us'] / 1e3:.2f} | "
                     f"{c['mpiforge_us'] / 1e3:.2f} | {c['speedup']:.2f} | {_plan(c)} | {c['predicted_us'] / 1e3:.2f} | "
                     f"{c['quantized_us'] / 1e3:.2f} | {c['quantized_speedup']:.2f} | {c['busbw_gbps']:.3f} | "
                     f"{c['mpi_busbw_gbps']:.3f} | {c['bound_us'] / 1e3:.2f} | {'; '.join(targets(c)) or 'met'} |")
    return "\n".join(lines)


def plot(cases: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for shape in sorted({(c["nodes"], c["ranks_per_node"]) for c in cases}):
        mine = [c for c in cases if (c["nodes"], c["ranks_per_node"]) == shape]
        label = f"{shape[0]}x{shape[1]}"
        ax.loglog([c["size"] for c in mine], [c["mpi_us"] / 1e3 for c in mine], "o--", label=f"MPI {label}")
        ax.loglog([c["size"] for c in mine], [c["mpiforge_us"] / 1e3 for c in mine], "s-", label=f"mpiforge {label}")
        ax.loglog([c["size"] for c in mine], [c["quantized_us"] / 1e3 for c in mine], "^-", label=f"mpiforge int8 {label}")
        ax.loglog([c["size"] for c in mine], [c["bound_us"] / 1e3 for c in mine], ":", label=f"link bound {label}")
    ax.set_xlabel("bytes (float32)")
    ax.set_ylabel("ms per allreduce")
    ax.set_title("Allreduce on emulated 1 Gbit/s clusters, round-robin placement")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Sizes 4 KiB - 4 MiB, fewer repetitions.")
@click.option("--reps", type=click.IntRange(min=1), default=None, help="Repetitions at 1 MiB and above (default 9; 3 with --quick).")
@click.option("--clusters", default="2x2,3x2", show_default=True, help="Nodes x ranks per node, comma-separated.")
@click.option("--rate", default="1gbit", show_default=True, help="Each node's link rate (tc tbf).")
@click.option("--mtu", type=click.IntRange(576, 65535), default=1500, show_default=True,
              help="Link MTU (9000 for jumbo frames).")
@click.option("--quantize", type=click.Choice(["int8", "fp8"]), default="int8", show_default=True,
              help="Codec of the quantized variant (inter-node step only).")
@click.option("--max-calibrate", type=int, default=4 << 20, show_default=True,
              help="Largest size at which the calibration times MPI's collectives (bytes).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", "plot_path", is_flag=False, flag_value="bench_allreduce.png", default=None,
              help="Write a PNG plot (default name bench_allreduce.png).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the table as markdown here.")
@click.option("--timeout", type=float, default=1200.0, show_default=True, help="Seconds per cluster job.")
@click.option("--worker", is_flag=True, hidden=True)
@click.option("--sizes", default="", hidden=True)
def main(quick: bool, reps: int | None, clusters: str, rate: str, mtu: int, quantize: str, max_calibrate: int,
         json_path: str | None, plot_path: str | None, md_path: str | None, timeout: float, worker: bool,
         sizes: str) -> None:
    """Time mpiforge's topology-aware allreduce (planned by the cost model calibrated on the
    job, and with int8 on the inter-node step) against MPI_Allreduce on emulated clusters."""
    reps = reps or (3 if quick else 9)
    if worker:
        return run_worker(_sizes(sizes), reps, quantize, max_calibrate)
    top = 4 << 20 if quick else 64 << 20
    size_list, size = [], 4 << 10
    while size <= top:
        size_list.append(size)
        size *= 4
    cases, figures = [], {}
    for shape in clusters.split(","):
        nodes, per_node = (int(v) for v in shape.lower().split("x"))
        click.echo(f"{nodes}x{per_node} cluster at {rate}: calibrating, then {len(size_list)} sizes ...", err=True)
        more, measured = run_cluster(nodes, per_node, size_list, reps, rate, timeout, mtu, quantize,
                                     min(max_calibrate, top))
        cases += more
        figures[f"{nodes}x{per_node}"] = measured
    table = markdown(cases)
    click.echo(table)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(table + "\n")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"rate": rate, "mtu": mtu, "placement": "roundrobin", "figures": figures, "cases": cases},
                      fh, indent=1)
    if plot_path:
        plot(cases, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)


if __name__ == "__main__":
    main()
