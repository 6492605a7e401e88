"""Serial reference of histogram."""
import numpy as np


def generate(rng, n):
    return [n, 7, -2.0, 3.0, rng.uniform(-3.0, 4.0, n)]


def reference(f):
    n, nbins, lo, hi, x = f
    b = np.clip(np.floor((x - lo) / (hi - lo) * nbins), 0, nbins - 1).astype(int)
    return np.bincount(b, minlength=nbins)
