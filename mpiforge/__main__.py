"""``python -m mpiforge`` is the ``mpiforge`` command."""
from .cli import main

main(prog_name="mpiforge")
