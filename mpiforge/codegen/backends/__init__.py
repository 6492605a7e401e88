"""Model backends of the code generator: one small interface, many ways to get completions.

``get_backend(name, **options)`` builds one by name (``openai``, ``transformers``,
``embedded``, ``replay`` or a third-party backend registered under the entry-point group
``mpiforge.backends``). Nothing heavy (torch, transformers) is imported until a backend
that needs it generates.
"""
from __future__ import annotations

from .base import Backend, BackendError, Completion, Prompt
from .registry import (
    ENTRY_POINT_GROUP,
    available_backends,
    get_backend,
    register_backend,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendError",
    "Completion",
    "Prompt",
    "available_backends",
    "get_backend",
    "register_backend",
]
