"""Errors of the datatype engine: MPI exceptions carrying the error class MPI would report."""
from __future__ import annotations

from mpi4py import MPI

__all__ = ["PackError"]


class PackError(MPI.Exception):
    """A pack or unpack request that MPI would reject; ``Get_error_class()`` gives the MPI class.

    Catch it as ``MPI.Exception`` like any mpi4py error; its message names the problem.
    """

    def __init__(self, error_class: int, message: str) -> None:
        super().__init__(error_class)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.Get_error_class(), self.message))
