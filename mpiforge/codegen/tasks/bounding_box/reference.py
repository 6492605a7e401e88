"""Serial reference of bounding_box."""
import numpy as np


def generate(rng, n):
    # some tests have their extreme points last, where an uneven split drops elements first
    at_end = rng.random() > 0.55
    p = rng.uniform(-100, 100, (n, 2))
    if at_end:
        p[-1] = (150.0, -150.0)
    return [n, p]


def reference(f):
    p = f[1]
    return np.concatenate([p.min(axis=0), p.max(axis=0)])
