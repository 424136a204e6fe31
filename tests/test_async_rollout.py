"""The asynchronous rollout engine, session-sticky routing over several servers, and
adapters addressed by name: against scripted agents, scripted HTTP servers and real
llama.cpp servers (llama-cpp-python) serving the default model's GGUF file.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from markers import require_llama_cpp_server

from agents import Action, FunctionAgent, SelfRefine, SequentialRetry, rollout
from agents.evaluate import evaluate
from agents.llm import LLM, Generation, SamplingParams
from agents.llm.default_model import smollm2_gguf_path
from agents.llm.openai_backend import OpenAICompatibleLLM
from agents.llm.servers import AdapterNotServed, ServerPool, load_lora_adapter
from rise_gym.records import read_records
from rise_gym.spaces import Conversation

ENV = "RISE-Arithmetic-v0"
ENV_KWARGS = {"difficulty": 1, "max_turns": 3}


def _without_wall_time(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [{**record.to_dict(), "wall_time": 0.0} for record in records]


def _same_answers(records: Sequence[Any]) -> list[tuple[Any, ...]]:
    """What a server's answers decide, without its log-probabilities.

    A server batches concurrent requests together, which changes its floating-point
    sums: mean log-probabilities then differ in the last digits between engines.
    """
    return [
        (r.problem_id, r.index, tuple((t.turn, t.response, t.answer, t.correct) for t in r.turns))
        for r in records
    ]


class SlowAgent:
    """Wrong at turn 1, right later; answers after a delay, tracks calls in flight.

    ``delays`` maps a problem's first number to its answers' delay (default: random up
    to 20 ms), so episodes finish their turns out of order.
    """

    name = "slow"

    def __init__(self, delays: dict[int, float] | None = None, fail_at: int | None = None):
        self.delays = delays or {}
        self.fail_at = fail_at
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls: list[tuple[int, int]] = []  # (first number, attempt), as answered

    def act(self, observations):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            actions = []
            for observation in observations:
                question = observation[0]["content"].split("?")[0].removeprefix("What is ")
                a, b = (int(x) for x in question.split(" + "))
                attempt = sum(m["role"] == "assistant" for m in observation)
                time.sleep(self.delays.get(a, random.random() * 0.02))
                if self.fail_at is not None and len(self.calls) >= self.fail_at:
                    raise RuntimeError("simulated crash")
                answer = a + b if attempt >= 1 else a + b + 1
                with self.lock:
                    self.calls.append((a, attempt))
                actions.append(Action(f"\\boxed{{{answer}}}", llm_calls=1, generated_tokens=5))
            return actions
        finally:
            with self.lock:
                self.in_flight -= 1


def test_same_records_as_the_batched_engine_in_problem_order():
    batched = rollout(ENV, SlowAgent(), num_episodes=12, env_kwargs=ENV_KWARGS, progress=False)
    agent = SlowAgent()
    records = rollout(
        ENV,
        agent,
        num_episodes=12,
        env_kwargs=ENV_KWARGS,
        progress=False,
        engine="async",
        batch_size=4,
    )
    assert _without_wall_time(records) == _without_wall_time(batched)
    assert [r.index for r in records] == list(range(12))
    assert agent.most_in_flight == 4
    assert all(r.wall_time > 0 for r in records)
    oracle = {**ENV_KWARGS, "stop_on_correct": True}
    assert _without_wall_time(
        rollout(ENV, SlowAgent(), num_episodes=5, env_kwargs=oracle, progress=False)
    ) == _without_wall_time(
        rollout(ENV, SlowAgent(), num_episodes=5, env_kwargs=oracle, progress=False, engine="async")
    )


def test_an_episode_does_not_wait_for_a_slow_one():
    # problem 0 is "5 + 3", problem 1 "8 + 5": problem 0's answers take 0.3 s
    agent = SlowAgent(delays={5: 0.3, 8: 0.0})
    rollout(ENV, agent, num_episodes=2, env_kwargs=ENV_KWARGS, progress=False, engine="async")
    # problem 1 played all three turns before problem 0's first answer came back
    assert agent.calls[:4] == [(8, 0), (8, 1), (8, 2), (5, 0)]


def test_resume_after_a_crash_redoes_only_unfinished_episodes(tmp_path: Path):
    output = tmp_path / "episodes.jsonl"
    kwargs = {**ENV_KWARGS, "max_turns": 2}
    crashing = SlowAgent(delays=dict.fromkeys(range(100), 0.0), fail_at=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        rollout(
            ENV,
            crashing,
            num_episodes=6,
            env_kwargs=kwargs,
            output=output,
            progress=False,
            engine="async",
            batch_size=2,
        )
    saved = read_records(output)
    assert 1 <= len(saved) < 6
    resumed_agent = SlowAgent()
    records = rollout(
        ENV,
        resumed_agent,
        num_episodes=6,
        env_kwargs=kwargs,
        output=output,
        progress=False,
        engine="async",
    )
    assert len(resumed_agent.calls) == 2 * (6 - len(saved))
    batched = rollout(ENV, SlowAgent(), num_episodes=6, env_kwargs=kwargs, progress=False)
    assert _without_wall_time(records) == _without_wall_time(batched)
    assert sorted(r.index for r in read_records(output)) == list(range(6))
    # a file written by one engine resumes with the other: nothing left to play
    again = SlowAgent()
    rollout(ENV, again, num_episodes=6, env_kwargs=kwargs, output=output, progress=False)
    assert again.calls == []


def test_evaluate_selects_the_engine_and_gives_the_same_metrics():
    agent = FunctionAgent(lambda conversation: "\\boxed{3}", name="three")
    batched = evaluate(ENV, agent, num_problems=6, max_turns=2, progress=False)
    async_ = evaluate(ENV, agent, num_problems=6, max_turns=2, progress=False, engine="async")
    assert async_.metrics == batched.metrics
    with pytest.raises(ValueError, match="engine must be 'batched' or 'async'"):
        evaluate(ENV, agent, num_problems=2, progress=False, engine="threads")


def test_an_in_process_back_end_is_refused_with_the_fix():
    class FakeTransformers(LLM):
        name = "fake"

        def generate(self, conversations, params, *, adapter=None):
            raise AssertionError("never called")

    FakeTransformers.__module__ = "agents.llm.transformers_backend"
    FakeTransformers.__name__ = "TransformersLLM"
    agent = SequentialRetry(FakeTransformers())
    with pytest.raises(ValueError, match="TransformersLLM.*engine='batched'"):
        rollout(ENV, agent, num_episodes=2, progress=False, engine="async")


# ---- scripted servers ---------------------------------------------------------------


class Served:
    """What a scripted server serves and what it was asked."""

    def __init__(self, models: Sequence[str] = ("served-model",), delay_s: float = 0.0):
        self.models = list(models)
        self.delay_s = delay_s
        self.chats: list[list[dict[str, str]]] = []
        self.posts: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()


@contextmanager
def scripted_server(served: Served) -> Iterator[str]:
    """A loopback server that answers every chat with ``\\boxed{N}`` (N = its turn)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._json({"object": "list", "data": [{"id": m} for m in served.models]})

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            with served.lock:
                served.posts.append((self.path, data))
            if self.path.endswith("/load_lora_adapter"):
                body = json.loads(data)
                served.models.append(body["lora_name"])
                text = f"Success: LoRA adapter '{body['lora_name']}' added successfully."
                self._reply(200, text.encode(), "text/plain")
                return
            body = json.loads(data)
            with served.lock:
                served.chats.append(body["messages"])
            time.sleep(served.delay_s)
            turn = sum(m["role"] == "assistant" for m in body["messages"]) + 1
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": f"\\boxed{{{turn}}}"},
                "finish_reason": "stop",
            }
            self._json({"choices": [choice], "usage": {"completion_tokens": 2}})

        def _json(self, payload: dict[str, Any]) -> None:
            self._reply(200, json.dumps(payload).encode(), "application/json")

        def _reply(self, status: int, data: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
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


def _question(chat: list[dict[str, str]]) -> str:
    return next(m["content"] for m in chat if m["role"] == "user")


def test_pool_sends_every_turn_of_an_episode_to_one_server():
    servers = [Served(delay_s=0.01), Served(delay_s=0.01)]
    with ExitStack() as stack:
        urls = [stack.enter_context(scripted_server(s)) for s in servers]
        pool = ServerPool(urls, max_retries=0)
        agent = SelfRefine(pool, SamplingParams(max_new_tokens=8))
        records = rollout(
            ENV, agent, num_episodes=10, env_kwargs=ENV_KWARGS, progress=False, engine="async"
        )
    assert all(len(r.turns) == 3 for r in records)
    questions = [{_question(chat) for chat in s.chats} for s in servers]
    assert questions[0] and questions[1] and not questions[0] & questions[1]
    # self-refine: 1 + 2 + 2 requests per episode, all on the episode's server
    assert sum(len(s.chats) for s in servers) == 10 * 5
    assert sum(pool.sessions) == 10 and min(pool.sessions) > 0 and sum(pool.requests) == 50


def test_pool_routes_a_batch_by_conversation_in_the_lock_step_engine():
    servers = [Served(), Served()]
    with ExitStack() as stack:
        urls = [stack.enter_context(scripted_server(s)) for s in servers]
        pool = ServerPool(urls)
        agent = SequentialRetry(pool, SamplingParams(max_new_tokens=8))
        records = rollout(ENV, agent, num_episodes=6, env_kwargs=ENV_KWARGS, progress=False)
    assert [t.response for t in records[0].turns] == ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"]
    questions = [{_question(chat) for chat in s.chats} for s in servers]
    assert len(questions[0]) == len(questions[1]) == 3 and not questions[0] & questions[1]


def test_pool_refuses_servers_of_different_models():
    with scripted_server(Served(["a"])) as first, scripted_server(Served(["b"])) as second:
        with pytest.raises(ValueError, match="different models"):
            ServerPool([first, second])


def test_an_adapter_path_sent_as_a_model_name_is_a_clear_error(tmp_path: Path):
    adapter = tmp_path / "rise-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    served = Served()
    with scripted_server(served) as url:
        for llm in (OpenAICompatibleLLM(base_url=url), ServerPool([url])):
            agent = SequentialRetry(llm, adapter=str(adapter))
            with pytest.raises(AdapterNotServed, match="is a path.*--lora-modules.*adapter=NAME"):
                rollout(ENV, agent, num_episodes=2, progress=False, engine="async")
        # a name the single-model server (like llama.cpp) would silently ignore
        agent = SequentialRetry(OpenAICompatibleLLM(base_url=url), adapter="rise")
        with pytest.raises(AdapterNotServed, match="serves only 'served-model'.*base model"):
            rollout(ENV, agent, num_episodes=2, progress=False, engine="async")
    assert served.chats == []


def test_load_lora_adapter_then_address_it_by_name():
    served = Served()
    with scripted_server(served) as url:
        pool = ServerPool([url])
        pool.load_adapter("rise", "/srv/adapters/rise")
        agent = SequentialRetry(pool, SamplingParams(max_new_tokens=8), adapter="rise")
        rollout(ENV, agent, num_episodes=2, env_kwargs=ENV_KWARGS, progress=False, engine="async")
        load_lora_adapter(url, "other", "/srv/adapters/other")
    path, body = served.posts[0]
    assert path == "/v1/load_lora_adapter"
    assert json.loads(body) == {"lora_name": "rise", "lora_path": "/srv/adapters/rise"}
    assert {json.loads(b)["model"] for p, b in served.posts if p.endswith("completions")} == {
        "rise"
    }
    assert served.models == ["served-model", "rise", "other"]


# ---- real llama.cpp servers ---------------------------------------------------------


@contextmanager
def llama_cpp_server(log: Path) -> Iterator[str]:
    """A real llama.cpp server (llama-cpp-python) with the default model, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024"]
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {server.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama.cpp server not ready after 120 s:\n{log.read_text()}")
                time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def two_llama_cpp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two llama.cpp servers of the default model."""
    folder = tmp_path_factory.mktemp("llama-servers")
    with ExitStack() as stack:
        yield [stack.enter_context(llama_cpp_server(folder / f"{i}.log")) for i in range(2)]


class Recording(LLM):
    """A back end that notes which conversations it was sent."""

    def __init__(self, llm: LLM):
        self.llm, self.name, self.questions = llm, llm.name, set()
        self.base_url = getattr(llm, "base_url", "")

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams, *, adapter=None
    ) -> list[Generation]:
        self.questions.update(_question(chat) for chat in conversations)
        return self.llm.generate(conversations, params, adapter=adapter)


GREEDY = SamplingParams(max_new_tokens=16)


@pytest.mark.slow  # llama.cpp batches concurrent requests: rare greedy flips under load
@require_llama_cpp_server
def test_real_server_async_records_equal_lock_step(two_llama_cpp_servers: list[str]):
    llm = OpenAICompatibleLLM(base_url=two_llama_cpp_servers[0], max_concurrency=4)
    for agent in (SequentialRetry(llm, GREEDY), SelfRefine(llm, GREEDY)):
        kwargs = {"num_episodes": 3, "env_kwargs": {**ENV_KWARGS, "max_turns": 2}}
        batched = rollout(ENV, agent, **kwargs, progress=False)
        async_ = rollout(ENV, agent, **kwargs, progress=False, engine="async", batch_size=3)
        assert _same_answers(async_) == _same_answers(batched)
        assert all(t.generated_tokens > 0 for r in async_ for t in r.turns)


@pytest.mark.slow  # as above
@require_llama_cpp_server
def test_two_real_servers_sticky_routing_same_records(two_llama_cpp_servers: list[str]):
    servers = [Recording(OpenAICompatibleLLM(base_url=url)) for url in two_llama_cpp_servers]
    pool = ServerPool(servers)
    agent = SequentialRetry(pool, GREEDY)
    kwargs = {"num_episodes": 4, "env_kwargs": {**ENV_KWARGS, "max_turns": 2}}
    async_ = rollout(ENV, agent, **kwargs, progress=False, engine="async")
    first, second = (server.questions for server in servers)
    assert first and second and not first & second  # every episode on one server
    assert len(first | second) == 4
    single = SequentialRetry(OpenAICompatibleLLM(base_url=two_llama_cpp_servers[1]), GREEDY)
    batched = rollout(ENV, single, **kwargs, progress=False)
    assert _same_answers(async_) == _same_answers(batched)
