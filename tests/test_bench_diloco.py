"""scripts/bench_diloco.py: the summary and the target checks (the training itself runs in
tests/test_diloco.py; the full benchmark is a script)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_diloco.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_diloco", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _result(name: str, seed: int, loss: float, sent: int, peak: int) -> dict:
    return {"name": name, "seed": seed, "mode": name.split("-")[0], "quantize": "fp4" if "fp4" in name else "none",
            "eval_loss": loss, "bytes_total": sent, "peak_bytes": peak, "wall_s": 1.0, "steps": 100,
            "parameters": 1000, "curve": [[50, sent // 2, loss + 1], [100, sent, loss]]}


def test_medians_over_seeds_and_every_target_judged() -> None:
    bench = _bench()
    results = []
    for seed, jitter in enumerate((0.0, 0.3, -0.1)):
        results += [_result("ddp", seed, 2.0 + jitter, 5000, 50), _result("diloco", seed, 2.08 + jitter, 100, 50),
                    _result("streaming-fp4", seed, 2.2 + jitter, 14, 3), _result("streaming-fp32", seed, 2.1, 100, 13)]
    rows = bench.summarise(results)
    by = {r["name"]: r for r in rows}
    assert by["ddp"]["eval_loss"] == 2.0 and by["ddp"]["losses"] == [2.0, 2.3, 1.9]  # median of three seeds
    checks = {name: ok for name, _, ok in bench.targets(rows)}
    assert checks["DiLoCo eval loss within 5% of DDP's"]  # +4%
    assert checks["DiLoCo sends >= 50x fewer bytes than DDP"]  # exactly 50x
    assert checks["Streaming peak bytes per sync <= 1.1/F = 0.275 of DiLoCo's"]  # 3/50
    assert not checks["Streaming eval loss within 5% of DDP's"]  # +10%
    assert checks["fp4 sends >= 6x fewer bytes than fp32"]  # 7.1x
    assert not checks["fp4 adds <= 2% eval loss over fp32"]  # +4.8%
    table = bench.markdown(rows, bench.targets(rows), workers=2, seeds=3)
    assert "| streaming-fp4 | 2.2000 | +10.0% |" in table and table.count("MISSED") == 2
