"""Fault-tolerant all-reduce: a TCP master and peers that join and die at any time (``master``, ``peer``), and ULFM inside MPI jobs (``ulfm``)."""
