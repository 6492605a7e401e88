"""A cost model per level of the machine, and the time each allreduce algorithm needs under it.

A level has a latency ``alpha`` (s per message), an inverse bandwidth ``beta`` (s per byte)
and a reduction cost ``gamma`` (s per byte combined). For n bytes over p ranks (K nodes of L):

    ring                2(p-1) alpha + 2(p-1)/p n beta + (p-1)/p n gamma
    recursive_doubling  log2(p) (alpha + n beta + n gamma)
    rabenseifner        2 log2(p) alpha + 2(p-1)/p n beta + (p-1)/p n gamma
    hierarchical        ring inside the node on n, then rabenseifner across nodes on n/L

A flat algorithm on several nodes pays the inter-node figures (its slowest link); the
defaults describe shared memory inside a node and 1 Gbit/s Ethernet between nodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Level", "CostModel", "ALGORITHMS"]

ALGORITHMS = ("ring", "recursive_doubling", "rabenseifner", "hierarchical")


@dataclass(frozen=True)
class Level:
    alpha: float  # seconds per message
    beta: float  # seconds per byte moved
    gamma: float = 0.25e-9  # seconds per byte reduced


def _ring(level: Level, n: float, p: int) -> float:
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * level.alpha + 2 * (p - 1) / p * n * level.beta + (p - 1) / p * n * level.gamma


def _recursive_doubling(level: Level, n: float, p: int) -> float:
    steps = math.ceil(math.log2(p)) if p > 1 else 0
    return steps * (level.alpha + n * level.beta + n * level.gamma)


def _rabenseifner(level: Level, n: float, p: int) -> float:
    if p <= 1:
        return 0.0
    steps = math.ceil(math.log2(p))
    return 2 * steps * level.alpha + 2 * (p - 1) / p * n * level.beta + (p - 1) / p * n * level.gamma


@dataclass(frozen=True)
class CostModel:
    intra: Level = Level(alpha=2e-6, beta=1 / 8e9)
    inter: Level = Level(alpha=30e-6, beta=1 / 0.117e9)

    def predict(self, algorithm: str, nbytes: int, nodes: int, per_node: int) -> float:
        """Seconds ``algorithm`` needs to allreduce ``nbytes`` over ``nodes`` x ``per_node`` ranks."""
        p = nodes * per_node
        flat = self.inter if nodes > 1 else self.intra
        if algorithm == "ring":
            return _ring(flat, nbytes, p)
        if algorithm == "recursive_doubling":
            return _recursive_doubling(flat, nbytes, p)
        if algorithm == "rabenseifner":
            return _rabenseifner(flat, nbytes, p)
        if algorithm == "hierarchical":
            return _ring(self.intra, nbytes, per_node) + _rabenseifner(self.inter, nbytes / per_node, nodes)
        raise ValueError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")

    def best(self, nbytes: int, nodes: int, per_node: int) -> str:
        """The algorithm with the smallest predicted time."""
        return min(ALGORITHMS, key=lambda a: self.predict(a, nbytes, nodes, per_node))
