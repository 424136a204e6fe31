"""Self-Refine: the model critiques its last answer, then writes a refined one."""

from __future__ import annotations

from collections.abc import Sequence

from agents.base import Action
from agents.common import LLMAgent, action_from
from agents.llm.base import LLM, SamplingParams
from rise_gym.spaces import Conversation

DEFAULT_FEEDBACK_PROMPT = (
    "Review your answer above step by step. Point out any mistake in the reasoning or the "
    "arithmetic. Do not write a new solution yet."
)
DEFAULT_REFINE_PROMPT = (
    "Using your review, write an improved solution to the original problem and put the "
    "final answer within \\boxed{}."
)


class SelfRefine(LLMAgent):
    """Self-Refine (Madaan et al., 2023) played over the environment's turns.

    Turn 1 is a plain answer. At every later turn the environment's retry prompt is
    replaced by the agent's own loop: the model writes feedback on its last answer
    (one call), then a refined answer given that feedback (a second call). Both calls
    are counted, so comparisons with other agents are at equal compute.
    """

    name = "self-refine"

    def __init__(
        self,
        llm: LLM,
        params: SamplingParams | None = None,
        *,
        feedback_prompt: str = DEFAULT_FEEDBACK_PROMPT,
        refine_prompt: str = DEFAULT_REFINE_PROMPT,
        adapter: str | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            llm: The back end.
            params: Sampling parameters of both calls.
            feedback_prompt: Asks the model to critique its last answer.
            refine_prompt: Asks for a refined answer given the critique.
            adapter: A PEFT adapter path applied to every call.
            name: Overrides the default name.
        """
        super().__init__(llm, params, adapter=adapter, name=name)
        self.feedback_prompt = feedback_prompt
        self.refine_prompt = refine_prompt

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Answer first turns directly; refine later turns with feedback, batched."""
        first = [i for i, obs in enumerate(observations) if _attempts(obs) == 0]
        later = [i for i, obs in enumerate(observations) if _attempts(obs) > 0]
        actions: dict[int, Action] = {}
        for i, generation in zip(first, self.generate([observations[i] for i in first])):
            actions[i] = action_from(generation)
        critique_requests = [self._ask_feedback(observations[i]) for i in later]
        critiques = self.generate(critique_requests)
        refine_requests = [
            [
                *request,
                {"role": "assistant", "content": critique.texts[0]},
                {"role": "user", "content": self.refine_prompt},
            ]
            for request, critique in zip(critique_requests, critiques)
        ]
        for i, critique, refined in zip(later, critiques, self.generate(refine_requests)):
            action = action_from(refined, llm_calls=2, extra_tokens=critique.num_tokens)
            action.metadata["feedback"] = critique.texts[0]
            actions[i] = action
        return [actions[i] for i in range(len(observations))]

    def _ask_feedback(self, observation: Conversation) -> Conversation:
        """The conversation up to the last answer, followed by the feedback request."""
        last_answer = max(i for i, m in enumerate(observation) if m["role"] == "assistant")
        return [*observation[: last_answer + 1], {"role": "user", "content": self.feedback_prompt}]


def _attempts(observation: Conversation) -> int:
    return sum(message["role"] == "assistant" for message in observation)
