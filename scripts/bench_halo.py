#!/usr/bin/env python
"""26-neighbour 3-D halo exchange: plain mpi4py vs numpy packing vs mpiforge's interposed communicator.

For every rank count (default 2 and 4) the script launches itself under mpiexec (hidden
``--worker`` flag); rank 0 of that job prints one JSON line per case, which this side collects.
A case is a local grid n^3 float64 per rank with halo h on a periodic Cartesian grid
(``mpiforge.comms.halo``), and the median time per exchange (26 Irecv + 26 Isend + Waitall,
each sample the slowest rank's) of:

- ``mpi``: mpi4py with subarray datatypes,
- ``numpy``: numpy slices copied to and from contiguous buffers,
- ``mpiforge``: the same calls as mpi on ``Comm(cart)``, the model choosing per message,
- ``native`` / ``host``: the same, with that method forced.

The variants run in an order shuffled every repetition (this machine's speed drifts). Before
timing, every variant's exchange is checked: each halo cell must hold its neighbour's value.
Targets per case: speedup_vs_mpi = mpi_ms / mpiforge_ms >= 0.95, and
mpiforge_ms <= 1.05 x the best forced method.

    python scripts/bench_halo.py --quick                     # under a minute
    python scripts/bench_halo.py --json out.json --plot --markdown out.md
"""
from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial

import click

MARK = "BENCH_HALO "  # prefix of the worker's result lines
FORCED = ("native", "host")
SPEEDUP_TARGET = 0.95
AUTO_SLACK = 1.05


# ---------------------------------------------------------------- the worker (under mpiexec)

def _inner(halo, grid, target_s: float = 2e-3) -> int:
    """Exchanges per sample so that a sample lasts about ``target_s`` (the mpi exchange's time)."""
    from mpi4py import MPI

    halo.exchange(grid, "mpi")
    halo.comm.Barrier()
    t0 = time.perf_counter()
    halo.exchange(grid, "mpi")
    once = halo.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return int(min(10, max(1, round(target_s / max(once, 1e-9)))))


def measure(cart, n: int, h: int, reps: int) -> dict:
    """One case on every rank of ``cart``; the dict is meaningful on rank 0."""
    import numpy as np

    from mpiforge.comms.halo import Halo3D, compare, sample_exchanges

    variants = {"mpi": ("mpi", None), "numpy": ("numpy", None), "mpiforge": ("mpiforge", None),
                **{m: ("mpiforge", m) for m in FORCED}}
    with Halo3D(cart, n, h) as halo:
        expected = halo.exchanged_initial_grid()
        for name, (mode, method) in variants.items():  # correctness first
            grid = halo.initial_grid()
            halo.exchange(grid, mode, method)
            check = compare(cart, {name: grid}, expected)
            if not check.ok:
                raise AssertionError(f"{name}: wrong halo after one exchange on ranks {check.differ[name]}")
        del expected
        grid = halo.initial_grid()
        chosen = dict(halo.methods_chosen(grid))
        inner = _inner(halo, grid)
        samples = sample_exchanges(cart, {name: partial(halo.exchange, grid, mode, method)
                                          for name, (mode, method) in variants.items()}, reps, inner)
        ms = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
        # interquartile range / median: how far apart the samples of one variant lie
        iqr = {k: float(np.subtract(*np.percentile(v, [75, 25]))) * 1e3 / ms[k] * 100 for k, v in samples.items()}
        forced = {m: ms[m] for m in FORCED}
        best = min(forced, key=forced.get)
        return {
            "ranks": cart.size, "dims": list(halo.dims), "n": n, "halo": h,
            "bytes_per_exchange": sum(nb.nbytes for nb in halo.neighbours),
            "mpi_ms": ms["mpi"], "numpy_ms": ms["numpy"], "mpiforge_ms": ms["mpiforge"],
            "forced_ms": forced, "best_forced_ms": forced[best], "best_forced_method": best,
            "speedup_vs_mpi": ms["mpi"] / ms["mpiforge"],
            "methods_chosen": chosen,
            # what the interposer adds per call when it hands every message to MPI as is
            "interposer_us_per_call": (ms["native"] - ms["mpi"]) * 1e3 / 52,
            "iqr_pct": iqr, "reps": reps, "exchanges_per_sample": inner,
        }


def run_worker(sizes: list[int], halos: list[int], reps: int) -> None:
    from mpi4py import MPI

    from mpiforge.comms.comm import profile
    from mpiforge.comms.halo import cartesian

    comm = MPI.COMM_WORLD
    cart = cartesian(comm)
    try:
        for n in sizes:
            for h in halos:
                result = measure(cart, n, h, reps)
                result["profile"] = profile().source
                if comm.rank == 0:
                    print(MARK + json.dumps(result), flush=True)
    except BaseException:  # noqa: BLE001 - one failing rank must end the job, not hang it
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    cart.Free()


# ---------------------------------------------------------------- the launcher side

def launch(ranks: int, sizes: list[int], halos: list[int], reps: int, timeout: float, on_case) -> list[dict]:
    """Launch the worker on ``ranks`` ranks; ``on_case(result)`` is called as each case arrives."""
    from mpiforge.launch import mpiexec_command

    argv = [sys.executable, os.path.abspath(__file__), "--worker", "--sizes", ",".join(map(str, sizes)),
            "--halos", ",".join(map(str, halos)), "--reps", str(reps)]
    env = {k: v for k, v in os.environ.items() if k != "MPIFORGE_METHOD"}  # "mpiforge" must choose itself
    results: list[dict] = []

    def collect(stream) -> None:  # one line per case, as rank 0 finishes it
        for line in stream:
            if line.startswith(MARK):
                results.append(json.loads(line[len(MARK):]))
                on_case(results[-1])

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(mpiexec_command(ranks, argv), stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, start_new_session=True)
        reader = threading.Thread(target=collect, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except BaseException:  # a timeout or Ctrl-C: take the whole job down
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            reader.join(timeout=5)
        if code != 0:
            err.seek(0)
            raise click.ClickException(f"{ranks}-rank job failed (mpiexec exit code {code}):\n{err.read()[-3000:]}")
    return results


def targets(c: dict) -> list[dict]:
    """The two targets of a case, with what was reached (``short``: for the table)."""
    best, slack = c["best_forced_method"], c["mpiforge_ms"] / c["best_forced_ms"]
    return [
        {"target": f"speedup_vs_mpi >= {SPEEDUP_TARGET}", "need": SPEEDUP_TARGET, "got": c["speedup_vs_mpi"],
         "met": c["speedup_vs_mpi"] >= SPEEDUP_TARGET,
         "short": f"x mpi {c['speedup_vs_mpi']:.3f} < {SPEEDUP_TARGET}"},
        {"target": f"mpiforge_ms <= {AUTO_SLACK} x best_forced_ms ({best})", "need": AUTO_SLACK * c["best_forced_ms"],
         "got": c["mpiforge_ms"], "met": slack <= AUTO_SLACK,
         "short": f"auto {slack:.3f} x {best} > {AUTO_SLACK}"},
    ]


def _picks(chosen: dict) -> str:
    return ", ".join(f"{m} {k}" for m, k in sorted(chosen.items(), key=lambda kv: -kv[1]))


def _missed(c: dict) -> str:
    misses = [t for t in targets(c) if not t["met"]]
    return "; ".join(t["short"] for t in misses)


COLUMNS = ("ranks", "n", "h", "KiB", "mpi ms", "numpy ms", "mpiforge ms", "native ms", "host ms", "x mpi",
           "+us/call", "IQR %", "mpiforge picks", "targets")


def _row(c: dict) -> list[str]:
    return [str(c["ranks"]), str(c["n"]), str(c["halo"]), f"{c['bytes_per_exchange'] / 1024:.0f}",
            f"{c['mpi_ms']:.3f}", f"{c['numpy_ms']:.3f}", f"{c['mpiforge_ms']:.3f}",
            f"{c['forced_ms']['native']:.3f}", f"{c['forced_ms']['host']:.3f}", f"{c['speedup_vs_mpi']:.2f}",
            f"{c['interposer_us_per_call']:.1f}", f"{statistics.median(c['iqr_pct'].values()):.0f}",
            _picks(c["methods_chosen"])]


def render(cases: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="26-neighbour halo exchange, median ms per exchange (slowest rank)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("mpiforge picks", "targets") else "right")
    for c in cases:
        missed = _missed(c)
        table.add_row(*_row(c), "[green]met[/]" if not missed else f"[red]{missed}[/]")
    console.print(table)
    console.print("+us/call: (forced native - mpi) / 52 calls, what the interposer adds per call when it "
                  "hands every message to MPI as is. IQR %: the median over the variants of the interquartile "
                  "range of their samples / median (the noise the targets are read against). "
                  f"Method model: {cases[0]['profile'] if cases else '-'}")


def markdown(cases: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "--:|" * (len(COLUMNS) - 2) + "---|---|"]
    for c in cases:
        lines.append("| " + " | ".join(_row(c) + [("missed: " + _missed(c)) if _missed(c) else "met"]) + " |")
    return "\n".join(lines)


def plot(cases: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    series = [("mpi", lambda c: c["mpi_ms"]), ("numpy", lambda c: c["numpy_ms"]),
              ("mpiforge (auto)", lambda c: c["mpiforge_ms"]),
              *((f"mpiforge {m}", lambda c, m=m: c["forced_ms"][m]) for m in FORCED)]
    x = np.arange(len(cases))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(cases)), 5))
    for i, (label, get) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [get(c) for c in cases], width, label=label)
    ax.set_xticks(x, [f"{c['ranks']}r {c['n']}^3 h{c['halo']}" for c in cases], rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per exchange (median, log)")
    ax.set_title("26-neighbour halo exchange: mpi4py vs numpy vs mpiforge")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="n in 64,128 and 31 repetitions (under a minute).")
@click.option("--ranks", default="2,4", show_default=True, help="Rank counts, one mpiexec job each.")
@click.option("--sizes", default=None, help="Local n per rank (default 64,128,192; 64,128 with --quick).")
@click.option("--halos", default="1,4", show_default=True, help="Halo widths.")
@click.option("--reps", type=click.IntRange(min=1), default=None, help="Repetitions (default 61; 31 with --quick).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON here.")
@click.option("--plot", "plot_path", is_flag=False, flag_value="bench_halo.png", default=None,
              help="Write a PNG plot (default name bench_halo.png).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the table as markdown here.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Method-model profile for mpiforge's choice (default: MPIFORGE_PROFILE, else the calibrated one).")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds per mpiexec job.")
@click.option("--worker", is_flag=True, hidden=True)
def main(quick: bool, ranks: str, sizes: str | None, halos: str, reps: int | None, json_path: str | None,
         plot_path: str | None, md_path: str | None, profile_path: str | None, timeout: float, worker: bool) -> None:
    """Time a 26-neighbour halo exchange: mpi4py datatypes, numpy packing, mpiforge (auto and forced)."""
    size_list = _ints(sizes or ("64,128" if quick else "64,128,192"))
    halo_list, reps = _ints(halos), reps or (31 if quick else 61)
    if worker:
        run_worker(size_list, halo_list, reps)
        return
    from mpi4py import MPI
    from rich.console import Console
    from rich.progress import Progress

    if profile_path:
        os.environ["MPIFORGE_PROFILE"] = os.path.abspath(profile_path)
    if os.environ.get("MPIFORGE_METHOD"):
        click.echo("note: MPIFORGE_METHOD is ignored here: 'mpiforge' lets the model choose", err=True)
    rank_list = _ints(ranks)
    console = Console(width=max(Console().width, 160))
    cases: list[dict] = []
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("starting", total=len(rank_list) * len(size_list) * len(halo_list))
        for r in rank_list:
            progress.update(task, description=f"{r} ranks")

            def arrived(case: dict) -> None:
                progress.update(task, advance=1, description=f"{case['ranks']} ranks: {case['n']}^3 h{case['halo']}")

            try:
                cases += launch(r, size_list, halo_list, reps, timeout, arrived)
            except subprocess.TimeoutExpired:
                raise click.ClickException(f"the {r}-rank job timed out after {timeout:g} s and was killed: "
                                           "raise --timeout or measure less (--quick, --sizes)") from None
    render(cases, console)
    console.print(f"{len(cases)} cases in {time.perf_counter() - started:.0f} s, {reps} shuffled repetitions each")
    report = {
        "machine": {"python": platform.python_version(), "mpi": MPI.Get_library_version().split("\n")[0].strip("\0"),
                    "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "reps": reps},
        "profile": cases[0]["profile"] if cases else None,
        "cases": cases,
        "targets": [{"ranks": c["ranks"], "n": c["n"], "halo": c["halo"], "targets": targets(c)} for c in cases],
    }
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=1)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(markdown(cases) + "\n")
    if plot_path:
        plot(cases, plot_path)
        console.print(f"plot written to {plot_path}")


if __name__ == "__main__":
    sys.exit(main())
