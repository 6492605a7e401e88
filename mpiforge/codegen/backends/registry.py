"""Backends by name: the built-in ones plus those other packages register as entry points.

A third-party package adds a backend with, in its ``pyproject.toml``::

    [project.entry-points."mpiforge.backends"]
    mybackend = "mypackage.module:MyBackend"   # a Backend subclass or a factory returning one

Built-in names win over entry points of the same name.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from typing import Any

from .base import Backend, BackendError

__all__ = ["ENTRY_POINT_GROUP", "available_backends", "get_backend", "register_backend"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mpiforge.backends"

Factory = Callable[..., Backend]
_Target = str | Factory  # "module:attribute" (imported on use) or a callable

_BUILTIN: dict[str, _Target] = {
    "openai": "mpiforge.codegen.backends.openai:OpenAIBackend",
    "transformers": "mpiforge.codegen.backends.local:TransformersBackend",
    "embedded": "mpiforge.codegen.backends.embedded:EmbeddedBackend",
    "replay": "mpiforge.codegen.backends.replay:ReplayBackend",
}
_registered: dict[str, _Target] = {}


def register_backend(name: str, factory: _Target) -> None:
    """Register ``factory`` (a callable or ``"module:attribute"``) under ``name``, e.g. in tests."""
    if not name or not isinstance(name, str):
        raise ValueError(f"a backend name must be a non-empty string, got {name!r}")
    _registered[name] = factory


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTIN:
            if ep.value != _BUILTIN[ep.name]:
                log.warning("ignoring entry point %s = %s: %r is a built-in backend", ep.name, ep.value, ep.name)
            continue
        found.setdefault(ep.name, ep)
    return found


def available_backends() -> list[str]:
    """Names accepted by ``get_backend``, sorted; nothing is imported to list them."""
    return sorted({*_BUILTIN, *_registered, *_entry_points()})


def _load(name: str, target: _Target) -> Factory:
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendError(f"backend {name!r} ({target}) failed to import: {exc}") from exc


def _factory(name: str) -> Factory:
    if name in _registered:
        return _load(name, _registered[name])
    if name in _BUILTIN:
        return _load(name, _BUILTIN[name])
    ep = _entry_points().get(name)
    if ep is None:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(available_backends())}")
    try:
        return ep.load()
    except Exception as exc:  # a broken plug-in must not look like a bug of ours
        package = ep.dist.name if getattr(ep, "dist", None) else "the package that provides it"
        raise BackendError(
            f"backend {name!r} from {package} ({ep.value}) failed to import: {exc}; "
            f"reinstall or uninstall {package}"
        ) from exc


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend called ``name`` with ``options``; unknown names or options raise ``BackendError``."""
    factory = _factory(name)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        params = inspect.signature(factory).parameters
        known = [p for p, v in params.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)]
        raise BackendError(f"bad options for backend {name!r}: {exc}; it accepts: {', '.join(known)}") from exc
    except ValueError:  # no signature (a builtin callable): let the call decide
        pass
    backend = factory(**options)
    if not callable(getattr(backend, "generate", None)):
        raise BackendError(f"backend {name!r} built a {type(backend).__name__}, which has no generate() method")
    return backend
