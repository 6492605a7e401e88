"""A placement-aware cost model: how long each collective algorithm takes on a described machine.

A machine is a tree of levels, outermost first: ``shape=(nodes, ranks_per_node)`` or
``(racks, nodes_per_rack, gpus_per_node)``; ranks sit on its leaves in block or round-robin
order (or as a running job's topology says). Every level has a ``Link``: a latency ``alpha``
(s per message) and an inverse bandwidth ``beta`` (s per byte through one group's link).

An algorithm is a list of steps; in a step every taking-part rank sends one message at once.
A message that leaves its group at level i uses that group's link at level i and at every inner
level, and shares each link with every other message leaving (or entering) the same group in
that step, so the model sees what rank order and placement do to the slow links: a flat ring
under round-robin placement crosses the node links with every message, a hierarchical one with
1/L of them. A step costs the slowest message (alpha of the outermost level it crosses plus
bytes x beta x sharers, at its most loaded link), plus the per-step software ``overhead`` and
``gamma`` per byte reduced, and once per call a fixed ``call`` cost. Pipelined algorithms (``segments`` S over stages t_1..t_k) take
sum(t_i) + (S - 1) max(t_i) on n/S bytes; a quantizing codec shrinks the inter-node bytes and
adds ``codec_gamma`` per byte encoded or decoded.

    machine = Machine.cluster(nodes=3, per_node=2, placement="roundrobin")
    machine.predict("allreduce", "hierarchical", 16 << 20)      # seconds
    machine.best("allreduce", 16 << 20)                         # Plan(algorithm=..., seconds=...)

MPI's own collectives ("mpi") are predicted from times measured on the job
(``mpi_times``, written by ``mpiforge calibrate``) or else as the best flat algorithm without
the Python overhead. Plans of ours that calibration timed on the job (``own_times``, keyed by
``plan_key``) are predicted from those times inside the measured sizes, by the model beyond.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

__all__ = ["ALGORITHMS", "COLLECTIVES", "FIGURES", "FLAT_ALLREDUCE", "SEGMENTS", "Link", "Machine", "Plan", "plan_key"]

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "bcast", "reduce")
FLAT_ALLREDUCE = ("ring", "recursive_doubling", "rabenseifner")
ALGORITHMS = {
    "allreduce": (*FLAT_ALLREDUCE, "hierarchical", "mpi"),
    "reduce_scatter": ("ring", "recursive_halving", "hierarchical", "mpi"),
    "allgather": ("ring", "recursive_doubling", "hierarchical", "mpi"),
    "bcast": ("binomial", "hierarchical", "mpi"),
    "reduce": ("binomial", "hierarchical", "mpi"),
}
SEGMENTS = (1, 2, 4, 8, 16)
FIGURES = ("gamma", "overhead", "codec_gamma", "call", "codec_call")  # Machine's measured scalars


@dataclass(frozen=True)
class Link:
    alpha: float  # seconds per message
    beta: float  # seconds per byte through one group's link
    burst: float = 0.0  # bytes a token bucket (as tc tbf) lets through after idling, at ``line`` speed
    line: float = 0.0  # seconds per byte of those bytes (what the link does without the bucket's rate)

    @property
    def credit(self) -> float:
        """Seconds of transfer at the rate that a full bucket holds."""
        return self.burst * self.beta


@dataclass(frozen=True)
class Plan:
    """A chosen algorithm with its parameters and predicted time."""

    algorithm: str
    seconds: float
    inter: str | None = None  # the flat algorithm across nodes (hierarchical)
    segments: int = 1
    quantized: bool = False  # the inter-node step goes through a codec


@dataclass(frozen=True)
class _Step:
    src: np.ndarray
    dst: np.ndarray
    nbytes: float
    reduced: float = 0.0  # bytes each receiver combines
    repeat: int = 1
    work: float = 0.0  # other seconds of computing per step (encoding, decoding)


@dataclass(frozen=True, eq=False)
class Machine:
    coords: np.ndarray  # (ranks, levels): each rank's index at every level, outermost first
    links: tuple[Link, ...]  # links[i]: leaving a group of level i
    gamma: float = 0.5e-9  # seconds per byte reduced
    overhead: float = 20e-6  # seconds of software per step of our (Python) algorithms
    codec_gamma: float = 1.5e-9  # seconds per float32 byte encoded + decoded
    codec_ratio: float = 0.254  # wire bytes per float32 byte (int8 with a scale per 256 values)
    call: float = 0.0  # seconds of software per call of our algorithms (setup, buffers)
    codec_call: float = 0.0  # more seconds per call when it quantizes
    mpi_times: dict = field(default_factory=dict)  # collective -> ((bytes, seconds), ...) measured
    own_times: dict = field(default_factory=dict)  # plan_key(...) -> ((bytes, seconds), ...) measured

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def tree(cls, shape: Iterable[int], links: Iterable[Link], placement: str = "block", **figures) -> Machine:
        """Ranks on the leaves of ``shape`` (outermost first) in block or round-robin order."""
        shape = tuple(int(s) for s in shape)
        links = tuple(links)
        if len(links) != len(shape) or min(shape) < 1:
            raise ValueError(f"need one link per level and sizes >= 1, got shape {shape} and {len(links)} links")
        ranks = np.arange(math.prod(shape))
        if placement == "block":
            coords = np.stack(np.unravel_index(ranks, shape), axis=1)
        elif placement == "roundrobin":
            groups = math.prod(shape[:-1])
            outer = np.unravel_index(ranks % groups, shape[:-1]) if len(shape) > 1 else ()
            coords = np.stack([*outer, ranks // groups], axis=1)
        else:
            raise ValueError(f"placement {placement!r}: use block or roundrobin")
        return cls(coords=coords, links=links, **figures)

    @classmethod
    def cluster(cls, nodes: int, per_node: int, placement: str = "block", intra: Link | None = None,
                inter: Link | None = None, **figures) -> Machine:
        """Nodes of ``per_node`` ranks; defaults: shared memory inside, 1 Gbit/s Ethernet between."""
        return cls.tree((nodes, per_node), (inter or Link(60e-6, 1 / 0.117e9), intra or Link(3e-6, 1 / 3e9)),
                        placement, **figures)

    @classmethod
    def from_coordinates(cls, coords: Iterable[tuple[int, ...]], intra: Link, inter: Link, **figures) -> Machine:
        """The machine of a running job from ``Topology.coordinates()``: every level inside a
        node gets the ``intra`` link."""
        coords = np.array(list(coords), dtype=int)
        return cls(coords=coords, links=(inter,) + (intra,) * (coords.shape[1] - 1), **figures)

    def with_figures(self, **figures) -> Machine:
        return replace(self, **figures)

    # -- shape --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.coords)

    @cached_property
    def _group_of(self) -> list[np.ndarray]:
        """Per level, the dense id of every rank's group."""
        return [np.unique(self.coords[:, :level + 1], axis=0, return_inverse=True)[1].reshape(-1)
                for level in range(len(self.links))]

    @cached_property
    def _memo(self) -> dict:
        """Results that depend only on the rank layout (it never changes)."""
        return {}

    def _cached(self, key: tuple, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def groups(self, level: int) -> list[np.ndarray]:
        """The ranks of every group at ``level`` (0: outermost), each in rank order."""
        return self._cached(("groups", level), lambda: self._find_groups(level))

    def _find_groups(self, level: int) -> list[np.ndarray]:
        keys = [tuple(c[:level + 1]) for c in self.coords]
        out: dict[tuple, list[int]] = {}
        for rank, key in enumerate(keys):
            out.setdefault(key, []).append(rank)
        return [np.array(v) for _, v in sorted(out.items())]

    def axis_groups(self, axis: int) -> np.ndarray | None:
        """(G, m) array: the ranks that differ only at level ``axis``, ordered along it (axis 0:
        a rail across nodes; the last axis: the ranks of one leaf group), or None when the tree
        is not uniform."""
        return self._cached(("axis", axis), lambda: self._find_axis_groups(axis))

    def _find_axis_groups(self, axis: int) -> np.ndarray | None:
        keys = np.delete(self.coords, axis, axis=1)
        _, ids = np.unique(keys, axis=0, return_inverse=True)
        ids = ids.reshape(-1)
        counts = np.bincount(ids)
        if counts.min() != counts.max() or counts.size * counts[0] != self.size:
            return None
        order = np.lexsort((self.coords[:, axis], ids))
        return order.reshape(counts.size, counts[0])

    @cached_property
    def _rails(self) -> np.ndarray | None:
        if self.coords.shape[1] == 2:
            return self.axis_groups(0)
        nodes = self.groups(0)
        if len({len(n) for n in nodes}) != 1:
            return None
        return np.array(nodes).T

    def rails(self) -> np.ndarray | None:
        """(L, K) array: local rank i of every node (a rail), or None when nodes differ in size."""
        return self._rails

    def topology_order(self) -> np.ndarray:
        """All ranks with the members of each group next to each other (a ring that crosses
        every slow link once)."""
        return np.lexsort(self.coords.T[::-1])

    # -- evaluation ---------------------------------------------------------------------------

    def _pattern(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """For the messages src -> dst sent at once: the distinct (alpha, seconds per byte at the
        most loaded link) pairs, and the outermost level crossed. Cached: the same patterns
        recur at every size."""
        return self._cached(("pattern", src.tobytes(), dst.tobytes()), lambda: self._find_pattern(src, dst))

    def _find_pattern(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        cs, cd = self.coords[src], self.coords[dst]
        differ = cs != cd
        first = np.where(differ.any(axis=1), differ.argmax(axis=1), len(self.links) - 1)
        per_byte = np.zeros(src.size)
        for level, link in enumerate(self.links):
            uses = first <= level
            if not uses.any():
                continue
            gs, gd = self._group_of[level][src], self._group_of[level][dst]
            out = np.bincount(gs[uses], minlength=self.size)
            into = np.bincount(gd[uses], minlength=self.size)
            per_byte = np.maximum(per_byte, np.maximum(out[gs], into[gd]) * uses * link.beta)
        alpha = np.array([link.alpha for link in self.links])[first]
        pairs = np.unique(np.stack([alpha, per_byte], axis=1), axis=0)
        return pairs[:, 0], pairs[:, 1], int(first.min())

    def _level(self, steps: list[_Step]) -> int:
        """The outermost level a stage's messages cross (the link it is bound by)."""
        return min((self._pattern(s.src, s.dst)[2] for s in steps if s.src.size), default=len(self.links))

    def seconds(self, steps: list[_Step], software: bool = True) -> float:
        """Seconds of ``steps`` run one after another. A link with a token bucket (``burst``)
        starts full (after idling) and refills while its steps compute; bytes covered by its
        tokens pass at ``line`` speed, the rest at the rate."""
        per_step = self.overhead if software else 2e-6
        total = 0.0
        credits = {level: link.credit for level, link in enumerate(self.links)}  # full after idling
        for step in steps:
            transfer, level = self._transfer(step)
            busy = self._latency(step) + per_step + step.reduced * self.gamma + step.work
            link = self.links[level] if level is not None else None
            if link is None or link.credit == 0.0:
                total += step.repeat * (busy + transfer)
                continue
            speedup = min(link.line / link.beta, 1.0)  # seconds at line speed per second at the rate
            for _ in range(step.repeat):
                covered = min(credits[level], transfer)
                total += busy + covered * speedup + transfer - covered
                credits[level] = min(link.credit, credits[level] - covered + busy + covered * speedup)
        return total

    def _transfer(self, step: _Step) -> tuple[float, int | None]:
        """Seconds one repetition of ``step`` occupies its busiest link at the rate, and the
        outermost level it crosses (None: no messages)."""
        if step.src.size == 0:
            return 0.0, None
        alpha, per_byte, level = self._pattern(step.src, step.dst)
        return float((alpha + step.nbytes * per_byte).max() - alpha.max()), level

    def _latency(self, step: _Step) -> float:
        return float(self._pattern(step.src, step.dst)[0].max()) if step.src.size else 0.0

    def _link_seconds(self, steps: list[_Step]) -> float:
        """Seconds the busiest link needs for ``steps`` at its rate: what a pipeline cannot hide."""
        return sum(s.repeat * self._transfer(s)[0] for s in steps)

    def predict(self, collective: str, algorithm: str, nbytes: int, inter: str | None = None,
                segments: int = 1, quantized: bool = False) -> float:
        """Seconds that ``algorithm`` takes for ``collective`` on ``nbytes`` (the full array of
        allreduce, reduce, bcast; the whole result of reduce_scatter and allgather)."""
        if algorithm == "mpi":
            return self._mpi(collective, nbytes)
        measured = self.own_times.get(plan_key(collective, algorithm, inter, segments, quantized))
        if measured and measured[0][0] <= nbytes <= measured[-1][0]:
            return _interpolate(measured, nbytes)
        if algorithm == "hierarchical":
            stages = self._hierarchical(collective, nbytes / segments, inter or "ring", quantized)
            first: dict[int, float] = {}  # stages on the same link cannot overlap each other
            rest: dict[int, float] = {}  # later segments: a link's rate holds even where tokens hid it
            for stage in stages:
                level, seconds = self._level(stage), self.seconds(stage)
                first[level] = first.get(level, 0.0) + seconds
                rest[level] = rest.get(level, 0.0) + max(seconds, self._link_seconds(stage))
            fixed = self.call + (self.codec_call if quantized else 0.0)
            return fixed + sum(first.values()) + (segments - 1) * max(rest.values())
        return self.call + self.seconds(self._flat(collective, algorithm, nbytes))

    def best(self, collective: str, nbytes: int, quantized: bool = False,
             candidates: Iterable[str] | None = None) -> Plan:
        """The fastest plan (algorithm, inter-node algorithm, segments) for ``collective``."""
        plans = self.plans(collective, nbytes, quantized, candidates)
        if not plans:
            raise ValueError(f"no algorithm for {collective} here (quantized={quantized})")
        return min(plans, key=lambda p: p.seconds)

    def plans(self, collective: str, nbytes: int, quantized: bool = False,
              candidates: Iterable[str] | None = None) -> list[Plan]:
        """Every plan this machine supports for ``collective`` on ``nbytes``, with its time."""
        plans = []
        for algorithm in candidates or ALGORITHMS[collective]:
            if quantized and (algorithm != "hierarchical" or collective != "allreduce"):
                continue
            if not self.supports(collective, algorithm):
                continue
            if algorithm == "hierarchical":
                inters = ("ring",) if quantized else FLAT_ALLREDUCE if collective == "allreduce" else (None,)
                for inter in inters:
                    for s in SEGMENTS if collective == "allreduce" else (1,):
                        if nbytes / s >= 4096 * self.size or s == 1:
                            t = self.predict(collective, algorithm, nbytes, inter, s, quantized)
                            plans.append(Plan(algorithm, t, inter, s, quantized))
            else:
                plans.append(Plan(algorithm, self.predict(collective, algorithm, nbytes)))
        return plans

    def supports(self, collective: str, algorithm: str) -> bool:
        if algorithm == "hierarchical":
            return len(self.groups(0)) > 1 and (collective == "allreduce" or self.rails() is not None)
        if algorithm in ("recursive_halving",) or (collective == "allgather" and algorithm == "recursive_doubling"):
            return self.size & (self.size - 1) == 0
        return algorithm in ALGORITHMS[collective]

    # -- algorithms as steps ----------------------------------------------------------------

    def _flat(self, collective: str, algorithm: str, n: float) -> list[_Step]:
        everyone = np.arange(self.size)[None, :]
        p = self.size
        ring = self.topology_order()[None, :]
        if collective == "allreduce":
            if algorithm == "ring":
                return _ring(ring, n, reduce=True) + _ring(ring, n)
            if algorithm == "recursive_doubling":
                return _folded(everyone, n, lambda v, p2: _butterfly(v, p2, lambda k: n, True))
            if algorithm == "rabenseifner":
                return _folded(everyone, n, lambda v, p2: _halving_doubling(v, p2, n))
        if collective == "reduce_scatter":
            if algorithm == "ring":
                return _ring(ring, n, reduce=True)
            return _butterfly(everyone, p, lambda k: n / 2 ** (k + 1), True)
        if collective == "allgather":
            if algorithm == "ring":
                return _ring(ring, n)
            return _butterfly(everyone, p, lambda k: n / p * (p >> (k + 1)), False)[::-1]
        if collective in ("bcast", "reduce"):
            return _binomial(everyone, n, reduce=collective == "reduce")
        raise ValueError(f"unknown algorithm {algorithm!r} for {collective}: use one of "
                         f"{', '.join(ALGORITHMS.get(collective, ()))}")

    def _hierarchical(self, collective: str, n: float, inter: str, quantized: bool) -> list[list[_Step]]:
        """The stages: inside the nodes, across them (per rail, or among leaders), inside again."""
        rails = self.rails()
        if collective == "allreduce" and rails is not None:
            return self._levels_allreduce(n, inter, quantized)
        inside = self._inside
        if rails is None:  # nodes of different sizes: through one leader per node
            leaders = inside[None, :, 0]
            up = collective in ("allreduce", "reduce")
            middle = self._inter_allreduce(leaders, n, inter) if collective == "allreduce" else _binomial(leaders, n, up)
            return [_binomial(inside, n, True) if up else [], middle, [] if collective == "reduce" else _binomial(inside, n)]
        per = rails.shape[0]
        if collective == "reduce_scatter":
            return [_ring(inside, n, reduce=True), _ring(rails, n / per, reduce=True)]
        if collective == "allgather":
            return [_ring(rails, n / per), _ring(inside, n)]
        up = collective == "reduce"
        return [_binomial(rails[:1], n, up), _binomial(inside, n, up)][::-1 if up else 1]

    @cached_property
    def _inside(self) -> np.ndarray:
        """The ranks of every node as rows (padded with -1)."""
        return _padded(self.groups(0))

    def _levels_allreduce(self, n: float, inter: str, quantized: bool) -> list[list[_Step]]:
        """Reduce-scatter level by level from the innermost, allreduce across the outermost,
        allgather back out: the stages of the hierarchical allreduce on a uniform tree."""
        down, up = [], []
        for axis in range(self.coords.shape[1] - 1, 0, -1):
            groups = self.axis_groups(axis)
            down.append(_ring(groups, n, reduce=True))
            up.insert(0, _ring(groups, n))
            n /= groups.shape[1]
        top = self.axis_groups(0)
        if not quantized:
            return down + [self._inter_allreduce(top, n, inter)] + up
        middle = [replace(s, nbytes=s.nbytes * self.codec_ratio, work=s.reduced * self.codec_gamma)
                  for s in self._inter_allreduce(top, n, "ring")]
        middle.append(_Step(np.array([], int), np.array([], int), 0.0, work=n * self.codec_gamma / 2))
        return down + [middle] + up

    def _inter_allreduce(self, groups: np.ndarray, n: float, inter: str) -> list[_Step]:
        if inter == "ring":
            return _ring(groups, n, reduce=True) + _ring(groups, n)
        if inter == "rabenseifner":
            return _folded(groups, n, lambda v, p2: _halving_doubling(v, p2, n))
        return _folded(groups, n, lambda v, p2: _butterfly(v, p2, lambda k: n, True))

    def _mpi(self, collective: str, nbytes: int) -> float:
        measured = self.mpi_times.get(collective)
        if measured:
            size, seconds = max(measured)
            if nbytes > size:  # beyond the measurements: bandwidth-bound, time grows with size
                return seconds * nbytes / size
            return _interpolate(measured, nbytes)
        names = [a for a in ALGORITHMS[collective] if a not in ("hierarchical", "mpi") and self.supports(collective, a)]
        return min(self.seconds(self._flat(collective, a, nbytes), software=False) for a in names)


def plan_key(collective: str, algorithm: str, inter: str | None = None, segments: int = 1,
             quantized: bool = False) -> str:
    """How calibration names a measured plan: "allreduce/ring" (flat) or
    "allreduce/hierarchical/ring/x4/quantized"."""
    if algorithm != "hierarchical":
        return f"{collective}/{algorithm}"
    return f"{collective}/hierarchical/{inter or 'ring'}/x{segments}" + ("/quantized" if quantized else "")


def _interpolate(measured, nbytes: float) -> float:
    """Log-log interpolation in ((bytes, seconds), ...) (held flat below the smallest size)."""
    sizes, times = zip(*sorted(measured))
    return float(np.exp(np.interp(np.log(max(nbytes, 1)), np.log(sizes), np.log(times))))


def _padded(groups: list[np.ndarray]) -> np.ndarray:
    """Groups of possibly different sizes as one (G, m) array padded with -1."""
    width = max(len(g) for g in groups)
    return np.array([np.pad(g, (0, width - len(g)), constant_values=-1) for g in groups])


def _valid(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = (src >= 0) & (dst >= 0) & (src != dst)
    return src[keep], dst[keep]


def _ring(groups: np.ndarray, n: float, reduce: bool = False) -> list[_Step]:
    """p-1 steps in which everyone sends n/p to the next rank of its group (a row of ``groups``)."""
    m = groups.shape[1]
    if m <= 1:
        return []
    src, dst = _valid(groups.ravel(), np.roll(groups, -1, axis=1).ravel())
    return [_Step(src, dst, n / m, n / m if reduce else 0.0, m - 1)]


def _butterfly(vgroups: np.ndarray, p2: int, nbytes, reduce: bool) -> list[_Step]:
    """log2(p2) exchanges with partners at distance p2/2, p2/4, ... (halving order) among the
    first p2 ranks of every row of ``vgroups``; ``nbytes(k)`` gives the bytes of exchange k."""
    steps, k, mask = [], 0, p2 >> 1
    while mask:
        src, dst = _valid(vgroups[:, :p2].ravel(), vgroups[:, np.arange(p2) ^ mask].ravel())
        steps.append(_Step(src, dst, nbytes(k), nbytes(k) if reduce else 0.0))
        mask >>= 1
        k += 1
    return steps


def _halving_doubling(vgroups: np.ndarray, p2: int, n: float) -> list[_Step]:
    """Rabenseifner: recursive-halving reduce-scatter, then the same exchanges back in reverse."""
    half = lambda k: n / 2 ** (k + 1)
    return _butterfly(vgroups, p2, half, True) + _butterfly(vgroups, p2, half, False)[::-1]


def _folded(groups: np.ndarray, n: float, body) -> list[_Step]:
    """Fold each group onto a power of two (the extra ranks hand over n and get n back)."""
    m = groups.shape[1]
    p2 = 1 << (m.bit_length() - 1)
    extra = m - p2
    keep = [2 * v if v < extra else v + extra for v in range(p2)]
    steps = body(groups[:, keep], p2)
    if extra:
        src, dst = _valid(groups[:, 1:2 * extra:2].ravel(), groups[:, 0:2 * extra:2].ravel())
        steps = [_Step(src, dst, n, n)] + steps + [_Step(dst, src, n)]
    return steps


def _binomial(groups: np.ndarray, n: float, reduce: bool = False) -> list[_Step]:
    """A binomial tree rooted at each group's first rank, as ``algorithms`` runs it: down from
    the farthest partner (bcast), or up from the nearest (reduce)."""
    m = groups.shape[1]
    steps, mask = [], 1 << max(m - 1, 0).bit_length() >> 1
    while mask:
        senders = np.arange(0, m, 2 * mask)
        senders = senders[senders + mask < m]
        src, dst = _valid(groups[:, senders].ravel(), groups[:, senders + mask].ravel())
        steps.append(_Step(dst, src, n, n) if reduce else _Step(src, dst, n))
        mask >>= 1
    return steps[::-1] if reduce else steps
