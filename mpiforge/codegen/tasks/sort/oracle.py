"""mpi4py oracle of sort: rank 0 scatters the array, blocks sorted locally, gathered and merged on rank 0."""
import heapq
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
x = None
n = 0
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
    n = int(numbers[0])
    x = np.ascontiguousarray(numbers[1:1 + n])
n = comm.bcast(n, root=0)
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
local = np.empty(counts[rank], dtype=np.float64)
comm.Scatterv([x, counts, displs, MPI.DOUBLE] if rank == 0 else None, local, root=0)
local.sort()
blocks = np.empty(n, dtype=np.float64) if rank == 0 else None
comm.Gatherv(local, [blocks, counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    runs = [blocks[d:d + c] for c, d in zip(counts, displs)]
    np.savetxt(sys.argv[2], np.fromiter(heapq.merge(*runs), dtype=np.float64, count=n), fmt="%.17g")
