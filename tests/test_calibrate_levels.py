"""``mpiforge calibrate --levels`` on a real 4-rank job laid out as 2 nodes: the profile it
writes has every figure of the cost model, and the model built from it works."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 240


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("calibrate") / "topology.json"
    env = {**os.environ, "MPIFORGE_TOPOLOGY": "nodes=2,placement=roundrobin"}
    proc = subprocess.run([sys.executable, "-m", "mpiforge", "calibrate", "--levels", "--quick", "-n", "4",
                           "-o", str(path)], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "software per call" in proc.stdout
    return json.loads(path.read_text())


def test_every_figure_is_measured(profile: dict) -> None:
    from mpiforge.topology.cost import FIGURES

    for name in ("intra", "inter"):
        assert profile[name]["alpha"] > 0 and profile[name]["beta"] > 0, profile[name]
    inter = profile["inter"]
    assert 0 < inter["line"] <= inter["beta"] and 0 <= inter["burst"] <= 1 << 20, inter  # no tbf here: any value
    assert all(profile[k] >= 0 for k in FIGURES), {k: profile.get(k) for k in FIGURES}
    assert set(profile["mpi_times"]) == {"2x2:roundrobin"}


def test_own_times_name_flat_and_hierarchical_plans(profile: dict) -> None:
    from mpiforge.topology.cost import ALGORITHMS, plan_key

    own = profile["own_times"]["2x2:roundrobin"]
    flat = {f"allreduce/{a}" for a in ALGORITHMS["allreduce"] if a not in ("hierarchical", "mpi")}
    assert any(k.startswith("allreduce/hierarchical/") for k in own), own.keys()
    assert plan_key("allreduce", "hierarchical", "ring", 1, True) in own  # every segment count of int8
    assert set(own) <= flat | {k for k in own if k.startswith("allreduce/hierarchical/")}
    for points in own.values():
        sizes = [size for size, _ in points]
        assert sizes == sorted(sizes) and all(seconds > 0 for _, seconds in points)


def test_the_profile_makes_a_machine_that_plans(profile: dict, tmp_path: Path) -> None:
    from mpiforge.topology.simulate import spec_from

    spec = spec_from("ethernet-1g", (2, 2), "roundrobin", profile=profile)
    machine = spec.machine()
    assert machine.links[0].burst == pytest.approx(profile["inter"]["burst"])
    assert machine.call == pytest.approx(profile["call"])
    for size in (4096, 1 << 20, 64 << 20):
        assert machine.best("allreduce", size).seconds > 0
        assert machine.best("allreduce", size, quantized=True).seconds > 0
