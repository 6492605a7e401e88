"""Serial reference of find_first."""
import numpy as np


def boundary(rng, n):
    """An index where splitting bugs show: the last of an inner rank's block for 2-4 ranks, or n - 1."""
    p, r = [(2, 0), (3, 1), (4, 1), (4, 2), (1, 0), (1, 0)][rng.integers(0, 6)]  # (1, 0): the very end
    counts = [n // p + (q < n % p) for q in range(p)]
    return max(sum(counts[:r + 1]) - 1, 0)


def generate(rng, n):
    """The target first occurs at a block boundary (or nowhere, in some tests)."""
    target = int(rng.integers(0, 12))
    x = rng.integers(0, max(12, n // 4), n)
    if rng.random() < 0.8:
        k = boundary(rng, n)
        x[:k][x[:k] == target] = target + 1
        x[k] = target
    else:
        x[x == target] = target + 1
    return [n, target, x]


def reference(f):
    hits = np.nonzero(f[2] == f[1])[0]
    return np.array([hits[0] if len(hits) else -1])
