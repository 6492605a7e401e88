"""``mpiforge simulate``: which collective algorithm wins where, on a described machine.

A ``Spec`` describes the machine (shape outermost first, one ``Link`` per level, placement and
the software figures); ``spec_from`` builds one from a preset, a calibrated profile and explicit
figures, ``Spec.machine()`` the placement-aware cost model of ``cost.py`` (built once per spec).
``simulate`` predicts every algorithm of every collective at every size, ``wins`` says where
each one wins, and ``compare`` sets the model against a ``scripts/bench_allreduce.py`` run:

    spec = spec_from("dgx-ib", shape=(1024, 8))
    rows = simulate(spec.machine(), ["allreduce"], [4 << 10, 1 << 30])["allreduce"]
    wins(rows)                      # [{"label": "mpi", "from": 4096, ...}, ...]
    compare(json.load(open("bench.json")))   # predicted vs measured, one row per case and kind
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import click

from .cost import ALGORITHMS, COLLECTIVES, FIGURES, Link, Machine, Plan

__all__ = ["DEFAULT_SIZES", "PRESETS", "Row", "Spec", "compare", "format_size", "label", "parse_bandwidth",
           "parse_latency", "parse_link", "parse_shape", "parse_sizes", "render", "render_compare", "simulate",
           "spec_from", "to_json", "wins"]

log = logging.getLogger(__name__)

DEFAULT_SIZES = tuple(4096 << 2 * i for i in range(10))  # 4 KiB .. 1 GiB, x4
TOLERANCE = 0.3  # compare: a prediction within 30% of the measured time counts as right
_DEFAULT_INTER, _DEFAULT_INTRA = Machine.cluster(1, 1).links  # cost.py's 1 Gbit/s Ethernet, shared memory


# -- parsing ----------------------------------------------------------------------------------

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_LATENCY_UNITS = {"ns": 1e9, "us": 1e6, "µs": 1e6, "ms": 1e3, "s": 1.0}  # per second
_PREFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_latency(text: str) -> float:
    """``"5us"``, ``"0.06ms"``, ``"800ns"`` in seconds."""
    match = re.fullmatch(rf"\s*{_NUMBER}\s*(ns|us|µs|ms|s)\s*", text)
    if not match:
        raise ValueError(f"latency {text!r}: write a number and a unit (ns, us, ms, s), e.g. 5us")
    return float(match.group(1)) / _LATENCY_UNITS[match.group(2)]


def parse_bandwidth(text: str) -> float:
    """``"25GB/s"``, ``"100Gbit/s"``, ``"1gbit"``, ``"150GiB/s"`` in bytes per second (B: bytes, b/bit: bits)."""
    match = re.fullmatch(rf"\s*{_NUMBER}\s*([kKmMgGtT]?)(i?)(B|b|bit|byte)(?:/s|ps)?\s*", text)
    if not match:
        raise ValueError(f"bandwidth {text!r}: write a number and a unit, e.g. 25GB/s, 100Gbit/s, 117MB/s")
    number, prefix, binary, unit = match.groups()
    scale = 1024 ** ("kmgt".index(prefix.lower()) + 1) if binary and prefix else _PREFIX[prefix.lower()]
    value = float(number) * scale / (8 if unit in ("b", "bit") else 1)
    if value <= 0:
        raise ValueError(f"bandwidth {text!r} must be positive")
    return value


def parse_link(text: str) -> tuple[str | None, Link]:
    """``"[LEVEL=]LAT,BW"`` such as ``"5us,25GB/s"`` or ``"inter=5us,25GB/s"``: (level or None, Link)."""
    level, _, figures = text.rpartition("=")
    parts = figures.split(",")
    if len(parts) != 2:
        raise ValueError(f"link {text!r}: write [LEVEL=]LATENCY,BANDWIDTH, e.g. 5us,25GB/s or intra=3us,150GB/s")
    return (level.strip().lower() or None), Link(parse_latency(parts[0]), 1 / parse_bandwidth(parts[1]))


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1024x8"`` (nodes x ranks per node) or ``"32x32x8"`` (racks x nodes x ranks)."""
    match = re.fullmatch(r"\s*(\d+)(?:\s*[xX]\s*(\d+))(?:\s*[xX]\s*(\d+))?\s*", text)
    if not match or min(int(v) for v in match.groups() if v) < 1:
        raise ValueError(f"shape {text!r}: write NODESxRANKS or RACKSxNODESxRANKS, outermost first, "
                         "each at least 1, e.g. 1024x8 or 32x32x8")
    return tuple(int(v) for v in match.groups() if v)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"4K,64K,1M,16M,256M"`` in bytes (K, M, G, T are binary: 4K = 4096; KiB, KB alike)."""
    sizes = set()
    for token in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(rf"{_NUMBER}\s*([kKmMgGtTbB]?)(?:i?[bB])?", token)
        value = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else 0
        if not match or value < 1:
            raise ValueError(f"size {token!r}: write bytes or a number with K, M or G (binary), "
                             "comma-separated, e.g. 4K,64K,1M,16M,256M")
        sizes.add(int(value))
    if not sizes:
        raise ValueError("no sizes: write e.g. 4K,64K,1M,16M,256M")
    return tuple(sorted(sizes))


def format_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.3g} {unit}"
    return f"{n} B"


# -- describing a machine -------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """A known machine's figures (``--help`` documents them)."""

    shape: tuple[int, ...]
    inter: Link
    intra: Link
    figures: dict = field(default_factory=dict)


PRESETS = {
    # N x 8 GPUs: InfiniBand HDR between nodes, NVLink inside; reduction and codec on the GPU
    "dgx-ib": Preset((128, 8), Link(5e-6, 1 / 25e9), Link(3e-6, 1 / 150e9),
                     {"gamma": 1 / 200e9, "codec_gamma": 1 / 100e9}),
    # the emulated cluster: cost.py's defaults (1 Gbit/s Ethernet between nodes, shared memory inside)
    "ethernet-1g": Preset((3, 2), _DEFAULT_INTER, _DEFAULT_INTRA),
}
LEVELS = {2: ("inter", "intra"), 3: ("rack", "inter", "intra")}
_LEVEL_ALIASES = {"node": "inter", "nodes": "inter", "racks": "rack", "gpu": "intra", "local": "intra"}
_LEVEL_ABOUT = {"rack": "between racks", "inter": "between nodes", "intra": "inside a node"}


@dataclass(frozen=True)
class Spec:
    """A described machine; hashable, so the ``Machine`` it makes is built once."""

    shape: tuple[int, ...]
    links: tuple[Link, ...]  # outermost first
    placement: str = "block"
    figures: tuple[tuple[str, float], ...] = ()  # cost.FIGURES (else cost.py's defaults)
    mpi_times: tuple = ()  # ((collective, ((bytes, seconds), ...)), ...) measured on such a job
    source: str = ""  # where the figures came from

    def machine(self) -> Machine:
        return _build(self)

    def describe(self) -> dict:
        m = self.machine()
        return {"shape": list(self.shape), "ranks": m.size, "placement": self.placement, "source": self.source,
                "links": [{"level": name, "alpha": link.alpha, "beta": link.beta, "bytes_per_s": 1 / link.beta}
                          for name, link in zip(LEVELS[len(self.shape)], self.links)],
                "gamma": m.gamma, "overhead": m.overhead, "codec_gamma": m.codec_gamma,
                "mpi_measured": sorted(c for c, times in m.mpi_times.items() if times)}


@functools.lru_cache(maxsize=32)
def _build(spec: Spec) -> Machine:
    start = time.perf_counter()
    machine = Machine.tree(spec.shape, spec.links, spec.placement, **dict(spec.figures),
                            mpi_times={c: times for c, times in spec.mpi_times})
    log.debug("built the %s machine (%d ranks) in %.3f s", "x".join(map(str, spec.shape)), machine.size,
              time.perf_counter() - start)
    return machine


def _freeze_times(times: dict) -> tuple:
    return tuple(sorted((c, tuple((int(n), float(t)) for n, t in v)) for c, v in times.items() if v))


def _level(name: str, names: Sequence[str]) -> str:
    key = _LEVEL_ALIASES.get(name, name)
    if key.isdigit() and int(key) < len(names):
        return names[int(key)]
    if key not in names:
        raise ValueError(f"--link {name}=...: no such level in a {len(names)}-level shape; "
                         f"use {', '.join(names)} (or 0..{len(names) - 1}, outermost first)")
    return key


def spec_from(preset: str = "ethernet-1g", shape: Sequence[int] | None = None, placement: str = "block",
              links: Iterable[tuple[str | None, Link]] = (), profile: dict | None = None,
              gamma: float | None = None, overhead: float | None = None) -> Spec:
    """The machine of ``preset``, with a calibrated ``profile``'s figures and then explicit ones
    (``links`` as ``parse_link`` gives them; ``gamma`` in s/B, ``overhead`` in s) on top."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: use one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    shape = tuple(shape or base.shape)
    if len(shape) not in LEVELS:
        raise ValueError(f"shape {shape}: give 2 levels (nodes, ranks per node) or 3 (racks, nodes, ranks)")
    names = LEVELS[len(shape)]
    chosen = {"inter": base.inter, "intra": base.intra}
    figures = dict(base.figures)
    source = [f"preset {preset}"]
    mpi_times: tuple = ()
    if profile:
        for name in ("inter", "intra"):
            given = {k: float(v) for k, v in profile.get(name, {}).items() if k in ("alpha", "beta", "burst", "line")}
            chosen[name] = Link(**{**vars(chosen[name]), **given})
        figures.update({k: float(profile[k]) for k in FIGURES if k in profile})
        key = f"{shape[0]}x{shape[1]}:{placement}" if len(shape) == 2 else None
        mpi_times = _freeze_times(profile.get("mpi_times", {}).get(key, {}))
        source.append("calibrated profile" + (" with MPI's times" if mpi_times else ""))
    links = list(links)
    positional = [link for level, link in links if level is None]
    if positional and len(positional) != len(shape):
        raise ValueError(f"{len(positional)} --link for a {len(shape)}-level shape: give one per level, outermost "
                         f"first ({', '.join(names)}), or name the level, e.g. --link intra=3us,150GB/s")
    given = dict(zip(names, positional)) if positional else {}
    for level, link in links:
        if level is not None:
            name = _level(level, names)
            if name in given:
                raise ValueError(f"--link for the {name} level ({_LEVEL_ABOUT[name]}) given twice")
            given[name] = link
    chosen.update(given)
    if given:
        source.append("--link")
    if len(shape) == 3 and "rack" not in chosen:  # half the rack's node bandwidth, one more switch hop
        inter = chosen["inter"]
        chosen["rack"] = Link(inter.alpha + 2e-6, inter.beta * 2 / shape[1])
    if gamma is not None:
        figures["gamma"] = gamma
    if overhead is not None:
        figures["overhead"] = overhead
    return Spec(shape, tuple(chosen[n] for n in names), placement, tuple(sorted(figures.items())), mpi_times,
                ", ".join(source))


# -- the sweep ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One size of one collective: the best plan of every algorithm (None: does not fit)."""

    size: int
    plans: dict[str, Plan | None]
    winner: Plan
    own: Plan | None  # the best of mpiforge's own algorithms (all but "mpi")
    quantized: Plan | None = None  # the quantized allreduce plan, when asked for


def simulate(machine: Machine, collectives: Iterable[str], sizes: Iterable[int],
             quantized: bool = False) -> dict[str, list[Row]]:
    """Every algorithm's best plan (``Machine.best`` per algorithm) for every collective and size."""
    out = {}
    for collective in collectives:
        start, rows = time.perf_counter(), []
        for size in sizes:
            plans = {a: machine.best(collective, size, candidates=[a]) if machine.supports(collective, a) else None
                     for a in ALGORITHMS[collective]}
            fits = [p for p in plans.values() if p is not None]
            own = [p for p in fits if p.algorithm != "mpi"]
            q = None
            if quantized and collective == "allreduce" and machine.supports(collective, "hierarchical"):
                q = machine.best(collective, size, quantized=True)
            rows.append(Row(size, plans, min(fits, key=_seconds), min(own, key=_seconds) if own else None, q))
        out[collective] = rows
        log.info("%s: %d sizes on %d ranks in %.2f s", collective, len(rows), machine.size, time.perf_counter() - start)
    return out


def _seconds(plan: Plan) -> float:
    return plan.seconds


def label(plan: Plan, segments: bool = True) -> str:
    """``"ring"``, ``"hier/rabenseifner x8"``, ``"hier/ring x4 int8"`` (as bench_allreduce writes plans)."""
    if plan.algorithm != "hierarchical":
        return plan.algorithm
    text = f"hier/{plan.inter}" if plan.inter else "hierarchical"
    text += f" x{plan.segments}" if segments and plan.segments > 1 else ""
    return text + (" int8" if plan.quantized else "")


def wins(rows: Sequence[Row], pick: str = "winner") -> list[dict]:
    """Runs of consecutive sizes won by the same algorithm (``pick``: winner, own or quantized —
    the sizes where the quantized plan beats the winner)."""
    runs: list[dict] = []
    for row in rows:
        plan = getattr(row, pick)
        if pick == "quantized" and (plan is None or plan.seconds >= row.winner.seconds):
            plan = None
        name = label(plan, segments=False) if plan else None
        if runs and runs[-1]["label"] == name:
            runs[-1]["to"] = row.size
        else:
            runs.append({"label": name, "from": row.size, "to": row.size, "segments": []})
        if plan and plan.segments not in runs[-1]["segments"]:
            runs[-1]["segments"].append(plan.segments)
    return [r for r in runs if r["label"] is not None]


def _plan_json(plan: Plan | None) -> dict | None:
    return None if plan is None else {**asdict(plan), "label": label(plan)}


def to_json(spec: Spec, results: dict[str, list[Row]]) -> dict:
    """Everything ``simulate`` found, machine-readable (seconds; sizes in bytes)."""
    return {"machine": spec.describe(), "collectives": {c: {
        "rows": [{"size": r.size, "plans": {a: _plan_json(p) for a, p in r.plans.items()},
                  "winner": _plan_json(r.winner), "own": _plan_json(r.own), "quantized": _plan_json(r.quantized)}
                 for r in rows],
        "wins": wins(rows), "own_wins": wins(rows, "own"), "quantized_wins": wins(rows, "quantized")}
        for c, rows in results.items()}}


# -- against a benchmark ----------------------------------------------------------------------------

def _case_figures(figures: dict | None, nodes: int, per_node: int) -> dict:
    """The calibrated figures of one cluster: bench_allreduce keys them by "NxK"; a bare profile applies to all."""
    figures = figures or {}
    if set(figures) & {"intra", "inter", *FIGURES, "mpi_times"}:
        return figures
    return figures.get(f"{nodes}x{per_node}", {})


def _bench_spec(nodes: int, per_node: int, placement: str, rate: str, figures: dict) -> Spec:
    """The emulated cluster of a bench run: cost.py's 1 Gbit/s link scaled to ``rate``, under the
    figures calibrated on the job (MPI's times under whatever placement name calibration gave them)."""
    from .cluster import parse_rate, tbf_burst

    inter = Link(_DEFAULT_INTER.alpha, _DEFAULT_INTER.beta * 1e9 / parse_rate(rate), tbf_burst(parse_rate(rate)))
    times = figures.get("mpi_times", {})
    mine = sorted((k for k in times if k.startswith(f"{nodes}x{per_node}:")), key=lambda k: not k.endswith(placement))
    key = mine[0] if mine else None
    profile = {**figures, "inter": {**vars(inter), **figures.get("inter", {})},
               "mpi_times": {f"{nodes}x{per_node}:{placement}": times[key]} if key else {}}
    spec = spec_from("ethernet-1g", (nodes, per_node), placement, profile=profile)
    return replace(spec, source=f"emulated cluster at {rate}, " + ("calibrated" if figures else "default figures"))


def compare(bench: dict) -> list[dict]:
    """Predicted against measured times of a ``scripts/bench_allreduce.py`` JSON: per case, rows for
    mpiforge's chosen plan, MPI's Allreduce and the quantized plan (when measured). ``source`` is
    "model", or "mpi_times" when the prediction interpolates MPI times calibration measured on the
    same job (then it is close by construction). ``ratio`` = predicted / measured; ``within``: 30%."""
    rate, placement = bench.get("rate", "1gbit"), bench.get("placement", "roundrobin")
    rows = []
    for case in bench["cases"]:
        nodes, per_node, size = int(case["nodes"]), int(case["ranks_per_node"]), int(case["size"])
        figures = _case_figures(bench.get("figures"), nodes, per_node)
        machine = _bench_spec(nodes, per_node, placement, rate, figures).machine()
        from_mpi = "mpi_times" if machine.mpi_times.get("allreduce") else "model"
        common = {"cluster": f"{nodes}x{per_node}", "size": size, "figures": "calibrated" if figures else "defaults"}
        chosen = Plan(case["algo"], 0.0, case.get("inter"), int(case.get("segments") or 1))
        plans = [("mpiforge", chosen, "mpiforge_us"), ("mpi", Plan("mpi", 0.0), "mpi_us")]
        if case.get("quantized_us") is not None:
            plans.append(("quantized", _quantized_plan(machine, case), "quantized_us"))
        for kind, plan, measured in plans:
            seconds = machine.predict("allreduce", plan.algorithm, size, plan.inter, plan.segments, plan.quantized)
            ratio = seconds * 1e6 / case[measured] if case[measured] > 0 else math.inf
            rows.append({**common, "kind": kind, "plan": label(plan), "predicted_us": seconds * 1e6,
                         "measured_us": case[measured], "ratio": ratio, "within": abs(ratio - 1) <= TOLERANCE,
                         "source": from_mpi if plan.algorithm == "mpi" else "model"})
    return rows


def _quantized_plan(machine: Machine, case: dict) -> Plan:
    """The plan ``TopologyCollective.plan(quantized=True)`` takes (the quantized one only where it
    pays); the case's recorded algorithm and segments win when they differ."""
    size = int(case["size"])
    plan = machine.best("allreduce", size)
    if machine.supports("allreduce", "hierarchical"):
        plan = min(plan, machine.best("allreduce", size, quantized=True), key=_seconds)
    algo, segments = case.get("quantized_algo"), int(case.get("quantized_segments") or 1)
    if algo is None or (algo, segments) == (plan.algorithm, plan.segments):
        return plan
    if algo == "hierarchical":
        return Plan(algo, 0.0, case.get("quantized_inter", "ring"), segments, quantized=True)
    return Plan(algo, 0.0)


# -- output -----------------------------------------------------------------------------------------

_HEADERS = {"recursive_doubling": "rec. doubling", "recursive_halving": "rec. halving", "hierarchical": "hierarchical",
            "mpi": "MPI"}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 132)
    return console


def _ranges(runs: list[dict]) -> str:
    parts = []
    for r in runs:
        span = format_size(r["from"]) + (f" – {format_size(r['to'])}" if r["to"] != r["from"] else "")
        segs = sorted(r["segments"])
        more = f" (segments {segs[0]}–{segs[-1]})" if len(segs) > 1 else f" (segments {segs[0]})" * (segs[0] > 1)
        parts.append(f"{r['label']} {span}{more}")
    return "; ".join(parts)


def render(spec: Spec, results: dict[str, list[Row]], console=None) -> None:
    """One table per collective: ms per algorithm and size, the winner, where each one wins."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = console or _console()
    d = spec.describe()
    links = "; ".join(f"{_LEVEL_ABOUT[x['level']]} {x['alpha'] * 1e6:.3g} us, {_rate(x['bytes_per_s'])}"
                      for x in d["links"])
    console.print(f"[bold]{'x'.join(map(str, spec.shape))}[/] = {d['ranks']} ranks, {spec.placement} placement "
                  f"({escape(spec.source)})")
    console.print(f"  links: {links}\n  reduction {_rate(1 / d['gamma'])}, int8 codec {_rate(1 / d['codec_gamma'])}, "
                  f"{d['overhead'] * 1e6:.3g} us per step of mpiforge's algorithms", style="dim")
    measured = [c for c in results if c in d["mpi_measured"]]
    modelled = "the best flat algorithm without that per-step overhead"
    console.print("  MPI: " + (f"times measured on such a job ({', '.join(measured)}), else {modelled}" if measured
                               else f"{modelled} (no measured times)"), style="dim")
    for collective, rows in results.items():
        names = list(ALGORITHMS[collective])
        quantized = any(r.quantized for r in rows)
        table = Table(title=f"{collective} (ms)", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False)
        table.add_column("size", justify="right")
        for name in names:
            table.add_column(_HEADERS.get(name, name), justify="right")
        if quantized:
            table.add_column("hier int8", justify="right")
        table.add_column("winner")
        for r in rows:
            cells = [format_size(r.size)]
            for name in names:
                p = r.plans[name]
                cells.append("n/a" if p is None else f"[bold]{_ms(p.seconds)}[/]" if p is r.winner else _ms(p.seconds))
            if quantized:
                q = r.quantized
                cells.append("n/a" if q is None else f"[bold green]{_ms(q.seconds)}[/]" if q.seconds < r.winner.seconds
                             else _ms(q.seconds))
            cells.append(label(r.winner))
            table.add_row(*cells)
        console.print()
        console.print(table)
        console.print(f"  wins: {_ranges(wins(rows))}")
        if any(r.winner.algorithm == "mpi" for r in rows) and any(r.own for r in rows):
            console.print(f"  without MPI: {_ranges(wins(rows, 'own'))}")
        if quantized:
            console.print(f"  int8 on the outermost level pays: {_ranges(wins(rows, 'quantized')) or 'nowhere'}")


def _rate(bytes_per_s: float) -> str:
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if bytes_per_s >= scale * 0.9995:  # 1 / (1 / 1e9) is 999999999.99...
            return f"{bytes_per_s / scale:.3g} {unit}"
    return f"{bytes_per_s:.3g} B/s"


def render_compare(rows: list[dict], console=None) -> None:
    """Predicted vs measured, the model's own predictions apart from those taken from MPI's times."""
    from rich import box
    from rich.table import Table

    console = console or _console()
    clusters = {r["cluster"]: r["figures"] for r in rows}
    console.print("figures: " + ", ".join(f"{c} {f}" for c, f in clusters.items()), style="dim")
    for source, title in (("model", "the model's predictions"),
                          ("mpi_times", "from MPI times measured on the same job (close by construction)")):
        mine = [r for r in rows if r["source"] == source]
        if not mine:
            continue
        table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                      pad_edge=False)
        for name in ("cluster", "size", "kind", "plan", "predicted ms", "measured ms", "pred/meas", "±30%"):
            table.add_column(name, justify="left" if name in ("cluster", "kind", "plan") else "right")
        for r in mine:
            table.add_row(r["cluster"], format_size(r["size"]), r["kind"], r["plan"], _ms(r["predicted_us"] / 1e6),
                          _ms(r["measured_us"] / 1e6), f"{r['ratio']:.2f}",
                          "yes" if r["within"] else "[bold red]no[/]")
        console.print(table)
        console.print()
    for kind in ("mpiforge", "quantized", "mpi"):
        for source in ("model", "mpi_times"):
            mine = [r for r in rows if r["kind"] == kind and r["source"] == source]
            if mine:
                console.print(f"{kind} ({'model' if source == 'model' else 'measured MPI times'}): "
                              f"{sum(r['within'] for r in mine)}/{len(mine)} within 30%")


# -- the command ------------------------------------------------------------------------------------

def _parsed(parse):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None or value == ():
            return value
        try:
            return tuple(parse(v) for v in value) if isinstance(value, tuple) else parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return callback


def _read_json(path: str, option: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read {path} ({exc}); give {what}", param_hint=option) from None


def _default_profile() -> str:
    # the same place as profile.profile_path(), without importing profile.py (it imports mpi4py)
    return os.environ.get("MPIFORGE_TOPO_PROFILE") or str(Path.home() / ".cache" / "mpiforge" / "topology.json")


@click.command("simulate")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="ethernet-1g", show_default=True,
              help="Figures of a known machine (below); the options after it override them.")
@click.option("--shape", callback=_parsed(parse_shape), metavar="NxK|RxNxK",
              help="Nodes x ranks per node (1024x8), or racks x nodes x ranks (32x32x8); default the preset's.")
@click.option("--link", "links", multiple=True, callback=_parsed(parse_link), metavar="[LEVEL=]LAT,BW",
              help="A level's latency and bandwidth, e.g. 5us,25GB/s: one per level outermost first, or named "
                   "(rack, inter, intra). Units: ns us ms s; B/s KB/s MB/s GB/s (bytes), Mbit/s Gbit/s Gbps (bits).")
@click.option("--placement", type=click.Choice(["block", "roundrobin"]), default="block", show_default=True,
              help="Rank r on node r // K (block) or r % N (roundrobin).")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True), metavar="GB/S",
              help="Reduction speed in GB/s (bytes combined per second per rank).")
@click.option("--overhead", type=click.FloatRange(min=0), metavar="US",
              help="Software time of one step of mpiforge's algorithms, in us (cost.py default 20).")
@click.option("--profile", "profile_path", is_flag=False, flag_value="", default=None, metavar="PATH",
              help="Take the figures from a topology profile JSON (intra, inter, gamma, overhead, codec_gamma, "
                   "mpi_times; see mpiforge/topology/profile.py). Alone: $MPIFORGE_TOPO_PROFILE or "
                   "~/.cache/mpiforge/topology.json.")
@click.option("--collective", "collectives", multiple=True, type=click.Choice(COLLECTIVES),
              help="Collective to simulate (repeatable); default all five.")
@click.option("--sizes", callback=_parsed(parse_sizes), metavar="LIST",
              help="Bytes per call, e.g. 4K,64K,1M,16M,256M (binary units); default 4 KiB .. 1 GiB, x4.")
@click.option("--quantized", is_flag=True,
              help="Also the allreduce with int8 on its outermost (inter-node or inter-rack) step.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Write every prediction here as JSON.")
@click.option("--compare", "bench_path", type=click.Path(exists=True, dir_okay=False), metavar="BENCH_JSON",
              help="Set the model against a `scripts/bench_allreduce.py --json` run instead (machine options "
                   "are then taken from the run).")
@click.option("--strict", is_flag=True, help="With --compare: exit 1 when a prediction of mpiforge's chosen plan "
                                             "is off by more than 30%.")
def simulate_command(preset: str, shape: tuple[int, ...] | None, links: tuple, placement: str, gamma: float | None,
                     overhead: float | None, profile_path: str | None, collectives: tuple[str, ...],
                     sizes: tuple[int, ...] | None, quantized: bool, json_path: str | None, bench_path: str | None,
                     strict: bool) -> None:
    """Predict every collective algorithm's time on a described machine and show which wins where.

    \b
      mpiforge simulate --preset dgx-ib --shape 1024x8
      mpiforge simulate --shape 3x2 --placement roundrobin --collective allreduce --quantized
      mpiforge simulate --shape 32x32x8 --link 7us,400GB/s --link 5us,25GB/s --link 3us,150GB/s
      mpiforge simulate --preset dgx-ib --shape 64x8 --link inter=2us,200GB/s --sizes 4K,1M,256M
      mpiforge simulate --profile fig.json --shape 3x2 --placement roundrobin   calibrated figures
      mpiforge simulate --compare bench.json --strict   the model against scripts/bench_allreduce.py

    \b
    Presets (per level: latency, bandwidth of one node's or rack's link):
      dgx-ib       N x 8 GPUs (default 128x8): NVLink 3 us, 150 GB/s inside a node;
                   InfiniBand HDR 5 us, 25 GB/s between nodes (one HCA: give
                   --link inter=5us,200GB/s for 8 rail-optimized HCAs);
                   reduction 200 GB/s, int8 codec 100 GB/s (on the GPU)
      ethernet-1g  the emulated cluster (default 3x2): shared memory 3 us, 3 GB/s inside;
                   1 Gbit/s Ethernet between nodes (60 us, 117 MB/s); reduction 2 GB/s and
                   codec 0.67 GB/s (numpy on the CPU)
    Both: 20 us of software per step of mpiforge's algorithms. A 3-level shape without a
    rack link gets uplinks with half their nodes' bandwidth (2:1 oversubscribed), +2 us.

    \b
    Figures apply in this order: preset, --profile, then --link, --gamma, --overhead.
    MPI's own collectives ("MPI") use the times a --profile measured on a job of the same
    shape and placement, else the best flat algorithm without mpiforge's per-step overhead.
    Tables give ms per call (the winner in bold) and the sizes where each algorithm wins.
    """
    if bench_path:
        rows = compare(_read_json(bench_path, "--compare", "the JSON of scripts/bench_allreduce.py --json"))
        if json_path:
            Path(json_path).write_text(json.dumps({"compare": rows}, indent=1))
        render_compare(rows)
        if strict and any(not r["within"] for r in rows if r["kind"] == "mpiforge"):
            raise SystemExit(1)
        return
    profile = None
    if profile_path is not None:
        path = profile_path or _default_profile()
        profile = _read_json(path, "--profile", "a topology profile JSON (see mpiforge/topology/profile.py)")
    try:
        spec = spec_from(preset, shape, placement, links, profile, None if gamma is None else 1 / (gamma * 1e9),
                         None if overhead is None else overhead * 1e-6)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    start = time.perf_counter()
    results = simulate(spec.machine(), collectives or COLLECTIVES, sizes or DEFAULT_SIZES, quantized)
    log.info("simulated in %.2f s", time.perf_counter() - start)
    if json_path:
        Path(json_path).write_text(json.dumps(to_json(spec, results), indent=1))
    render(spec, results)
