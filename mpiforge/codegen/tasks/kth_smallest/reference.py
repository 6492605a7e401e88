"""Serial reference of kth_smallest."""
import numpy as np


def boundary(rng, n):
    """An index where splitting bugs show: the last of an inner rank's block for 2-4 ranks, or n - 1."""
    p, r = [(2, 0), (3, 1), (4, 1), (4, 2), (1, 0), (1, 0)][rng.integers(0, 6)]  # (1, 0): the very end
    counts = [n // p + (q < n % p) for q in range(p)]
    return max(sum(counts[:r + 1]) - 1, 0)


def generate(rng, n):
    """Distinct values; the k-th smallest sits at a block boundary."""
    x = (rng.permutation(n) - n // 2).astype(float)
    k = int(np.sum(x < x[boundary(rng, n)])) + 1
    return [n, k, x]


def reference(f):
    return np.array([np.sort(f[2])[f[1] - 1]])
