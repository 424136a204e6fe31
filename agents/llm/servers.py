"""Several OpenAI-compatible servers as one back end, and adapters served by name.

`ServerPool` sends every turn of an episode to the same server (session-sticky routing),
so the server's prefix cache holds the conversation's earlier turns. The session is the
one `session` names (the asynchronous rollout engine names one per episode), else the
conversation's first user message, which every turn of an episode (and self-refine's
helper calls) shares. A new session goes to the server with the fewest requests in
flight (ties: the fewest sessions, then the first listed).

A server addresses a LoRA adapter by the name it serves it under, never by a path:

- at start-up: ``vllm serve MODEL --enable-lora --lora-modules rise=/path/to/adapter``
  (several ``NAME=PATH`` pairs allowed; ``--max-lora-rank`` at least the adapter's rank);
- into a running server: start it with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` and
  ``--enable-lora``, then `load_lora_adapter` (``POST /v1/load_lora_adapter`` with
  ``{"lora_name": NAME, "lora_path": PATH}``; the path is read by the server, so it must
  exist on the server's machine), or `ServerPool.load_adapter` for every server at once.

Then pass ``adapter="rise"`` to the agent. `check_adapter_name` refuses a local path sent
as a name (a server would answer 404, or, like llama.cpp, ignore it and answer with the
base model).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from agents.llm.base import LLM, Generation, SamplingParams, ServerError
from rise_gym.errors import RiseGymError
from rise_gym.spaces import Conversation

SESSION: ContextVar[str | None] = ContextVar("rise_gym_session", default=None)
"""The session (episode) the current thread's requests belong to; None: none named."""

MAX_SESSIONS = 100_000
"""Sessions a `ServerPool` remembers; the least recently used are forgotten beyond it."""


class AdapterNotServed(RiseGymError, ValueError):
    """An adapter was named to a server by a path, or a server does not serve it."""


@contextmanager
def session(key: str) -> Iterator[None]:
    """Name the session of the requests made inside the block (in this thread)."""
    token = SESSION.set(key)
    try:
        yield
    finally:
        SESSION.reset(token)


def check_adapter_name(adapter: str) -> None:
    """Refuse an adapter given to a server as a local path instead of a served name.

    Raises:
        AdapterNotServed: ``adapter`` is an existing local path, an absolute or
            explicitly relative path, or a folder or file of adapter weights.
    """
    path = Path(adapter).expanduser()
    looks_like_path = (
        adapter.startswith(("/", "./", "../", "~", "\\"))
        or path.suffix in {".safetensors", ".bin", ".json"}
        or (os.sep in adapter and path.exists())
        or (path.exists() and (path / "adapter_config.json").exists())
    )
    if looks_like_path:
        raise AdapterNotServed(
            f"adapter {adapter!r} is a path, but a server addresses adapters by the name it "
            "serves them under. Serve it: `vllm serve MODEL --enable-lora --lora-modules "
            f"NAME={adapter}`, or load it into a running server (started with "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) with "
            f"agents.llm.servers.load_lora_adapter(base_url, NAME, {adapter!r}); then pass "
            "adapter=NAME"
        )


def check_served_adapter(listed: Sequence[str], adapter: str, base_url: str) -> None:
    """Refuse an adapter a server with models ``listed`` would silently not apply.

    A server listing one model and not ``adapter`` (llama.cpp) answers any model name
    with that model. SGLang's ``BASE:ADAPTER`` names are let through.

    Raises:
        AdapterNotServed: ``adapter`` is a path, or the server would ignore it.
    """
    check_adapter_name(adapter)
    if adapter in listed or len(listed) != 1 or adapter.startswith(f"{listed[0]}:"):
        return
    raise AdapterNotServed(
        f"the server at {base_url} serves only {listed[0]!r}, not adapter {adapter!r}, and "
        "would answer with the base model. Serve the adapter under that name (vLLM: "
        f"--enable-lora --lora-modules {adapter}=PATH, or load_lora_adapter) and check "
        f"that {base_url}/models lists it"
    )


def load_lora_adapter(
    base_url: str, name: str, path: str, *, api_key: str | None = None, timeout: float = 300.0
) -> None:
    """Load a LoRA adapter into a running ``vllm serve`` under ``name``.

    The server must run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``;
    ``path`` is read on the server's machine.

    Raises:
        ServerError: the server refused (the message carries its reason).
    """
    _post(base_url, "/load_lora_adapter", {"lora_name": name, "lora_path": path}, api_key, timeout)


def unload_lora_adapter(
    base_url: str, name: str, *, api_key: str | None = None, timeout: float = 60.0
) -> None:
    """Unload the adapter a running ``vllm serve`` serves under ``name``."""
    _post(base_url, "/unload_lora_adapter", {"lora_name": name}, api_key, timeout)


def _post(
    base_url: str, path: str, body: dict[str, Any], api_key: str | None, timeout: float
) -> None:
    url = base_url.rstrip("/") + path
    headers = {"Content-Type": "application/json"}
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:500]
        hint = (
            "start vllm serve with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            if error.code in (404, 405)
            else "check the adapter's path on the server's machine and --max-lora-rank"
        )
        raise ServerError(f"{url} answered HTTP {error.code}: {detail}. Fix: {hint}") from error
    except OSError as error:
        raise ServerError(f"{url} cannot be reached: {error}") from error


class ServerPool(LLM):
    """Several servers of the same model behind one back end, routed by session.

    Attributes:
        servers: The back ends, one per server.
        name: The model they serve.
        sessions: How many sessions each server was given (in `servers`' order).
        requests: How many conversations each server was sent.
    """

    def __init__(self, servers: Sequence[LLM | str], model: str | None = None, **options: Any):
        """Connect to the servers.

        Args:
            servers: Back ends (e.g. `OpenAICompatibleLLM`) or API roots (``.../v1``),
                which get an `OpenAICompatibleLLM` of ``model`` with ``options``.
            model: The model name to request from API roots given as text.
            **options: Passed on to `OpenAICompatibleLLM` for API roots given as text.

        Raises:
            ValueError: no server, or servers that serve different models.
        """
        from agents.llm.openai_backend import OpenAICompatibleLLM

        if not servers:
            raise ValueError("ServerPool needs at least one server")
        self.servers: list[LLM] = [
            OpenAICompatibleLLM(model, base_url=s, **options) if isinstance(s, str) else s
            for s in servers
        ]
        names = sorted({server.name for server in self.servers})
        if len(names) != 1:
            raise ValueError(f"the servers serve different models {names}; pool identical ones")
        self.name = names[0]
        self.sessions = [0] * len(self.servers)
        self.requests = [0] * len(self.servers)
        self._in_flight = [0] * len(self.servers)
        self._routes: OrderedDict[str, int] = OrderedDict()
        self._checked: set[str] = set()
        self._lock = threading.Lock()

    def route(self, key: str) -> int:
        """The index of the server session ``key`` goes to (chosen on its first request)."""
        with self._lock:
            if key in self._routes:
                self._routes.move_to_end(key)
                return self._routes[key]
            chosen = min(
                range(len(self.servers)), key=lambda i: (self._in_flight[i], self.sessions[i], i)
            )
            self._routes[key] = chosen
            self.sessions[chosen] += 1
            if len(self._routes) > MAX_SESSIONS:
                self._routes.popitem(last=False)
            return chosen

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Generate on each conversation's server; several servers work at once.

        Args:
            conversations: Chat conversations.
            params: Sampling parameters.
            adapter: The name the servers serve an adapter under (never a path).

        Raises:
            AdapterNotServed: ``adapter`` is a path, or a server would not apply it.
        """
        if adapter is not None:
            self._check_adapter(adapter)
        named = SESSION.get()
        groups: dict[int, list[int]] = {}
        for position, conversation in enumerate(conversations):
            server = self.route(named or _session_of(conversation))
            groups.setdefault(server, []).append(position)
        with self._lock:
            for server, positions in groups.items():
                self._in_flight[server] += len(positions)
                self.requests[server] += len(positions)

        def run(server: int) -> list[Generation]:
            try:
                chunk = [conversations[p] for p in groups[server]]
                return self.servers[server].generate(chunk, params, adapter=adapter)
            finally:
                with self._lock:
                    self._in_flight[server] -= len(groups[server])

        results: list[Generation | None] = [None] * len(conversations)
        if len(groups) == 1:
            [server] = groups
            outputs = {server: run(server)}
        else:
            with ThreadPoolExecutor(max_workers=len(groups)) as pool:
                futures = {server: pool.submit(run, server) for server in groups}
                outputs = {server: future.result() for server, future in futures.items()}
        for server, positions in groups.items():
            for position, generation in zip(positions, outputs[server], strict=True):
                results[position] = generation
        return [generation for generation in results if generation is not None]

    def load_adapter(self, name: str, path: str, *, api_key: str | None = None) -> None:
        """Load an adapter into every server (running ``vllm serve``; see `load_lora_adapter`)."""
        for server in self.servers:
            load_lora_adapter(_base_url(server), name, path, api_key=api_key)
        self._checked.discard(name)

    def close(self) -> None:
        """Close every server's back end."""
        for server in self.servers:
            server.close()

    def _check_adapter(self, adapter: str) -> None:
        if adapter in self._checked:
            return
        check_adapter_name(adapter)
        for server in self.servers:
            listed = served_models(server)
            if listed is not None:
                check_served_adapter(listed, adapter, _base_url(server))
        self._checked.add(adapter)


def served_models(llm: LLM) -> list[str] | None:
    """The model names an `OpenAICompatibleLLM`'s server lists; None for other back ends."""
    request = getattr(llm, "_request", None)
    if request is None or not hasattr(llm, "base_url"):
        return None
    reply = request("/models")
    try:
        return [str(entry["id"]) for entry in reply["data"]]
    except (KeyError, TypeError):
        return None


def _base_url(llm: LLM) -> str:
    base_url = getattr(llm, "base_url", None)
    if not isinstance(base_url, str):
        raise TypeError(f"{type(llm).__name__} is not a server back end (it has no base_url)")
    return base_url


def _session_of(conversation: Conversation) -> str:
    """An episode's key without a named session: its first user message."""
    for message in conversation:
        if message["role"] == "user":
            return "user:" + message["content"]
    return "conversation:" + json.dumps(list(conversation)[:1])
