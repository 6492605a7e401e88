"""DiLoCo and Streaming DiLoCo: workers that synchronise every ``sync_every`` inner steps.

Each worker trains its own copy with its inner optimizer; every H steps the pseudo-gradient
(global minus local parameters) is averaged over the workers through any ``Collective`` and an
outer Nesterov SGD step moves the global copy (float32, on the host), which then replaces (or,
with ``alpha`` < 1, is mixed into) the local parameters. Streaming: the parameters are split
into ``fragments`` (strided over the parameter list, so each fragment spans the whole depth),
fragment f syncs at steps where ``step % H == f * H // F``, and its all-reduce may run during
``delay`` further inner steps before it is merged. ``quantize`` sends each worker's
pseudo-gradient through a codec (int8, fp8, int4, fp4; one scale per ``quantize_block``
values) and sums the decoded values in float32, in worker order, so every worker computes the
same bits. With ``error_feedback`` (the default) what quantization dropped from a fragment's
pseudo-gradient is added to that fragment's next one, so nothing is lost for good: over many
syncs the updates sum to the unquantized ones, up to one sync's rounding.

    diloco = DiLoCo(model, torch.optim.AdamW(model.parameters()), MPICollective(comm), sync_every=50)
    for batch in data:
        loss = model(batch).loss; loss.backward(); opt.step(); opt.zero_grad()
        diloco.step()          # counts the inner step; syncs the fragments that are due
    diloco.stats               # bytes sent / received, peak bytes per sync, seconds in communication
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from .collective import Collective, ElasticCollective, Handle
from .quantize import get_codec

__all__ = ["DiLoCo", "SyncStats", "due_fragments", "strided_fragments"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def strided_fragments(count: int, fragments: int) -> list[list[int]]:
    """Parameter indices of each fragment: index i goes to fragment i % fragments."""
    if fragments < 1 or fragments > max(count, 1):
        raise ValueError(f"fragments must be between 1 and the number of parameters ({count}), got {fragments}")
    return [list(range(f, count, fragments)) for f in range(fragments)]


def due_fragments(step: int, sync_every: int, fragments: int) -> list[int]:
    """The fragments whose sync starts after inner step ``step`` (1-based): fragment f at the
    steps where step % H == f * H // F, staggered evenly over the H steps (never at step 0)."""
    if step < 1:
        return []
    return [f for f in range(fragments) if step % sync_every == f * sync_every // fragments]


@dataclass
class SyncStats:
    """What synchronisation cost one worker so far."""

    syncs: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    peak_bytes: int = 0  # the largest payload of one fragment sync (what one sync puts on the wire)
    comm_seconds: float = 0.0  # starting and waiting for the all-reduces
    compute_seconds: float = 0.0  # between syncs (inner steps), as seen by step()
    recoveries: int = 0  # failed collectives after which the group was rebuilt and the syncs retried
    joins: int = 0  # admissions of joiners, which then received the state
    per_sync: list[dict] = field(default_factory=list)


@dataclass
class _Fragment:
    params: list  # torch parameters
    global_: np.ndarray  # float32, flat
    momentum: np.ndarray
    residual: np.ndarray  # what quantization left out of this worker's last pseudo-gradient (error feedback)


@dataclass
class _Pending:
    index: int
    merge_at: int
    contribution: np.ndarray  # float32: the pseudo-gradient (elastic: then this worker's weight, 1 or 0)
    handle: Handle | None = None
    average: np.ndarray | None = None
    payload: np.ndarray | None = None  # the quantized pseudo-gradient, encoded once (a retry resends it)

    @property
    def launched(self) -> bool:
        return self.handle is not None or self.average is not None


class DiLoCo:
    """Outer synchronisation around a torch model and its inner optimizer (see module docstring).

    On an ``ElasticCollective`` (fault-tolerant peers) a failed sync rebuilds the group from the
    survivors and is retried without the dead; joiners are admitted at steps where a fragment's
    sync starts and receive the global copies, outer momenta, step and syncs in flight (to which
    they add zero weight), so that every worker keeps the same global copy.
    """

    MAX_RETRIES = 8  # consecutive failed attempts of one sync before the error is raised

    def __init__(self, model: Any, inner_optimizer: Any, collective: Collective, sync_every: int = 50,
                 outer_lr: float = 0.7, outer_momentum: float = 0.9, nesterov: bool = True, fragments: int = 1,
                 delay: int = 0, alpha: float = 1.0, quantize: str | None = None, quantize_block: int = 64,
                 error_feedback: bool = True, state: dict | None = None) -> None:
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        if not 0 <= delay < sync_every:
            raise ValueError(f"delay must be in [0, sync_every), got {delay} with sync_every={sync_every}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if getattr(collective, "quantize", None):
            raise ValueError("this collective quantizes every all-reduce: give it quantize=None and pass "
                             "quantize= to DiLoCo instead (which keeps the workers' weights exact)")
        self.model, self.inner_optimizer, self.collective = model, inner_optimizer, collective
        self.sync_every, self.delay, self.alpha = sync_every, delay, alpha
        self.outer_lr, self.outer_momentum, self.nesterov = outer_lr, outer_momentum, nesterov
        self.codec = get_codec(quantize, block=quantize_block)
        self.error_feedback = error_feedback and self.codec is not None
        self.elastic = isinstance(collective, ElasticCollective)
        self._weighted = int(self.elastic)  # a weight travels with each contribution (members change)
        params = [p for p in model.parameters() if p.requires_grad]
        self.fragments = []
        for indices in strided_fragments(len(params), fragments):
            chosen = [params[i] for i in indices]
            flat = self._gather(chosen)
            self.fragments.append(_Fragment(chosen, flat, np.zeros_like(flat), np.zeros_like(flat)))
        self.step_count = 0
        self.stats = SyncStats()
        self._pending: list[_Pending] = []
        self._started = np.full(fragments, -1, np.int64)  # the step at which each fragment's last sync started
        self._merged: list[int] = []  # fragments merged during the current step
        self._stale = False  # the group changed: share the state and restart the syncs in flight
        self._admitted = False  # (shared) whether this step's admission of joiners has happened
        if state is not None:
            self.load_state_dict(state)
        if self.elastic:  # the most common state wins (ties: the first worker's); a joiner receives it
            self._stale = True
            self._guarded(self._advance)
            if not self._admitted:
                self._admit_joiners()
            log.info("in a group of %d at step %d, %d sync(s) in flight", collective.size, self.step_count,
                     len(self._pending))
        elif state is None:
            self._set_globals(collective.broadcast(self._all_globals(), root=0))  # all start from worker 0's
        if self.elastic or state is None:  # (a resumed MPI worker keeps its own local parameters)
            for fragment in self.fragments:
                self._scatter(fragment.params, fragment.global_)
        self._last = time.perf_counter()

    # -- the training loop's hook -----------------------------------------------------------------

    def step(self) -> list[int]:
        """Call after every inner optimizer step; returns the fragments merged now."""
        now = time.perf_counter()
        self.stats.compute_seconds += now - self._last
        self.step_count += 1
        self._merged, self._admitted = [], False
        self._guarded(self._advance)
        self._admit_joiners()
        self._last = time.perf_counter()
        self.stats.comm_seconds += self._last - now
        return list(self._merged)

    def _advance(self) -> None:
        """This step's syncs: start the due fragments not started yet, merge the ready ones. After
        a failure it runs again and does what is left (the same on a worker that just joined)."""
        for f in due_fragments(self.step_count, self.sync_every, len(self.fragments)):
            if self._started[f] != self.step_count:
                self._start(f)
        for pending in sorted((p for p in self._pending if p.merge_at <= self.step_count), key=lambda p: p.index):
            self._merge(pending)
            self._pending.remove(pending)
            self._merged.append(pending.index)

    def _start(self, index: int) -> None:
        fragment = self.fragments[index]
        n = fragment.global_.size
        contribution = np.empty(n + self._weighted, np.float32)
        np.subtract(fragment.global_, self._gather(fragment.params), out=contribution[:n])  # the pseudo-gradient
        contribution[n:] = 1
        pending = _Pending(index, self.step_count + self.delay, contribution)
        if self.codec is not None:
            pending.payload = self._encode(fragment, contribution[:n])
        self._pending.append(pending)
        self._started[index] = self.step_count
        self.stats.syncs += 1
        log.debug("fragment %d: sync started at step %d", index, self.step_count)
        self._launch(pending)

    def _launch(self, pending: _Pending) -> None:
        """Start the all-reduce of a contribution (quantized: gather and reduce it now)."""
        n, size = pending.contribution.size - self._weighted, max(self.collective.size, 1)
        if self.codec is None:
            nbytes = pending.contribution.nbytes
            sent = 2 * (size - 1) * nbytes // size  # a ring's share
        else:
            nbytes = self.codec.payload_nbytes(n) + 4 * self._weighted
            sent = (size - 1) * nbytes
        self.stats.bytes_sent += sent
        self.stats.bytes_received += sent
        self.stats.peak_bytes = max(self.stats.peak_bytes, nbytes)
        self.stats.per_sync.append({"step": self.step_count, "fragment": pending.index, "bytes": nbytes})
        if self.codec is None:
            op = "sum" if self._weighted else "avg"
            pending.handle = self.collective.allreduce_async(pending.contribution, op=op)
        else:
            pending.average = self._gathered_average(pending)

    def _encode(self, fragment: _Fragment, pseudo_gradient: np.ndarray) -> np.ndarray:
        """The payload of ``pseudo_gradient`` (with error feedback: plus what the last one lost;
        the new loss is kept)."""
        if not self.error_feedback:
            return self.codec.encode(pseudo_gradient)
        wanted = pseudo_gradient + fragment.residual
        sent = wanted.copy()
        payload = self.codec.encode(sent, roundtrip=True)  # sent: the values the payload decodes to
        np.subtract(wanted, sent, out=fragment.residual)
        return payload

    def _gathered_average(self, pending: _Pending) -> np.ndarray:
        """Every worker's encoded pseudo-gradient (elastic: its weight in 4 more bytes), decoded
        and summed in float32 in worker order: the same bits everywhere."""
        contribution = pending.contribution
        n = contribution.size - self._weighted
        payload = pending.payload if pending.payload is not None else self.codec.encode(contribution[:n])
        row = np.empty(payload.nbytes + 4 * self._weighted, np.uint8)
        row[:payload.nbytes] = payload
        row[payload.nbytes:] = contribution[n:].view(np.uint8)
        total, weight = np.zeros(n, np.float32), np.float32(0)
        for other in self.collective.allgather(row):
            w = np.frombuffer(other[payload.nbytes:].tobytes(), np.float32)[0] if self._weighted else 1
            if w:
                self.codec.decode_add(other[:payload.nbytes], total)
                weight += w
        return self._divide(total, weight)

    def _average(self, pending: _Pending) -> np.ndarray:
        if pending.average is None:
            assert pending.handle is not None
            total = pending.handle.wait()
            pending.average = self._divide(total[:-1], total[-1]) if self._weighted else total
        return pending.average

    @staticmethod
    def _divide(total: np.ndarray, weight: np.floating) -> np.ndarray:
        """The average; empty when nobody contributed (only joiners survived: no outer step)."""
        return total / np.float32(weight) if weight > 0 else total[:0]

    def _merge(self, pending: _Pending) -> None:
        """The outer Nesterov step on the global copy, then the local parameters from it."""
        fragment = self.fragments[pending.index]
        average = self._average(pending)
        if average.size == 0:  # nobody contributed
            log.warning("fragment %d: no worker contributed to its sync; no outer step", pending.index)
            return
        momentum = fragment.momentum
        momentum *= np.float32(self.outer_momentum)
        momentum += average
        update = average + np.float32(self.outer_momentum) * momentum if self.nesterov else momentum
        fragment.global_ -= np.float32(self.outer_lr) * update
        local = fragment.global_
        if self.alpha < 1:
            local = np.float32(self.alpha) * fragment.global_ + np.float32(1 - self.alpha) * self._gather(fragment.params)
        self._scatter(fragment.params, local)

    # -- membership changes (ElasticCollective) -----------------------------------------------------

    def _guarded(self, action: Callable[[], _T]) -> _T:
        """``action()``; on an elastic group, a failed collective rebuilds the group, shares the
        state (with any joiner) and restarts every sync in flight with the survivors; then retries."""
        failures = 0
        while True:
            try:
                if self._stale:
                    self._share_state()
                    for pending in sorted(self._pending, key=lambda p: p.index):
                        pending.handle = pending.average = None
                        self._launch(pending)
                    self._stale = False
                return action()
            except Exception as exc:
                if not self.elastic or failures >= self.MAX_RETRIES or not self.collective.recover(exc):
                    raise
                failures += 1
                self.stats.recoveries += 1
                self._stale = True

    def _admit_joiners(self) -> None:
        """At steps where a fragment's sync starts: take waiting joiners in and share the state."""
        if not self.elastic or not due_fragments(self.step_count, self.sync_every, len(self.fragments)):
            return
        self._admitted = True
        if self.collective.joiners_waiting() and self._guarded(self.collective.admit):
            self.stats.joins += 1
            self._stale = True
            self._guarded(lambda: None)

    def _share_state(self) -> None:
        """Global copies, outer momenta, step, schedule and syncs in flight made identical on every
        member; a joiner's own syncs in flight then contribute zero weight."""
        merge_at = np.full(len(self.fragments), -1, np.int64)
        for pending in self._pending:
            merge_at[pending.index] = pending.merge_at
        step = np.array([self.step_count, self._admitted], np.int64)
        state = {"step": step, "started": self._started, "merge_at": merge_at}
        for i, fragment in enumerate(self.fragments):
            state[f"global.{i}"], state[f"momentum.{i}"] = fragment.global_, fragment.momentum
        self.collective.sync_state(state)
        self.step_count, self._admitted = int(step[0]), bool(step[1])
        mine = {p.index: p for p in self._pending}
        self._pending = []
        for index in map(int, np.flatnonzero(merge_at >= 0)):
            pending = mine.get(index) or _Pending(index, 0, np.zeros(self.fragments[index].global_.size + 1,
                                                                     np.float32))  # weight 0
            pending.merge_at = int(merge_at[index])
            self._pending.append(pending)

    # -- state ------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """Whether a fragment's sync has started and not yet been merged."""
        return bool(self._pending)

    def use_global(self) -> None:
        """Load the global copy (what every worker agrees on) into the model, e.g. to evaluate."""
        for fragment in self.fragments:
            self._scatter(fragment.params, fragment.global_)

    def state_dict(self) -> dict:
        """Global copies, outer momenta, this worker's quantization residuals, the step, the schedule
        and the stats (no sync may be in flight)."""
        if self._pending:
            raise RuntimeError("a sync is in flight: checkpoint right after a merge (step() returned it)")
        return {"step": self.step_count, "global": [f.global_.copy() for f in self.fragments],
                "momentum": [f.momentum.copy() for f in self.fragments],
                "residual": [f.residual.copy() for f in self.fragments], "started": self._started.copy(),
                "stats": asdict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state_dict()``; on an elastic group pass it as ``DiLoCo(state=...)`` instead,
        so that the group's state wins over an old checkpoint."""
        if len(state["global"]) != len(self.fragments):
            raise ValueError(f"the state has {len(state['global'])} fragments, this DiLoCo {len(self.fragments)}")
        residuals = state.get("residual") or [np.zeros_like(f.residual) for f in self.fragments]
        for fragment, glob, mom, res in zip(self.fragments, state["global"], state["momentum"], residuals):
            if glob.shape != fragment.global_.shape:
                raise ValueError(f"fragment of {glob.size} values does not fit {fragment.global_.size}")
            fragment.global_[...] = glob
            fragment.momentum[...] = mom
            fragment.residual[...] = res
        self.step_count = int(state["step"])
        self._started[...] = state.get("started", self._started)
        self.stats = SyncStats(**state.get("stats", {}))

    # -- torch <-> flat float32 ----------------------------------------------------------------

    def _all_globals(self) -> np.ndarray:
        return np.concatenate([f.global_ for f in self.fragments])

    def _set_globals(self, everything: np.ndarray) -> None:
        """The global copies from one flat array of every fragment."""
        offset = 0
        for fragment in self.fragments:
            n = fragment.global_.size
            fragment.global_[...] = everything[offset:offset + n]
            offset += n

    @staticmethod
    def _gather(params: list) -> np.ndarray:
        return np.concatenate([p.detach().float().cpu().numpy().reshape(-1) for p in params]).astype(np.float32,
                                                                                                  copy=False)

    @staticmethod
    def _scatter(params: list, flat: np.ndarray) -> None:
        import torch

        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(torch.from_numpy(flat[offset:offset + n]).view_as(p))
                offset += n
