"""RISE evaluation metrics (p1@tk, m1@tk, mk@t1, pk@t1) with Wilson confidence intervals.

Every metric reads a sequence of `EpisodeRecord` (one per problem) and returns an
`Estimate`: the fraction of problems counted as solved, its 95% Wilson score interval
and the number of problems behind it.

- p1@tk (`pass_at_turns`): an oracle stops the episode at the first correct answer; a
  problem is solved within k turns when any of its first k answers is correct.
- m1@tk (`majority_at_turns`): no oracle; the majority vote over the answers of the
  first k sequential turns must be correct. Ties go to the answer given most recently.
- mk@t1 (`majority_at_samples`): majority vote over the first k independent turn-1
  samples (parallel sampling). Ties go to the answer of the earliest sample.
- pk@t1 (`pass_at_samples`): any of the first k turn-1 samples is correct, or the
  unbiased pass@k estimator of Chen et al. (2021) over all samples.

Votes are grouped by the extracted answer string exactly as recorded: for math, the
normalised answer of `rise_gym.graders.math.extract_answer`, which is exactly what the
grader compares, so answers that vote together are graded alike. A turn or sample
without an answer (None) does not vote, and a problem where nothing votes counts as wrong.
An episode with a turn marked ungradable (``metadata["gradable"] is False``: the problem's
own reference could not be parsed) is left out of every metric, so ``n`` may be smaller
than the number of records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from rise_gym.records import EpisodeRecord, Sample

TieBreak = Literal["first", "last"]


@dataclass(frozen=True)
class Estimate:
    """A proportion with its confidence interval.

    Attributes:
        value: The point estimate, in [0, 1] (a `paired_difference`: in [-1, 1]).
        low: Lower end of the 95% interval (Wilson for a proportion).
        high: Upper end of the 95% interval.
        n: The number of problems behind the estimate.

    Example:
        >>> print(Estimate(value=0.487, low=0.431, high=0.544, n=300))
        48.7 [43.1, 54.4]
    """

    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.value:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def majority_answer(answers: Sequence[str | None], *, prefer: TieBreak) -> int | None:
    """Index of the majority answer, or None when no answer votes.

    Answers are grouped by exact string; None does not vote; the largest group wins.

    - ``prefer="last"`` (sequential turns: a later turn is the model's revised opinion):
      among tied groups, the one whose most recent member comes latest wins, and the
      index returned is that of the winning group's most recent member.
    - ``prefer="first"`` (parallel samples: unordered draws, so a fixed rule): among
      tied groups, the one whose earliest member comes first (lowest sample index) wins,
      and the index returned is that of the winning group's earliest member.

    Args:
        answers: Extracted answers in order (turns or samples).
        prefer: Tie-break and representative member, ``"last"`` or ``"first"``.

    Returns:
        The index into ``answers`` of the chosen answer, or None if all are None.

    Example:
        >>> majority_answer(["4", "5", "5", "4"], prefer="last")
        3
        >>> majority_answer(["4", "5", "5", "4"], prefer="first")
        0
        >>> majority_answer(["4", None, "5", "5"], prefer="first")
        2
        >>> majority_answer([None, None], prefer="last") is None
        True
    """
    if prefer not in ("first", "last"):
        raise ValueError(f'prefer must be "first" or "last", got {prefer!r}')
    counts: dict[str, int] = {}
    chosen_index: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        if prefer == "last" or answer not in chosen_index:
            chosen_index[answer] = index
    if not counts:
        return None
    # max() keeps the first maximum it meets: order the groups so the preferred one comes first.
    order = sorted(counts, key=chosen_index.__getitem__, reverse=prefer == "last")
    return chosen_index[max(order, key=counts.__getitem__)]


def majority_vote(
    answers: Sequence[str | None], correct: Sequence[bool], *, prefer: TieBreak
) -> tuple[str | None, bool]:
    """The majority answer and its correctness (see `majority_answer` for the rules).

    The group's correctness is that of the member `majority_answer` returns (the most
    recent one with ``prefer="last"``, the earliest with ``prefer="first"``).

    Args:
        answers: Extracted answers in order (turns or samples).
        correct: Whether each answer was graded correct.
        prefer: Tie-break and representative member, ``"last"`` or ``"first"``.

    Returns:
        ``(answer, correct)``; ``(None, False)`` when no answer votes.

    Example:
        >>> majority_vote(["7", "8", "8"], [True, False, False], prefer="last")
        ('8', False)
    """
    if len(answers) != len(correct):
        raise ValueError(f"got {len(answers)} answers but {len(correct)} correctness flags")
    index = majority_answer(answers, prefer=prefer)
    if index is None:
        return None, False
    return answers[index], correct[index]


def pass_at_turns(records: Sequence[EpisodeRecord], k: int) -> Estimate:
    """p1@tk: the fraction of problems with a correct answer among the first k turns.

    An episode that has a correct answer at turn j <= k is solved for every k >= j,
    even when it stopped there (``stop_on_correct=True``) with fewer than k turns. An
    episode with fewer than k turns and no correct answer among them cannot be scored.

    Args:
        records: One episode per problem.
        k: Number of turns, >= 1.

    Raises:
        ValueError: If an unsolved episode has fewer than k turns, or no record is left.
    """
    _check_k(k)
    outcomes = []
    for record in _gradable(records):
        turns = record.turns[:k]
        solved = any(turn.correct for turn in turns)
        if not solved and len(turns) < k:
            raise ValueError(
                f"episode {_name(record)} has {len(turns)} turns, none correct: p1@t{k} "
                f"needs {k}; rerun with max_turns >= {k}"
            )
        outcomes.append(float(solved))
    return proportion(outcomes)


def majority_at_turns(records: Sequence[EpisodeRecord], k: int) -> Estimate:
    """m1@tk: the fraction of problems whose majority answer over turns 1..k is correct.

    Ties go to the answer given most recently, and the group's correctness is that of
    its most recent turn (`majority_vote` with ``prefer="last"``). Turns without an
    answer do not vote; a problem where no turn has one counts as wrong.

    Args:
        records: One episode per problem, run without the oracle stop.
        k: Number of turns, >= 1.

    Raises:
        ValueError: If an episode has fewer than k turns (m1@tk is undefined for an
            episode an oracle stopped early), or no record is left.
    """
    _check_k(k)
    outcomes = []
    for record in _gradable(records):
        turns = record.turns[:k]
        if len(turns) < k:
            if turns and turns[-1].correct:
                raise ValueError(
                    f"episode {_name(record)} ended correct at turn {len(turns)} (as with "
                    f"stop_on_correct=True): m1@t{k} needs all {k} turns; rerun with "
                    f"stop_on_correct=False and max_turns >= {k}"
                )
            raise ValueError(
                f"episode {_name(record)} has {len(turns)} turns: m1@t{k} needs {k}; "
                f"rerun with max_turns >= {k}"
            )
        answers = [turn.answer for turn in turns]
        _, correct = majority_vote(answers, [turn.correct for turn in turns], prefer="last")
        outcomes.append(float(correct))
    return proportion(outcomes)


def majority_at_samples(records: Sequence[EpisodeRecord], k: int) -> Estimate:
    """mk@t1: the fraction of problems whose majority answer over k turn-1 samples is correct.

    Uses the first k samples of turn 1. Ties go to the answer of the earliest sample,
    whose correctness counts (`majority_vote` with ``prefer="first"``), the rule
    `agents.parallel.ParallelSampling` submits by.

    Args:
        records: One episode per problem, with samples recorded on turn 1.
        k: Number of samples, >= 1.

    Raises:
        ValueError: If an episode has fewer than k turn-1 samples, or no record is left.
    """
    outcomes = []
    for samples in _turn1_samples(records, k):
        first = samples[:k]
        _, correct = majority_vote(
            [s.answer for s in first], [s.correct for s in first], prefer="first"
        )
        outcomes.append(float(correct))
    return proportion(outcomes)


def pass_at_samples(
    records: Sequence[EpisodeRecord], k: int, *, unbiased: bool = False
) -> Estimate:
    """pk@t1 (pass@k at turn 1): the oracle counterpart of mk@t1.

    By default a problem is solved when any of its first k turn-1 samples is correct
    (the same samples mk@t1 votes over). With ``unbiased=True`` each problem instead
    scores the unbiased estimator of Chen et al. (2021) over all its n >= k samples,
    ``1 - C(n - c, k) / C(n, k)`` with c correct samples: the chance that k samples
    drawn without replacement include a correct one. It equals the default when n == k
    and has lower variance when n > k. Its interval treats the mean of these per-problem
    values as a proportion, which is conservative (a variable in [0, 1] with mean p has
    variance at most p(1 - p)).

    Args:
        records: One episode per problem, with samples recorded on turn 1.
        k: Number of samples, >= 1.
        unbiased: Use the estimator of Chen et al. over all recorded samples.

    Raises:
        ValueError: If an episode has fewer than k turn-1 samples, or no record is left.
    """
    outcomes = []
    for samples in _turn1_samples(records, k):
        if unbiased:
            outcomes.append(_unbiased_pass_at_k(len(samples), sum(s.correct for s in samples), k))
        else:
            outcomes.append(float(any(s.correct for s in samples[:k])))
    return proportion(outcomes)


def summarize(
    records: Sequence[EpisodeRecord],
    max_turns: int,
    k_samples: int | None = None,
    *,
    curves: bool = False,
) -> dict[str, Estimate]:
    """The standard RISE table for one run, keyed by metric name.

    Keys, in order: ``p1@t1`` .. ``p1@t{max_turns}``, ``m1@t1``, ``m1@t{max_turns}``,
    then ``m{k}@t1`` and ``p{k}@t1`` (plain pass@k, over the same samples as mk@t1) when
    the records carry turn-1 samples. ``m1@t{max_turns}`` is left out when the records
    come from an oracle run (some episode ended correct before ``max_turns``), where it
    is undefined; call `majority_at_turns` for the error.

    Args:
        records: One episode per problem.
        max_turns: The turn count k of p1@tk and m1@tk.
        k_samples: The sample count k (>= 2) of mk@t1 and pk@t1; None takes the fewest
            turn-1 samples any record carries.
        curves: Also ``m1@t2`` .. ``m1@t{max_turns - 1}``, so that m1 has a value at every
            turn, as p1 has (the accuracy-against-turn curves of a report).

    Raises:
        ValueError: As the metrics do (too few turns or samples, no records).
    """
    _check_k(max_turns)
    summary = {f"p1@t{k}": pass_at_turns(records, k) for k in range(1, max_turns + 1)}
    summary["m1@t1"] = majority_at_turns(records, 1)
    for k in range(2, max_turns) if curves else ():
        summary[f"m1@t{k}"] = majority_at_turns(records, k)
    oracle_stopped = any(
        len(r.turns) < max_turns and r.turns and r.turns[-1].correct for r in _gradable(records)
    )
    if not oracle_stopped:
        summary[f"m1@t{max_turns}"] = majority_at_turns(records, max_turns)
    counts = [len(r.turns[0].samples) for r in records if r.turns and r.turns[0].samples]
    if k_samples is None and counts:
        k_samples = min(counts)
    if k_samples is not None:
        if k_samples < 2:
            raise ValueError(
                f"k_samples must be >= 2, got {k_samples}: m1@t1 and p1@t1 name the "
                "sequential figures; call majority_at_samples(records, 1) directly"
            )
        summary[f"m{k_samples}@t1"] = majority_at_samples(records, k_samples)
        summary[f"p{k_samples}@t1"] = pass_at_samples(records, k_samples)
    return summary


def average_turns(records: Sequence[EpisodeRecord]) -> float:
    """Mean number of recorded turns per problem (over all records, gradable or not)."""
    return _mean([len(r.turns) for r in records])


def average_llm_calls(records: Sequence[EpisodeRecord]) -> float:
    """Mean LLM generation requests per problem (`TurnRecord.llm_calls`, all turns)."""
    return _mean([sum(t.llm_calls for t in r.turns) for r in records])


def average_generated_tokens(records: Sequence[EpisodeRecord]) -> float:
    """Mean generated tokens per problem (`TurnRecord.generated_tokens`, all turns)."""
    return _mean([sum(t.generated_tokens for t in r.turns) for r in records])


def turn_transitions(records: Sequence[EpisodeRecord]) -> dict[str, int]:
    """How often consecutive turns change correctness, over all episodes.

    Args:
        records: Episode records (ungradable episodes are left out).

    Returns:
        ``transitions`` (pairs of consecutive turns), ``right_to_wrong`` and
        ``wrong_to_right`` counts.

    Example:
        >>> from rise_gym.records import TurnRecord
        >>> turns = [TurnRecord(i + 1, "", None, c) for i, c in enumerate([False, True, False])]
        >>> turn_transitions([EpisodeRecord("env", "p", 0, "1", "agent", 0, turns)])
        {'transitions': 2, 'right_to_wrong': 1, 'wrong_to_right': 1}
    """
    counts = {"transitions": 0, "right_to_wrong": 0, "wrong_to_right": 0}
    for record in _gradable(records):
        for before, after in zip(record.turns, record.turns[1:]):
            counts["transitions"] += 1
            counts["right_to_wrong"] += before.correct and not after.correct
            counts["wrong_to_right"] += after.correct and not before.correct
    return counts


def proportion(outcomes: Sequence[float]) -> Estimate:
    """The mean of per-problem outcomes with its 95% Wilson interval.

    Every metric here, and every selection rule's accuracy (`rise_gym.selection`), is
    scored by this one function.

    Args:
        outcomes: One value in [0, 1] per problem: 1.0 solved, 0.0 not, or a fraction
            (e.g. an unbiased pass@k value).

    Returns:
        The estimate over ``len(outcomes)`` problems.

    Raises:
        ValueError: If ``outcomes`` is empty.

    Example:
        >>> print(proportion([True, False, True, True]))
        75.0 [30.1, 95.4]
    """
    low, high = wilson_interval(sum(outcomes), len(outcomes))
    return Estimate(value=_mean(outcomes), low=low, high=high, n=len(outcomes))


def paired_difference(
    first: Sequence[float], second: Sequence[float], *, confidence: float = 0.95
) -> Estimate:
    """The mean per-problem difference ``first - second`` of two rules on the same problems.

    Two rules scored on the same problems are correlated, so their own intervals
    overlapping says little; this interval (normal approximation to the paired
    differences, clipped to [-1, 1]) says whether one beats the other.

    Args:
        first: One outcome in [0, 1] per problem.
        second: The other rule's outcomes on the same problems, in the same order.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        The difference with its interval, over ``len(first)`` problems.

    Raises:
        ValueError: If the two are empty or of different lengths.

    Example:
        >>> print(paired_difference([1, 1, 1, 0] * 50, [1, 0, 1, 0] * 50))
        25.0 [19.0, 31.0]
    """
    if not first or len(first) != len(second):
        raise ValueError(
            f"paired outcomes must be non-empty and of one length, got {len(first)} and "
            f"{len(second)}: score both rules on the same episodes"
        )
    differences = [a - b for a, b in zip(first, second)]
    n = len(differences)
    mean = _mean(differences)
    variance = sum((d - mean) ** 2 for d in differences) / max(n - 1, 1)
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(variance / n)
    return Estimate(value=mean, low=max(mean - half, -1.0), high=min(mean + half, 1.0), n=n)


def wilson_interval(successes: float, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n``.

    Args:
        successes: Number of successes (may be fractional, e.g. a sum of pass@k values).
        n: Number of trials, >= 1.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``, clipped to [0, 1].

    Example:
        >>> [round(x, 4) for x in wilson_interval(5, 10)]
        [0.2366, 0.7634]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _gradable(records: Sequence[EpisodeRecord]) -> list[EpisodeRecord]:
    kept = [
        r for r in records if all(t.metadata.get("gradable", True) is not False for t in r.turns)
    ]
    if not kept:
        raise ValueError(
            "no gradable episode records to score"
            + (f" ({len(records)} were all marked ungradable)" if records else "")
        )
    return kept


def _turn1_samples(records: Sequence[EpisodeRecord], k: int) -> list[list[Sample]]:
    _check_k(k)
    per_problem = []
    for record in _gradable(records):
        samples = record.turns[0].samples if record.turns else None
        count = len(samples or [])
        if samples is None or count < k:
            raise ValueError(
                f"episode {_name(record)} has {count} turn-1 samples: k={k} needs at least "
                f"{k}; run parallel sampling with k >= {k} or lower k"
            )
        per_problem.append(samples)
    return per_problem


def _unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    # 1 - C(n-c, k)/C(n, k) as a stable product (Chen et al. 2021, Codex paper, Fig. 3).
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1 - k / i for i in range(n - c + 1, n + 1))


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no episode records to average over")
    return sum(values) / len(values)


def _name(record: EpisodeRecord) -> str:
    return f"{record.problem_id!r} (index {record.index})"
