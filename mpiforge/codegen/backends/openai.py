"""A client for OpenAI-compatible servers (vLLM, llama.cpp ``llama-server``, Ollama ``/v1``) on the standard library.

Configuration, each from the argument, then the environment, then the default:
``base_url`` (``MPIFORGE_BASE_URL``, ``OPENAI_BASE_URL``, ``http://127.0.0.1:8000/v1``),
``model`` (``MPIFORGE_MODEL``, else the first model the server lists),
``api_key`` (``MPIFORGE_API_KEY``, ``OPENAI_API_KEY``, none).
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .base import Backend, BackendError, Completion, Prompt, Request
from .prompt import as_messages, as_text, cut_at_stop

__all__ = ["DEFAULT_BASE_URL", "OpenAIBackend"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
_RETRY_CODES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0  # seconds; a longer Retry-After is capped
_DETAIL = 300  # characters of an error body quoted in messages


def _normalise_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(f"base_url {url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000/v1")
    return url + "/v1" if parts.path in ("", "/") else url


class OpenAIBackend(Backend):
    """Completions from an OpenAI-compatible HTTP server, in chat or plain completion mode."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        mode: str = "chat",
        retries: int = 2,
        backoff: float = 1.0,
    ) -> None:
        if mode not in ("chat", "completion"):
            raise BackendError(f"mode must be 'chat' (/v1/chat/completions) or 'completion' (/v1/completions), got {mode!r}")
        if timeout <= 0:
            raise BackendError(f"timeout must be positive seconds, got {timeout!r}")
        env = os.environ
        self.base_url = _normalise_base_url(
            base_url or env.get("MPIFORGE_BASE_URL") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        self._model = model or env.get("MPIFORGE_MODEL") or None
        self._api_key = api_key or env.get("MPIFORGE_API_KEY") or env.get("OPENAI_API_KEY") or None
        self.timeout = float(timeout)
        self.mode = mode
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))

    @property
    def model(self) -> str:
        """The configured model, else the first one the server lists under ``/models``."""
        if self._model is None:
            listing = self._request("GET", "/models")
            try:
                self._model = str(listing["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise BackendError(
                    f"{self.base_url}/models lists no model; pass model= or set MPIFORGE_MODEL"
                ) from None
            log.info("using model %r, the first one %s lists", self._model, self.base_url)
        return self._model

    def _answer(self, prompt: Prompt, request: Request) -> list[Completion]:
        """Ask the server for ``n`` completions, topping up when it returns fewer (llama.cpp ignores ``n``)."""
        n, temperature, max_tokens, seed, stop = request.n, request.temperature, request.max_tokens, request.seed, \
            request.stop
        model = self.model
        path = "/chat/completions" if self.mode == "chat" else "/completions"
        out: list[Completion] = []
        request_no = 0
        while len(out) < n:
            want = n - len(out)
            payload: dict[str, Any] = {"model": model, "n": want, "temperature": temperature, "max_tokens": max_tokens}
            if self.mode == "chat":
                payload["messages"] = as_messages(prompt)
            else:
                payload["prompt"] = as_text(prompt)
            if seed is not None:  # a top-up request gets the next seed, or it would repeat the same samples
                payload["seed"] = seed + request_no
            if stop:
                payload["stop"] = list(stop)
            start = time.perf_counter()
            reply = self._request("POST", path, payload)
            seconds = time.perf_counter() - start
            choices = reply.get("choices")
            if not isinstance(choices, list) or not choices:
                raise BackendError(f"{self.base_url}{path} answered without choices: {str(reply)[:_DETAIL]}")
            if len(choices) < want:
                log.debug("%s returned %d of %d choices; asking again", self.base_url, len(choices), want)
            usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
            for choice in choices[:want]:
                out.append(self._completion(choice, path, model, seconds, usage, len(choices), max_tokens, stop))
            request_no += 1
        return out

    def _completion(
        self, choice: Any, path: str, model: str, seconds: float, usage: dict, count: int, max_tokens: int,
        stop: list[str] | None,
    ) -> Completion:
        try:
            text = choice["message"]["content"] if self.mode == "chat" else choice["text"]
        except (KeyError, TypeError):
            raise BackendError(
                f"{self.base_url}{path} answered a choice without "
                f"{'message.content' if self.mode == 'chat' else 'text'}: {str(choice)[:_DETAIL]}; "
                "if the server only supports the other endpoint, pass mode='chat' or mode='completion'"
            ) from None
        text, stopped = cut_at_stop(text or "", stop)
        finish = choice.get("finish_reason") or ("stop" if stopped else None)
        truncated = finish == "length"
        if truncated:
            log.warning("completion from %s (model %s) stopped at max_tokens=%d and is probably cut off; "
                        "raise max_tokens", self.base_url, model, max_tokens)
        return Completion(
            text=text,
            finish_reason=finish,
            truncated=truncated,
            backend=self.name,
            model=str(choice.get("model") or model),
            seconds=seconds,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens") if count == 1 else None,
        )

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call with bounded retries on 429/5xx; every failure becomes a ``BackendError``."""
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json", "User-Agent": "mpiforge"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code in _RETRY_CODES and attempt < self.retries:
                    delay = self._delay(attempt, exc.headers.get("Retry-After") if exc.headers else None)
                    log.warning("%s answered HTTP %d (%s); retry %d of %d in %.1f s",
                                url, exc.code, detail[:80], attempt + 1, self.retries, delay)
                    time.sleep(delay)
                    continue
                raise self._http_error(exc.code, url, detail, attempt + 1) from None
            except TimeoutError:
                raise self._timeout_error(url) from None
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, TimeoutError):
                    raise self._timeout_error(url) from None
                raise BackendError(
                    f"cannot connect to {url}: {exc.reason}; is the server running? start one "
                    "(e.g. `vllm serve MODEL`, `llama-server -m FILE.gguf --port 8080`, `ollama serve`) "
                    "or pass base_url= / set MPIFORGE_BASE_URL"
                ) from None
            except (ConnectionError, http.client.HTTPException) as exc:
                raise BackendError(f"connection to {url} broke off: {exc!r}; check the server's log") from None
            return self._decode(body, url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        try:
            if retry_after is not None:
                return min(max(float(retry_after), 0.0), _MAX_RETRY_AFTER)
        except ValueError:  # an HTTP date: fall back to our own backoff
            pass
        return self.backoff * (2 ** attempt)

    def _timeout_error(self, url: str) -> BackendError:
        return BackendError(
            f"no answer from {url} within timeout={self.timeout:g} s; the server may be overloaded or the "
            "generation long: raise timeout=, lower max_tokens or n"
        )

    def _http_error(self, code: int, url: str, detail: str, attempts: int) -> BackendError:
        if code in (401, 403):
            if self._api_key:
                return BackendError(f"{url} rejected the API key (HTTP {code}: {detail}); check api_key= or "
                                    "the MPIFORGE_API_KEY / OPENAI_API_KEY environment variable")
            return BackendError(f"{url} needs an API key (HTTP {code}: {detail}); pass api_key= or set "
                                "MPIFORGE_API_KEY or OPENAI_API_KEY")
        if code == 404:
            return BackendError(
                f"{url} not found (HTTP 404: {detail}); check base_url={self.base_url!r} (OpenAI-compatible "
                f"servers answer under /v1, e.g. http://127.0.0.1:8000/v1) and that the server serves "
                f"model={self._model!r} (GET {self.base_url}/models lists them)"
            )
        if code == 429:
            return BackendError(f"{url} is still rate-limiting after {attempts} attempts (HTTP 429: {detail}); "
                                "wait, lower n, or raise retries=")
        if code >= 500:
            return BackendError(f"{url} failed with HTTP {code} after {attempts} attempts ({detail}); "
                                "check the server's log")
        return BackendError(f"{url} refused the request (HTTP {code}: {detail}); check the prompt length, "
                            "max_tokens and the options the server supports")

    @staticmethod
    def _decode(body: bytes, url: str) -> dict[str, Any]:
        try:
            reply = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            reply = None
        if not isinstance(reply, dict):
            raise BackendError(f"{url} answered malformed JSON ({body[:_DETAIL]!r}); is base_url an "
                               "OpenAI-compatible API (usually ending in /v1)?")
        return reply


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own error message, shortened, from an error response."""
    try:
        raw = exc.read()
    except (OSError, http.client.HTTPException):  # the body is only a courtesy
        raw = b""
    finally:
        exc.close()
    text = raw.decode("utf-8", "replace").strip()
    try:
        err = json.loads(text).get("error", text)
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    return (text or exc.reason or "no detail")[:_DETAIL]
