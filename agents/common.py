"""Plumbing shared by the LLM-driven agents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.base import Action
from agents.llm.base import LLM, Generation, SamplingParams
from rise_gym.spaces import Conversation


class LLMAgent:
    """An agent that answers with an LLM back end.

    Attributes:
        llm: The back end every call goes to.
        params: Sampling parameters of the agent's answers.
        adapter: A PEFT adapter applied to every call (None: the base model).
        name: The agent's name in records and leaderboards.
    """

    name = "llm-agent"

    def __init__(
        self,
        llm: LLM,
        params: SamplingParams | None = None,
        *,
        adapter: str | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            llm: The back end.
            params: Sampling parameters (default: greedy, 256 new tokens).
            adapter: A PEFT adapter path applied to every call.
            name: Overrides the agent's default name.
        """
        self.llm = llm
        self.params = params or SamplingParams()
        self.adapter = adapter
        if name is not None:
            self.name = name

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams | None = None
    ) -> list[Generation]:
        """One batched call to the back end with the agent's adapter."""
        if not conversations:
            return []
        return self.llm.generate(conversations, params or self.params, adapter=self.adapter)


def action_from(generation: Generation, llm_calls: int = 1, extra_tokens: int = 0) -> Action:
    """The `Action` submitting a generation's first completion, with its cost."""
    completion = generation.completions[0]
    metadata: dict[str, Any] = {"finish_reason": completion.finish_reason}
    if completion.mean_logprob is not None:
        metadata["mean_logprob"] = completion.mean_logprob
    return Action(
        text=completion.text,
        llm_calls=llm_calls,
        generated_tokens=generation.num_tokens + extra_tokens,
        metadata=metadata,
    )
