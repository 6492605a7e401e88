"""Serial reference of array_sum."""
import numpy as np


def generate(rng, n):
    return [n, rng.standard_normal(n)]


def reference(f):
    return np.array([f[1].sum()])
