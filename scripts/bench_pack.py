#!/usr/bin/env python
"""Pack/unpack throughput: mpiforge vs Open MPI's MPI_Pack (through mpi4py) vs memcpy.

For every case the memory-traffic bound is memcpy throughput / traffic factor, where the
factor is (bytes of the distinct 64-byte cache lines read + bytes written) / (2 x packed
bytes): what a kernel that touches each needed cache line once could reach at memcpy speed.
Hardware prefetchers fetch more than the needed lines (the adjacent line of each pair, the
lines after a run), so the script also measures ``read_gbps``: packed bytes / time to merely
read every needed line of the layout, with no writes at all (the best of a few software
prefetch distances); ``check_targets`` uses it to mark targets no kernel can reach here.
For dense layouts it also reports ``span_read_gbps``, the same probe over every line of the
layout's span: when it is barely slower than ``read_gbps``, the hardware fetches the gaps too.
All numbers are medians of repeated, interleaved runs in this one process (the order of the
operations rotates from one repetition to the next). Buffers are
64-byte aligned, as HPC allocators give them (posix_memalign, numpy's huge-page arenas).

    python scripts/bench_pack.py                 # full run, table on stdout
    python scripts/bench_pack.py --quick --json out.json --plot
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import click
import numpy as np
from mpi4py import MPI
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from numba import njit

from mpiforge.datatypes import StridedBlock, canonicalize, packer_for, translate
from mpiforge.datatypes.llvm_ops import prefetch

MiB = 1 << 20
LINE = 64
PROBE_AHEAD = (0, 8, 16, 32)  # prefetch distances (rows) tried by the read probe; the best counts


@dataclass
class Case:
    name: str
    build: Callable[[], MPI.Datatype]  # an uncommitted datatype; the user buffer spans its extent
    block_bytes: str  # human description of the blocks
    kind: str  # "vector", "subarray", "indexed" or "struct": selects the targets that apply


def _vector(block: int) -> Case:
    n = 32 * MiB // block
    w = block // 8
    return Case(f"vector {block} B", lambda: MPI.DOUBLE.Create_vector(n, w, 2 * w), f"{block}", "vector")


def _cube(sub: list[int], start: list[int], name: str, block: str) -> Case:
    return Case(name, lambda: MPI.DOUBLE.Create_subarray([256] * 3, sub, start), block, "subarray")


def _indexed(nblocks: int, lo: int, hi: int) -> Case:
    def build() -> MPI.Datatype:
        rng = np.random.default_rng(nblocks + hi)
        lens = rng.integers(lo, hi + 1, nblocks)
        gaps = rng.integers(lo, hi + 1, nblocks)
        disps = np.concatenate([[0], np.cumsum(lens + gaps)[:-1]])
        return MPI.DOUBLE.Create_indexed(lens.tolist(), disps.tolist())

    return Case(f"indexed {nblocks:.0e} x {lo}-{hi} dbl".replace("e+0", "e"), build, f"{8 * lo}-{8 * hi}", "indexed")


def _particles() -> MPI.Datatype:
    """Array of 10^6 C structs {int32 id; double x[3]; float v[3]; int8 flags[2]} (48 B with padding)."""
    rec = MPI.Datatype.Create_struct([1, 3, 3, 2], [0, 8, 32, 44], [MPI.INT32_T, MPI.DOUBLE, MPI.FLOAT, MPI.INT8_T])
    return rec.Create_resized(0, 48).Create_contiguous(10 ** 6)


CASES = [
    *(_vector(b) for b in (8, 64, 512, 4096)),
    _cube([1, 256, 256], [0, 0, 0], "256^3 x face", "512K"),
    _cube([256, 1, 256], [0, 0, 0], "256^3 y face", "2048"),
    _cube([256, 256, 1], [0, 0, 0], "256^3 z face", "8"),
    _cube([256, 256, 4], [0, 0, 0], "256^3 z halo 4", "32"),
    _cube([128] * 3, [64] * 3, "256^3 interior 128^3", "1024"),
    _indexed(10 ** 6, 1, 16),
    _indexed(2 * 10 ** 5, 1, 256),
    _indexed(2 * 10 ** 4, 64, 1024),
    Case("struct 1e6 particles", _particles, "4,24,14", "struct"),
]


def traffic_factor(layout, base: int, packed: int) -> float:
    """(distinct cache-line bytes read + bytes written) / (2 x packed bytes)."""
    offsets, lengths = layout.blocks()
    keep = lengths > 0
    first = (base + offsets[keep]) // LINE
    last = (base + offsets[keep] + lengths[keep] - 1) // LINE
    order = np.argsort(first, kind="stable")
    first, last = first[order], last[order]
    covered = np.maximum.accumulate(last)
    before = np.concatenate([[first[0] - 1], covered[:-1]])
    new_lines = np.maximum(0, last - np.maximum(first - 1, before))
    return (int(new_lines.sum()) * LINE + packed) / (2 * packed)


def fetched_factor(factor: float, packed: int, span: int, read: float, span_read: float | None) -> float:
    """The traffic factor counting the lines the hardware really fetches.

    ``traffic_factor`` counts the needed lines only. When reading just those lines takes as
    long as reading every line of the span (``span_read`` >= ``read``, both packed bytes per
    second), the prefetchers move the gap lines too: the span's lines are then estimated to
    cross the memory bus in proportion, ``span x min(1, span_read / read)``.
    """
    needed = (2 * factor - 1) * packed  # bytes of the needed lines
    if not span_read:
        return factor
    return (max(needed, span * min(1.0, span_read / read)) + packed) / (2 * packed)


def aligned_empty(nbytes: int, align: int = LINE) -> np.ndarray:
    raw = np.empty(nbytes + align, np.uint8)
    shift = (-raw.ctypes.data) % align
    return raw[shift:shift + nbytes]


@njit(cache=True, nogil=True)
def _touch(buf, blocks, counts, strides, ahead_rows):
    """Load one byte of every 64-byte line of every block (buf is 64-byte aligned); no stores.

    ``blocks`` holds (offset, length) pairs, repeated over outer dims ``counts``/``strides``
    (innermost first, the innermost one looped directly as the kernels do).
    """
    acc = np.uint8(0)
    user_base = buf.ctypes.data
    ndim = counts.shape[0]
    c0, s0 = counts[0], strides[0]
    rows = 1
    for d in range(1, ndim):
        rows *= counts[d]
    idx = np.zeros(ndim, np.int64)
    base = 0
    ahead = ahead_rows * s0  # prefetch long strides ahead, as the kernels do
    for _ in range(rows):
        for r in range(c0):
            row = base + r * s0
            if ahead:
                prefetch(user_base + row + ahead)
            for k in range(blocks.shape[0] // 2):
                p = row + blocks[2 * k]
                end = p + blocks[2 * k + 1]
                while p < end:
                    acc ^= buf[p]
                    p = (p | 63) + 1
        d = 1
        while d < ndim:
            idx[d] += 1
            base += strides[d]
            if idx[d] < counts[d]:
                break
            base -= counts[d] * strides[d]
            idx[d] = 0
            d += 1
    return acc


def read_probe(layout, user: np.ndarray, ahead_rows: int = 0) -> Callable[[], object]:
    """A function that reads every line the layout needs, and nothing else (prefetching
    ``ahead_rows`` rows ahead along the innermost dimension)."""
    if isinstance(layout, StridedBlock):
        blocks = np.array([layout.start, layout.run], dtype=np.int64)
        counts, strides = layout.counts[1:], layout.strides[1:]
    else:
        blocks = np.stack([layout.offsets, layout.lengths], axis=1).ravel().astype(np.int64)
        counts, strides = layout.counts, layout.strides
    counts, strides = np.array(counts + (1,), np.int64), np.array(strides + (0,), np.int64)
    return lambda: _touch(user, blocks, counts, strides, ahead_rows)


def _median_time(fn: Callable[[], object], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def measure(case: Case, reps: int) -> dict:
    dt = case.build().Commit()
    try:
        packer = packer_for(dt)
        size, extent = dt.size, dt.extent
        user = aligned_empty(extent)
        user[:] = np.random.default_rng(1).integers(0, 256, extent, dtype=np.uint8)
        window = MPI.buffer.fromaddress(user.ctypes.data, extent, readonly=False)
        ours, theirs, copy_src, copy_dst = (aligned_empty(size) for _ in range(4))
        copy_src[:] = 1
        scratch = aligned_empty(extent)
        scratch[:] = user
        # correctness first: identical bytes both ways
        packer.pack(user, ours)
        dt.Pack(window, theirs, 0, MPI.COMM_SELF)
        if not np.array_equal(ours, theirs):
            raise AssertionError(f"{case.name}: mpiforge and MPI_Pack disagree")
        packer.unpack(ours, 0, scratch)
        if not np.array_equal(scratch, user):
            raise AssertionError(f"{case.name}: unpack did not restore the buffer")
        scratch_window = MPI.buffer.fromaddress(scratch.ctypes.data, extent, readonly=False)
        ops = {
            "mpiforge": lambda: packer.pack(user, ours),
            "mpi": lambda: dt.Pack(window, theirs, 0, MPI.COMM_SELF),
            "memcpy": lambda: np.copyto(copy_dst, copy_src),
            "mpiforge_unpack": lambda: packer.unpack(ours, 0, scratch),
            "mpi_unpack": lambda: dt.Unpack(theirs, 0, scratch_window, MPI.COMM_SELF),
            **{f"read{d}": read_probe(packer.layout, user, d) for d in PROBE_AHEAD},
        }
        lo, hi = packer.layout.span()
        if hi - lo <= 4 * size:  # dense enough that the hardware may read the gaps as well
            ops["span_read"] = read_probe(StridedBlock(lo, hi - lo, (hi - lo,), (1,)), user)
        inner = max(1, int(2 * MiB // max(size, 1)))  # >= ~2 MB moved per sample
        samples: dict[str, list[float]] = {k: [] for k in ops}
        for fn in ops.values():
            fn()  # warm-up: first-touch page faults, kernel compilation
        names = list(ops)
        for rep in range(reps):  # rotate the order, so no operation always follows the same one
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                samples[name].append(_median_time(ops[name], inner))
        gbps = {k: size / statistics.median(v) / 1e9 for k, v in samples.items()}
        factor = traffic_factor(packer.layout, user.ctypes.data, size)
        fetched = fetched_factor(factor, size, hi - lo, gbps["read0"], gbps.get("span_read"))
        offsets, lengths = packer.layout.blocks()
        return {
            "name": case.name,
            "bytes": size,
            "block_bytes": case.block_bytes,
            "min_block_bytes": int(lengths.min()),
            "kind": case.kind,
            "layout": type(packer.layout).__name__,
            "mpiforge_gbps": gbps["mpiforge"],
            "mpi_gbps": gbps["mpi"],
            "memcpy_gbps": gbps["memcpy"],
            "traffic_factor": factor,
            "bound_gbps": gbps["memcpy"] / factor,
            "unpack_mpiforge_gbps": gbps["mpiforge_unpack"],
            "unpack_mpi_gbps": gbps["mpi_unpack"],
            "ratio_vs_mpi": gbps["mpiforge"] / gbps["mpi"],
            "unpack_ratio_vs_mpi": gbps["mpiforge_unpack"] / gbps["mpi_unpack"],
            "read_gbps": max(gbps[f"read{d}"] for d in PROBE_AHEAD),
            "span_bytes": hi - lo,
            "span_read_gbps": gbps.get("span_read"),
            "fetched_factor": fetched,
            "fetched_bound_gbps": gbps["memcpy"] / fetched,
            "unpack_streams": packer.plan(1).streams[1],
        }
    finally:
        dt.Free()


def check_targets(c: dict) -> list[dict]:
    """Every target of issue #2 that applies to this case, with what was reached.

    A target is marked out of reach, with the measurement that shows it, when
    - "reads": it lies above ``read_gbps`` (reading the layout's needed lines alone, no writes,
      best of a few prefetch distances) and that probe is at least as fast as our pack, so it
      is tight: nothing that reads those lines here can meet it. The same holds for an unpack
      with ordinary stores, which must own every line it writes (owning moves a line as a read
      does; only streaming stores skip that);
    - "lines fetched": 75% of the bound lies above ``fetched_bound_gbps``, the bound with
      the lines the hardware really fetches (see ``fetched_factor``): even moving those at
      memcpy speed would not meet it.
    """
    bounded_by_reads = {"pack": True, "unpack": not c["unpack_streams"]}
    found = []
    for label, ours, mpi in (("pack", c["mpiforge_gbps"], c["mpi_gbps"]),
                             ("unpack", c["unpack_mpiforge_gbps"], c["unpack_mpi_gbps"])):
        rules = []
        if c["bytes"] >= MiB:
            rules.append(("min(MPI, 95% bound)", min(mpi, 0.95 * c["bound_gbps"])))
        if c["kind"] == "indexed" or c["name"].endswith("z halo 4"):
            rules.append(("1.2x MPI", 1.2 * mpi))
        if c["min_block_bytes"] >= 64:
            rules.append(("75% bound", 0.75 * c["bound_gbps"]))
        for rule, need in rules:
            why = ""
            if bounded_by_reads[label] and need > c["read_gbps"] >= ours:
                why = "reads"
            elif bounded_by_reads[label] and rule == "75% bound" and need > c["fetched_bound_gbps"]:
                why = "lines fetched"
            found.append({"target": f"{label} >= {rule}", "need_gbps": need, "got_gbps": ours, "met": ours >= need,
                          "out_of_reach": why})
    return found


def missed(c: dict) -> list[dict]:
    return [t for t in check_targets(c) if not t["met"]]


class Overheads:
    """Per-call costs: translate+canonicalize a 3-level nested type, and a cached 8-byte pack
    (with MPI_Pack's beside it). ``sample()`` is called at several points of the run, so that a
    passing slow phase of a shared machine weighs as one sample of many, for both alike."""

    def __init__(self) -> None:
        from mpiforge.datatypes import pack

        rec = MPI.Datatype.Create_struct([1, 3, 1], [0, 8, 32], [MPI.INT, MPI.DOUBLE, MPI.FLOAT]).Create_resized(0, 40)
        self.nested = rec.Create_vector(4, 2, 3).Create_subarray([5, 6], [2, 3], [1, 2]).Commit()
        rec.Free()
        self.small = MPI.INT.Create_vector(2, 1, 2).Commit()  # 8 bytes, two 4-byte blocks
        src, out = np.arange(4, dtype=np.int32), np.zeros(8, np.uint8)
        packer_for(self.small).pack(src, out)
        self.calls = {
            "cached_pack_8B_us": lambda: pack(src, 1, self.small, out),
            "mpi_pack_8B_us": lambda: self.small.Pack(src[:3], out, 0, MPI.COMM_SELF),
        }
        self.samples: dict[str, list[float]] = {"canonicalize_3level_ms": [], **{k: [] for k in self.calls}}

    def sample(self) -> None:
        for _ in range(20):
            t = time.perf_counter()
            canonicalize(translate(self.nested), self.nested.extent)
            self.samples["canonicalize_3level_ms"].append((time.perf_counter() - t) * 1e3)
        for key, call in self.calls.items():
            self.samples[key].append(_median_time(call, 20000) * 1e6)

    def result(self) -> dict:
        self.nested.Free()
        self.small.Free()
        return {key: statistics.median(v) for key, v in self.samples.items()}


def render(cases: list[dict], over: dict, console: Console) -> None:
    table = Table(title="Pack/unpack throughput, GB/s (medians; bound = memcpy / traffic factor)")
    for col in ("case", "MiB", "block B", "pack", "MPI", "x MPI", "unpack", "MPI", "x MPI",
                "memcpy", "bound", "read", "fetched", "%bound", "targets"):
        table.add_column(col, justify="left" if col in ("case", "targets") else "right")
    for c in cases:
        misses = missed(c)
        worst = min(c["mpiforge_gbps"], c["unpack_mpiforge_gbps"]) / c["bound_gbps"]
        table.add_row(
            c["name"], f"{c['bytes'] / MiB:.1f}", c["block_bytes"],
            f"{c['mpiforge_gbps']:.2f}", f"{c['mpi_gbps']:.2f}", f"{c['ratio_vs_mpi']:.2f}",
            f"{c['unpack_mpiforge_gbps']:.2f}", f"{c['unpack_mpi_gbps']:.2f}", f"{c['unpack_ratio_vs_mpi']:.2f}",
            f"{c['memcpy_gbps']:.2f}", f"{c['bound_gbps']:.2f}", f"{c['read_gbps']:.2f}",
            f"{c['fetched_bound_gbps']:.2f}", f"{100 * worst:.0f}%",
            "[green]met[/]" if not misses else "; ".join(
                ("[yellow]" if t["out_of_reach"] else "[red]") + f"{t['target']} ({t['got_gbps']:.2f} < {t['need_gbps']:.2f})"
                + (f" out of reach: {t['out_of_reach']}[/]" if t["out_of_reach"] else "[/]") for t in misses),
        )
    console.print(table)
    console.print(f"translate + canonicalize a 3-level nested type: {over['canonicalize_3level_ms']:.3f} ms "
                  f"(target < 1 ms); cached 8-byte pack: {over['cached_pack_8B_us']:.2f} us per call "
                  f"(target < 3 us; MPI_Pack through mpi4py: {over['mpi_pack_8B_us']:.2f} us)")


def markdown(cases: list[dict], over: dict) -> str:
    """The results as a GitHub markdown table (for the README and issue notes)."""
    lines = ["| case | MiB | block B | pack GB/s | MPI | x MPI | unpack GB/s | MPI | x MPI | memcpy | bound | read | fetched | targets missed |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for c in cases:
        misses = "; ".join(f"{t['target']} ({t['got_gbps']:.2f} < {t['need_gbps']:.2f})"
                           + (f" *out of reach: {t['out_of_reach']}*" if t["out_of_reach"] else "") for t in missed(c)) or "none"
        lines.append(
            f"| {c['name']} | {c['bytes'] / MiB:.1f} | {c['block_bytes']} | {c['mpiforge_gbps']:.2f} | {c['mpi_gbps']:.2f} "
            f"| {c['ratio_vs_mpi']:.2f} | {c['unpack_mpiforge_gbps']:.2f} | {c['unpack_mpi_gbps']:.2f} "
            f"| {c['unpack_ratio_vs_mpi']:.2f} | {c['memcpy_gbps']:.2f} | {c['bound_gbps']:.2f} | {c['read_gbps']:.2f} "
            f"| {c['fetched_bound_gbps']:.2f} | {misses} |")
    lines.append("")
    lines.append(f"Translate + canonicalize a 3-level nested type: {over['canonicalize_3level_ms']:.3f} ms; "
                 f"cached 8-byte pack: {over['cached_pack_8B_us']:.2f} us per call "
                 f"(MPI_Pack through mpi4py: {over['mpi_pack_8B_us']:.2f} us).")
    return "\n".join(lines)


def plot(cases: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in cases]
    x = np.arange(len(cases))
    fig, axes = plt.subplots(2, 1, figsize=(13, 8), sharex=True)
    for ax, ours, mpi, title in ((axes[0], "mpiforge_gbps", "mpi_gbps", "pack"),
                                 (axes[1], "unpack_mpiforge_gbps", "unpack_mpi_gbps", "unpack")):
        ax.bar(x - 0.2, [c[ours] for c in cases], 0.4, label="mpiforge")
        ax.bar(x + 0.2, [c[mpi] for c in cases], 0.4, label="Open MPI MPI_Pack")
        ax.scatter(x, [c["bound_gbps"] for c in cases], marker="_", s=600, color="k", label="traffic bound")
        ax.set_yscale("log")
        ax.set_ylabel(f"{title} GB/s (log)")
        ax.legend(loc="upper right")
    axes[1].set_xticks(x, names, rotation=35, ha="right")
    fig.suptitle("mpiforge datatype engine vs Open MPI")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Same cases, 5 repetitions (under a minute).")
@click.option("--reps", type=int, default=None, help="Repetitions per measurement (default 21; 5 with --quick).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write results as JSON here.")
@click.option("--plot", "plot_path", is_flag=False, flag_value="bench_pack.png", default=None,
              help="Write a PNG plot (default name bench_pack.png).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Write the table as markdown here.")
@click.option("--only", default="", help="Run only cases whose name contains this text.")
def main(quick: bool, reps: int | None, json_path: str | None, plot_path: str | None, md_path: str | None,
         only: str) -> None:
    """Measure pack/unpack throughput of mpiforge, MPI_Pack and memcpy on the cases of issue #2."""
    reps = reps or (5 if quick else 21)
    console = Console(width=max(Console().width, 200))
    chosen = [c for c in CASES if only in c.name]
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("per-call overheads", total=len(chosen) + 1)
        probe = Overheads()
        for _ in range(max(3, reps // 4)):
            probe.sample()
        progress.advance(task)
        for case in chosen:
            progress.update(task, description=case.name)
            results.append(measure(case, reps))
            probe.sample()
            progress.advance(task)
        over = probe.result()
    render(results, over, console)
    report = {
        "machine": {"python": platform.python_version(), "mpi": MPI.Get_library_version().split("\n")[0].strip("\0"),
                    "cpu": platform.processor() or platform.machine(), "reps": reps},
        "cases": results,
        "overheads": over,
        "targets": {c["name"]: check_targets(c) for c in results},
        "targets_missed": {c["name"]: missed(c) for c in results if missed(c)},
        "overhead_targets_met": {"canonicalize_3level_under_1ms": over["canonicalize_3level_ms"] < 1.0,
                                 "cached_pack_8B_under_3us": over["cached_pack_8B_us"] < 3.0},
    }
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(report, fh, indent=1)
    if md_path:
        with open(md_path, "w") as fh:
            fh.write(markdown(results, over) + "\n")
    if plot_path:
        plot(results, plot_path)
        console.print(f"plot written to {plot_path}")


if __name__ == "__main__":
    sys.exit(main())
