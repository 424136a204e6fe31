"""The rollout TRL calls: groups of episodes played with the live policy, and their returns."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rise_gym
from agents.online_rl.episodes import (
    episode_return,
    episode_sequence,
    final_conversation,
    stopped_by_model,
)
from agents.rollout import Rollout, play_batched
from agents.sequential import SequentialRetry
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.records import EpisodeRecord
from rise_gym.spaces import Conversation

if TYPE_CHECKING:
    import torch

    from agents.online_rl.agent import MultiTurnGRPO, Progress


class EpisodeRollout:
    """TRL's ``rollout_func``: one multi-turn episode per prompt it is given.

    TRL's sampler repeats every problem ``num_generations`` times in a row, so the
    prompts it passes already hold each group; every entry gets its own episode.
    """

    def __init__(
        self,
        agent: MultiTurnGRPO,
        env_id: str,
        env_kwargs: dict[str, Any],
        openings: dict[str, int],
        progress: Progress,
    ):
        """Bind the rollouts to an agent, an environment and the problems' openings.

        Args:
            agent: The agent whose configuration and policy play.
            env_id: The environment id.
            env_kwargs: Every ``gym.make`` argument of the training episodes.
            openings: Problem index of each opening prompt (`opening_key`).
            progress: Where the generated tokens of each step are recorded.
        """
        self.agent = agent
        self.env_id = env_id
        self.env_kwargs = env_kwargs
        self.openings = openings
        self.progress = progress

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        """Play an episode per prompt with the live policy; return TRL's rollout dict.

        Returns:
            ``prompt_ids``, ``completion_ids``, ``env_mask`` and ``logprobs`` (None:
            TRL computes them) per episode, and, for the reward functions,
            ``episode_return``, ``turn_correct``, ``conversation`` and
            ``generated_tokens``.
        """
        config = self.agent.config
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        step = trainer.state.global_step
        params = replace(self.agent.params, temperature=config.temperature, seed=config.seed + step)
        policy = self.agent.policy(model, tokenizer)
        player = SequentialRetry(policy, params, name=self.agent.name)
        indices = [self._index(prompt) for prompt in prompts]
        output = config.output_dir / "episodes.jsonl" if trainer.is_world_process_zero() else None
        with _generation_mode(model):
            records = play_groups(
                self.env_id,
                self.env_kwargs,
                player,
                indices,
                seed=config.seed,
                output=output,
                settings={"global_step": step},
            )
        env = make_env(self.env_id, self.env_kwargs)
        conversations = [final_conversation(env, record) for record in records]
        sequences = [
            episode_sequence(
                tokenizer,
                conversation,
                stopped_by_model(record),
                end_token_ids=policy.eos_token_ids,
            )
            for conversation, record in zip(conversations, records)
        ]
        tokens = [sum(turn.generated_tokens for turn in record.turns) for record in records]
        if trainer.is_world_process_zero():
            self.progress.record(step, sum(tokens))
        correct = [[turn.correct for turn in record.turns] for record in records]
        return {
            "prompt_ids": [s.prompt_ids for s in sequences],
            "completion_ids": [s.completion_ids for s in sequences],
            "env_mask": [s.env_mask for s in sequences],
            "logprobs": None,
            "episode_return": [
                episode_return(
                    c, config.credit, discount=config.discount, bonus=config.improvement_bonus
                )
                for c in correct
            ],
            "turn_correct": correct,
            "conversation": conversations,
            "generated_tokens": tokens,
        }

    def _index(self, prompt: Conversation) -> int:
        try:
            return self.openings[opening_key(prompt)]
        except KeyError:
            raise ValueError(
                f"the trainer passed a prompt that opens no training problem of "
                f"{self.env_id}: {prompt!r}; train on opening_dataset's prompts"
            ) from None


def env_return(
    completions: list[Any],
    episode_return: list[float],
    turn_correct: list[list[bool]],
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float | None]:
    """The TRL reward function of the environment: each episode's return.

    Also logs the share of episodes right at the first and at the last turn.
    """
    if log_metric is not None:
        log_metric("episodes/first_correct", sum(c[0] for c in turn_correct) / len(turn_correct))
        log_metric("episodes/last_correct", sum(c[-1] for c in turn_correct) / len(turn_correct))
    return list(episode_return)


def play_groups(
    env_id: str,
    env_kwargs: dict[str, Any],
    agent: SequentialRetry,
    indices: Sequence[int],
    *,
    seed: int,
    output: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> list[EpisodeRecord]:
    """Play one episode per entry of ``indices`` (repeats are independent episodes).

    The n-th occurrences of the problems form the n-th `Rollout`, and all of them play
    together in lock-step turns (`play_batched`), one batched call per turn.

    Returns:
        The records, in the order of ``indices``.
    """
    seen: Counter[int] = Counter()
    copies = []
    for index in indices:
        copies.append(seen[index])
        seen[index] += 1
    rollouts = [
        Rollout(
            env_id,
            agent,
            env_kwargs,
            seed,
            sorted(index for index, c in zip(indices, copies) if c == copy),
            {},
            output,
            {**(settings or {}), "copy": copy},
        )
        for copy in range(max(copies, default=-1) + 1)
    ]
    play_batched(rollouts, progress=False)
    return [rollouts[copy].finished[index] for index, copy in zip(indices, copies)]


def opening_dataset(env: MultiTurnEnv, limit: int | None) -> tuple[Any, dict[str, int]]:
    """TRL's training dataset (one ``prompt`` per problem) and each opening's problem index.

    Problems whose opening repeats an earlier one are left out (a prompt must name one
    problem).
    """
    from datasets import Dataset

    openings: dict[str, int] = {}
    prompts = []
    for index in range(min(limit or len(env.problems), len(env.problems))):
        observation, _ = env.reset(options={"index": index})
        key = opening_key(observation)
        if key not in openings:
            openings[key] = index
            prompts.append({"prompt": observation})
    return Dataset.from_list(prompts), openings


def opening_key(prompt: Conversation) -> str:
    """The key under which a prompt's problem is found."""
    return json.dumps(list(prompt), sort_keys=True)


@contextmanager
def _generation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) while sampling, then the previous mode again."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> MultiTurnEnv:
    """The unwrapped rise-gym environment ``env_id`` made with ``env_kwargs``."""
    env = rise_gym.make(env_id, **env_kwargs).unwrapped
    if not isinstance(env, MultiTurnEnv):
        raise TypeError(f"{env_id} is not a rise-gym multi-turn environment")
    return env
