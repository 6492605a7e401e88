"""mpiforge: fast MPI datatypes, topology-aware and fault-tolerant collectives, training sync.

Importing mpiforge is cheap; each area loads its dependencies when first used:

    from mpiforge.datatypes import pack, unpack, packer_for
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mpiforge")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
