"""Generation with Hugging Face transformers from a model folder on disk; nothing is downloaded.

torch and transformers are optional (the ``llm`` extra) and imported only when a model loads.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, Completion, Prompt, Request
from .prompt import as_messages, as_text, cut_at_stop

__all__ = ["TransformersBackend", "import_llm"]

log = logging.getLogger(__name__)


def import_llm() -> tuple[Any, Any]:
    """Import and return ``(torch, transformers)``, or say how to install them."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendError(
            f"local models need torch and transformers ({exc}); install them with pip install 'mpiforge[llm]'"
        ) from exc
    return torch, transformers


class TransformersBackend(Backend):
    """A causal LM and its tokenizer from a folder written by ``save_pretrained``, loaded on first use."""

    name = "transformers"

    def __init__(self, path: str | os.PathLike[str] | None = None, *, device: str = "cpu") -> None:
        path = path or os.environ.get("MPIFORGE_MODEL_PATH")
        if not path:
            raise BackendError("the transformers backend needs a model folder: pass path= or set MPIFORGE_MODEL_PATH")
        self.path = Path(path).expanduser()
        self.device = device
        self._lm: Any = None
        self._tokenizer: Any = None

    @property
    def model(self) -> str:
        return self.path.name

    def _load(self) -> tuple[Any, Any]:
        """Return ``(model, tokenizer)``; subclasses change where they come from."""
        _, transformers = import_llm()
        if not (self.path / "config.json").is_file():
            raise BackendError(
                f"no model at {self.path}: give a folder written by save_pretrained (config.json, weights, "
                "tokenizer files); models are never downloaded"
            )
        transformers.utils.logging.disable_progress_bar()  # our commands draw their own progress
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            lm = transformers.AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the model in {self.path}: {exc}") from exc
        return lm, tokenizer

    def loaded(self) -> tuple[Any, Any]:
        """The model (in eval mode, on ``device``) and tokenizer, loading them once."""
        if self._lm is None:
            start = time.perf_counter()
            lm, tokenizer = self._load()
            self._lm, self._tokenizer = lm.to(self.device).eval(), tokenizer
            log.info("loaded %s in %.1f s", self.model, time.perf_counter() - start)
        return self._lm, self._tokenizer

    def _answer(self, prompt: Prompt, request: Request) -> list[Completion]:
        return self._complete([prompt], request)[0]

    def _complete(self, prompts: list[Prompt], request: Request) -> list[list[Completion]]:
        """Every prompt's ``n`` completions in one padded batch (greedy once when ``temperature`` is
        0; ``seed`` makes it repeatable): on a CPU a step of 8 sequences costs little more than a
        step of one, since the weights are read once."""
        n, temperature, max_tokens, seed, stop = request.n, request.temperature, request.max_tokens, request.seed, \
            request.stop
        torch, transformers = import_llm()
        lm, tokenizer = self.loaded()
        if getattr(tokenizer, "chat_template", None):
            texts = [tokenizer.apply_chat_template(as_messages(p), tokenize=False, add_generation_prompt=True)
                     for p in prompts]
            special = False
        else:
            texts, special = [as_text(p) for p in prompts], True
        ends = _end_ids(lm, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(ends), 0)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens follow every prompt directly
        try:
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token_id = pad
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
        finally:
            tokenizer.padding_side = side
        options: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": pad, "eos_token_id": sorted(ends) or None}
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, num_return_sequences=n)
        else:
            options.update(do_sample=False)
        prompt_len = inputs["input_ids"].shape[1]
        if stop:
            criteria = _stop_criteria(torch, transformers, tokenizer, stop, prompt_len)
            options["stopping_criteria"] = transformers.StoppingCriteriaList([criteria])
        if seed is not None:
            torch.manual_seed(seed)
        start = time.perf_counter()
        with torch.inference_mode():
            output = lm.generate(**inputs, **options)
        seconds = time.perf_counter() - start
        rows = [row.tolist() for row in output[:, prompt_len:]]
        per_prompt = n if temperature > 0 else 1
        ends.add(pad)  # rows that ended early are padded
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        return [[self._completion(ids, tokenizer, ends, max_tokens, stop, seconds, int(lengths[i]))
                 for ids in (rows[i * per_prompt:(i + 1) * per_prompt] * (n if per_prompt == 1 else 1))]
                for i in range(len(prompts))]

    def _completion(
        self, ids: list[int], tokenizer: Any, ends: set[int], max_tokens: int, stop: list[str] | None,
        seconds: float, prompt_len: int,
    ) -> Completion:
        end = next((i for i, t in enumerate(ids) if t in ends), None)
        if end is not None:
            ids = ids[:end]
        text, stopped = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)
        truncated = end is None and not stopped and len(ids) >= max_tokens
        if truncated:
            log.warning("completion of %s stopped at max_tokens=%d and is probably cut off; raise max_tokens",
                        self.model, max_tokens)
        return Completion(
            text=text,
            finish_reason="length" if truncated else "stop",
            truncated=truncated,
            backend=self.name,
            model=self.model,
            seconds=seconds,
            prompt_tokens=prompt_len,
            completion_tokens=len(ids),
        )


def _stop_criteria(torch: Any, transformers: Any, tokenizer: Any, stop: list[str], prompt_len: int) -> Any:
    """A stopping criterion that ends each row once its decoded text contains a stop string.

    It decodes a short tail of each row, so it works with any tokenizer (transformers' own
    ``stop_strings`` fails on some, e.g. word-level vocabularies).
    """
    tail = max(len(s) for s in stop) + 8  # tokens: enough to cover the longest stop string

    class StopStrings(transformers.StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = []
            for row in input_ids[:, prompt_len:]:
                text = tokenizer.decode(row[-tail:], skip_special_tokens=True)
                done.append(any(s in text for s in stop))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopStrings()


def _end_ids(lm: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a sequence, from the generation config and the tokenizer."""
    ends: set[int] = set()
    for value in (getattr(lm.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ends.add(value)
        elif isinstance(value, (list, tuple)):
            ends.update(v for v in value if isinstance(v, int))
    return ends
