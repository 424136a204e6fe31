"""The agents a leaderboard fields, built by name from one configuration."""

from __future__ import annotations

from typing import Protocol

from agents.base import Agent
from agents.glore import GLoRE
from agents.llm.base import LLM, SamplingParams
from agents.parallel import ParallelSampling
from agents.self_refine import SelfRefine
from agents.sequential import SequentialRetry

AGENT_KINDS = {
    "sequential": "k turns, each conditioned on the earlier attempts (prompting only)",
    "parallel": "k independent samples at turn 1, majority answer submitted",
    "self-refine": "k turns; each later turn is the model's own critique, then a refinement",
    "glore": "k turns; each later turn a critic names the first wrong step, then a rewrite from it",
    "rise": "sequential with a RISE-trained adapter (needs an adapter)",
}
"""Every agent name a leaderboard accepts, with what it does."""


class AgentSettings(Protocol):
    """The settings `build_agent` reads (a `LeaderboardConfig` has them all)."""

    @property
    def max_new_tokens(self) -> int: ...  # noqa: D102

    @property
    def temperature(self) -> float: ...  # noqa: D102

    @property
    def parallel_temperature(self) -> float: ...  # noqa: D102

    @property
    def seed(self) -> int: ...  # noqa: D102

    @property
    def max_turns(self) -> int: ...  # noqa: D102

    @property
    def adapter(self) -> str | None: ...  # noqa: D102


def build_agent(kind: str, llm: LLM, config: AgentSettings) -> Agent:
    """Build the agent called ``kind`` on ``llm`` with the configuration's sampling settings.

    Args:
        kind: A key of `AGENT_KINDS`.
        llm: The back end every agent of the run shares.
        config: Supplies max_new_tokens, temperatures, seed, k (``max_turns``) and the
            adapter of the ``rise`` agent.

    Returns:
        The agent, named ``kind``.
    """
    params = SamplingParams(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed
    )
    if kind == "sequential":
        return SequentialRetry(llm, params, name=kind)
    if kind == "rise":
        return SequentialRetry(llm, params, adapter=config.adapter, name=kind)
    if kind == "self-refine":
        return SelfRefine(llm, params, name=kind)
    if kind == "glore":
        return GLoRE(llm, params, name=kind)
    if kind == "parallel":
        sampling = SamplingParams(
            max_new_tokens=config.max_new_tokens,
            temperature=config.parallel_temperature,
            seed=config.seed,
        )
        return ParallelSampling(llm, k=config.max_turns, params=sampling, name=kind)
    raise ValueError(f"unknown agent {kind!r}; choose from {list(AGENT_KINDS)}")
