"""Serial reference of saxpy."""


def generate(rng, n):
    return [n, float(rng.standard_normal()), rng.standard_normal(n), rng.standard_normal(n)]


def reference(f):
    return f[1] * f[2] + f[3]
