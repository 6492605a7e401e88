"""MPI derived datatypes -> canonical layout -> fast pack/unpack kernels (host: numba, device: numba.cuda).

    from mpiforge.datatypes import pack, unpack, packer_for
    pos = pack(grid, 1, face_type, outbuf)          # like MPI_Pack, byte for byte
"""
from .canonical import canonicalize
from .errors import PackError
from .ir import BlockList, Layout, StridedBlock
from .packer import Packer, pack, pack_size, packer_for, unpack
from .translate import UnsupportedDatatype, translate


def canonical_layout(datatype) -> Layout:
    """The canonical form of a datatype (computed once, then cached with its Packer)."""
    return packer_for(datatype).layout


__all__ = [
    "BlockList", "Layout", "PackError", "Packer", "StridedBlock", "UnsupportedDatatype",
    "canonical_layout", "canonicalize", "pack", "pack_size", "packer_for", "translate", "unpack",
]
