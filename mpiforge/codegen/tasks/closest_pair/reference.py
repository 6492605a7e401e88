"""Serial reference of closest_pair."""
import numpy as np


def boundary(rng, n):
    """An index where splitting bugs show: the last of an inner rank's block for 2-4 ranks, or n - 1."""
    p, r = [(2, 0), (3, 1), (4, 1), (4, 2), (1, 0), (1, 0)][rng.integers(0, 6)]  # (1, 0): the very end
    counts = [n // p + (q < n % p) for q in range(p)]
    return max(sum(counts[:r + 1]) - 1, 0)


def generate(rng, n):
    """Random points; the closest pair straddles a block boundary or ends the array."""
    p = rng.uniform(-10, 10, (n, 2))
    if n > 2:
        k = min(boundary(rng, n), n - 2)
        p[k + 1] = p[k] + 1e-3
    return [n, p]


def reference(f):
    p = f[1]
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    d[np.arange(len(p)), np.arange(len(p))] = np.inf
    return np.array([d.min()])
