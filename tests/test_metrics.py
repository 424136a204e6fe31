"""RISE metrics against cases worked by hand, ties both ways, errors and Wilson intervals."""

from __future__ import annotations

import doctest
import json

import pytest

import rise_gym.metrics
from rise_gym.metrics import (
    Estimate,
    average_generated_tokens,
    average_llm_calls,
    average_turns,
    majority_answer,
    majority_at_samples,
    majority_at_turns,
    majority_vote,
    pass_at_samples,
    pass_at_turns,
    summarize,
    wilson_interval,
)
from rise_gym.records import EpisodeRecord, Sample, TurnRecord


def episode(reference, answers, *, samples=None, index=0, **turn_fields):
    """An episode whose turn t answered answers[t-1]; correct means == reference."""
    turns = [
        TurnRecord(
            turn=t,
            response=f"answer: {a}",
            answer=a,
            correct=a == reference,
            samples=[Sample(s, s == reference) for s in samples] if samples and t == 1 else None,
            **turn_fields,
        )
        for t, a in enumerate(answers, start=1)
    ]
    return EpisodeRecord("RISE-Test-v0", f"p{index}", index, reference, "test", index, turns)


# Sequential table, 4 problems x 3 turns (y = correct, x = wrong, - = no answer):
#
#   ref | t1   t2   t3  | p1@t1 t2 t3 | m1@t1 | m1@t2               | m1@t3
#   7   | 5x   7y   7y  |  0    1  1  |  0    | 5,7 tie -> last 7 y | 7 (2) y
#   9   | 9y   8x   8x  |  1    1  1  |  1    | 9,8 tie -> last 8 x | 8 (2) x
#   2   | 2y   -    3x  |  1    1  1  |  1    | only 2 votes y      | 2,3 tie -> last 3 x
#   6   | 1x   1x   6y  |  0    0  1  |  0    | 1 (2) x             | 1 (2) x
#
#   p1@t1 = 2/4, p1@t2 = 3/4, p1@t3 = 4/4; m1@t1 = 2/4, m1@t2 = 2/4, m1@t3 = 1/4.
# Mislabels this table catches: "accuracy at turn k" gives 1/4 at t2 (and 2/4 at t3);
# an earliest-wins tie-break gives m1@t3 = 2/4; None voting gives m1@t2 = 1/4.
SEQUENTIAL = [
    episode("7", ["5", "7", "7"], index=0),
    episode("9", ["9", "8", "8"], index=1),
    episode("2", ["2", None, "3"], index=2),
    episode("6", ["1", "1", "6"], index=3),
]
SEQUENTIAL_EXPECTED = [
    ("p1@t1", pass_at_turns, 1, [0, 1, 1, 0]),
    ("p1@t2", pass_at_turns, 2, [1, 1, 1, 0]),
    ("p1@t3", pass_at_turns, 3, [1, 1, 1, 1]),
    ("m1@t1", majority_at_turns, 1, [0, 1, 1, 0]),
    ("m1@t2", majority_at_turns, 2, [1, 0, 1, 0]),
    ("m1@t3", majority_at_turns, 3, [1, 0, 0, 0]),
]

# Parallel table, 4 problems x 4 turn-1 samples (c = number correct):
#
#   ref | s1  s2  s3  s4  | c | m3@t1            | m4@t1                | p3 p4 | unbiased p3; p2
#   7   | 7y  5x  7y  5x  | 2 | 7 (2) y          | 7,5 tie -> first 7 y |  1  1 | 1 (n-c < 3); 1-1/6
#   3   | 4x  -   4x  3y  | 1 | 4 (2) x          | 4 (2) x              |  0  1 | 1-1/4; 1-3/6
#   1   | -   -   -   1y  | 1 | nothing votes x  | only 1 votes y       |  0  1 | 1-1/4; 1-3/6
#   8   | 8y  2x  3x  2x  | 1 | 3-way tie -> 8 y | 2 (2) x              |  1  1 | 1-1/4; 1-3/6
#
#   m3@t1 = 2/4, m4@t1 = 2/4, p3@t1 = 2/4, p4@t1 = 4/4;
#   unbiased p3@t1 = (1 + 3 * 0.75) / 4 = 0.8125, unbiased p2@t1 = (5/6 + 3 * 0.5) / 4 = 7/12.
# A latest-wins tie-break would make row 1 of m4@t1 wrong (5 is the latest of the tie).
PARALLEL = [
    episode("7", ["7"], samples=["7", "5", "7", "5"], index=0),
    episode("3", ["4"], samples=["4", None, "4", "3"], index=1),
    episode("1", ["1"], samples=[None, None, None, "1"], index=2),
    episode("8", ["8"], samples=["8", "2", "3", "2"], index=3),
]
PARALLEL_EXPECTED = [
    ("m3@t1", majority_at_samples, 3, [1, 0, 0, 1]),
    ("m4@t1", majority_at_samples, 4, [1, 0, 1, 0]),
    ("p3@t1", pass_at_samples, 3, [1, 0, 0, 1]),
    ("p4@t1", pass_at_samples, 4, [1, 1, 1, 1]),
]


@pytest.mark.parametrize(
    ("records", "expected"),
    [(SEQUENTIAL, SEQUENTIAL_EXPECTED), (PARALLEL, PARALLEL_EXPECTED)],
    ids=["sequential", "parallel"],
)
def test_hand_computed_tables_problem_by_problem_and_in_total(records, expected):
    for name, function, k, outcomes in expected:
        per_problem = [function([record], k).value for record in records]
        assert per_problem == outcomes, name
        total = function(records, k)
        assert total.value == sum(outcomes) / len(outcomes), name
        assert total.n == len(records)
        assert (total.low, total.high) == wilson_interval(sum(outcomes), len(outcomes))


def test_unbiased_pass_at_k_by_hand():
    assert pass_at_samples(PARALLEL, 3, unbiased=True).value == pytest.approx(0.8125)
    assert pass_at_samples(PARALLEL, 2, unbiased=True).value == pytest.approx(7 / 12)
    # n == k: the unbiased estimator is the plain one.
    assert pass_at_samples(PARALLEL, 4, unbiased=True).value == 1.0
    assert pass_at_samples(PARALLEL, 1, unbiased=True).value == pytest.approx((2 + 3 * 1) / 16)


def test_summarize_sequential_and_parallel():
    summary = summarize(SEQUENTIAL, max_turns=3)
    assert list(summary) == ["p1@t1", "p1@t2", "p1@t3", "m1@t1", "m1@t3"]
    assert {k: v.value for k, v in summary.items()} == {
        "p1@t1": 0.5,
        "p1@t2": 0.75,
        "p1@t3": 1.0,
        "m1@t1": 0.5,
        "m1@t3": 0.25,
    }
    parallel = summarize(PARALLEL, max_turns=1)
    assert {k: v.value for k, v in parallel.items()} == {
        "p1@t1": 0.75,
        "m1@t1": 0.75,
        "m4@t1": 0.5,
        "p4@t1": 1.0,
    }
    assert summarize(PARALLEL, max_turns=1, k_samples=3)["m3@t1"].value == 0.5
    with pytest.raises(ValueError, match="k_samples must be >= 2"):
        summarize(PARALLEL, max_turns=1, k_samples=1)


@pytest.mark.parametrize(
    ("answers", "last", "first"),
    [
        (["a", "b"], 1, 0),
        (["a", "b", "b", "a"], 3, 0),
        (["a", "b", "a", "b"], 3, 0),
        (["b", "a", "a", "b"], 3, 0),
        (["a", "b", "c", "b"], 3, 1),  # no tie: the group's latest / earliest member
        ([None, "a", None, "b"], 3, 1),
        (["a", None, None], 0, 0),
        ([None, None, None], None, None),
        ([], None, None),
    ],
)
def test_majority_answer_ties_in_both_directions(answers, last, first):
    assert majority_answer(answers, prefer="last") == last
    assert majority_answer(answers, prefer="first") == first


def test_majority_vote_takes_correctness_of_the_chosen_member():
    # Same answer string graded differently (e.g. a flaky test): the chosen member decides.
    answers, correct = ["x", "y", "x"], [True, False, False]
    assert majority_vote(answers, correct, prefer="last") == ("x", False)
    assert majority_vote(answers, correct, prefer="first") == ("x", True)
    assert majority_vote([None, None], [False, False], prefer="last") == (None, False)


def test_majority_argument_errors():
    with pytest.raises(ValueError, match="2 answers but 1"):
        majority_vote(["a", "b"], [True], prefer="last")
    with pytest.raises(ValueError, match="prefer"):
        majority_answer(["a"], prefer="middle")  # type: ignore[arg-type]


def test_all_none_answers_count_as_wrong():
    records = [episode("1", [None, None, None]), episode("1", ["1", None, None], index=1)]
    assert majority_at_turns(records, 3).value == 0.5
    assert pass_at_turns(records, 3).value == 0.5
    parallel = [episode("1", [None], samples=[None, None, None])]
    assert majority_at_samples(parallel, 3).value == 0.0
    assert pass_at_samples(parallel, 3).value == 0.0


def test_oracle_terminated_episodes():
    # stop_on_correct=True, max_turns=3: the first problem solved at turn 2, the second
    # at turn 1, the third never (all 3 turns).
    oracle = [
        episode("4", ["3", "4"], index=0),
        episode("4", ["4"], index=1),
        episode("4", ["1", "2", "3"], index=2),
    ]
    assert [pass_at_turns(oracle, k).value for k in (1, 2, 3)] == [1 / 3, 2 / 3, 2 / 3]
    # Solved at turn j means solved for every k >= j, even beyond the recorded turns.
    assert pass_at_turns(oracle[:2], 5).value == 1.0
    assert majority_at_turns(oracle, 1).value == 1 / 3
    with pytest.raises(ValueError, match=r"ended correct at turn 1.*stop_on_correct=False"):
        majority_at_turns(oracle, 2)
    summary = summarize(oracle, max_turns=3)
    assert "m1@t3" not in summary
    assert summary["p1@t3"].value == 2 / 3


def test_too_few_turns():
    short = [episode("9", ["1", "2"])]
    assert pass_at_turns(short, 2).value == 0.0
    with pytest.raises(ValueError, match=r"'p0' \(index 0\) has 2 turns.*max_turns >= 3"):
        pass_at_turns(short, 3)
    with pytest.raises(ValueError, match=r"has 2 turns: m1@t3 needs 3"):
        majority_at_turns(short, 3)
    # Correct at turn 1 of a 2-turn run without the oracle: solved within 3 turns anyway.
    assert pass_at_turns([episode("1", ["1", "2"])], 3).value == 1.0
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_turns(short, 0)


def test_too_few_samples():
    with pytest.raises(ValueError, match=r"has 4 turn-1 samples: k=5"):
        majority_at_samples(PARALLEL, 5)
    with pytest.raises(ValueError, match=r"has 4 turn-1 samples: k=5"):
        pass_at_samples(PARALLEL, 5, unbiased=True)
    with pytest.raises(ValueError, match=r"has 0 turn-1 samples"):
        pass_at_samples(SEQUENTIAL, 2)
    with pytest.raises(ValueError, match=r"has 0 turn-1 samples"):
        summarize(SEQUENTIAL, max_turns=3, k_samples=2)


def test_no_records_and_ungradable_episodes():
    with pytest.raises(ValueError, match="no gradable episode records"):
        pass_at_turns([], 1)
    ungradable = episode("?", ["1"], index=9, metadata={"gradable": False})
    assert pass_at_turns([*SEQUENTIAL, ungradable], 3).n == 4
    with pytest.raises(ValueError, match="all marked ungradable"):
        majority_at_turns([ungradable], 1)


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (1, 4, 0.0456, 0.6994)],
)
def test_wilson_interval_textbook_values(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-3)


def test_wilson_interval_errors_and_confidence():
    assert wilson_interval(5, 10, confidence=0.99) == pytest.approx((0.1842, 0.8158), abs=1e-3)
    for bad in [(1, 0), (11, 10), (-1, 10)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=1.0)


def test_estimate_is_frozen_and_prints_in_percent():
    estimate = Estimate(value=0.5, low=0.2366, high=0.7634, n=10)
    assert str(estimate) == "50.0 [23.7, 76.3]"
    with pytest.raises(AttributeError):
        estimate.value = 1.0  # type: ignore[misc]


def test_cost_averages():
    records = [
        episode("1", ["0", "1"], llm_calls=2, generated_tokens=10),
        episode("1", ["1"], index=1, llm_calls=2, generated_tokens=30),
    ]
    assert average_turns(records) == 1.5
    assert average_llm_calls(records) == 3.0
    assert average_generated_tokens(records) == 25.0  # (10 + 10 + 30) / 2
    with pytest.raises(ValueError, match="no episode records"):
        average_turns([])


def test_round_trip_through_json_keeps_every_figure():
    records = SEQUENTIAL + PARALLEL
    restored = [EpisodeRecord.from_dict(json.loads(json.dumps(r.to_dict()))) for r in records]
    assert restored == records
    assert summarize(restored[:4], max_turns=3) == summarize(SEQUENTIAL, max_turns=3)
    assert summarize(restored[4:], max_turns=1) == summarize(PARALLEL, max_turns=1)


def test_doctests():
    assert doctest.testmod(rise_gym.metrics).failed == 0
