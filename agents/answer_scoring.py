"""A learned selection rule that scores every answer of an episode and submits the best.

Majority vote counts answers; a stopping policy (`agents.stopping`) decides turn by turn
whether to submit the current answer and can never go back to an earlier one. An
`AnswerScorer` sees all k turns, like majority vote, and scores each distinct answer
with a logistic regression over features of the turns that gave it, learned from
recorded episodes in which each answer's correctness is known::

    from agents.answer_scoring import train_answer_scorer
    from agents.stopping import evaluate_selection

    scorer = train_answer_scorer("runs/train.jsonl")
    print(evaluate_selection("runs/test.jsonl", scorer))   # beside "majority", "oracle"
    scorer.save("runs/scorer")          # rise-gym leaderboard --stopping-policy runs/scorer

Features of an answer among the first k turns (`ANSWER_FEATURES`; each in [0, 1]):

==========================  ==========================================================
votes                       turns giving the answer / k
vote_share                  turns giving it / turns giving any answer
is_majority                 1 for majority vote's answer (ties: most recent)
first_turn / last_turn      turn it first / last appears, / k
is_first / is_last          1 if the first / last turn gave it
longest_run                 longest run of consecutive turns giving it / k
token_probability           mean of exp(mean token log-probability) over its turns
max_token_probability       the largest of those
relative_token_probability  its token_probability minus the episode's mean, / 2 + 0.5
has_logprob                 1 if the back end recorded log-probabilities
response_length             mean characters of its responses / ``length_scale``
truncated                   share of its turns cut at the token limit
equations_hold              share of the checkable ``a op b = c`` statements in its
                            responses that are arithmetically true (0 without any)
has_equations               1 if its responses state any such equation
distinct_answers            distinct answers in the episode / k (the same for all)
==========================  ==========================================================

None of them sees the problem or the reference: ``equations_hold`` checks the work a
response shows, not the answer, so a response that computes the wrong thing correctly
passes. The model is scikit-learn's logistic regression on standardised features
(the ``sb3`` extra installs scikit-learn); it is saved as JSON (coefficients, scaling,
settings), so a saved scorer loads without pickles.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rise_gym.envs.stopping import (
    DEFAULT_LENGTH_SCALE,
    EpisodeSource,
    load_episodes,
    token_probability,
)
from rise_gym.metrics import majority_answer
from rise_gym.records import TurnRecord
from rise_gym.selection import Choice

ANSWER_FEATURES: tuple[str, ...] = (
    "votes",
    "vote_share",
    "is_majority",
    "first_turn",
    "last_turn",
    "is_first",
    "is_last",
    "longest_run",
    "token_probability",
    "max_token_probability",
    "relative_token_probability",
    "has_logprob",
    "response_length",
    "truncated",
    "equations_hold",
    "has_equations",
    "distinct_answers",
)
"""Every feature an `AnswerScorer` can use, in order (see the module docstring)."""

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "agreement": ("votes", "vote_share", "is_majority", "longest_run", "distinct_answers"),
    "position": ("first_turn", "last_turn", "is_first", "is_last"),
    "confidence": (
        "token_probability",
        "max_token_probability",
        "relative_token_probability",
        "has_logprob",
    ),
    "form": ("response_length", "truncated"),
    "work": ("equations_hold", "has_equations"),
}
"""The features by what they look at, for ablations (every feature is in one group)."""

SCORER_FILE = "scorer.json"
"""The file `AnswerScorer.save` writes in its directory."""

_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
_EQUATION = re.compile(
    rf"(?<![\d.])({_NUMBER})\s*([-+*/x×÷])\s*({_NUMBER})\s*=\s*(?:\\boxed\{{)?\$?({_NUMBER})(?!\.?\d)"
)
_OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "x": lambda a, b: a * b,
    "×": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else math.nan,
    "÷": lambda a, b: a / b if b else math.nan,
}


def equation_checks(text: str) -> tuple[int, int]:
    """Count the ``a op b = c`` statements in a text and how many of them hold.

    Args:
        text: A response.

    Returns:
        ``(true, total)`` over the binary equations on plain numbers (``+ - * x × / ÷``;
        thousands separators allowed), each true within 1e-6 relative tolerance.

    Example:
        >>> equation_checks("12 + 30 = 42. Then 42 x 2 = 86.")
        (1, 2)
    """
    true = total = 0
    for left, operator, right, result in _EQUATION.findall(text):
        a, b, c = (float(number.replace(",", "")) for number in (left, right, result))
        value = _OPERATIONS[operator](a, b)
        total += 1
        true += math.isclose(value, c, rel_tol=1e-6, abs_tol=1e-9)
    return true, total


def answer_features(
    turns: Sequence[TurnRecord], *, max_turns: int, length_scale: float = DEFAULT_LENGTH_SCALE
) -> tuple[list[int], np.ndarray]:
    """Every distinct answer of an episode's first ``max_turns`` turns and its features.

    Args:
        turns: The episode's turns, in order.
        max_turns: k: the turns looked at, and the scale of the turn features.
        length_scale: Response characters that map to ``response_length`` = 1.

    Returns:
        For each distinct answer (None does not count), in order of first appearance,
        the index of its most recent turn, and a float32 array of shape
        ``(answers, len(ANSWER_FEATURES))``.
    """
    turns = turns[:max_turns]
    answers = [turn.answer for turn in turns]
    distinct = list(dict.fromkeys(a for a in answers if a is not None))
    answered = len(answers) - answers.count(None)
    majority = majority_answer(answers, prefer="last")
    probabilities = [token_probability(turn) for turn in turns]
    known = [p for p in probabilities if p is not None]
    episode_probability = sum(known) / len(known) if known else 0.0
    representatives, rows = [], []
    for answer in distinct:
        positions = [i for i, a in enumerate(answers) if a == answer]
        own = [p for p in (probabilities[i] for i in positions) if p is not None]
        probability = sum(own) / len(own) if own else 0.0
        checks = [equation_checks(turns[i].response) for i in positions]
        true, total = sum(c[0] for c in checks), sum(c[1] for c in checks)
        representatives.append(positions[-1])
        rows.append(
            (
                len(positions) / max_turns,
                len(positions) / answered,
                majority is not None and answers[majority] == answer,
                (positions[0] + 1) / max_turns,
                (positions[-1] + 1) / max_turns,
                positions[0] == 0,
                positions[-1] == len(turns) - 1,
                _longest_run(positions) / max_turns,
                probability,
                max(own, default=0.0),
                (probability - episode_probability) / 2 + 0.5 if own else 0.5,
                bool(own),
                min(sum(len(turns[i].response) for i in positions) / len(positions), length_scale)
                / length_scale,
                sum(turns[i].metadata.get("finish_reason") == "length" for i in positions)
                / len(positions),
                true / total if total else 0.0,
                total > 0,
                len(distinct) / max_turns,
            )
        )
    return representatives, np.asarray(rows, dtype=np.float32).reshape(
        len(rows), len(ANSWER_FEATURES)
    )


class AnswerScorer:
    """A logistic regression over answer features, usable as a selection rule.

    Calling it on an episode's turns scores each distinct answer and submits the
    best-scored one (at its most recent turn); an episode without any answer submits
    nothing (wrong, as under majority vote). It always uses all k turns.

    Attributes:
        features: The names of the features it uses, a subset of `ANSWER_FEATURES`.
        coefficients: One weight per feature, on standardised features.
        intercept: The logistic regression's intercept.
        mean: The training mean of each feature (standardisation).
        scale: The training standard deviation of each feature (1 where constant).
        max_turns: k: the turns it looks at (scales the turn features).
        length_scale: The ``response_length`` feature's scale.
        name: The rule's name in results.
    """

    def __init__(
        self,
        *,
        features: Sequence[str],
        coefficients: Sequence[float],
        intercept: float,
        mean: Sequence[float],
        scale: Sequence[float],
        max_turns: int,
        length_scale: float = DEFAULT_LENGTH_SCALE,
        name: str = "learned (answer scorer)",
    ):
        """Build a scorer from its parameters (`train_answer_scorer` fits them).

        Raises:
            ValueError: If a feature is unknown or the parameter lengths differ.
        """
        columns = _feature_columns(features)
        sizes = {len(features), len(coefficients), len(mean), len(scale)}
        if len(sizes) != 1:
            raise ValueError("features, coefficients, mean and scale must have the same length")
        self.features = tuple(features)
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        self.intercept = float(intercept)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.max_turns = max_turns
        self.length_scale = length_scale
        self.name = name
        self._columns = columns

    def __call__(self, turns: Sequence[TurnRecord]) -> Choice:
        """Choose the answer to submit for one episode (its first ``max_turns`` turns)."""
        representatives, rows = answer_features(
            turns, max_turns=self.max_turns, length_scale=self.length_scale
        )
        used = min(len(turns), self.max_turns)
        if not representatives:
            return Choice(None, used)
        return Choice(representatives[int(np.argmax(self.score(rows)))], used)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """The log-odds that each row's answer is right (rows as `answer_features` gives)."""
        standardised = (rows[:, self._columns] - self.mean) / self.scale
        return standardised @ self.coefficients + self.intercept

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to a directory as ``scorer.json`` (created if needed); returns the directory."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        settings = {
            "kind": "answer_scorer",
            "features": list(self.features),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "max_turns": self.max_turns,
            "length_scale": self.length_scale,
            "name": self.name,
        }
        (directory / SCORER_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnswerScorer:
        """Load a scorer saved by `save`.

        Raises:
            FileNotFoundError: If the directory holds no ``scorer.json``.
            ValueError: If the file uses features this version does not compute.
        """
        file = Path(path) / SCORER_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"no answer scorer at {Path(path)} (no {SCORER_FILE}); save one with "
                "AnswerScorer.save (`python benchmarks/stopping.py` writes runs/stopping/scorer)"
            )
        settings = json.loads(file.read_text())
        settings.pop("kind", None)
        return cls(**settings)

    def weights(self) -> dict[str, float]:
        """Each feature's coefficient on the standardised scale, largest magnitude first."""
        pairs = zip(self.features, self.coefficients.tolist())
        return dict(sorted(pairs, key=lambda item: -abs(item[1])))


def train_answer_scorer(
    episodes: EpisodeSource,
    *,
    max_turns: int | None = None,
    features: Sequence[str] = ANSWER_FEATURES,
    regularization: float = 1.0,
    length_scale: float = DEFAULT_LENGTH_SCALE,
    name: str = "learned (answer scorer)",
) -> AnswerScorer:
    """Fit an `AnswerScorer` on recorded episodes (made without the oracle stop).

    Every distinct answer of every episode is one example, labelled by its correctness.

    Args:
        episodes: Training episodes (a JSONL file or records), e.g. from a train split.
        max_turns: k: turns per episode to use; None uses all recorded turns.
        features: The features to use (default: all of `ANSWER_FEATURES`).
        regularization: The inverse L2 strength ``C`` of the logistic regression.
        length_scale: The ``response_length`` feature's scale.
        name: The rule's name in results.

    Returns:
        The fitted scorer.

    Raises:
        ValueError: If the episodes hold no answer, or answers of only one class (all
            right or all wrong: nothing to learn), or as `load_episodes` raises.
        ImportError: If scikit-learn is missing (the ``sb3`` extra installs it).
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as error:
        raise ImportError(
            "training an answer scorer needs scikit-learn: pip install 'rise-gym[sb3]'"
        ) from error
    columns = _feature_columns(features)
    records, max_turns = load_episodes(episodes, max_turns=max_turns)
    rows: list[np.ndarray] = []
    labels: list[bool] = []
    for record in records:
        representatives, episode_rows = answer_features(
            record.turns, max_turns=max_turns, length_scale=length_scale
        )
        rows.append(episode_rows[:, columns])
        labels.extend(bool(record.turns[i].correct) for i in representatives)
    matrix = np.concatenate(rows) if rows else np.zeros((0, len(features)))
    if len(set(labels)) < 2:
        raise ValueError(
            f"the episodes give {len(labels)} answers, all {'right' if any(labels) else 'wrong'} "
            "or none: an answer scorer needs right and wrong answers to learn from"
        )
    mean = matrix.mean(axis=0)
    scale = matrix.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=regularization, max_iter=1000)
    model.fit((matrix - mean) / scale, np.asarray(labels))
    return AnswerScorer(
        features=features,
        coefficients=model.coef_[0],
        intercept=float(model.intercept_[0]),
        mean=mean,
        scale=scale,
        max_turns=max_turns,
        length_scale=length_scale,
        name=name,
    )


def _feature_columns(features: Sequence[str]) -> list[int]:
    unknown = [name for name in features if name not in ANSWER_FEATURES]
    if unknown or not features:
        raise ValueError(
            f"unknown or no answer features {unknown}; choose from {list(ANSWER_FEATURES)}"
        )
    return [ANSWER_FEATURES.index(name) for name in features]


def _longest_run(positions: Sequence[int]) -> int:
    longest = run = 1
    for previous, current in zip(positions, positions[1:]):
        run = run + 1 if current == previous + 1 else 1
        longest = max(longest, run)
    return longest
