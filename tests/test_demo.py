"""``mpiforge demo`` end to end, and the halo-exchange verification behind its PASS/FAIL."""
from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mpiforge.cli import main
from mpiforge.demo import EXIT_FAIL, Report, Section, render
from mpiforge.launch import mpiexec_command
from mpiforge.testing import run_ranks

N, H = 8, 2  # small local grid for the multi-rank bodies


def _mpiforge(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    return subprocess.run([sys.executable, "-m", "mpiforge", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **(env or {})})


# --- bodies run on every rank by run_ranks (module level, importable) ---

def halo_part_body(comm) -> None:
    """The demo's halo part alone: every variant timed, every check passed on every rank."""
    from mpiforge import demo

    sections = demo.halo_part(comm, demo.DemoConfig(n=N, halo=H, iters=2))
    exchange = next(s for s in sections if s.title.startswith("Exchange"))
    assert [row[0] for row in exchange.rows] == list(demo.HALO_VARIANTS)
    assert {row[0]: row[-1] for row in exchange.rows}["mpiforge host"] == "host 52"
    verdict = sections[-1]
    assert verdict.title == "Verification" and verdict.ok, verdict
    for what, result in verdict.rows[:-1]:
        assert result == f"PASS on {comm.size}/{comm.size} ranks", (what, result)


def failing_demo_body(comm) -> None:
    """The demo's verdict when the forced-host exchange corrupts one halo value on rank 1."""
    from mpiforge import demo
    from mpiforge.comms import halo

    real = halo.Halo3D.exchange

    def corrupting(self, grid, mode="mpi", method=None):
        real(self, grid, mode, method)
        if self.comm.rank == 1 and method == "host":
            grid[0, self.h, self.h] = 0.5

    halo.Halo3D.exchange = corrupting
    demo.PARTS[:] = [demo.job_part, demo.halo_part, demo.layouts_part]  # the parts this verdict is about
    config = demo.DemoConfig(n=N, halo=H, iters=2)
    report = demo.run_demo(comm, config)
    assert not report.ok
    check = dict(next(s for s in report.sections if s.title == "Verification").rows)
    assert check["first exchange fills every halo cell"] == "FAIL on rank(s) 1 (mpiforge host)", check
    assert check["grids bit-identical to mpi's"] == "FAIL on rank(s) 1 (mpiforge host)", check
    assert check["mpiforge packs the 52 datatypes like MPI_Pack"] == f"PASS on {comm.size}/{comm.size} ranks"
    assert demo.run_job(config) == EXIT_FAIL  # every rank exits with the FAIL code


# --- multi-rank ---

@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [1, 4])
def test_halo_part(nprocs: int) -> None:
    run_ranks(halo_part_body, nprocs, timeout=60)


@pytest.mark.mpi
def test_failed_check_fails_the_job() -> None:
    run_ranks(failing_demo_body, 2, timeout=30)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_demo_command(ranks: int) -> None:
    proc = _mpiforge("demo", "--ranks", str(ranks), "--n", "16", "--iters", "3", timeout=45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Neighbour datatypes: canonical form" in out
    for group in ("x faces", "y faces", "z faces", "xy edges", "xz edges", "yz edges", "corners"):
        assert f"\n{group} " in out
    z_faces = next(line for line in out.splitlines() if line.startswith("z faces"))
    assert "Strided" in z_faces and "16 B" in z_faces  # runs of h=2 doubles
    for variant in ("mpi", "numpy", "mpiforge auto", "mpiforge host", "mpiforge native"):
        assert f"\n{variant} " in out
    assert f"ranks   {ranks}" in out
    assert f"PASS on {ranks}/{ranks} ranks" in out and "PASS - mpiforge demo" in out
    assert "FAIL" not in out


@pytest.mark.mpi
def test_demo_under_mpiexec_runs_in_place() -> None:
    cmd = mpiexec_command(2, [sys.executable, "-m", "mpiforge", "demo", "--n", "8", "--iters", "2"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)  # ranks write to a pty: rich may colour
    assert out.count("PASS - mpiforge demo") == 1  # one report, from rank 0 of this job
    assert "ranks   2" in out


@pytest.mark.mpi
def test_demo_timeout_kills_the_job() -> None:
    proc = _mpiforge("demo", "--ranks", "2", "--n", "8", "--iters", "100000000", "--timeout", "3", timeout=30)
    assert proc.returncode != 0
    assert "timed out after 3 s" in proc.stderr


# --- the login side without MPI ---

@pytest.fixture
def fake_mpiexec(tmp_path):
    """A launcher that prints a line and exits with the code given in FAKE_CODE."""
    script = tmp_path / "mpiexec"
    script.write_text('#!/bin/sh\necho "job says hello"\nexit "$FAKE_CODE"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_launch_streams_output_and_maps_exit_codes(fake_mpiexec: str) -> None:
    env = {"MPIFORGE_MPIEXEC": fake_mpiexec}
    ok = _mpiforge("demo", env={**env, "FAKE_CODE": "0"})
    assert ok.returncode == 0 and "job says hello" in ok.stdout
    failed = _mpiforge("demo", env={**env, "FAKE_CODE": str(EXIT_FAIL)})
    assert failed.returncode == EXIT_FAIL and "checks FAILED" in failed.stderr
    crashed = _mpiforge("demo", env={**env, "FAKE_CODE": "7"})
    assert crashed.returncode == 1 and "mpiexec exited with code 7" in crashed.stderr


def test_missing_mpiexec_is_a_clear_error(tmp_path) -> None:
    proc = _mpiforge("demo", env={"MPIFORGE_MPIEXEC": str(tmp_path / "nope")})
    assert proc.returncode == 1 and "Error:" in proc.stderr and "Traceback" not in proc.stderr


def test_halo_wider_than_grid_is_rejected() -> None:
    result = CliRunner().invoke(main, ["demo", "--n", "4", "--halo", "5"])
    assert result.exit_code == 2 and "--halo" in result.output


def test_render_marks_a_failed_section() -> None:
    report = Report([Section("Setup", [("ranks", "2")]),
                     Section("Checks", [("halos", "FAIL on rank(s) 1")], columns=("check", "result"), ok=False)])
    assert not report.ok
    from rich.console import Console

    out = io.StringIO()
    render(report, Console(file=out, width=100))
    text = out.getvalue()
    assert "FAIL on rank(s) 1" in text and text.rstrip().endswith("FAIL - mpiforge demo")
