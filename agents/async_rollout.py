"""The asynchronous rollout engine: every episode advances on its own, for servers.

The batched engine (`agents.rollout`) plays every live episode's turn in one
``agent.act`` call and waits for the slowest answer before any episode moves on. Here
each episode's turn is ``agent.act([observation])`` (a batch of one) in a worker thread:
as soon as an answer returns, the main thread steps that episode's environment, records
the turn and sends the episode's next turn, so a server that batches continuously
(``vllm serve``, SGLang, llama.cpp) always has up to ``max_in_flight`` conversations to
work on and no episode waits for another. Environments are stepped, and records written,
only in the main thread; ``agent.act`` runs in up to ``max_in_flight`` threads at once,
so it must be thread-safe (the agents in `agents` are, on a server back end).

Records, resume and metrics are the batched engine's: the same `Rollout` plan, the same
settings (the engine is not one of them: a file written by one engine resumes with the
other) and, with greedy decoding, the same turns. Records are appended as episodes end,
so the file's order differs; `run_async` returns them in problem order. An episode's
``wall_time`` is the time its own ``act`` calls took (they overlap, so the sum over
episodes exceeds the run's time).

Each episode names its session (`agents.llm.servers.session`) while its ``act`` runs, so
a `agents.llm.servers.ServerPool` sends all its turns to the same server.

Select it with ``rollout(..., engine="async")`` or ``evaluate(..., engine="async")``;
there ``batch_size`` is the most episodes waiting for an answer at once.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from agents.base import Action, Agent, as_action
from agents.llm.factory import LazyLLM
from agents.llm.servers import check_adapter_name, check_served_adapter, served_models, session
from agents.rollout import _Episode, _turn_record
from rise_gym.records import EpisodeRecord, append_record
from rise_gym.spaces import Conversation

if TYPE_CHECKING:
    from agents.rollout import Rollout

DEFAULT_MAX_IN_FLIGHT = 64
"""Episodes waiting for an answer at once when none is given."""

_IN_PROCESS = {
    "agents.llm.transformers_backend": "TransformersLLM",
    "agents.llm.vllm_backend": "VllmLLM",
}
"""Back ends that run the model in this process: one call at a time, batched."""


def run_async(
    plan: Rollout, *, max_in_flight: int | None = None, progress: bool = True
) -> list[EpisodeRecord]:
    """Play a rollout's pending episodes, each on its own (see the module's docstring).

    Args:
        plan: The episodes, as `agents.rollout.plan_rollout` checked them.
        max_in_flight: Most episodes waiting for an answer at once (default
            `DEFAULT_MAX_IN_FLIGHT`); an agent that makes several requests per answer
            (n samples from llama.cpp, self-refine's two calls) makes them one after
            another.
        progress: Show a progress bar.

    Returns:
        Every record of the plan (reused and new), in problem order.

    Raises:
        ValueError: ``max_in_flight`` < 1, or the agent's back end runs in this process
            (use the batched engine).
        AdapterNotServed: the agent names a server adapter by path, or the server would
            not apply it.
    """
    limit = DEFAULT_MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
    if limit < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {limit}")
    waiting = deque(plan.pending)
    if waiting:
        check_agent(plan.agent)
    bar = plan.episode_bar(len(waiting), "async", progress=progress)
    run_id = uuid.uuid4().hex[:12]
    in_flight: dict[Future[tuple[list[Action | str], float]], _Episode] = {}
    pool = ThreadPoolExecutor(max_workers=min(limit, len(waiting)) or 1)

    def send(episode: _Episode) -> None:
        key = f"{run_id}:{episode.record.index}"
        future = pool.submit(_act, plan.agent, episode.observation, key)
        in_flight[future] = episode

    try:
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                send(plan._start(waiting.popleft()))
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: in_flight[f].record.index):
                episode = in_flight.pop(future)
                responses, seconds = future.result()
                _step(episode, responses, seconds, plan.agent)
                if not episode.done:
                    send(episode)
                    continue
                plan.finished[episode.record.index] = episode.record
                if plan.output:
                    append_record(plan.output, episode.record)
                bar.update(1)
    finally:  # on an error, drop the requests not yet sent; finished episodes are saved
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return [plan.finished[index] for index in plan.indices]


def check_agent(agent: Agent) -> None:
    """Check that the async engine can drive ``agent`` (see `run_async`'s errors)."""
    llm: Any = getattr(agent, "llm", None)
    adapters = [getattr(agent, "adapter", None)]
    while llm is not None:
        if isinstance(llm, LazyLLM):
            llm.load()  # build it now: the run needs it
        adapters.append(getattr(llm, "adapter", None))
        inner = getattr(llm, "llm", None) or getattr(llm, "_llm", None)
        if inner is None:
            break
        llm = inner
    module = type(llm).__module__
    if module in _IN_PROCESS:
        raise ValueError(
            f"agent {agent.name!r} generates with {_IN_PROCESS[module]}, which runs in this "
            "process one batched call at a time; the async engine is for servers (it sends "
            "one conversation per request). Use engine='batched', or serve the model "
            "(`vllm serve MODEL`) and use backend='openai'"
        )
    listed = served_models(llm) if llm is not None else None
    for adapter in filter(None, adapters):
        if hasattr(llm, "base_url") or hasattr(llm, "servers"):
            check_adapter_name(adapter)
        if listed is not None:
            check_served_adapter(listed, adapter, llm.base_url)


def _act(agent: Agent, observation: Conversation, key: str) -> tuple[list[Action | str], float]:
    started = time.perf_counter()
    with session(key):
        responses = agent.act([observation])
    return responses, time.perf_counter() - started


def _step(episode: _Episode, responses: list[Action | str], seconds: float, agent: Agent) -> None:
    if len(responses) != 1:
        raise ValueError(
            f"agent {agent.name!r} returned {len(responses)} responses for 1 observation; "
            "act() must return one per observation"
        )
    action = as_action(responses[0])
    observation, _, terminated, truncated, info = episode.env.step(action.text)
    episode.observation = observation
    episode.record.turns.append(_turn_record(episode.env, action, info))
    episode.record.wall_time += seconds
    episode.done = terminated or truncated
