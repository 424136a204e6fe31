"""The HTTP back end: any OpenAI-compatible chat-completions server (``vllm serve``, ...)."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agents.llm.base import (
    LLM,
    Completion,
    ContextLengthExceeded,
    Generation,
    ModelNotFound,
    SamplingParams,
    ServerError,
)
from rise_gym.spaces import Conversation

DEFAULT_BASE_URL = "http://localhost:8000/v1"
"""Where ``vllm serve`` listens by default."""

_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 60.0


class OpenAICompatibleLLM(LLM):
    """Chat completions over HTTP, one request per conversation, several at a time.

    Uses the standard library only. Requests that fail with a connection error, a
    timeout, HTTP 429 or 5xx are retried with exponential backoff (honouring
    ``Retry-After``); other HTTP errors fail at once. A server that returns fewer than
    ``n`` choices (llama.cpp returns one) is asked again for the rest, with the seed
    advanced so the extra samples differ. ``mean_logprob`` is filled when the server
    returns log-probabilities. The server is asked for its models on construction, so
    an unreachable one fails at once, and ``name`` is the model it reports serving.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        logprobs: bool = True,
    ):
        """Connect to a server.

        Args:
            model: The model name to request; None takes the first model the server
                lists (``GET /models``).
            base_url: The API root, ending in ``/v1``.
            api_key: The API key; None reads it from ``api_key_env``.
            api_key_env: The environment variable holding the key (it must be set); None
                reads ``OPENAI_API_KEY`` if set, else sends no key (local servers).
            max_concurrency: Most requests in flight at once.
            timeout: Seconds to wait for one response.
            max_retries: Retries of a failed request before giving up.
            backoff: Seconds before the first retry; doubled at each further retry.
            logprobs: Ask for token log-probabilities (turn off for servers that reject
                the ``logprobs`` field).

        Raises:
            ServerError: the server cannot be reached or does not list its models.
            ModelNotFound: the server lists several models, none of them ``model``.
            ValueError: an argument is out of range, or ``api_key_env`` is not set.
        """
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "need max_concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0; "
                f"got {max_concurrency}, {max_retries}, {timeout} and {backoff}"
            )
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.logprobs = logprobs
        self._headers = {"Content-Type": "application/json"}
        key = _api_key(api_key, api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.model, self.name = self._served(model)

    def _served(self, model: str | None) -> tuple[str, str]:
        """The model name to request, and the model the server reports serving for it.

        A server that lists the name serves it; one that lists a single other model
        (llama.cpp) answers every name with that model.
        """
        reply = self._request("/models")
        try:
            listed = [str(entry["id"]) for entry in reply["data"]]
        except (KeyError, TypeError) as error:
            raise ServerError(
                f"{self.base_url}/models answered {str(reply)[:200]}, not a list of models; "
                "check that base_url points at an OpenAI-compatible API (it ends in /v1)"
            ) from error
        if model is None:
            if not listed:
                raise ServerError(f"{self.base_url}/models lists no model; pass the model name")
            return listed[0], listed[0]
        if model in listed or not listed:
            return model, model
        if len(listed) == 1:
            return model, listed[0]
        raise ModelNotFound(
            f"the server at {self.base_url} serves {listed}, not {model!r}; pass one of them "
            "as the model"
        )

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        adapter: str | None = None,
    ) -> list[Generation]:
        """Generate ``params.n`` completions for each conversation.

        Args:
            conversations: Chat conversations; each ends with a user message.
            params: Sampling parameters.
            adapter: The name under which the server serves an adapter (e.g. vLLM's
                ``--lora-modules NAME=PATH``), sent as the request's model; None uses
                the base model.

        Returns:
            One `Generation` per conversation, in order.

        Raises:
            ServerError: the server is unreachable or keeps failing after the retries,
                or it rejected a request.
            ContextLengthExceeded: the server says a prompt does not fit its context.
        """
        if not conversations:
            return []
        model = adapter or self.model
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(self._generate_one, c, params, model) for c in conversations]
            try:
                return [future.result() for future in futures]
            except BaseException:  # fail fast: drop the requests not yet sent
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _generate_one(
        self, conversation: Conversation, params: SamplingParams, model: str
    ) -> Generation:
        completions: list[Completion] = []
        while len(completions) < params.n:
            body: dict[str, Any] = {
                "model": model,
                "messages": list(conversation),
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "n": params.n - len(completions),
            }
            if params.stop:
                body["stop"] = list(params.stop)
            if params.seed is not None:
                body["seed"] = params.seed + len(completions)
            if self.logprobs:
                body.update(logprobs=True, top_logprobs=0)
            reply = self._request("/chat/completions", body)
            new = _completions(reply.get("choices") or [], reply.get("usage") or {})
            if not new:
                raise ServerError(f"{self.base_url} answered with no choices: {reply}")
            completions += new
        return Generation(completions[: params.n])

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET (no body) or POST JSON to ``path``, retrying transient failures."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt
            try:
                request = urllib.request.Request(url, data=data, headers=self._headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as error:
                detail = _error_detail(error)
                if error.code not in _RETRY_STATUSES:
                    raise _rejected(url, error.code, detail) from error
                last_error = f"HTTP {error.code}: {detail}"
                wait = _retry_after(error) or wait
            except (OSError, http.client.HTTPException) as error:  # unreachable, timeout, reset
                last_error = str(getattr(error, "reason", None) or error)
            else:
                return _parse_json(url, payload)
            if attempt < self.max_retries:
                time.sleep(wait)
        raise ServerError(
            f"{url} failed {self.max_retries + 1} times; last error: {last_error}. Check that "
            f"the server is running and that base_url is right (`vllm serve MODEL` listens "
            f"on {DEFAULT_BASE_URL})."
        )


def _completions(choices: list[dict[str, Any]], usage: dict[str, Any]) -> list[Completion]:
    """Turn the choices of a reply into completions, with token counts and log-probs."""
    token_logprobs = [
        [token["logprob"] for token in (choice.get("logprobs") or {}).get("content") or []]
        for choice in choices
    ]
    if len(choices) > 1 and all(token_logprobs):
        counts = [len(logprobs) for logprobs in token_logprobs]
    else:  # the usage total, split evenly when several choices share it
        share, extra = divmod(int(usage.get("completion_tokens") or 0), max(len(choices), 1))
        counts = [share + (index < extra) for index in range(len(choices))]
    return [
        Completion(
            text=choice["message"].get("content") or "",
            num_tokens=count,
            mean_logprob=sum(logprobs) / len(logprobs) if logprobs else None,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )
        for choice, logprobs, count in zip(choices, token_logprobs, counts, strict=True)
    ]


def _rejected(url: str, status: int, detail: str) -> Exception:
    """The error for an HTTP status that retrying will not fix."""
    if status == 400 and "context length" in detail.lower():
        return ContextLengthExceeded(
            f"{url} rejected a prompt: {detail}. Keep fewer earlier turns in the "
            "conversation (e.g. a smaller history_window) or lower max_new_tokens."
        )
    hints = {
        401: "set the API key (OPENAI_API_KEY, or api_key_env to name another variable)",
        403: "check that the API key may use this model",
        404: "check base_url (it ends in /v1) and the model name the server serves",
    }
    hint = hints.get(status, "check the request's parameters against the server's API")
    return ServerError(f"{url} answered HTTP {status}: {detail}. Fix: {hint}.")


def _api_key(api_key: str | None, api_key_env: str | None) -> str | None:
    if api_key or not api_key_env:
        return api_key or os.environ.get("OPENAI_API_KEY")
    if api_key_env not in os.environ:
        raise ValueError(f"api_key_env={api_key_env!r} names an unset environment variable")
    return os.environ[api_key_env]


def _error_detail(error: urllib.error.HTTPError) -> str:
    """The server's error message, from an OpenAI-style JSON body when there is one."""
    body = error.read().decode(errors="replace")
    try:
        message = json.loads(body)["error"]
        return str(message.get("message", message) if isinstance(message, dict) else message)
    except (ValueError, KeyError, TypeError):
        return body[:500] or str(error.reason)


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    try:
        return min(float(error.headers.get("Retry-After", "")), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None


def _parse_json(url: str, payload: bytes) -> dict[str, Any]:
    try:
        return json.loads(payload)
    except ValueError as error:
        raise ServerError(
            f"{url} answered with something other than JSON: {payload[:200]!r}; check "
            "that base_url points at an OpenAI-compatible API (it ends in /v1)"
        ) from error
