"""Serial reference of mode."""
import numpy as np


def generate(rng, n):
    k = 6
    at_end = rng.random() > 0.55
    x = rng.integers(0, k, n)
    if at_end and n > 2:
        # two values tie before the last element, and the last one decides: an uneven split
        # that loses the tail element gives the other value
        c = np.bincount(x[:-1], minlength=k)
        a = int(np.argmax(c))
        b = (a + 1) % k
        others = [i for i in range(n - 1) if x[i] not in (a, b)]
        for i in others[:max(0, c[a] - c[b])]:
            x[i] = b
        if np.bincount(x[:-1], minlength=k)[b] == c[a]:
            x[-1] = b
    return [n, k, x]


def reference(f):
    c = np.bincount(f[2], minlength=f[1])
    return np.array([int(np.argmax(c)), c.max()])
