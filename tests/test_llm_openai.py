"""The OpenAI-compatible HTTP back end, against real HTTP servers on loopback.

A scripted ``http.server`` checks the wire format, retries, timeouts and errors; a real
llama.cpp server (llama-cpp-python) serving the default model's GGUF file checks the
whole path end to end.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from markers import require_llama_cpp_server

from agents.leaderboard import LeaderboardConfig, run_leaderboard
from agents.llm import ContextLengthExceeded, ModelNotFound, SamplingParams, ServerError, make_llm
from agents.llm.default_model import smollm2_gguf_path
from agents.llm.openai_backend import OpenAICompatibleLLM
from rise_gym.records import read_records

CHAT = [{"role": "user", "content": "What is 2+3?"}]


@dataclass
class Script:
    """What the scripted server answers, and what it was asked."""

    failures: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    models: Any = field(default_factory=lambda: ["served-model"])
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """Serve ``script`` on a free loopback port; yield the API root URL.

    Each POST first consumes one scripted failure (status, JSON body, headers); once
    they run out it answers one choice that echoes the prompt and the seed, as llama.cpp
    does (one choice whatever ``n``), with three tokens of log-probability -0.5.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = (
                [{"id": model} for model in script.models]
                if isinstance(script.models, list)
                else script.models
            )
            self._reply(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append((self.path, dict(self.headers), body))
                script.in_flight += 1
                script.most_in_flight = max(script.most_in_flight, script.in_flight)
                failure = script.failures.pop(0) if script.failures else None
            time.sleep(script.delay_s)
            with script.lock:
                script.in_flight -= 1
            if failure:
                self._reply(*failure)
                return
            text = f"echo {body['messages'][-1]['content']} seed={body.get('seed')}"
            token = {"token": "x", "logprob": -0.5, "bytes": None, "top_logprobs": []}
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": [token] * 3},
                "finish_reason": "stop",
            }
            self._reply(200, {"choices": [choice], "usage": {"completion_tokens": 3}})

        def _reply(self, status: int, payload: dict[str, Any], headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_retries_503_and_429_then_answers() -> None:
    overloaded = (503, {"error": {"message": "overloaded"}}, {})
    slow_down = (429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
    script = Script(failures=[overloaded, slow_down])
    with scripted_server(script) as base_url:
        llm = OpenAICompatibleLLM("m", base_url=base_url, backoff=0.01)
        [generation] = llm.generate([CHAT], SamplingParams(max_new_tokens=8))
    assert generation.texts == ["echo What is 2+3? seed=None"]
    assert len(script.requests) == 3


def test_request_fields_and_n_filled_by_further_requests() -> None:
    script = Script()
    params = SamplingParams(max_new_tokens=8, temperature=0.8, top_p=0.9, n=3, stop=("\n",), seed=5)
    with scripted_server(script) as base_url:
        [generation] = make_llm("m", backend="openai", base_url=base_url).generate([CHAT], params)
    assert generation.texts == [f"echo What is 2+3? seed={seed}" for seed in (5, 6, 7)]
    assert [c.num_tokens for c in generation.completions] == [3, 3, 3]
    assert [c.mean_logprob for c in generation.completions] == [-0.5] * 3
    path, _, body = script.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {
        "model": "m",
        "messages": CHAT,
        "max_tokens": 8,
        "temperature": 0.8,
        "top_p": 0.9,
        "n": 3,
        "stop": ["\n"],
        "seed": 5,
        "logprobs": True,
        "top_logprobs": 0,
    }
    assert [request[2]["n"] for request in script.requests] == [3, 2, 1]


def test_batch_keeps_order_with_bounded_concurrency() -> None:
    script = Script(delay_s=0.1)
    chats = [[{"role": "user", "content": f"question {index}"}] for index in range(6)]
    with scripted_server(script) as base_url:
        llm = OpenAICompatibleLLM("m", base_url=base_url, max_concurrency=2)
        generations = llm.generate(chats, SamplingParams(max_new_tokens=4))
    assert [g.texts[0] for g in generations] == [f"echo question {i} seed=None" for i in range(6)]
    assert script.most_in_flight == 2


def test_unreachable_server_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ServerError, match="/models failed 3 times.*server is running"):
        OpenAICompatibleLLM("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    assert time.monotonic() - start < 5  # on construction: before any work is done


def test_timeout_is_retried_then_reported() -> None:
    script = Script(delay_s=1.0)
    with scripted_server(script) as base_url:
        llm = OpenAICompatibleLLM("m", base_url=base_url, timeout=0.2, max_retries=1, backoff=0)
        with pytest.raises(ServerError, match="timed out"):
            llm.generate([CHAT], SamplingParams())
    assert len(script.requests) == 2


def test_client_errors_fail_at_once_with_the_fix() -> None:
    too_long = "This model's maximum context length is 2048 tokens. However, you requested 3051"
    script = Script(
        failures=[
            (400, {"error": {"message": too_long, "code": "context_length_exceeded"}}, {}),
            (401, {"error": {"message": "invalid api key"}}, {}),
        ]
    )
    with scripted_server(script) as base_url:
        llm = OpenAICompatibleLLM("m", base_url=base_url, backoff=0.01)
        with pytest.raises(ContextLengthExceeded, match="2048 tokens.*history_window"):
            llm.generate([CHAT], SamplingParams())
        with pytest.raises(ServerError, match="HTTP 401: invalid api key.*OPENAI_API_KEY"):
            llm.generate([CHAT], SamplingParams())
    assert len(script.requests) == 2


def test_api_key_model_discovery_and_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    monkeypatch.setenv("RISE_TEST_KEY", "sk-named")
    with scripted_server(script) as base_url:
        discovered = OpenAICompatibleLLM(base_url=base_url)
        discovered.generate([CHAT], SamplingParams())
        named = OpenAICompatibleLLM("m", base_url=base_url, api_key_env="RISE_TEST_KEY")
        named.generate([CHAT], SamplingParams(), adapter="math-lora")
    assert discovered.model == "served-model"
    [(_, first_headers, first), (_, second_headers, second)] = script.requests
    assert first_headers["Authorization"] == "Bearer sk-default"
    assert first["model"] == "served-model"
    assert second_headers["Authorization"] == "Bearer sk-named"
    assert second["model"] == "math-lora"
    with pytest.raises(ValueError, match="RISE_UNSET_KEY"):
        OpenAICompatibleLLM("m", api_key_env="RISE_UNSET_KEY")


def test_the_name_is_the_model_the_server_reports() -> None:
    script = Script(models=["served-model"])
    with scripted_server(script) as base_url:
        alias = OpenAICompatibleLLM("m", base_url=base_url)  # one model answers every name
        assert (alias.model, alias.name) == ("m", "served-model")
        script.models = ["base", "math-lora"]
        listed = OpenAICompatibleLLM("math-lora", base_url=base_url)
        assert (listed.model, listed.name) == ("math-lora", "math-lora")
        with pytest.raises(ModelNotFound, match=r"serves \['base', 'math-lora'\], not 'm'"):
            OpenAICompatibleLLM("m", base_url=base_url)
        script.models = []
        with pytest.raises(ServerError, match="lists no model"):
            OpenAICompatibleLLM(base_url=base_url)
        script.models = "not a list"
        with pytest.raises(ServerError, match="not a list of models"):
            OpenAICompatibleLLM("m", base_url=base_url)


def test_leaderboard_results_are_keyed_by_the_model_the_server_serves(tmp_path: Path) -> None:
    script = Script(models=["model-a"])
    with scripted_server(script) as base_url:
        settings = dict(backend="openai", base_url=base_url, output_dir=tmp_path)
        config = LeaderboardConfig(
            agents=("sequential",),
            envs=("RISE-Arithmetic-v0",),
            num_problems=2,
            max_turns=2,
            **settings,
        )
        run_leaderboard(config, progress=False)
        script.models = ["model-b"]  # the server was restarted with another model
        run_leaderboard(config, progress=False)
    first, second = sorted(tmp_path.iterdir())
    assert first.name.startswith("model-a-") and second.name.startswith("model-b-")
    for folder, model in ((first, "model-a"), (second, "model-b")):
        assert json.loads((folder / "manifest.json").read_text())["model"] == model
        records = read_records(folder / "episodes" / "sequential--RISE-Arithmetic-v0.jsonl")
        assert [r.settings["model"] for r in records] == [model, model]
    assert len(script.requests) == 2 * 2 * 2  # nothing reused across the two models


@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama.cpp server (llama-cpp-python) with the default model, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"]
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_ready(base_url, server, log)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@require_llama_cpp_server
def test_real_server_answers_a_batch(llama_cpp_server: str) -> None:
    llm = OpenAICompatibleLLM(base_url=llama_cpp_server, max_concurrency=3)
    chats = [CHAT, [{"role": "user", "content": "Name a primary colour."}], CHAT]
    generations = llm.generate(chats, SamplingParams(max_new_tokens=16))
    assert "5" in generations[0].texts[0]
    assert generations[2].texts == generations[0].texts  # greedy: same question, same answer
    for generation in generations:
        [completion] = generation.completions
        assert 0 < completion.num_tokens <= 16 and completion.text
        assert completion.mean_logprob is not None and completion.mean_logprob < 0


@require_llama_cpp_server
def test_real_server_samples_stops_and_checks_context(llama_cpp_server: str) -> None:
    llm = OpenAICompatibleLLM(base_url=llama_cpp_server)
    sampled = SamplingParams(max_new_tokens=16, temperature=1.0, n=2, seed=11)
    first = llm.generate([CHAT], sampled)[0].texts
    assert len(first) == 2 and first[0] != first[1]
    assert llm.generate([CHAT], sampled)[0].texts == first
    [stopped] = llm.generate([CHAT], SamplingParams(max_new_tokens=16, stop=("=",)))
    assert stopped.texts[0].startswith("2") and "=" not in stopped.texts[0]
    long_chat = [{"role": "user", "content": "word " * 1500}]
    with pytest.raises(ContextLengthExceeded, match="1024"):
        llm.generate([long_chat], SamplingParams(max_new_tokens=16))


def _wait_until_ready(base_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"llama.cpp server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"llama.cpp server not ready after 120 s:\n{log.read_text()}")
