"""The demo's DiLoCo part: a small torch model trained by every rank of the job, synchronised
every step (DDP-like) and by Streaming DiLoCo with fp4 payloads, from the same start.

It checks what a training job relies on: every worker ends with the same global parameters
(bit-identical), the loss goes down, and Streaming DiLoCo sends a small fraction of the bytes.
Skipped, with the reason, when torch is not installed.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mpi4py import MPI

    from ..demo import DemoConfig, Section

__all__ = ["diloco_part"]

STEPS, SYNC_EVERY, FRAGMENTS = 48, 8, 2


def _train(comm: MPI.Comm, streaming: bool) -> tuple[float, float, int, str]:
    """(first loss, last loss, bytes sent by this worker, digest of the agreed parameters)."""
    import torch

    from .collective import MPICollective
    from .diloco import DiLoCo

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 16))
    inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
    target = torch.nn.Linear(16, 16)  # what every worker learns (the same seed everywhere)
    generator = torch.Generator().manual_seed(1000 + comm.rank)  # each worker its own data
    if streaming:
        sync = DiLoCo(model, inner, MPICollective(comm), sync_every=SYNC_EVERY, outer_lr=1.0, outer_momentum=0.0,
                      fragments=FRAGMENTS, delay=1, alpha=0.5, quantize="fp4")
    collective, sent, losses = MPICollective(comm), 0, []
    for _ in range(STEPS):
        x = torch.randn(32, 16, generator=generator)
        with torch.no_grad():
            y = target(x)
        loss = ((model(x) - y) ** 2).mean()
        inner.zero_grad()
        loss.backward()
        if not streaming:  # gradients averaged every step
            grads = np.concatenate([p.grad.numpy().ravel() for p in model.parameters()])
            mean = collective.allreduce(grads, op="avg")
            sent += 2 * (comm.size - 1) * grads.nbytes // comm.size
            offset = 0
            for p in model.parameters():
                p.grad.copy_(torch.from_numpy(mean[offset:offset + p.numel()]).view_as(p))
                offset += p.numel()
        inner.step()
        if streaming:
            sync.step()
        losses.append(float(comm.allreduce(loss.item())) / comm.size)
    if streaming:
        while sync.in_flight:  # (never at this schedule's last step, but a demo should not assume it)
            sync.step()
        sync.use_global()
        sent = sync.stats.bytes_sent
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
    return losses[0], losses[-1], sent, digest


def diloco_part(comm: MPI.Comm, config: DemoConfig) -> list[Section]:
    """Every-step averaging against Streaming DiLoCo (fp4) on this job (collective over ``comm``)."""
    from mpi4py import MPI

    from ..demo import Section

    title = "Streaming DiLoCo (torch model, fp4 fragments)"
    try:
        import torch  # noqa: F401
    except ImportError:
        return [Section(title, [("skipped", "torch is not installed: pip install 'mpiforge[llm]'")])]
    rows, ok = [], True
    for name, streaming in (("every step", False), (f"streaming H={SYNC_EVERY} F={FRAGMENTS} fp4", True)):
        first, last, sent, digest = _train(comm, streaming)
        same = bool(comm.allreduce(int(comm.bcast(digest, root=0) == digest), op=MPI.MIN))
        learned = last < 0.5 * first
        ok = ok and same and learned
        rows.append((name, f"{first:.3f}", f"{last:.3f}", f"{sent / 1e3:.1f} KB",
                     "identical" if same else "DIFFERENT", "yes" if learned else "NO"))
    note = f"{comm.size} workers, {STEPS} inner steps; scripts/bench_diloco.py compares on a GPT-2 at scale"
    return [Section(title, rows, ("sync", "loss first", "loss last", "bytes sent / worker", "parameters on all ranks",
                                  "learned"), note, ok)]
