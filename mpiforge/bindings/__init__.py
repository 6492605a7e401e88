"""Adapters to other runtimes: MPI extensions through ctypes, PyTorch tensors and DLPack."""
