"""mpi4py oracle of histogram: rank 0 scatters the values, per-rank bin counts summed onto rank 0."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
x = None
header = np.zeros(4)  # n, nbins, lo, hi
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    header[:] = numbers[:4]
    x = np.ascontiguousarray(numbers[4:4 + int(header[0])])
comm.Bcast(header, root=0)
n, nbins, lo, hi = int(header[0]), int(header[1]), header[2], header[3]
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
local = np.empty(counts[rank], dtype=np.float64)
comm.Scatterv([x, counts, displs, MPI.DOUBLE] if rank == 0 else None, local, root=0)
bins = np.clip(np.floor((local - lo) / (hi - lo) * nbins), 0, nbins - 1).astype(np.int64)
hist = np.bincount(bins, minlength=nbins).astype(np.int64)
total = np.zeros(nbins, dtype=np.int64) if rank == 0 else None
comm.Reduce(hist, total, op=MPI.SUM, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], total, fmt="%.17g")
