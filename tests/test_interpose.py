"""``python -m mpiforge run`` on unmodified mpi4py programs, MPIFORGE_DISABLE, and calibrate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpiforge.launch import mpiexec_command

PROGRAMS = Path(__file__).parent / "programs"
TIMEOUT = 120


def run(program: str, nprocs: int, interposed: bool, **env: str) -> str:
    argv = [sys.executable, "-m", "mpiforge", "run", str(PROGRAMS / program)] if interposed \
        else [sys.executable, str(PROGRAMS / program)]
    proc = subprocess.run(mpiexec_command(nprocs, argv), capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("nprocs", [2, 3])
@pytest.mark.parametrize("method", ["host", "native", "auto"])
def test_unmodified_program_same_results(nprocs: int, method: str) -> None:
    plain = run("ring_datatypes.py", nprocs, False)
    ours = run("ring_datatypes.py", nprocs, True, MPIFORGE_METHOD=method)
    strip = lambda text: [line.rsplit(" comm-from=", 1)[0] for line in text.splitlines()]  # noqa: E731
    assert strip(ours) == strip(plain) and len(strip(plain)) == nprocs
    assert "comm-from=mpiforge" in ours and "comm-from=mpi4py" in plain


def test_disable_leaves_mpi4py_alone() -> None:
    out = run("ring_datatypes.py", 2, True, MPIFORGE_DISABLE="1")
    assert "comm-from=mpi4py" in out and "mpiforge" not in out


@pytest.mark.parametrize("method", ["host", "native"])
def test_truncation_error_class(method: str) -> None:
    assert "error class True" in run("truncate.py", 2, True, MPIFORGE_METHOD=method)


def test_calibrate_quick_gives_usable_profile(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "mpiforge", "calibrate", "--quick", "-o", str(path)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(path.read_text())
    assert data["contig_gbps"] > 0 and all(v > 0 for v in data["native_gbps"].values())
    from mpiforge.comms.methods import Method
    from mpiforge.comms.model import Profile, choose

    profile = Profile.load(path)
    assert choose(profile, 1 << 20, 64, True, False, False) in (Method.NATIVE, Method.HOST)
    assert choose(profile, 1 << 20, 64, True, True, False) in (Method.STAGED, Method.ONESHOT)


def test_bad_method_is_explained() -> None:
    proc = subprocess.run([sys.executable, "-m", "mpiforge", "run", "--method", "warp", "x.py"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "warp" in proc.stderr
