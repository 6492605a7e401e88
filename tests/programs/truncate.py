"""An unmodified mpi4py program whose receive is too small: it must see MPI_ERR_TRUNCATE."""
import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
vec = MPI.DOUBLE.Create_vector(3, 1, 2).Commit()
buf = np.full(6, -1.0)
if comm.rank == 0:
    comm.Send([np.arange(10.0), MPI.DOUBLE], 1, 0)
elif comm.rank == 1:
    try:
        comm.Recv([buf, 1, vec], 0, 0)
        print("no error")
    except MPI.Exception as exc:
        print("error class", exc.Get_error_class() == MPI.ERR_TRUNCATE)
comm.Barrier()
