"""Sequential retry: the model answers every turn given the environment's conversation."""

from __future__ import annotations

from collections.abc import Sequence

from agents.base import Action
from agents.common import LLMAgent, action_from
from rise_gym.spaces import Conversation


class SequentialRetry(LLMAgent):
    """Prompting-only self-correction: one completion per turn, conditioned on the history.

    This is also how a RISE-trained model is evaluated (pass its adapter).
    """

    name = "sequential"

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Answer every observation with one completion, in one batched call."""
        return [action_from(g) for g in self.generate(observations)]
