"""A cost model per level of the machine, and the time each allreduce algorithm needs under it.

A level has a latency ``alpha`` (s per message), an inverse bandwidth ``beta`` (s per byte)
and a reduction cost ``gamma`` (s per byte combined). For n bytes over p ranks (K nodes of L):

    ring                2(p-1) alpha + 2(p-1)/p n beta + (p-1)/p n gamma
    recursive_doubling  log2(p') (alpha + n beta + n gamma)                 + fold
    rabenseifner        2 log2(p') alpha + 2(p'-1)/p' n beta + (p'-1)/p' n gamma + fold
    hierarchical        ring inside the node on n, then the best flat algorithm across nodes on n/L

p' is the largest power of two <= p; when p' < p the extra ranks first hand their whole array
to a partner and get the result back: fold = 2 (alpha + n beta) + n gamma. (Measured on 3
emulated nodes at 1 Gbit/s, 16 MiB: across nodes a ring beat Rabenseifner 240 ms to 484 ms.)

A flat algorithm on several nodes pays the inter-node figures (its slowest link), with the
node's link shared by its L ranks (beta x L, the round-robin case); the defaults describe
shared memory inside a node and 1 Gbit/s Ethernet between nodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Level", "CostModel", "ALGORITHMS", "FLAT_ALGORITHMS"]

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


def _fold(level: Level, n: float, p: int) -> tuple[int, float]:
    """(p', the cost of folding p ranks onto p' = the largest power of two <= p)."""
    p2 = 1 << (p.bit_length() - 1)
    return p2, (0.0 if p2 == p else 2 * (level.alpha + n * level.beta) + n * level.gamma)


def _recursive_doubling(level: Level, n: float, p: int) -> float:
    if p <= 1:
        return 0.0
    p2, fold = _fold(level, n, p)
    return fold + math.log2(p2) * (level.alpha + n * level.beta + n * level.gamma)


def _rabenseifner(level: Level, n: float, p: int) -> float:
    if p <= 1:
        return 0.0
    p2, fold = _fold(level, n, p)
    return fold + 2 * math.log2(p2) * level.alpha + 2 * (p2 - 1) / p2 * n * level.beta + (p2 - 1) / p2 * n * level.gamma


_FLAT = {"ring": _ring, "recursive_doubling": _recursive_doubling, "rabenseifner": _rabenseifner}
FLAT_ALGORITHMS = tuple(_FLAT)


@dataclass(frozen=True)
class CostModel:
    intra: Level = Level(alpha=2e-6, beta=1 / 8e9)
    inter: Level = Level(alpha=30e-6, beta=1 / 0.117e9)

    def predict(self, algorithm: str, nbytes: int, nodes: int, per_node: int) -> float:
        """Seconds ``algorithm`` needs to allreduce ``nbytes`` over ``nodes`` x ``per_node`` ranks."""
        if algorithm == "hierarchical":
            inter = self.inter_algorithm(nbytes, nodes, per_node)
            return _ring(self.intra, nbytes, per_node) + _FLAT[inter](self._shared(per_node), nbytes / per_node, nodes)
        if algorithm not in _FLAT:
            raise ValueError(f"unknown algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
        return _FLAT[algorithm](self._shared(per_node) if nodes > 1 else self.intra, nbytes, nodes * per_node)

    def _shared(self, per_node: int) -> Level:
        """The inter-node level as each of ``per_node`` ranks sees it when all of a node's ranks
        send over its one link at once (the rails of the hierarchical algorithm; any flat
        algorithm under round-robin placement)."""
        return Level(self.inter.alpha, self.inter.beta * per_node, self.inter.gamma)

    def inter_algorithm(self, nbytes: int, nodes: int, per_node: int) -> str:
        """The flat algorithm for the inter-node step of the hierarchical one (on nbytes / per_node)."""
        return min(FLAT_ALGORITHMS, key=lambda a: _FLAT[a](self._shared(per_node), nbytes / per_node, nodes))

    def best(self, nbytes: int, nodes: int, per_node: int) -> str:
        """The algorithm with the smallest predicted time."""
        return min(ALGORITHMS, key=lambda a: self.predict(a, nbytes, nodes, per_node))
