"""Serial reference of max_loc."""
import numpy as np


def generate(rng, n):
    # a unique maximum, in some tests at the very end (where a forgotten remainder or a
    # range that stops one short loses it first), elsewhere otherwise
    at_end = rng.random() > 0.55
    x = rng.integers(-50, 50, n).astype(float)
    where = n - 1 if at_end else int(rng.integers(0, n))
    x[where] = 50.0
    return [n, x]


def reference(f):
    x = f[1]
    return np.array([x.max(), int(np.argmax(x))])
