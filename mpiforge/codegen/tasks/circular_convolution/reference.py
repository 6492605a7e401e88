"""Serial reference of circular_convolution (through the FFT)."""
import numpy as np


def generate(rng, n):
    return [n, rng.standard_normal(n), rng.standard_normal(n)]


def reference(f):
    return np.fft.ifft(np.fft.fft(f[1]) * np.fft.fft(f[2])).real
