"""``mpiforge simulate``: machines described on the command line, tables, JSON, and the model
against a (synthetic) bench_allreduce run. Small shapes only: every test takes well under a second."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mpiforge.cli import main
from mpiforge.topology.cost import Machine
from mpiforge.topology.simulate import (
    _bench_spec,
    compare,
    parse_bandwidth,
    parse_latency,
    parse_shape,
    parse_sizes,
    simulate,
    spec_from,
    wins,
)


def run(*args: str):
    result = CliRunner().invoke(main, ["simulate", *args])
    return result


@pytest.mark.parametrize("args,header", [
    (["--preset", "dgx-ib", "--shape", "4x8", "--sizes", "4K,1M,256M"], "4x8 = 32 ranks, block placement"),
    (["--shape", "3x2", "--placement", "roundrobin", "--collective", "allreduce", "--quantized"],
     "3x2 = 6 ranks, roundrobin placement"),
    (["--shape", "2x4", "--link", "60us,1Gbit/s", "--link", "3us,3GB/s", "--gamma", "2", "--overhead", "20"],
     "between nodes 60 us, 125 MB/s; inside a node 3 us, 3 GB/s"),
    (["--preset", "dgx-ib"], "128x8 = 1024 ranks"),
])
def test_presets_and_custom_shapes_print_tables(args: list[str], header: str) -> None:
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert header in result.output
    assert "allreduce (ms)" in result.output and "winner" in result.output and "wins: " in result.output
    if "--collective" not in args:
        assert all(f"{c} (ms)" in result.output for c in ("reduce_scatter", "allgather", "bcast", "reduce"))


def test_three_level_shape() -> None:
    result = run("--shape", "2x2x4", "--link", "10us,50GB/s", "--link", "5us,25GB/s", "--link", "3us,150GB/s",
                 "--sizes", "4K,16M", "--collective", "allreduce")
    assert result.exit_code == 0, result.output
    assert "2x2x4 = 16 ranks" in result.output and "between racks 10 us, 50 GB/s" in result.output
    # without a rack link, a preset's racks get half their nodes' bandwidth and one more hop
    spec = spec_from("dgx-ib", (2, 4, 8))
    figures = [v for link in spec.links for v in (link.alpha, link.beta)]
    assert figures == pytest.approx([7e-6, 2 / 4 / 25e9, 5e-6, 1 / 25e9, 3e-6, 1 / 150e9])
    assert spec.machine().size == 64
    assert run("--preset", "dgx-ib", "--shape", "2x4x8", "--sizes", "1M").exit_code == 0


@pytest.mark.parametrize("args,message", [
    (["--shape", "1024"], "write NODESxRANKS or RACKSxNODESxRANKS"),
    (["--shape", "0x8"], "each at least 1"),
    (["--shape", "2x3x4x5"], "e.g. 1024x8 or 32x32x8"),
    (["--link", "5,25GB/s"], "write a number and a unit (ns, us, ms, s), e.g. 5us"),
    (["--link", "5us,25"], "e.g. 25GB/s, 100Gbit/s"),
    (["--link", "5us"], "write [LEVEL=]LATENCY,BANDWIDTH"),
    (["--shape", "2x2", "--link", "5us,25GB/s"], "1 --link for a 2-level shape: give one per level"),
    (["--link", "rack=5us,1GB/s"], "no such level in a 2-level shape; use inter, intra"),
    (["--link", "intra=5us,1GB/s", "--link", "1=5us,1GB/s"], "given twice"),
    (["--sizes", "4Q"], "write bytes or a number with K, M or G"),
])
def test_bad_input_is_a_usage_error_saying_what_to_write(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_units() -> None:
    assert parse_latency("5us") == 5e-6 and parse_latency("0.06ms") == pytest.approx(6e-5)
    assert parse_bandwidth("25GB/s") == 25e9 and parse_bandwidth("100Gbit/s") == 12.5e9
    assert parse_bandwidth("1gbit") == 1.25e8 and parse_bandwidth("150GiB/s") == 150 * 2 ** 30
    assert parse_bandwidth("117MB/s") == 117e6 and parse_bandwidth("10Gbps") == 1.25e9
    assert parse_sizes("1M,4K,4096,1.5KiB") == (1536, 4096, 1 << 20) and parse_shape("32x32x8") == (32, 32, 8)


def test_json_output(tmp_path) -> None:
    path = tmp_path / "sim.json"
    result = run("--shape", "4x2", "--sizes", "4K,64M", "--quantized", "--json", str(path))
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["machine"]["shape"] == [4, 2] and data["machine"]["ranks"] == 8
    assert [x["level"] for x in data["machine"]["links"]] == ["inter", "intra"]
    assert set(data["collectives"]) == {"allreduce", "reduce_scatter", "allgather", "bcast", "reduce"}
    allreduce = data["collectives"]["allreduce"]
    assert [r["size"] for r in allreduce["rows"]] == [4096, 64 << 20]
    for r in allreduce["rows"]:
        assert set(r["plans"]) == {"ring", "recursive_doubling", "rabenseifner", "hierarchical", "mpi"}
        best = min(p["seconds"] for p in r["plans"].values())
        assert r["winner"]["seconds"] == best and r["winner"]["label"]
        assert r["quantized"]["quantized"] and r["quantized"]["algorithm"] == "hierarchical"
    assert allreduce["wins"][0]["from"] == 4096 and allreduce["wins"][-1]["to"] == 64 << 20
    assert data["collectives"]["bcast"]["rows"][0]["quantized"] is None


@pytest.mark.parametrize("shape,placement", [((4, 4), "roundrobin"), ((2, 2, 4), "block"), ((2, 3, 2), "roundrobin")])
def test_simulate_builds_once_and_agrees_with_cost_model(shape: tuple[int, ...], placement: str) -> None:
    spec = spec_from("dgx-ib", shape, placement)
    plain = Machine.tree(shape, spec.links, placement, **dict(spec.figures))
    assert spec.machine() is spec_from("dgx-ib", shape, placement).machine()  # built once
    results = simulate(spec.machine(), ["allreduce", "allgather", "bcast"], [4096, 16 << 20], quantized=True)
    for collective, rows in results.items():
        for row in rows:
            assert row.winner == plain.best(collective, row.size)
            assert row.quantized == (plain.best(collective, row.size, quantized=True) if row.quantized else None)
    runs = wins(results["allreduce"])
    assert runs[0]["from"] == 4096 and runs[-1]["to"] == 16 << 20


def _bench(figures: dict | None = None) -> dict:
    """A bench_allreduce JSON whose measured times are the model's predictions times known factors."""
    machine = _bench_spec(2, 2, "roundrobin", "1gbit", {}).machine()  # cost.py's 1 Gbit/s links, tbf's bucket
    big, small = 16 << 20, 64 << 10
    return {"rate": "1gbit", "placement": "roundrobin", **({"figures": figures} if figures else {}), "cases": [
        {"nodes": 2, "ranks_per_node": 2, "size": big, "algo": "hierarchical", "inter": "ring", "segments": 4,
         "mpiforge_us": machine.predict("allreduce", "hierarchical", big, "ring", 4) * 1e6 / 1.25,
         "mpi_us": machine.predict("allreduce", "mpi", big) * 1e6 * 2,
         "quantized_us": machine.predict("allreduce", "hierarchical", big, "ring", 4, True) * 1e6,
         "quantized_algo": "hierarchical", "quantized_segments": 4},
        {"nodes": 2, "ranks_per_node": 2, "size": small, "algo": "ring",
         "mpiforge_us": machine.predict("allreduce", "ring", small) * 1e6 / 2, "mpi_us": 1000.0, "quantized_us": None},
    ]}


def test_compare_ratios(tmp_path) -> None:
    rows = compare(_bench())
    big, small = 16 << 20, 64 << 10
    assert [(r["size"], r["kind"]) for r in rows] == [(big, "mpiforge"), (big, "mpi"), (big, "quantized"),
                                                      (small, "mpiforge"), (small, "mpi")]
    ratios = [r["ratio"] for r in rows]
    assert ratios[:4] == pytest.approx([1.25, 0.5, 1.0, 2.0])
    assert [r["within"] for r in rows[:4]] == [True, False, True, False]
    assert {r["source"] for r in rows} == {"model"} and rows[0]["plan"] == "hier/ring x4"

    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_bench()))
    assert run("--compare", str(path)).exit_code == 0
    result = run("--compare", str(path), "--strict")
    assert result.exit_code == 1 and "mpiforge (model): 1/2 within 30%" in result.output


def test_compare_with_measured_mpi_times_reports_them_apart() -> None:
    times = {"allreduce": [[4096, 0.001], [16 << 20, 0.5]]}
    figures = {"2x2": {"inter": {"alpha": 7e-5}, "mpi_times": {"2x2:roundrobin": times}}}
    rows = compare(_bench(figures))
    mpi = [r for r in rows if r["kind"] == "mpi"]
    assert [r["source"] for r in mpi] == ["mpi_times", "mpi_times"] and mpi[0]["predicted_us"] == pytest.approx(5e5)
    assert all(r["figures"] == "calibrated" for r in rows)
    assert rows[0]["source"] == "model" and rows[0]["ratio"] != pytest.approx(1.25)  # the measured alpha counts


def test_profile_figures_and_mpi_times(tmp_path) -> None:
    path = tmp_path / "topology.json"
    path.write_text(json.dumps({"inter": {"alpha": 7e-5, "beta": 1e-8}, "gamma": 1e-9, "mpi_times": {
        "3x2:roundrobin": {"allreduce": [[4096, 0.0004], [1 << 20, 0.016]]}}}))
    result = run("--profile", str(path), "--shape", "3x2", "--placement", "roundrobin", "--sizes", "4K",
                 "--collective", "allreduce", "--collective", "bcast")
    assert result.exit_code == 0, result.output
    assert "between nodes 70 us, 100 MB/s" in result.output and "reduction 1 GB/s" in result.output
    assert "MPI: times measured on such a job (allreduce)" in result.output
    spec = spec_from(shape=(3, 2), placement="roundrobin", profile=json.loads(path.read_text()))
    assert spec.machine().predict("allreduce", "mpi", 4096) == pytest.approx(4e-4)
    assert spec_from(shape=(3, 2), profile=json.loads(path.read_text())).mpi_times == ()  # block: not this job
