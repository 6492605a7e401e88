"""Serial reference of pattern_count."""
import numpy as np


def generate(rng, n):
    """Random bits; in most tests the text ends with the pattern (the start an uneven split drops first)."""
    m = min(2, n)
    text, pat = rng.integers(0, 2, n), rng.integers(0, 2, m)
    if rng.random() < 0.8:
        text[n - m:] = pat
    return [n, m, text, pat]


def reference(f):
    n, m, text, pat = f
    return np.array([sum(bool(np.array_equal(text[i:i + m], pat)) for i in range(n - m + 1))])
