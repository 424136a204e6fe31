"""RISE relabelling: replayed states, best-of-N, the data filters, de-duplication,
degrading rollouts, and collection with and without the oracle stop."""

from __future__ import annotations

import pytest

from agents.rise.config import RISEConfig
from agents.rise.relabel import (
    Candidate,
    VisitedState,
    degrades,
    pick_best,
    replay_states,
    select_actions,
    training_actions,
)
from rise_gym.envs.arithmetic import ArithmeticEnv
from rise_gym.records import EpisodeRecord, TurnRecord


def record_of(corrects: list[bool], responses: list[str] | None = None) -> EpisodeRecord:
    responses = responses or [f"attempt {i}" for i in range(len(corrects))]
    turns = [
        TurnRecord(turn=i + 1, response=r, answer=None, correct=c)
        for i, (r, c) in enumerate(zip(responses, corrects))
    ]
    return EpisodeRecord("RISE-Arithmetic-v0", "p", 0, "3", "a", 0, turns)


def state(
    on_policy: float,
    improved: float | None,
    previous: float | None = None,
    question: str = "q",
    responses: tuple[str, str] = ("mine", "better"),
) -> VisitedState:
    return VisitedState(
        "p",
        0,
        1 if previous is None else 2,
        [{"role": "user", "content": question}],
        Candidate(responses[0], on_policy, "on_policy"),
        None if improved is None else Candidate(responses[1], improved, "improved"),
        previous_reward=previous,
    )


def test_replay_rebuilds_the_observation_before_every_turn():
    env = ArithmeticEnv(difficulty=1, num_problems=3, history_window=1, max_turns=5)
    record = record_of([False, False, False], ["one", "two", "three"])
    record.index = 2
    states = replay_states(env, record)
    assert [s.turn for s in states] == [1, 2, 3]
    assert [m["role"] for m in states[0].conversation] == ["user"]
    assert states[0].conversation[0]["content"].startswith(env.problems[2].question)
    third = [m["content"] for m in states[2].conversation]
    assert third[1::2] == ["one", "two"]  # window 1: the previous and the newest attempt
    assert "not correct" in third[-1]
    assert states[1].on_policy == Candidate("two", 0.0, "on_policy")


def test_pick_best_prefers_a_correct_sample_and_falls_back_to_the_first():
    grade = lambda text: type("G", (), {"correct": text == "right"})()  # noqa: E731
    assert pick_best(["wrong", "right", "right"], grade) == Candidate("right", 1.0, "improved")
    assert pick_best(["wrong", "bad"], grade) == Candidate("wrong", 0.0, "improved")
    with pytest.raises(ValueError):
        pick_best([], grade)


@pytest.mark.parametrize(
    ("data_filter", "on_policy", "improved", "kept"),
    [
        ("all", 0.0, 1.0, ["mine", "better"]),
        ("all", 1.0, None, ["mine"]),
        ("all", 0.0, 0.0, ["mine", "better"]),
        ("best", 0.0, 1.0, ["better"]),
        ("best", 1.0, 1.0, ["mine"]),
        ("best", 0.0, 0.0, ["mine"]),
        ("success", 0.0, 1.0, ["better"]),
        ("success", 0.0, 0.0, []),
        ("success", 1.0, 1.0, ["mine", "better"]),
    ],
)
def test_each_filter_keeps_what_it_says(data_filter, on_policy, improved, kept):
    chosen = select_actions(state(on_policy, improved), data_filter, drop_unimproved=False)
    assert [c.response for c in chosen] == kept


@pytest.mark.parametrize(
    ("on_policy", "improved", "kept"),
    [
        (0.0, 1.0, ["mine", "better"]),  # a real improvement stays
        (0.0, 0.0, ["mine"]),  # best-of-N found nothing correct: not an improvement
        (1.0, 1.0, ["mine"]),  # already right: the relabelled copy adds nothing
    ],
)
def test_an_unimproved_relabelled_action_is_dropped_by_default(on_policy, improved, kept):
    chosen = select_actions(state(on_policy, improved), "all")
    assert [c.response for c in chosen] == kept
    assert RISEConfig().drop_unimproved


@pytest.mark.parametrize(
    ("previous", "on_policy", "improved", "kept"),
    [
        (None, 0.0, 1.0, ["mine", "better"]),  # turn 1: nothing before, everything kept
        (None, 0.0, 0.0, ["mine", "better"]),
        (0.0, 0.0, 1.0, ["better"]),  # after a wrong answer: only what beats it
        (0.0, 1.0, None, ["mine"]),
        (0.0, 0.0, 0.0, []),
        (1.0, 1.0, 1.0, []),  # after a right answer nothing beats it
        (1.0, 0.0, 1.0, []),
    ],
)
def test_better_keeps_an_action_only_if_it_beats_the_previous_turn(
    previous, on_policy, improved, kept
):
    chosen = select_actions(state(on_policy, improved, previous), "better", drop_unimproved=False)
    assert [c.response for c in chosen] == kept


def test_identical_state_action_pairs_are_trained_on_once():
    repeated = [state(0.0, 1.0, previous=0.0) for _ in range(3)]  # the same wrong loop
    same_text = state(1.0, 1.0, responses=("42", " 42\n"), question="r")
    other = state(0.0, 1.0, question="another question")
    pairs = training_actions([*repeated, same_text, other], "all", drop_unimproved=False)
    kept = [(s.conversation[0]["content"], a.response) for s, a in pairs]
    assert kept == [
        ("q", "mine"),
        ("q", "better"),
        ("r", "42"),
        ("another question", "mine"),
        ("another question", "better"),
    ]


def test_unknown_filter_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        select_actions(state(0.0, 1.0), "most")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_filter"):
        RISEConfig(data_filter="most")


def test_degrading_rollouts_are_detected():
    assert degrades(record_of([True, False]))
    assert degrades(record_of([False, True, False]))
    assert not degrades(record_of([False, False, True]))
    assert not degrades(record_of([True, True]))
    assert not degrades(record_of([]))


def test_config_validation_names_the_fix():
    with pytest.raises(ValueError, match="0.4"):
        RISEConfig(tau=0)
    with pytest.raises(ValueError, match="best-of-N"):
        RISEConfig(improvement="oracle")
    with pytest.raises(ValueError, match="sample_temperature"):
        RISEConfig(sample_temperature=0.0)
    with pytest.raises(ValueError, match="iterations"):
        RISEConfig(iterations=0)
