"""Interposed communicator, CUDA-aware staging, method selection, fault-tolerant all-reduce, DiLoCo."""
