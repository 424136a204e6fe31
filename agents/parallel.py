"""Parallel sampling: k independent answers at turn 1, the majority answer submitted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from agents.base import Action
from agents.common import LLMAgent
from agents.llm.base import LLM, SamplingParams
from rise_gym.spaces import Conversation

AnswerExtractor = Callable[[str], "str | None"]


def _math_answer(text: str) -> str | None:
    from rise_gym.graders.math import extract_answer

    return extract_answer(text)


class ParallelSampling(LLMAgent):
    """Draw ``k`` samples per problem at turn 1 and submit the majority answer.

    The samples are recorded with the turn, so the rollout engine grades each and the
    metrics give mk@t1 and pk@t1. Ties go to the earliest sample (see
    `rise_gym.metrics.majority_answer`).
    """

    name = "parallel"
    single_turn = True
    """The rollout engine runs this agent with ``max_turns=1``."""

    def __init__(
        self,
        llm: LLM,
        k: int = 5,
        params: SamplingParams | None = None,
        *,
        extract_answer: AnswerExtractor = _math_answer,
        adapter: str | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            llm: The back end.
            k: Samples per problem (at equal compute with k sequential turns).
            params: Sampling parameters; ``n`` is set to ``k``. Default: temperature 0.7.
            extract_answer: Maps a sample to the answer it votes for (default: the math
                grader's extraction; for code use e.g. the normalised program text).
            adapter: A PEFT adapter path applied to every call.
            name: Overrides the default name.
        """
        if k < 2:
            raise ValueError(f"k must be >= 2 for parallel sampling, got {k}; use SequentialRetry")
        params = replace(params or SamplingParams(temperature=0.7), n=k)
        super().__init__(llm, params, adapter=adapter, name=name)
        self.k = k
        self.extract_answer = extract_answer

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Sample ``k`` answers per observation in one batched call and vote."""
        from rise_gym.metrics import majority_answer

        actions: list[Action | str] = []
        for generation in self.generate(observations):
            texts = generation.texts
            chosen = majority_answer([self.extract_answer(t) for t in texts], prefer="first")
            actions.append(
                Action(
                    text=texts[0 if chosen is None else chosen],
                    llm_calls=self.k,
                    generated_tokens=generation.num_tokens,
                    samples=texts,
                )
            )
        return actions
