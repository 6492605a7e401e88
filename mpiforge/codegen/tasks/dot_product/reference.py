"""Serial reference of dot_product."""
import numpy as np


def generate(rng, n):
    return [n, rng.standard_normal(n), rng.standard_normal(n)]


def reference(f):
    return np.array([np.dot(f[1], f[2])])
