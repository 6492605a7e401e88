"""Serial reference of normalize (a single value has no deviation: that test is discarded)."""


def generate(rng, n):
    return [n, 5.0 + 3.0 * rng.standard_normal(n)]


def reference(f):
    x = f[1]
    if x.std() == 0:
        raise ValueError("zero standard deviation")
    return (x - x.mean()) / x.std()
