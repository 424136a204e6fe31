"""Relabelling visited states with improved actions, and choosing the actions to train on.

For each state an on-policy rollout visited, RISE obtains an improved action: the best
of N samples from the learner (self-distillation) or from an expert (distillation).
`training_actions` then keeps what the data filter allows, drops relabelled actions that
are no better than the on-policy one, and removes duplicate (state, action) pairs; the
agent weights each kept action by ``exp(reward / tau)`` for reward-weighted regression.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
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
        previous_reward: The reward of the attempt just before this state (None at
            turn 1); the ``better`` filter compares with it.
    """

    problem_id: str
    index: int
    turn: int
    conversation: Conversation
    on_policy: Candidate
    improved: Candidate | None = None
    previous_reward: float | None = None


def replay_states(env: MultiTurnEnv, record: EpisodeRecord) -> list[VisitedState]:
    """Rebuild the observation before every turn of a recorded episode.

    The environment is reset on the record's problem and stepped through the recorded
    responses, so states are exactly what the agent saw (history window included).
    """
    observation, _ = env.reset(seed=record.seed, options={"index": record.index})
    states: list[VisitedState] = []
    for turn in record.turns:
        reward = 1.0 if turn.correct else 0.0
        candidate = Candidate(turn.response, reward, "on_policy")
        previous = states[-1].on_policy.reward if states else None
        states.append(
            VisitedState(
                record.problem_id,
                record.index,
                turn.turn,
                observation,
                candidate,
                previous_reward=previous,
            )
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


def select_actions(
    state: VisitedState, data_filter: DataFilter, drop_unimproved: bool = True
) -> list[Candidate]:
    """The actions at ``state`` that the filter keeps.

    - ``all``: the on-policy action and the improved one.
    - ``better`` (the reference code's): an action only if its reward beats the reward
      of the attempt before this state; every action at turn 1 (no attempt before).
      Keeping a right answer is never "better", so this filter teaches corrections only.
    - ``best``: only the single best action (ties keep the on-policy one).
    - ``success``: only correct actions.

    Args:
        state: A relabelled state.
        data_filter: One of `DATA_FILTERS`.
        drop_unimproved: First drop the improved action when its reward does not beat
            the on-policy action's (a failed best-of-N search is not an improvement).

    Returns:
        The kept actions, on-policy first.
    """
    if data_filter not in DATA_FILTERS:
        raise ValueError(f"unknown data_filter {data_filter!r}; valid: {list(DATA_FILTERS)}")
    improved = state.improved
    if improved and drop_unimproved and improved.reward <= state.on_policy.reward:
        improved = None
    actions = [state.on_policy] + ([improved] if improved else [])
    if data_filter == "all":
        return actions
    if data_filter == "better":
        if state.previous_reward is None:
            return actions
        return [action for action in actions if action.reward > state.previous_reward]
    if data_filter == "best":
        return [max(actions, key=lambda candidate: candidate.reward)]
    return [candidate for candidate in actions if candidate.reward > 0]


def training_actions(
    states: Iterable[VisitedState], data_filter: DataFilter, drop_unimproved: bool = True
) -> list[tuple[VisitedState, Candidate]]:
    """Every (state, action) pair to train on, each identical pair once.

    Greedy rollouts revisit the same state with the same action (a model that repeats
    its answer sees the same windowed conversation at later turns), and the same
    action may be both the on-policy and the improved one; training on such copies would
    multiply their weight. Pairs are identical when the conversations are equal and the
    responses equal after stripping whitespace; the first kept copy wins.

    Args:
        states: Relabelled states, in order.
        data_filter: One of `DATA_FILTERS` (see `select_actions`).
        drop_unimproved: See `select_actions`.

    Returns:
        The kept pairs, in order.
    """
    seen: set[tuple[str, str]] = set()
    pairs = []
    for state in states:
        for action in select_actions(state, data_filter, drop_unimproved):
            key = (json.dumps(state.conversation, sort_keys=True), action.response.strip())
            if key not in seen:
                seen.add(key)
                pairs.append((state, action))
    return pairs
