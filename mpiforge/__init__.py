"""mpiforge: fast MPI datatypes, topology-aware and fault-tolerant collectives, training sync.

Importing mpiforge is cheap; each area loads its dependencies when first used:

    from mpiforge.datatypes import pack, unpack, packer_for
    import mpiforge; mpiforge.interpose()          # unmodified mpi4py code takes the fast paths
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mpiforge")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", "interpose"]


def interpose(method: str | None = None) -> bool:
    """Make this process's mpi4py use mpiforge's communicators (see ``mpiforge.comms.interpose``)."""
    from .comms.interpose import interpose as _interpose

    return _interpose(method)
