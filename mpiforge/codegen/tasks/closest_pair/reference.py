"""Serial reference of closest_pair."""
import numpy as np


def generate(rng, n):
    at_end = rng.random() > 0.55  # in some tests the closest pair is at the very end
    p = rng.uniform(-10, 10, (n, 2))
    if n > 2 and at_end:
        p[-1] = p[-2] + 1e-3
    return [n, p]


def reference(f):
    p = f[1]
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    d[np.arange(len(p)), np.arange(len(p))] = np.inf
    return np.array([d.min()])
