"""Relabelling visited states with improved actions, and filtering into weighted examples.

For each state an on-policy rollout visited, RISE obtains an improved action: the best
of N samples from the learner (self-distillation) or from an expert (distillation).
On-policy and improved actions are kept with their rewards and turned into weighted
examples (weight ``exp(reward / tau)``) for reward-weighted regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rise_gym.envs.base import Grade, MultiTurnEnv
from rise_gym.records import EpisodeRecord
from rise_gym.spaces import Conversation

DataFilter = Literal["all", "better", "best", "success"]
DATA_FILTERS: tuple[str, ...] = ("all", "better", "best", "success")


@dataclass
class Candidate:
    """One action at a state, with its reward and where it came from.

    Attributes:
        response: The action's text.
        reward: 1.0 if correct, else 0.0.
        source: ``"on_policy"`` or ``"improved"``.
    """

    response: str
    reward: float
    source: str


@dataclass
class VisitedState:
    """A state an on-policy rollout visited, with the actions collected there.

    Attributes:
        problem_id: The problem's id.
        index: The problem's index in the environment.
        turn: The 1-based turn the state precedes.
        conversation: The observation at that turn (ends with a user message).
        on_policy: The action the learner took there.
        improved: The best improved action found there, if any was drawn.
    """

    problem_id: str
    index: int
    turn: int
    conversation: Conversation
    on_policy: Candidate
    improved: Candidate | None = None


def replay_states(env: MultiTurnEnv, record: EpisodeRecord) -> list[VisitedState]:
    """Rebuild the observation before every turn of a recorded episode.

    The environment is reset on the record's problem and stepped through the recorded
    responses, so states are exactly what the agent saw (history window included).
    """
    observation, _ = env.reset(seed=record.seed, options={"index": record.index})
    states = []
    for turn in record.turns:
        reward = 1.0 if turn.correct else 0.0
        candidate = Candidate(turn.response, reward, "on_policy")
        states.append(
            VisitedState(record.problem_id, record.index, turn.turn, observation, candidate)
        )
        observation, *_ = env.step(turn.response)
    return states


def degrades(record: EpisodeRecord) -> bool:
    """Whether a later turn of the episode is worse than an earlier one."""
    best_so_far = False
    for turn in record.turns:
        if best_so_far and not turn.correct:
            return True
        best_so_far = best_so_far or turn.correct
    return False


def pick_best(samples: Sequence[str], grade: Callable[[str], Grade]) -> Candidate:
    """The best of ``samples`` by reward (the first correct one, else the first sample)."""
    if not samples:
        raise ValueError("pick_best needs at least one sample")
    for sample in samples:
        if grade(sample).correct:
            return Candidate(sample, 1.0, "improved")
    return Candidate(samples[0], 0.0, "improved")


def select_actions(state: VisitedState, data_filter: DataFilter) -> list[Candidate]:
    """The actions at ``state`` that the filter keeps.

    - ``all``: the on-policy action and the improved one.
    - ``better``: the on-policy action, and the improved one only if it beats it.
    - ``best``: only the single best action (ties keep the on-policy one).
    - ``success``: only correct actions.
    """
    if data_filter not in DATA_FILTERS:
        raise ValueError(f"unknown data_filter {data_filter!r}; valid: {list(DATA_FILTERS)}")
    actions = [state.on_policy] + ([state.improved] if state.improved else [])
    if data_filter == "all":
        return actions
    if data_filter == "better":
        beats = state.improved and state.improved.reward > state.on_policy.reward
        return [state.on_policy, state.improved] if beats else [state.on_policy]  # type: ignore[list-item]
    if data_filter == "best":
        return [max(actions, key=lambda candidate: candidate.reward)]
    return [candidate for candidate in actions if candidate.reward > 0]
