"""DiLoCo: the fragment schedule, H=1 equals parameter averaging, identical global copies."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpiforge.comms.diloco import due_fragments, strided_fragments
from mpiforge.testing import run_ranks

torch = pytest.importorskip("torch")


def test_strided_fragments_cover_every_parameter_once() -> None:
    assert strided_fragments(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert strided_fragments(4, 1) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="fragments"):
        strided_fragments(3, 4)


def test_due_fragments_are_staggered_over_the_period() -> None:
    schedule = {step: due_fragments(step, 8, 4) for step in range(25)}
    assert schedule[0] == [] and schedule[8] == [0] and schedule[16] == [0]
    assert schedule[2] == [1] and schedule[4] == [2] and schedule[6] == [3] and schedule[10] == [1]
    for f in range(4):  # each fragment once per period
        assert sum(f in due for step, due in schedule.items() if 1 <= step <= 16) == 2
    assert due_fragments(5, 5, 1) == [0] and due_fragments(4, 5, 1) == []


def _setup(comm, seed: int = 0):
    torch.manual_seed(1234 + comm.rank)  # different weights: DiLoCo starts everyone from worker 0's
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    inner = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed + 99 * comm.rank)  # each worker its own data
    return model, inner, generator


def _inner_step(model, inner, generator) -> None:
    x = torch.randn(16, 6, generator=generator)
    loss = ((model(x) - x[:, :3]) ** 2).mean()
    inner.zero_grad()
    loss.backward()
    inner.step()


def _flat(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().reshape(-1) for p in model.parameters()])


def body_h1_is_averaging(comm, quantize) -> None:
    from mpiforge.comms.collective import MPICollective
    from mpiforge.comms.diloco import DiLoCo

    model, inner, generator = _setup(comm)
    diloco = DiLoCo(model, inner, MPICollective(comm), sync_every=1, outer_lr=1.0, outer_momentum=0.0,
                    nesterov=False, quantize=quantize, error_feedback=False)
    start = comm.allgather(_flat(model))
    assert all(np.array_equal(start[0], s) for s in start), "workers did not start from the same weights"
    for _ in range(5):
        _inner_step(model, inner, generator)
        local = comm.allgather(_flat(model))
        before = comm.allgather(diloco._all_globals())[0]
        assert diloco.step() == [0]
        want = np.mean(local, axis=0)
        got = _flat(model)
        if quantize is None:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:  # int8: each pseudo-gradient off by at most half a step of its block's scale
            bound = max(np.abs(before - loc).max() for loc in local) / 127
            assert np.abs(got - want).max() <= bound, (np.abs(got - want).max(), bound)
        everyone = comm.allgather(got)
        assert all(np.array_equal(everyone[0], e) for e in everyone), "workers hold different parameters"
    assert diloco.stats.syncs == 5 and diloco.stats.bytes_sent > 0


def body_streaming_keeps_globals_identical(comm) -> None:
    from mpiforge.comms.collective import MPICollective
    from mpiforge.comms.diloco import DiLoCo

    model, inner, generator = _setup(comm, seed=7)
    diloco = DiLoCo(model, inner, MPICollective(comm), sync_every=4, fragments=2, delay=1, alpha=0.5,
                    quantize="fp4")
    merged = []
    for _ in range(12):
        _inner_step(model, inner, generator)
        merged.append(diloco.step())
    assert merged[:7] == [[], [], [1], [], [0], [], [1]], merged  # starts at 2 and 4, merged one step later
    for fragment in diloco.fragments:
        everyone = comm.allgather(fragment.global_.tobytes())
        assert all(e == everyone[0] for e in everyone), "global copies diverged"
    largest = max(f.global_.size for f in diloco.fragments)
    assert diloco.stats.peak_bytes == diloco.codec.payload_nbytes(largest)  # one fragment at a time
    assert diloco.codec.payload_nbytes(largest) == (largest + 1) // 2 + 4  # 4 bits a value, one block scale
    while diloco.in_flight:  # a checkpoint waits for the sync in flight
        _inner_step(model, inner, generator)
        diloco.step()
    state = diloco.state_dict()
    model2, inner2, _ = _setup(comm, seed=8)
    resumed = DiLoCo(model2, inner2, MPICollective(comm), sync_every=4, fragments=2, delay=1, alpha=0.5,
                     quantize="fp4")
    resumed.load_state_dict(state)
    assert resumed.step_count == diloco.step_count and resumed.stats.syncs == diloco.stats.syncs
    for mine, theirs in zip(resumed.fragments, diloco.fragments):
        assert np.array_equal(mine.global_, theirs.global_) and np.array_equal(mine.momentum, theirs.momentum)


def body_error_feedback_loses_nothing_for_good(comm) -> None:
    from mpiforge.comms.collective import MPICollective
    from mpiforge.comms.diloco import DiLoCo

    model, inner, generator = _setup(comm, seed=3)
    diloco = DiLoCo(model, inner, MPICollective(comm), sync_every=1, outer_lr=1.0, outer_momentum=0.0,
                    nesterov=False, quantize="fp4")
    first = diloco._all_globals().astype(np.float64)
    true_total = np.zeros_like(first)  # the sum of the unquantized averaged pseudo-gradients
    for _ in range(12):
        before = diloco._all_globals().astype(np.float64)
        _inner_step(model, inner, generator)
        true_total += before - np.mean(comm.allgather(_flat(model)), axis=0)
        diloco.step()
    residual = np.mean(comm.allgather(diloco.fragments[0].residual), axis=0)
    # the updates summed to the unquantized ones, except what the last sync still holds back
    np.testing.assert_allclose(diloco._all_globals(), first - true_total + residual, rtol=1e-5, atol=1e-6)
    assert np.abs(residual).max() > 0  # fp4 did drop something, which is carried, not lost
    assert np.abs(residual).max() < 0.1 * np.abs(true_total).max()


@pytest.mark.mpi
def test_error_feedback_carries_what_quantization_dropped() -> None:
    run_ranks(body_error_feedback_loses_nothing_for_good, 2, 120)


@pytest.mark.mpi
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_h1_with_plain_outer_sgd_is_parameter_averaging(quantize) -> None:
    run_ranks(body_h1_is_averaging, 2, 120, args=(quantize,))


@pytest.mark.mpi
def test_streaming_fragments_keep_global_copies_identical() -> None:
    run_ranks(body_streaming_keeps_globals_identical, 2, 120)


SCRIPT = Path(__file__).parent.parent / "scripts" / "train_diloco.py"
TINY = ["--steps", "8", "--sync-every", "4", "--fragments", "2", "--delay", "1", "--width", "32", "--layers", "1",
        "--context", "16", "--quantize", "int8"]


@pytest.mark.mpi
def test_train_script_runs_every_mode_and_diloco_sends_less(tmp_path) -> None:
    pytest.importorskip("transformers")
    from mpiforge.launch import mpiexec_command

    script = SCRIPT
    results = {}
    for mode in ("ddp", "diloco", "streaming", "streaming"):  # streaming twice: fixed seeds, same bits
        argv = [sys.executable, str(script), "--mode", mode, *TINY]
        proc = subprocess.run(mpiexec_command(2, argv), check=False, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        assert results.get(mode, run)["digest"] == run["digest"], "the same seeds trained different weights"
        results[mode] = run
    for run in results.values():
        assert np.isfinite(run["eval_loss"]) and run["bytes_total"] > 0
    assert results["diloco"]["bytes_total"] * 4 <= results["ddp"]["bytes_total"]  # DDP: 8 syncs, DiLoCo: 2
    assert results["streaming"]["peak_bytes"] < results["diloco"]["peak_bytes"]  # one fragment at a time


def test_ft_peers_survive_a_killed_worker_and_admit_a_joiner() -> None:
    """Three peers train; one is SIGKILLed (its sync aborts and is retried by the survivors), a
    fourth joins the running group (it receives global copies, momenta, step and syncs in
    flight); everyone ends with the same global parameters."""
    pytest.importorskip("transformers")
    from mpiforge.comms.ft.harness import Cluster

    with Cluster(heartbeat_timeout=2.0) as cluster:
        host, port = cluster.start_master()

        def worker(name: str):
            argv = [sys.executable, str(SCRIPT), "--master", f"{host}:{port}", "--secret-file",
                    str(cluster.secret_file), "--name", name, "--workers", "3", "--mode", "streaming", *TINY,
                    "--steps", "1200"]
            return cluster.start(name, argv)

        def reached(process, step: int) -> bool:
            return f"worker {process.name} step {step} " in process.stderr(100_000)

        a, b, c = worker("a"), worker("b"), worker("c")
        cluster.wait_for(lambda: reached(a, 100), 120, "100 steps of the founders")
        cluster.kill(c)
        time.sleep(1.0)
        d = worker("d")
        results = [p.wait_event(lambda e: "digest" in e, 240) for p in (a, b, d)]
    assert len({r["digest"] for r in results}) == 1, results
    assert results[0]["recoveries"] >= 1 and results[0]["joins"] >= 1, results[0]
    assert 100 < results[2]["start_step"] < 1200 and np.isfinite(results[2]["eval_loss"])
