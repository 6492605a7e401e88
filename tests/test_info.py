"""``mpiforge info`` and the ctypes MPI-extension queries behind it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpiforge.bindings import mpi_ext
from mpiforge.cli import main
from mpiforge.info import LIBRARIES, collect_info, node_layout
from mpiforge.launch import mpiexec_command
from mpiforge.testing import run_ranks

KEYS = {
    "mpiforge", "python", "mpi4py", "mpi_standard", "mpi_library", "libmpi", "thread_level",
    "ulfm", "cuda_aware", "rocm_aware", "libraries", "cuda_device", "rank", "size", "layout",
}


def _ranks_in(layout: list[dict]) -> list[int]:
    return sorted(rank for entry in layout for rank in entry["ranks"])


# --- bodies run on every rank by run_ranks (module level, importable) ---

def layout_body(comm) -> None:
    data = collect_info(comm)
    assert data["size"] == comm.size and data["rank"] == comm.rank
    if comm.rank == 0:
        assert _ranks_in(data["layout"]) == list(range(comm.size)), data["layout"]
    else:
        assert data["layout"] is None


def ulfm_body(comm, expected: bool) -> None:
    assert mpi_ext.ulfm_available() is True
    assert mpi_ext.ulfm_enabled() is expected


# --- one process ---

def test_collect_info_single_rank() -> None:
    data = collect_info()
    assert set(data) == KEYS
    assert "Open MPI" in data["mpi_library"] and "\n" not in data["mpi_library"]
    assert re.fullmatch(r"\d+\.\d+", data["mpi_standard"])
    assert data["thread_level"] in {"single", "funneled", "serialized", "multiple"}
    assert Path(data["libmpi"]).name.startswith("libmpi")
    assert data["size"] == 1 and data["rank"] == 0 and data["layout"] is None
    assert isinstance(data["ulfm"]["supported"], bool)
    assert data["cuda_aware"] in (True, False, None)
    assert set(data["libraries"]) == set(LIBRARIES)
    import numpy

    assert data["libraries"]["numpy"] == numpy.__version__
    json.dumps(data)  # everything must be JSON-serialisable


def test_library_version_is_the_one_mpi4py_reports() -> None:
    from mpi4py import MPI

    # Open MPI counts the terminating NUL in the length; mpi4py passes it through
    assert mpi_ext.library_version() == MPI.Get_library_version().rstrip("\x00").strip()


def test_node_layout_groups_ranks_by_host() -> None:
    assert node_layout(["b", "a", "b", "c"]) == [
        {"node": "b", "ranks": [0, 2]},
        {"node": "a", "ranks": [1]},
        {"node": "c", "ranks": [3]},
    ]


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("true", True), ("off", False)])
def test_cuda_aware_env_overrides(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("MPIFORGE_CUDA_AWARE", value)
    assert mpi_ext.cuda_aware() is expected


def test_cuda_aware_env_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPIFORGE_CUDA_AWARE", "maybe")
    with pytest.raises(ValueError, match="MPIFORGE_CUDA_AWARE"):
        mpi_ext.cuda_aware()


def test_cli_json() -> None:
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == KEYS and data["size"] == 1


def test_cli_json_honours_cuda_override() -> None:
    result = CliRunner().invoke(main, ["info", "--json"], env={"MPIFORGE_CUDA_AWARE": "1"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["cuda_aware"] is True


def test_cli_table_and_bad_env() -> None:
    runner = CliRunner()
    table = runner.invoke(main, ["info"])
    assert table.exit_code == 0, table.output
    assert "CUDA-aware MPI" in table.output and "Open MPI" in table.output
    bad = runner.invoke(main, ["info"], env={"MPIFORGE_CUDA_AWARE": "maybe"})
    assert bad.exit_code != 0 and "MPIFORGE_CUDA_AWARE" in bad.output


# --- under mpiexec ---

@pytest.mark.mpi
def test_layout_on_three_ranks() -> None:
    run_ranks(layout_body, 3, timeout=120)


@pytest.mark.mpi
def test_ulfm_enabled_follows_mpiexec_flag() -> None:
    run_ranks(ulfm_body, 1, timeout=60, args=(True,), mpiexec_args=["--with-ft", "ulfm"])
    run_ranks(ulfm_body, 1, timeout=60, args=(False,), env={"OMPI_MCA_mpi_ft_enable": "0"})


@pytest.mark.mpi
def test_cli_under_mpiexec_prints_one_document() -> None:
    cmd = mpiexec_command(2, [sys.executable, "-m", "mpiforge", "info", "--json"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout)  # a second document would make this fail
    assert data["size"] == 2 and _ranks_in(data["layout"]) == [0, 1]
