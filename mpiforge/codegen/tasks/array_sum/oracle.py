"""mpi4py oracle of array_sum: rank 0 reads and scatters the array, partial sums reduced to rank 0."""
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
total = comm.reduce(float(local.sum()), op=MPI.SUM, root=0)
if rank == 0:
    with open(sys.argv[2], "w") as fh:
        fh.write(f"{total:.17g}\n")
