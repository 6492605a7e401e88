"""Serial reference of closest_pair."""
import numpy as np


def generate(rng, n):
    return [n, rng.uniform(-10, 10, (n, 2))]


def reference(f):
    p = f[1]
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)
    d[np.arange(len(p)), np.arange(len(p))] = np.inf
    return np.array([d.min()])
