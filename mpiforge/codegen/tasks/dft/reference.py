"""Serial reference of dft."""
import numpy as np


def generate(rng, n):
    return [n, rng.standard_normal(n)]


def reference(f):
    X = np.fft.fft(f[1])
    return np.concatenate([X.real, X.imag])
