"""Ring order from measured peer-to-peer bandwidth (PCCL's "optimize topology", simply).

A ring all-reduce runs at the speed of its slowest link, so the best ring maximises the smallest
measured bandwidth along it and, among those, the sum of the transfer times 1/bw is smallest.
Exact (every cyclic order) up to ``EXACT_UP_TO`` peers; beyond, nearest-neighbour tours from every
start improved by 2-opt. Unmeasured links count as ``unknown`` bytes/s.

    ring = best_ring(["a", "b", "c"], {("a", "b"): 1e9, ("b", "c"): 2e8, ...})
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

__all__ = ["EXACT_UP_TO", "best_ring", "ring_score"]

EXACT_UP_TO = 8


def ring_score(ring: Sequence[str], bw: Mapping[tuple[str, str], float], unknown: float = 1.0) -> tuple[float, float]:
    """(bottleneck bandwidth, -total time per byte) of ``ring``: larger is better."""
    if len(ring) < 2:
        return float("inf"), 0.0
    links = [bw.get((a, b), unknown) for a, b in zip(ring, [*ring[1:], ring[0]])]
    return min(links), -sum(1.0 / max(x, 1e-9) for x in links)


def best_ring(ids: Sequence[str], bw: Mapping[tuple[str, str], float], unknown: float = 1.0) -> list[str]:
    """The ring order of ``ids`` that the measured bandwidths ``bw[(sender, receiver)]`` favour.

    The first id stays first (rings are cyclic) and ties keep the given order, so an unchanged
    network gives an unchanged ring.
    """
    ids = list(ids)
    if len(ids) <= 3:
        candidates = [ids, [ids[0], *ids[:0:-1]]] if len(ids) == 3 else [ids]
        return max(candidates, key=lambda r: ring_score(r, bw, unknown))
    if len(ids) <= EXACT_UP_TO:
        best, best_score = ids, ring_score(ids, bw, unknown)
        for rest in itertools.permutations(ids[1:]):
            ring = [ids[0], *rest]
            score = ring_score(ring, bw, unknown)
            if score > best_score:
                best, best_score = ring, score
        return best
    return _heuristic(ids, bw, unknown)


def _heuristic(ids: list[str], bw: Mapping[tuple[str, str], float], unknown: float) -> list[str]:
    best, best_score = ids, ring_score(ids, bw, unknown)
    for start in ids:
        tour, left = [start], set(ids) - {start}
        while left:
            here = tour[-1]
            nxt = max(sorted(left), key=lambda b: bw.get((here, b), unknown))
            tour.append(nxt)
            left.remove(nxt)
        tour = _two_opt(tour, bw, unknown)
        first = tour.index(ids[0])
        tour = tour[first:] + tour[:first]
        score = ring_score(tour, bw, unknown)
        if score > best_score:
            best, best_score = tour, score
    return best


def _two_opt(tour: list[str], bw: Mapping[tuple[str, str], float], unknown: float) -> list[str]:
    score, improved = ring_score(tour, bw, unknown), True
    while improved:
        improved = False
        for i in range(1, len(tour) - 1):
            for j in range(i + 1, len(tour)):
                cand = tour[:i] + tour[i:j + 1][::-1] + tour[j + 1:]
                cand_score = ring_score(cand, bw, unknown)
                if cand_score > score:
                    tour, score, improved = cand, cand_score, True
    return tour
