"""Which turn's answer to submit: selection rules over a recorded episode, and their scores.

A selection rule looks at a recorded multi-turn episode and picks the turn whose answer
is submitted, using only the attempts up to that turn (except the oracle). Every rule,
a baseline named here or a learned stopping policy, is scored by `evaluate_selection`,
its accuracy computed by `rise_gym.metrics`, so majority vote (m1@tk), last answer,
first answer, the oracle (p1@tk) and learned rules are compared on equal terms::

    from rise_gym.selection import BASELINE_RULES, evaluate_selection

    for rule in BASELINE_RULES:
        print(evaluate_selection("runs/test.jsonl", rule))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from rise_gym.envs.stopping import EpisodeSource, load_episodes
from rise_gym.metrics import Estimate, majority_answer, paired_difference, proportion
from rise_gym.records import TurnRecord


class Choice(NamedTuple):
    """What a selection rule decided for one episode.

    Attributes:
        turn_index: 0-based index of the submitted turn; None when nothing is submitted
            (majority vote over turns without any answer), which counts as wrong.
        turns_used: How many turns the rule needed to see.
    """

    turn_index: int | None
    turns_used: int


SelectionRule = Callable[[Sequence[TurnRecord]], Choice]
"""Given an episode's turns (at most ``max_turns``, in order), the `Choice` made."""


@dataclass(frozen=True)
class Selection:
    """A selection rule scored on recorded episodes.

    Attributes:
        rule: The rule's name (``"majority"``, ``"oracle"``, a policy's name, ...).
        accuracy: The fraction of episodes whose submitted answer is correct, with its
            95% Wilson interval.
        average_turns: Mean number of turns the rule used per episode.
        outcomes: Whether the submitted answer was right, per episode in record order
            (what `advantage` pairs).
    """

    rule: str
    accuracy: Estimate
    average_turns: float
    outcomes: tuple[bool, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        return f"{self.rule}: {self.accuracy} in {self.average_turns:.2f} turns"

    def advantage(self, other: Selection) -> Estimate:
        """This rule's accuracy minus ``other``'s on the same episodes, with a paired 95% interval.

        Raises:
            ValueError: If the two were not scored on the same number of episodes.
        """
        return paired_difference(self.outcomes, other.outcomes)


def evaluate_selection(
    episodes: EpisodeSource, rule: str | SelectionRule, *, max_turns: int | None = None
) -> Selection:
    """Score a selection rule on recorded episodes of any multi-turn agent.

    This is the entry point for leaderboards: pass the records of a run made without
    the oracle stop and either a baseline name or a callable rule (such as a learned
    stopping policy).

    - ``"majority"``: the majority answer over all turns, ties to the most recent
      (the m1@tk rule of `rise_gym.metrics`); uses every turn.
    - ``"last"`` / ``"first"``: the answer of the last / first turn.
    - ``"oracle"``: the first correct answer (p1@tk, an upper bound); uses the turns up
      to it, or all of them when none is correct.
    - any `SelectionRule`: the turn it chooses; a learned policy's name is its ``name``
      attribute.

    Args:
        episodes: An episodes JSONL file or a list of `EpisodeRecord`, recorded with
            ``stop_on_correct=False``; ungradable episodes are left out.
        rule: A name in `BASELINE_RULES` or a callable rule.
        max_turns: Use the first ``max_turns`` turns of each episode (k of m1@tk and
            p1@tk); None uses all recorded turns.

    Returns:
        The accuracy (an `Estimate` over the episodes) and the average turns used.

    Raises:
        ValueError: If ``rule`` is an unknown name, or as
            `rise_gym.envs.stopping.load_episodes` raises (no usable episodes,
            oracle-stopped runs).
    """
    if isinstance(rule, str):
        if rule not in BASELINE_RULES:
            raise ValueError(f"unknown selection rule {rule!r}; valid: {sorted(BASELINE_RULES)}")
        name, choose = rule, BASELINE_RULES[rule]
    else:
        name, choose = getattr(rule, "name", type(rule).__name__), rule
    records, max_turns = load_episodes(episodes, max_turns=max_turns)
    correct, turns_used = [], []
    for record in records:
        turns = record.turns[:max_turns]
        choice = choose(turns)
        correct.append(choice.turn_index is not None and turns[choice.turn_index].correct)
        turns_used.append(choice.turns_used)
    return Selection(
        name, proportion(correct), sum(turns_used) / len(turns_used), outcomes=tuple(correct)
    )


def _majority(turns: Sequence[TurnRecord]) -> Choice:
    return Choice(majority_answer([t.answer for t in turns], prefer="last"), len(turns))


def _last(turns: Sequence[TurnRecord]) -> Choice:
    return Choice(len(turns) - 1, len(turns))


def _first(turns: Sequence[TurnRecord]) -> Choice:
    return Choice(0, 1)


def _oracle(turns: Sequence[TurnRecord]) -> Choice:
    index = next((i for i, turn in enumerate(turns) if turn.correct), len(turns) - 1)
    return Choice(index, index + 1)


BASELINE_RULES: dict[str, SelectionRule] = {
    "majority": _majority,
    "last": _last,
    "first": _first,
    "oracle": _oracle,
}
"""The baseline selection rules by name (see `evaluate_selection`)."""
