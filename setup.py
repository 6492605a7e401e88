"""Only the C extension lives here (the rest of the build is in pyproject.toml): the
interposer's hot path, optional: without a C compiler the pure-Python path is used."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("mpiforge.comms._fastpath", ["mpiforge/comms/_fastpath.c"], optional=True)])
