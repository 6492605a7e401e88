#!/usr/bin/env python
"""Train a small GPT-2 (transformers config, random init, byte-level tokens) on the Python
documentation shipped with the standard library (``pydoc_data.topics``), under mpiexec, with
the workers synchronised by DDP (gradients averaged every step), DiLoCo or Streaming DiLoCo.

    mpiexec -n 2 python scripts/train_diloco.py --mode ddp --steps 200
    mpiexec -n 2 python scripts/train_diloco.py --mode diloco --sync-every 50
    mpiexec -n 2 python scripts/train_diloco.py --mode streaming --fragments 4 --delay 2 --quantize fp4
    ... --checkpoint run.pt            # saved every --save-every steps; an existing one is resumed

Rank 0 prints one JSON line: mode, eval_loss, bytes_total (sent by one worker), peak_bytes (the
largest single sync), wall_s, steps. Nothing is downloaded.
"""
from __future__ import annotations

import json
import logging
import os
import time

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


def evaluate(model, data: np.ndarray, context: int, count: int = 16) -> float:
    import torch

    rows = np.stack([data[i * context:(i + 1) * context] for i in range(count)]).astype(np.int64)
    with torch.no_grad():
        return float(model(torch.from_numpy(rows), labels=torch.from_numpy(rows)).loss)


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--mode", type=click.Choice(["ddp", "diloco", "streaming"]), default="diloco", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Inner steps per worker.")
@click.option("--sync-every", type=click.IntRange(min=1), default=50, show_default=True, help="H (diloco, streaming).")
@click.option("--fragments", type=click.IntRange(min=1), default=4, show_default=True, help="F (streaming).")
@click.option("--delay", type=click.IntRange(min=0), default=2, show_default=True, help="Overlap steps (streaming).")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Merge weight of the global copy (streaming).")
@click.option("--quantize", type=click.Choice(["none", "int8", "fp8", "int4", "fp4"]), default="none", show_default=True)
@click.option("--outer-lr", type=float, default=0.7, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Inner AdamW learning rate.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--context", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--width", type=click.IntRange(min=16), default=192, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Save here; resume if it exists.")
@click.option("--save-every", type=click.IntRange(min=1), default=100, show_default=True)
def main(mode, steps, sync_every, fragments, delay, alpha, quantize, outer_lr, lr, batch, context, width, layers,
         seed, checkpoint, save_every) -> None:
    """Train a small GPT-2 on pydoc text with DDP, DiLoCo or Streaming DiLoCo (run under mpiexec)."""
    import torch
    from mpi4py import MPI

    from mpiforge.comms.collective import MPICollective
    from mpiforge.comms.diloco import DiLoCo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    collective = MPICollective(comm)
    data = corpus()
    split = int(data.size * 0.9)
    train, held_out = data[:split], data[split:]
    model = make_model(width, layers, context, seed)
    inner = torch.optim.AdamW(model.parameters(), lr=lr)
    codec = None if quantize == "none" else quantize
    if mode == "ddp":
        sync = DDP(model, collective)
    else:
        streaming = mode == "streaming"
        sync = DiLoCo(model, inner, collective, sync_every=sync_every, outer_lr=outer_lr,
                      fragments=fragments if streaming else 1, delay=delay if streaming else 0,
                      alpha=alpha if streaming else 1.0, quantize=codec)
    start_step = 0
    path = f"{checkpoint}.rank{comm.rank}" if checkpoint else None
    if path and os.path.exists(path):
        state = torch.load(path, weights_only=False)
        model.load_state_dict(state["model"])
        inner.load_state_dict(state["inner"])
        if mode != "ddp":
            sync.load_state_dict(state["sync"])
        start_step = state["step"]
        log.info("rank %d resumed from %s at step %d", comm.rank, path, start_step)
    rng = np.random.default_rng(seed * 1000 + comm.rank + start_step)
    stream = batches(train, batch, context, rng)
    began, saving = time.perf_counter(), False
    for step in range(start_step, steps):
        rows = next(stream)
        loss = model(rows, labels=rows).loss
        inner.zero_grad()
        loss.backward()
        if mode == "ddp":
            sync.average_gradients()
        inner.step()
        if mode != "ddp":
            sync.step()
        saving = saving or bool(path) and (step + 1) % save_every == 0
        if saving and (mode == "ddp" or not sync.in_flight):  # (a checkpoint waits for in-flight syncs)
            saving = False
            torch.save({"model": model.state_dict(), "inner": inner.state_dict(), "step": step + 1,
                        "sync": None if mode == "ddp" else sync.state_dict()}, path)
        if comm.rank == 0 and (step + 1) % 50 == 0:
            log.info("step %d loss %.3f", step + 1, loss.item())
    wall = time.perf_counter() - began
    if mode == "ddp":
        sent, peak = sync.bytes_sent, sync.peak_bytes
    else:
        sent, peak = sync.stats.bytes_sent, sync.stats.peak_bytes
        sync.use_global()  # evaluate the global copy, the model every worker agrees on
    eval_loss = evaluate(model, held_out, context)
    if comm.rank == 0:
        print(json.dumps({"mode": mode, "quantize": quantize, "eval_loss": eval_loss, "bytes_total": int(sent),
                          "peak_bytes": int(peak), "wall_s": wall, "steps": steps,
                          "parameters": sum(p.numel() for p in model.parameters())}), flush=True)


if __name__ == "__main__":
    main()
