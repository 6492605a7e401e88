"""mpi4py oracle of spmv_csr: the matrix and x broadcast, each rank multiplies a block of rows, y gathered."""
import sys

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
numbers = None
if rank == 0:
    with open(sys.argv[1]) as fh:
        numbers = np.array(fh.read().split(), dtype=np.float64)
numbers = comm.bcast(numbers, root=0)
n, nnz = int(numbers[0]), int(numbers[1])
rowptr = numbers[2:3 + n].astype(np.int64)
col = numbers[3 + n:3 + n + nnz].astype(np.int64)
val = numbers[3 + n + nnz:3 + n + 2 * nnz]
x = numbers[3 + n + 2 * nnz:3 + 2 * n + 2 * nnz]
counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
displs = [sum(counts[:r]) for r in range(size)]
lo, hi = displs[rank], displs[rank] + counts[rank]
p0, p1 = rowptr[lo], rowptr[hi]
row = np.repeat(np.arange(counts[rank]), np.diff(rowptr[lo:hi + 1]))  # local row of each of my nonzeros
y = np.bincount(row, weights=val[p0:p1] * x[col[p0:p1]], minlength=counts[rank])
out = np.empty(n, dtype=np.float64) if rank == 0 else None
comm.Gatherv(y, [out, counts, displs, MPI.DOUBLE] if rank == 0 else None, root=0)
if rank == 0:
    np.savetxt(sys.argv[2], out, fmt="%.17g")
