"""When to stop retrying: a Gymnasium environment over recorded multi-turn episodes.

Without an oracle a multi-turn agent must decide which of its answers to submit. This
environment replays recorded episodes (`EpisodeRecord`, as written by
`agents.rollout`) one turn at a time: the observation describes the attempts so far,
the action is 0 (submit the current answer) or 1 (continue to the next recorded
attempt), and the return is the submitted answer's correctness minus ``turn_cost`` per
extra turn. At the last recorded turn the last answer is submitted whatever the action.

Features (`FEATURE_NAMES`, each in [0, 1]) of turn t of an episode cut to ``max_turns``:

==================  ==============================================================
turn                t / max_turns
last_turn           1 at the episode's last usable turn (submission is forced there)
earlier_agreement   share of the t - 1 earlier answers equal to the current one
changed             1 if the answer differs from the previous turn's (0 at turn 1)
no_answer           1 if no answer could be extracted from the response
response_length     response characters / ``length_scale``, clipped at 1
truncated           1 if generation hit its token limit (``finish_reason == "length"``)
has_logprob         1 if the back end recorded ``metadata["mean_logprob"]``
token_probability   exp(mean token log-probability), 0 when not recorded
vote_share          the current answer's share of the answers given so far
is_majority         1 if the current answer is the majority so far (ties: most recent)
distinct_answers    distinct answers so far / t
==================  ==============================================================

Answers are compared as recorded (the grader has normalised them); a missing answer
(None) never agrees and never votes, as in `rise_gym.metrics`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rise_gym.errors import EpisodeFinished, EpisodeNotStarted
from rise_gym.metrics import majority_answer
from rise_gym.records import EpisodeRecord, TurnRecord, read_records

SUBMIT = 0
"""Action: submit the current answer (ends the episode)."""
CONTINUE = 1
"""Action: discard the current answer and look at the next recorded attempt."""

FEATURE_NAMES: tuple[str, ...] = (
    "turn",
    "last_turn",
    "earlier_agreement",
    "changed",
    "no_answer",
    "response_length",
    "truncated",
    "has_logprob",
    "token_probability",
    "vote_share",
    "is_majority",
    "distinct_answers",
)
"""The observation's components, in order (see the module docstring)."""

DEFAULT_LENGTH_SCALE = 1000.0
"""Response characters that map to a ``response_length`` feature of 1."""

EpisodeSource = str | os.PathLike[str] | Sequence[EpisodeRecord]
"""A path to an episodes JSONL file or the records themselves."""


class StoppingEnv(gym.Env[np.ndarray, np.int64]):
    """Decide, turn by turn, whether to submit the current recorded answer or go on.

    Each episode replays one recorded multi-turn episode. Continuing costs
    ``turn_cost`` at once; submitting pays 1.0 if the submitted answer is correct, else
    0.0; so an episode's return is ``correct - turn_cost * (turns used - 1)``. Submitting
    (or reaching the last usable turn, whatever the action) terminates the episode.

    Example:
        >>> from rise_gym.records import EpisodeRecord, TurnRecord
        >>> turns = [TurnRecord(1, "It is 5.", "5", False), TurnRecord(2, "It is 4.", "4", True)]
        >>> record = EpisodeRecord("RISE-Arithmetic-v0", "p0", 0, "4", "sequential", 0, turns)
        >>> env = StoppingEnv([record], turn_cost=0.1)
        >>> observation, info = env.reset(seed=0)
        >>> observation.shape, info["turn"], info["answer"]
        ((12,), 1, '5')
        >>> env.step(CONTINUE)[1:3]
        (-0.1, False)
        >>> env.step(CONTINUE)[1:3]  # the last turn: its answer is submitted anyway
        (1.0, True)
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        episodes: EpisodeSource | None = None,
        *,
        turn_cost: float = 0.0,
        max_turns: int | None = None,
        num_problems: int | None = None,
        length_scale: float = DEFAULT_LENGTH_SCALE,
        render_mode: str | None = None,
    ):
        """Load the episodes and precompute every turn's features.

        Args:
            episodes: An episodes JSONL file (as written by `agents.rollout`) or a list
                of `EpisodeRecord`, recorded without the oracle stop
                (``stop_on_correct=False``). Required.
            turn_cost: Reward subtracted for each extra turn taken, >= 0.
            max_turns: Use at most this many turns of each episode; None uses all
                (the longest episode sets the ``turn`` feature's scale).
            num_problems: Keep only the first ``num_problems`` episodes.
            length_scale: Response characters that map to ``response_length`` = 1.
            render_mode: None or ``"ansi"`` (`render` returns the current turn as text).

        Raises:
            ValueError: If no episodes are given or usable, or an argument is out of range.
            FileNotFoundError: If ``episodes`` names a missing file.
        """
        if turn_cost < 0:
            raise ValueError(f"turn_cost must be >= 0, got {turn_cost}")
        if length_scale <= 0:
            raise ValueError(f"length_scale must be > 0, got {length_scale}")
        if num_problems is not None and num_problems < 1:
            raise ValueError(f"num_problems must be >= 1 or None, got {num_problems}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if episodes is None:
            raise ValueError(
                "StoppingEnv needs episodes=: a path to an episodes JSONL file written by "
                "agents.rollout (with stop_on_correct=False) or a list of EpisodeRecord, "
                'e.g. gym.make("RISE-Stopping-v0", episodes="runs/train.jsonl")'
            )
        records, self.max_turns = load_episodes(episodes, max_turns=max_turns)
        self.episodes: list[EpisodeRecord] = records[:num_problems]
        self.turn_cost = turn_cost
        self.length_scale = length_scale
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(FEATURE_NAMES),), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._features = [
            episode_features(r.turns, max_turns=self.max_turns, length_scale=length_scale)
            for r in self.episodes
        ]
        self._index: int | None = None
        self._position = 0
        self._done = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start replaying an episode at its first turn.

        Args:
            seed: Reseeds ``np_random``, which draws the episode.
            options: ``{"index": i}`` replays ``self.episodes[i]``; otherwise an episode
                is drawn uniformly with ``np_random``.

        Returns:
            The first turn's features and an info dict (see `step`).
        """
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"index"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; valid: 'index'")
        if "index" in options:
            index = options["index"]
            if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.episodes):
                raise IndexError(
                    f"options['index']={index!r} is out of range; "
                    f"valid: 0..{len(self.episodes) - 1}"
                )
            self._index = int(index)
        else:
            self._index = int(self.np_random.integers(len(self.episodes)))
        self._position = 0
        self._done = False
        return self._observation(), self._info(submitted=False)

    def step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Submit the current answer (0) or continue to the next recorded turn (1).

        Args:
            action: `SUBMIT` or `CONTINUE`; ignored at the last usable turn, where the
                answer is submitted.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``truncated`` is
            always False. info holds ``index``, ``problem_id``, ``turn`` (1-based, the
            turn now observed or submitted), ``answer``, ``correct`` (of that turn) and
            ``submitted``.
        """
        if self._index is None:
            raise EpisodeNotStarted("step() was called before reset(); call env.reset() first")
        if self._done:
            raise EpisodeFinished(
                "step() was called after the episode ended; call env.reset() to start a new one"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0 (submit) or 1 (continue), got {action!r}")
        last = self._position == len(self._features[self._index]) - 1
        if action == SUBMIT or last:
            self._done = True
            reward = float(self._current_turn().correct)
        else:
            self._position += 1
            reward = -self.turn_cost
        return self._observation(), reward, self._done, False, self._info(submitted=self._done)

    def render(self) -> str | None:
        """Return the current turn and its features as text when ``render_mode="ansi"``."""
        if self.render_mode != "ansi" or self._index is None:
            return None
        turn = self._current_turn()
        features = ", ".join(f"{n}={v:.2f}" for n, v in zip(FEATURE_NAMES, self._observation()))
        return (
            f"episode {self._index} turn {self._position + 1}: answer={turn.answer!r}\n{features}"
        )

    def _current_turn(self) -> TurnRecord:
        assert self._index is not None
        return self.episodes[self._index].turns[self._position]

    def _observation(self) -> np.ndarray:
        assert self._index is not None
        return self._features[self._index][self._position].copy()

    def _info(self, *, submitted: bool) -> dict[str, Any]:
        assert self._index is not None
        turn = self._current_turn()
        return {
            "index": self._index,
            "problem_id": self.episodes[self._index].problem_id,
            "turn": self._position + 1,
            "answer": turn.answer,
            "correct": turn.correct,
            "submitted": submitted,
        }


def load_episodes(
    episodes: EpisodeSource, *, max_turns: int | None = None
) -> tuple[list[EpisodeRecord], int]:
    """Read and check the episodes a stopping rule is trained or evaluated on.

    Episodes with a turn marked ungradable (``metadata["gradable"] is False``) are left
    out, as the metrics do.

    Args:
        episodes: An episodes JSONL file or a list of `EpisodeRecord`.
        max_turns: Turns of each episode to use; None takes the longest episode's count.

    Returns:
        The usable records and the turn count ``max_turns`` resolved to.

    Raises:
        FileNotFoundError: If ``episodes`` names a missing file.
        ValueError: If no episode is usable, one has no turns, or one ended correct
            before ``max_turns`` (an oracle run, which would leak the answer's
            correctness through the episode's length).
    """
    if isinstance(episodes, (str, os.PathLike)):
        if not Path(episodes).is_file():
            raise FileNotFoundError(f"no episodes file at {os.fspath(episodes)!r}")
        records = read_records(episodes)
    else:
        records = list(episodes)
    records = [
        r for r in records if all(t.metadata.get("gradable", True) is not False for t in r.turns)
    ]
    if not records:
        raise ValueError("no usable episodes: pass at least one gradable EpisodeRecord")
    empty = [r for r in records if not r.turns]
    if empty:
        raise ValueError(f"episode {empty[0].problem_id!r} has no turns; drop it or re-record it")
    if max_turns is None:
        max_turns = max(len(r.turns) for r in records)
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
    for record in records:
        if len(record.turns) < max_turns and record.turns[-1].correct:
            raise ValueError(
                f"episode {record.problem_id!r} ended correct at turn {len(record.turns)} of "
                f"{max_turns} (an oracle stop); record episodes with stop_on_correct=False"
            )
    return records, max_turns


def token_probability(turn: TurnRecord) -> float | None:
    """A turn's per-token probability: exp(``metadata["mean_logprob"]``), None without it.

    >>> token_probability(TurnRecord(1, "r", "4", True, metadata={"mean_logprob": 0.0}))
    1.0
    """
    logprob = turn.metadata.get("mean_logprob")
    return None if logprob is None else math.exp(min(float(logprob), 0.0))


def episode_features(
    turns: Sequence[TurnRecord], *, max_turns: int, length_scale: float = DEFAULT_LENGTH_SCALE
) -> np.ndarray:
    """The observation at every usable turn of an episode (see `FEATURE_NAMES`).

    Row t depends only on turns 1..t and on how many turns are usable, so the rows are
    exactly what `StoppingEnv` shows turn by turn.

    Args:
        turns: The episode's turns, in order; only the first ``max_turns`` are used.
        max_turns: The turn count that normalises the ``turn`` feature.
        length_scale: Response characters that map to ``response_length`` = 1.

    Returns:
        A float32 array of shape ``(min(len(turns), max_turns), len(FEATURE_NAMES))``.
    """
    turns = turns[:max_turns]
    answers = [turn.answer for turn in turns]
    rows = []
    for position, turn in enumerate(turns):
        answer, earlier = turn.answer, answers[:position]
        votes = [a for a in answers[: position + 1] if a is not None]
        majority = majority_answer(answers[: position + 1], prefer="last")
        probability = token_probability(turn)
        rows.append(
            (
                (position + 1) / max_turns,
                position == len(turns) - 1,
                earlier.count(answer) / len(earlier) if earlier and answer is not None else 0.0,
                position > 0 and answer != earlier[-1],
                answer is None,
                min(len(turn.response) / length_scale, 1.0),
                turn.metadata.get("finish_reason") == "length",
                probability is not None,
                probability or 0.0,
                votes.count(answer) / len(votes) if answer is not None else 0.0,
                majority is not None and answers[majority] == answer,
                len(set(votes)) / (position + 1),
            )
        )
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
