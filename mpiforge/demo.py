"""``mpiforge demo``: the showcase job, a real ``mpiexec`` run on the embedded Open MPI.

Run from a shell, the command launches ``mpiexec -n RANKS python -m mpiforge.demo ...``,
streams what the job prints and fails clearly if the job fails or times out. Started
under ``mpiexec`` itself (``mpiexec -n 4 mpiforge demo``) it runs the job body directly.

The job is a list of parts, one per capability. A part is a collective function
``part(comm, config) -> list[Section]``; every rank runs every part, rank 0 prints the
sections, and a section whose ``ok`` is False fails the job (exit code ``EXIT_FAIL``).
Add a capability by appending its part to ``PARTS``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import click

from .launch import in_mpi_job, mpiexec_command

if TYPE_CHECKING:
    from collections import Counter

    import numpy as np
    from mpi4py import MPI

    from .comms.halo import Halo3D, Neighbour, Verification
    from .datatypes import Layout

__all__ = ["DemoConfig", "Section", "Report", "PARTS", "run_demo", "render", "in_mpi_job", "demo"]

log = logging.getLogger("mpiforge.demo")  # also when run as __main__

EXIT_FAIL = 3  # every rank exits with this when a check fails (mpiexec passes it on)


@dataclass(frozen=True)
class DemoConfig:
    n: int = 48  # local interior grid points per dimension
    halo: int = 2  # halo width
    iters: int = 20  # timed iterations (medians are reported)


@dataclass
class Section:
    """One block of the report: a titled table, or (item, value) rows when ``columns`` is empty."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    note: str = ""
    ok: bool | None = None  # None: informative; False fails the demo


@dataclass
class Report:
    sections: list[Section]

    @property
    def ok(self) -> bool:
        return all(s.ok is not False for s in self.sections)


# -- formatting helpers --

def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _bytes(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024 or unit == "MiB":
            return f"{nbytes} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def _gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f}" if seconds > 0 else "-"


def _ranks(ranks: list[int], total: int) -> str:
    return f"PASS on {total}/{total} ranks" if not ranks else "FAIL on rank(s) " + ", ".join(map(str, ranks))


def describe_layout(layout: Layout | None) -> tuple[str, str, str, str]:
    """(kind, run, counts, strides) of a canonical form, for one table row."""
    from .datatypes import BlockList, StridedBlock

    if isinstance(layout, StridedBlock):
        return ("StridedBlock", f"{layout.run} B", str(tuple(layout.counts[1:])), str(tuple(layout.strides[1:])))
    if isinstance(layout, BlockList):
        return ("BlockList", f"{len(layout.offsets)} blocks", str(tuple(layout.counts)), str(tuple(layout.strides)))
    return ("MPI_Pack fallback", "-", "-", "-")


# -- parts --

def job_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    """Ranks, hosts and MPI library of this job."""
    from mpi4py import MPI

    hosts = comm.gather(MPI.Get_processor_name(), root=0)
    library = MPI.Get_library_version().rstrip("\x00").strip().splitlines()
    rows = [
        ("ranks", str(comm.size)),
        ("hosts", ", ".join(sorted(set(hosts or [])))),
        ("MPI", library[0].split(",")[0] if library else "unknown"),
    ]
    return [Section("mpiforge demo", rows)]


# the exchanges the demo times and checks: name -> (mode, method) of Halo3D.exchange
HALO_VARIANTS: dict[str, tuple[str, str | None]] = {
    "mpi": ("mpi", None),
    "numpy": ("numpy", None),
    "mpiforge auto": ("mpiforge", None),
    "mpiforge host": ("mpiforge", "host"),
    "mpiforge native": ("mpiforge", "native"),
}
HALO_STEPS = 3  # exchange + stencil steps checked (the stencil's arithmetic is exact for up to 7)


def halo_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    """A 26-neighbour halo exchange, plain mpi4py and through the interposer: times, verification."""
    from functools import partial

    from .comms.halo import Halo3D, cartesian, time_exchanges

    cart = cartesian(comm)
    try:
        with Halo3D(cart, config.n, config.halo) as halo:
            grid = halo.initial_grid()
            methods = {name: halo.methods_chosen(grid, method) for name, (mode, method) in HALO_VARIANTS.items()
                       if mode == "mpiforge"}
            log.info("rank %d: timing %d exchanges of each kind", comm.rank, config.iters)
            times = time_exchanges(cart, {name: partial(halo.exchange, grid, *how)
                                          for name, how in HALO_VARIANTS.items()}, config.iters)
            checks = _halo_checks(halo)
            return _halo_sections(halo, grid, config, methods, times, checks)
    finally:
        cart.Free()


def _halo_checks(halo: Halo3D) -> list[tuple[str, Verification]]:
    """(what, verification) of every variant's exchange, of its steps, and of the packed bytes."""
    from .comms.halo import compare

    comm, interior = halo.comm, halo.interior
    first, final = {}, {}
    for name, (mode, method) in HALO_VARIANTS.items():
        first[name] = halo.initial_grid()
        halo.exchange(first[name], mode, method)
        final[name] = halo.iterate(halo.initial_grid(), HALO_STEPS, mode, method)
    return [
        ("first exchange fills every halo cell", compare(comm, first, halo.exchanged_initial_grid())),
        (f"{HALO_STEPS} x (exchange, 27-point stencil) == recomputed locally",
         compare(comm, {k: g[interior] for k, g in final.items()}, halo.expected_interior(HALO_STEPS))),
        ("grids bit-identical to mpi's", compare(comm, final)),
        ("mpiforge packs the 52 datatypes like MPI_Pack", _packs_like_mpi(halo, first["mpi"])),
    ]


def _packs_like_mpi(halo: Halo3D, grid: np.ndarray) -> Verification:
    """Whether the engine packs every send and receive datatype byte for byte like MPI_Pack; collective."""
    import numpy as np
    from mpi4py import MPI

    from .comms.halo import Verification
    from .datatypes import pack

    same = True
    for nb in halo.neighbours:
        for dt in (nb.send_type, nb.recv_type):
            ours, theirs = np.empty(dt.size, np.uint8), np.empty(dt.size, np.uint8)
            pack(grid, 1, dt, ours)
            dt.Pack(grid, theirs, 0, MPI.COMM_SELF)
            same &= bool(np.array_equal(ours, theirs))
    flags = halo.comm.allgather(same)
    return Verification(len(flags), "MPI_Pack", {"engine": [r for r, ok in enumerate(flags) if not ok]})


def _group(nb: Neighbour) -> str:
    """"x faces", "xy edges", ..., "corners"."""
    axes = "".join(a for a, d in zip("xyz", nb.offset) if d)
    return "corners" if nb.kind == "corner" else f"{axes} {nb.kind}s"


def _count(counter: Counter) -> str:
    return ", ".join(f"{method} {k}" for method, k in sorted(counter.items(), key=lambda kv: -kv[1]))


def _verdict(v: Verification) -> str:
    failed = sorted({r for ranks in v.differ.values() for r in ranks})
    if not failed:
        return _ranks([], v.nranks)
    return _ranks(failed, v.nranks) + " (" + ", ".join(k for k, ranks in v.differ.items() if ranks) + ")"


def _halo_sections(halo: Halo3D, grid: np.ndarray, config: DemoConfig, methods: dict[str, Counter],
                   times: dict[str, float], checks: list[tuple[str, Verification]]) -> list[Section]:
    from .comms.comm import profile
    from .datatypes import canonical_layout

    n, h, side = halo.n, halo.h, halo.n + 2 * halo.h
    moved = sum(nb.nbytes for nb in halo.neighbours)
    source = profile().source
    setup = Section("Halo exchange: 26 neighbours on a periodic 3-D grid", [
        ("Cartesian dims", " x ".join(map(str, halo.dims)) + " (periodic)"),
        ("local grid", f"{n}^3 + halo {h} = {side}^3 float64 ({_bytes(side ** 3 * 8)} per rank)"),
        ("neighbours", f"6 faces, 12 edges, 8 corners: {len({nb.rank for nb in halo.neighbours})} distinct rank(s)"),
        ("sent per exchange", f"{_bytes(moved)} per rank in 26 messages"),
        ("method model", "defaults (run `mpiforge calibrate`)" if source == "defaults" else source),
    ])

    groups = Section("Neighbour datatypes: canonical form, and how mpiforge sends them (rank 0)",
                     columns=("group", "msgs", "bytes", "layout", "run", "counts", "strides (B)", "mpiforge"))
    members: dict[str, list[Neighbour]] = {}
    for nb in halo.neighbours:
        members.setdefault(_group(nb), []).append(nb)
    for name, nbs in sorted(members.items(), key=lambda kv: (len(kv[1]), kv[0])):
        kind, run, counts, strides = describe_layout(canonical_layout(nbs[0].send_type))
        groups.rows.append((name, str(len(nbs)), str(nbs[0].nbytes), kind.replace("Block", ""), run, counts, strides,
                            _count(halo.methods_chosen(grid, neighbours=nbs))))
    groups.note = "send regions shown; each receive halo has the same form at another offset"

    base = times["mpi"]
    exchange = Section("Exchange: 26 Irecv + 26 Isend + Waitall (slowest rank's median)",
                       columns=("variant", "time", "GB/s", "x mpi", "methods of 52 msgs (rank 0)"))
    for name, seconds in times.items():
        picked = _count(methods[name]) if name in methods else "-"
        exchange.rows.append((name, _seconds(seconds), _gbps(moved, seconds), f"{base / seconds:.2f}", picked))
    exchange.note = ("mpi: mpi4py with the subarray datatypes; numpy: numpy slices copied to and from contiguous "
                     "buffers; mpiforge: the same calls as mpi on Comm(cart), the interposed communicator, "
                     f"choosing by its model or forced. {config.iters} rounds, order rotated each round. "
                     "The interposer costs Python time per call, which shows on small messages")

    ok = all(v.ok for _, v in checks)
    rows = [(what, _verdict(v)) for what, v in checks] + [("result", "PASS" if ok else "FAIL")]
    verdict = Section("Verification", rows, ok=ok)
    return [setup, groups, exchange, verdict]


def _showcase_layouts() -> list[tuple[str, MPI.Datatype]]:
    """Layouts where a pack engine earns its keep: deep strided halos, irregular lists, records."""
    import numpy as np
    from mpi4py import MPI

    rng = np.random.default_rng(7)
    lens = rng.integers(1, 17, 200_000)
    disps = np.concatenate([[0], np.cumsum(lens + rng.integers(1, 17, lens.size))[:-1]])
    record = MPI.Datatype.Create_struct([1, 3, 3, 2], [0, 8, 32, 44],
                                        [MPI.INT32_T, MPI.DOUBLE, MPI.FLOAT, MPI.INT8_T]).Create_resized(0, 48)
    layouts = [
        ("256^3 z halo, 4 deep", MPI.DOUBLE.Create_subarray([256] * 3, [256, 256, 4], [0, 0, 0])),
        ("indexed 2e5 x 1-16 dbl", MPI.DOUBLE.Create_indexed(lens.tolist(), disps.tolist())),
        ("2e5 particle structs", record.Create_contiguous(200_000)),
    ]
    record.Free()
    return [(name, dt.Commit()) for name, dt in layouts]


def layouts_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    """Engine vs MPI_Pack on rank 0 for a few demanding layouts; the other ranks sleep meanwhile."""
    import numpy as np

    from .datatypes import canonical_layout
    from .datatypes.compare import compare_with_mpi

    if comm.rank != 0:
        request = comm.Ibarrier()
        while not request.Test():
            time.sleep(0.001)
        return []
    table = Section("Datatype engine vs MPI_Pack on other layouts (rank 0, GB/s)",
                    columns=("layout", "canonical", "packed", "pack", "MPI", "unpack", "MPI", "same"))
    identical = True
    for name, dt in _showcase_layouts():
        user = np.random.default_rng(0).integers(0, 256, dt.extent, dtype=np.uint8)
        c = compare_with_mpi(dt, user, samples=max(3, min(config.iters, 9)))
        kind, run = describe_layout(canonical_layout(dt))[:2]
        table.rows.append((name, f"{kind.replace('Block', '')} {run}", _bytes(c.nbytes), _gbps(c.nbytes, c.engine_pack),
                           _gbps(c.nbytes, c.mpi_pack), _gbps(c.nbytes, c.engine_unpack),
                           _gbps(c.nbytes, c.mpi_unpack), "yes" if c.identical else "NO"))
        identical &= c.identical
        dt.Free()
    table.note = "medians of interleaved calls; scripts/bench_pack.py measures more, with memory bounds"
    table.ok = identical
    comm.Ibarrier().Wait()
    return [table]


def collectives_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    from .topology.demo_part import collectives_part as part

    return part(comm, config)


def diloco_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    from .comms.diloco_demo import diloco_part as part

    return part(comm, config)


# Each capability adds its part here, in report order.
PARTS: list[Callable[[MPI.Comm, DemoConfig], list[Section]]] = [job_part, halo_part, layouts_part, collectives_part,
                                                                diloco_part]


def run_demo(comm: MPI.Comm, config: DemoConfig) -> Report:
    """Run every part on every rank of ``comm`` (collective); the verdict agrees on all ranks."""
    sections: list[Section] = []
    for part in PARTS:
        log.debug("rank %d: part %s", comm.rank, part.__name__)
        sections += part(comm, config)
    report = Report(sections)
    if not comm.bcast(report.ok, root=0):
        report.sections.append(Section("Verdict", [("result", "FAIL")], ok=False))
    return report


def render(report: Report, console=None) -> None:
    """Print the report as rich tables, then one PASS/FAIL line."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    for section in report.sections:
        table = Table(title=section.title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                      show_header=bool(section.columns), show_edge=False, pad_edge=False)
        for i, column in enumerate(section.columns or ("item", "value")):
            table.add_column(column, justify="left" if i == 0 or not section.columns else "right")
        for row in section.rows:
            table.add_row(*(_styled(cell) for cell in row))
        console.print(table)
        if section.note:
            console.print(section.note, style="dim", markup=False)
        console.print()
    console.print(_styled("PASS" if report.ok else "FAIL"), "- mpiforge demo")


def _styled(cell: str) -> str:
    from rich.markup import escape

    text = escape(cell)
    if cell == "PASS" or cell.startswith("PASS "):
        return f"[green]{text}[/]"
    if cell == "FAIL" or cell.startswith("FAIL "):
        return f"[bold red]{text}[/]"
    return text


# -- the job side (under mpiexec) --

def run_job(config: DemoConfig, color: bool | None = None) -> int:
    """The job body on every rank: run the demo, print on rank 0, return the exit code.

    ``color`` None lets rich decide (Open MPI gives ranks a pty, so it usually says yes).
    A rank that raises logs its traceback and aborts the whole job, so none is left waiting.
    """
    from mpi4py import MPI
    from rich.console import Console

    comm = MPI.COMM_WORLD
    try:
        report = run_demo(comm, config)
        if comm.rank == 0:
            render(report, Console(highlight=False, force_terminal=color))
            sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - one failing rank must take the job down, not hang it
        log.exception("rank %d: demo failed", comm.rank)
        logging.shutdown()
        comm.Abort(1)
        raise
    return 0 if report.ok else EXIT_FAIL


# -- the login side --

def launch(config: DemoConfig, ranks: int, timeout: float) -> int:
    """Run the job under mpiexec, streaming its output; return mpiexec's exit code."""
    argv = [sys.executable, "-m", "mpiforge.demo", "--n", str(config.n), "--halo", str(config.halo),
            "--iters", str(config.iters), "--log-level", logging.getLevelName(logging.getLogger().level)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # rank 0 writes to a pty or pipe of mpiexec's: tell it what our own stdout is
    if sys.stdout.isatty():
        argv.append("--color")
        env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    else:
        argv.append("--no-color")
    cmd = mpiexec_command(ranks, argv)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            env=env, start_new_session=True)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, False), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, True), daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise click.ClickException(
            f"demo job timed out after {timeout:g} s and was killed; "
            "raise --timeout (MPIFORGE_DEMO_TIMEOUT) or lower --iters/--n") from None
    except BaseException:  # Ctrl-C: take the whole job down with us
        _kill(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=5)
    return code


def _pump(stream, err: bool) -> None:
    for line in stream:
        click.echo(line, nl=False, err=err)
    stream.close()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- commands --

def _options(f):
    f = click.option("--iters", type=click.IntRange(min=1), default=DemoConfig.iters, show_default=True,
                     envvar="MPIFORGE_DEMO_ITERS", help="Timed iterations (medians are reported).")(f)
    f = click.option("--halo", type=click.IntRange(min=1), default=DemoConfig.halo, show_default=True,
                     envvar="MPIFORGE_DEMO_HALO", help="Halo width (at most --n).")(f)
    f = click.option("--n", "n", type=click.IntRange(min=1), default=DemoConfig.n, show_default=True,
                     envvar="MPIFORGE_DEMO_N", help="Local interior grid points per dimension.")(f)
    return f


def _config(n: int, halo: int, iters: int) -> DemoConfig:
    if halo > n:
        raise click.BadParameter(f"halo {halo} is wider than the local grid n={n}", param_hint="--halo")
    return DemoConfig(n=n, halo=halo, iters=iters)


@click.command()
@click.option("--ranks", type=click.IntRange(min=1), default=4, show_default=True,
              envvar="MPIFORGE_DEMO_RANKS", help="MPI ranks to launch.")
@_options
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              envvar="MPIFORGE_DEMO_TIMEOUT", help="Seconds before the job is killed.")
@click.pass_context
def demo(ctx: click.Context, ranks: int, n: int, halo: int, iters: int, timeout: float) -> None:
    """Run the showcase MPI job on the embedded Open MPI and print its report.

    A 26-neighbour halo exchange on a periodic 3-D grid with plain mpi4py datatypes,
    numpy packing and mpiforge's interposed communicator (auto and forced methods);
    checks they agree bit for bit, then the datatype engine against MPI_Pack. Options also read
    MPIFORGE_DEMO_<OPTION>. Under mpiexec (`mpiexec -n 4 mpiforge demo`) the job runs
    in place and --ranks/--timeout are ignored.
    """
    config = _config(n, halo, iters)
    if in_mpi_job():
        if ctx.get_parameter_source("ranks") is not click.core.ParameterSource.DEFAULT:
            log.warning("already under mpiexec: --ranks is ignored, the job's own size is used")
        code = run_job(config)
        if code == EXIT_FAIL:
            ctx.exit(code)
        return
    try:
        code = launch(config, ranks, timeout)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if code == EXIT_FAIL:
        click.echo("Error: the demo's checks FAILED (see the report above)", err=True)
        ctx.exit(code)
    if code != 0:
        raise click.ClickException(f"demo job failed: mpiexec exited with code {code} (its output is above)")


@click.command(hidden=True)
@_options
@click.option("--log-level", default="WARNING", help="Logging level on the ranks.")
@click.option("--color/--no-color", default=None, help="Colour the report (default: if stdout is a terminal).")
def _job(n: int, halo: int, iters: int, log_level: str, color: bool | None) -> None:
    """Job body under mpiexec (what `mpiforge demo` launches): always runs in place."""
    level = logging.getLevelName(log_level.upper())
    logging.basicConfig(level=level if isinstance(level, int) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run_job(_config(n, halo, iters), color))


if __name__ == "__main__":
    _job(prog_name="python -m mpiforge.demo")
