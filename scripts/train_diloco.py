#!/usr/bin/env python
"""Train a small GPT-2 (transformers config, random init, byte-level tokens) on the Python
documentation shipped with the standard library (``pydoc_data.topics``), under mpiexec, with
the workers synchronised by DDP (gradients averaged every step), DiLoCo or Streaming DiLoCo.

    mpiexec -n 2 python scripts/train_diloco.py --mode ddp --steps 200
    mpiexec -n 2 python scripts/train_diloco.py --mode diloco --sync-every 50
    mpiexec -n 2 python scripts/train_diloco.py --mode streaming --fragments 4 --delay 2 --quantize fp4
    ... --checkpoint run.pt            # saved every --save-every steps; an existing one is resumed

    mpiforge ft-master --secret-file S &   # or as fault-tolerant peers; kill one, start another:
    python scripts/train_diloco.py --master 127.0.0.1:PORT --secret-file S --name a --workers 2

Rank 0 (every peer, with --master) prints one JSON line: mode, eval_loss, bytes_total (sent by
one worker), peak_bytes (the largest single sync), wall_s, steps, recoveries, joins and a digest
of the final global parameters. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass

import click
import numpy as np

log = logging.getLogger("train_diloco")


def corpus() -> np.ndarray:
    """The standard library's pydoc topics as bytes (about 0.8 MB of English and Python)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return np.frombuffer(text.encode("utf-8"), np.uint8)


def make_model(width: int, layers: int, context: int, seed: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=256, n_positions=context, n_embd=width, n_layer=layers, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config)


def batches(data: np.ndarray, batch: int, context: int, rng: np.random.Generator):
    import torch

    while True:
        starts = rng.integers(0, data.size - context - 1, batch)
        rows = np.stack([data[s:s + context] for s in starts]).astype(np.int64)
        yield torch.from_numpy(rows)


def evaluate(model, data: np.ndarray, context: int, count: int = 256) -> float:
    """Mean loss over ``count`` windows spread evenly over ``data`` (256 x 64 = 16 K tokens)."""
    import torch

    starts = np.linspace(0, data.size - context, min(count, data.size // context), dtype=np.int64)
    rows = np.stack([data[a:a + context] for a in starts]).astype(np.int64)
    with torch.no_grad():
        return float(model(torch.from_numpy(rows), labels=torch.from_numpy(rows)).loss)


def learning_rate(s: Settings, step: int) -> float:
    """The inner learning rate at ``step`` (0-based): linear warmup over the first 5% of the
    steps, then cosine down to 10% of ``s.lr``; or constant. A function of the step only, so a
    resumed or joining worker picks it up where the group is."""
    if s.schedule == "constant":
        return s.lr
    warmup = max(1, s.steps // 20)
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, s.steps - warmup)
    return s.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def evaluate_agreed(model, sync, data: np.ndarray, context: int) -> float:
    """The eval loss of the model every worker agrees on (DiLoCo: its global copy), leaving the
    worker's own parameters as they were."""
    import torch

    if not hasattr(sync, "use_global"):
        return evaluate(model, data, context)
    saved = [p.detach().clone() for p in model.parameters()]
    sync.use_global()
    try:
        return evaluate(model, data, context)
    finally:
        with torch.no_grad():
            for p, keep in zip(model.parameters(), saved):
                p.copy_(keep)


class DDP:
    """Gradients averaged over the workers after every backward pass (one flat all-reduce)."""

    def __init__(self, model, collective) -> None:
        self.model, self.collective = model, collective
        self.bytes_sent = self.peak_bytes = 0
        flat = self._flat()
        self.collective.broadcast(flat, root=0)
        self._scatter_params(flat)

    def _flat(self) -> np.ndarray:
        return np.concatenate([p.detach().numpy().reshape(-1) for p in self.model.parameters()])

    def _scatter_params(self, flat: np.ndarray) -> None:
        import torch

        offset = 0
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.from_numpy(flat[offset:offset + p.numel()]).view_as(p))
                offset += p.numel()

    def average_gradients(self) -> None:
        import torch

        params = [p for p in self.model.parameters() if p.grad is not None]
        grads = np.concatenate([p.grad.numpy().reshape(-1) for p in params])
        mean = self.collective.allreduce(grads, op="avg")
        size = self.collective.size
        self.bytes_sent += 2 * (size - 1) * grads.nbytes // size
        self.peak_bytes = max(self.peak_bytes, grads.nbytes)
        offset = 0
        for p in params:
            p.grad.copy_(torch.from_numpy(mean[offset:offset + p.numel()]).view_as(p.grad))
            offset += p.numel()


@dataclass
class Settings:
    """One training run (the command-line options; see ``--help``)."""

    mode: str = "diloco"
    steps: int = 200
    sync_every: int = 50
    fragments: int = 4
    delay: int = 2
    alpha: float = 0.5
    quantize: str = "none"
    error_feedback: bool = True  # carry what quantization dropped into the next sync (with --quantize)
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    lr: float = 3e-3
    schedule: str = "constant"  # of the inner learning rate: "constant", or "cosine" (5% warmup, down to 10%)
    batch: int = 8
    context: int = 64
    width: int = 192
    layers: int = 4
    seed: int = 0
    eval_every: int = 0  # also record (step, bytes sent, eval loss) every this many steps (0: only at the end)


def train(settings: Settings, collective, worker: str, checkpoint: str | None = None, save_every: int = 100) -> dict:
    """Train one worker of the group behind ``collective``; the run's figures as a dict."""
    import torch

    from mpiforge.comms.diloco import DiLoCo

    s = settings
    data = corpus()
    split = int(data.size * 0.9)
    train_data, held_out = data[:split], data[split:]
    model = make_model(s.width, s.layers, s.context, s.seed)
    inner = torch.optim.AdamW(model.parameters(), lr=s.lr)
    path = f"{checkpoint}.{worker}" if checkpoint else None
    saved = torch.load(path, weights_only=False) if path and os.path.exists(path) else None
    if saved:
        model.load_state_dict(saved["model"])
        inner.load_state_dict(saved["inner"])
        log.info("worker %s resumes from %s at step %d", worker, path, saved["step"])
    if s.mode == "ddp":
        sync = DDP(model, collective)
        start_step = saved["step"] if saved else 0
    else:  # (on fault-tolerant peers the group's state wins over an old checkpoint)
        streaming = s.mode == "streaming"
        sync = DiLoCo(model, inner, collective, sync_every=s.sync_every, outer_lr=s.outer_lr,
                      outer_momentum=s.outer_momentum,
                      fragments=s.fragments if streaming else 1, delay=s.delay if streaming else 0,
                      alpha=s.alpha if streaming else 1.0, quantize=None if s.quantize == "none" else s.quantize,
                      error_feedback=s.error_feedback, state=saved["sync"] if saved else None)
        start_step = sync.step_count  # a joiner starts where the group is
    rng = np.random.default_rng([s.seed, zlib.crc32(worker.encode()), start_step])
    stream = batches(train_data, s.batch, s.context, rng)
    began, saving, curve = time.perf_counter(), False, []
    for step in range(start_step, s.steps):
        rows = next(stream)
        loss = model(rows, labels=rows).loss
        inner.zero_grad()
        loss.backward()
        if s.mode == "ddp":
            sync.average_gradients()
        for group in inner.param_groups:
            group["lr"] = learning_rate(s, step)
        inner.step()
        if s.mode != "ddp":
            sync.step()
        saving = saving or bool(path) and (step + 1) % save_every == 0
        if saving and (s.mode == "ddp" or not sync.in_flight):  # (a checkpoint waits for in-flight syncs)
            saving = False
            torch.save({"model": model.state_dict(), "inner": inner.state_dict(), "step": step + 1,
                        "sync": None if s.mode == "ddp" else sync.state_dict()}, path)
        if (step + 1) % 50 == 0:
            log.info("worker %s step %d loss %.3f", worker, step + 1, loss.item())
        if s.eval_every and (step + 1) % s.eval_every == 0:
            sent = sync.bytes_sent if s.mode == "ddp" else sync.stats.bytes_sent
            curve.append([step + 1, int(sent), evaluate_agreed(model, sync, held_out, s.context)])
    wall = time.perf_counter() - began
    result = {"mode": s.mode, "quantize": s.quantize, "worker": worker, "steps": s.steps, "start_step": start_step,
              "wall_s": wall, "parameters": sum(p.numel() for p in model.parameters())}
    if s.mode == "ddp":
        result.update(bytes_total=int(sync.bytes_sent), peak_bytes=int(sync.peak_bytes))
    else:
        stats = sync.stats
        result.update(bytes_total=int(stats.bytes_sent), peak_bytes=int(stats.peak_bytes), syncs=stats.syncs,
                      comm_s=stats.comm_seconds, recoveries=stats.recoveries, joins=stats.joins)
        sync.use_global()  # evaluate the global copy, the model every worker agrees on
    result["eval_loss"] = evaluate(model, held_out, s.context)
    result["curve"] = curve
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    result["digest"] = digest.hexdigest()[:16]
    return result


def peer_collective(master: str, secret_file: str, name: str, workers: int):
    """A fault-tolerant peer group member; founders wait until ``workers`` members are in."""
    from mpiforge.comms.ft.collective import PeerCollective
    from mpiforge.comms.ft.peer import Peer

    host, _, port = master.rpartition(":")
    peer = Peer((host, int(port)), secret_file=secret_file, name=name)
    peer.connect(timeout=120)
    collective = PeerCollective(peer)
    deadline = time.monotonic() + 120
    while not collective.needs_state and peer.world_size < workers:
        if time.monotonic() > deadline:
            raise click.ClickException(f"only {peer.world_size} of {workers} workers joined within 120 s")
        peer.update_topology(timeout=120)
        time.sleep(0.05)
    return collective


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--mode", type=click.Choice(["ddp", "diloco", "streaming"]), default="diloco", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Inner steps per worker.")
@click.option("--sync-every", type=click.IntRange(min=1), default=50, show_default=True, help="H (diloco, streaming).")
@click.option("--fragments", type=click.IntRange(min=1), default=4, show_default=True, help="F (streaming).")
@click.option("--delay", type=click.IntRange(min=0), default=2, show_default=True, help="Overlap steps (streaming).")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Merge weight of the global copy (streaming).")
@click.option("--quantize", type=click.Choice(["none", "int8", "fp8", "int4", "fp4"]), default="none", show_default=True)
@click.option("--error-feedback/--no-error-feedback", default=True, show_default=True,
              help="With --quantize: add what quantization dropped from a sync to the next one.")
@click.option("--outer-lr", type=float, default=0.7, show_default=True, help="Outer Nesterov SGD learning rate.")
@click.option("--outer-momentum", type=float, default=0.9, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Inner AdamW learning rate (peak).")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Inner learning rate: 5% warmup then cosine to 10%, or constant.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--context", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--width", type=click.IntRange(min=16), default=192, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also record the eval loss every this many steps (0: only at the end).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Save to PATH.<worker>; resume if it exists.")
@click.option("--save-every", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--master", default=None, metavar="HOST:PORT",
              help="Train as a fault-tolerant peer of this ft-master instead of under mpiexec.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), default=None, help="With --master.")
@click.option("--name", default="", help="This peer's name (with --master).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --master: founders wait for this many; later peers join the running group.")
def main(master, secret_file, name, workers, checkpoint, save_every, **options) -> None:
    """Train a small GPT-2 on pydoc text with DDP, DiLoCo or Streaming DiLoCo, under mpiexec
    or as fault-tolerant peers (--master)."""
    import torch

    from mpiforge.comms.collective import (
        MPICollective,  # (imports MPI: before any peer connects)
    )

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    settings = Settings(**options)
    if master is None:
        from mpi4py import MPI

        collective, worker, report = MPICollective(MPI.COMM_WORLD), f"rank{MPI.COMM_WORLD.rank}", MPI.COMM_WORLD.rank == 0
    else:
        if settings.mode == "ddp":
            raise click.UsageError("--master trains with --mode diloco or streaming (DDP would sync every step)")
        if secret_file is None:
            raise click.UsageError("--master needs --secret-file (the group's shared secret)")
        collective = peer_collective(master, secret_file, name, workers)
        worker, report = name or collective.peer.peer_id, True
    try:
        result = train(settings, collective, worker, checkpoint, save_every)
    finally:
        if master is not None:
            collective.peer.close()
    if report:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
